//! The clock tracked calls are timed with.
//!
//! Two reads of `std::time::Instant` cost more than everything else a
//! tracked call does (about 23 to 39 ns each on the 2-core machines this was
//! measured on, against about 10 ns for the CPU's time-stamp counter). So a
//! call reads the time-stamp counter, through `quanta`, when it can be
//! trusted, and `Instant` otherwise:
//!
//! - the CPU says its counter is invariant (constant rate in every power
//!   state) and has `rdtscp` (what `quanta` itself requires), and
//! - on Linux, the kernel's own clock source is `tsc`: the kernel checks the
//!   counter against other clocks at boot and while running (on some
//!   virtual machines it finds it unstable and switches to another source),
//!   and a counter the kernel gave up on is not trusted here either.
//!
//! `HYPERKIT_CLOCK=std` forces `Instant`, `HYPERKIT_CLOCK=tsc` asks for the
//! counter (still only when the CPU says it is invariant), `auto` (the
//! default) decides as above. `quanta` calibrates the counter against the
//! monotonic clock once, when the clock is first used (under a millisecond
//! on an idle machine, at most 200 ms); [`init()`](crate::init) does it at
//! start-up so no tracked call pays for it.
//!
//! Nothing here allocates after the first use, locks or panics.

use std::fmt;
use std::sync::OnceLock;
use std::time::Instant;

/// Where the durations of tracked calls come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClockSource {
    /// The CPU's invariant time-stamp counter, calibrated by `quanta`.
    Tsc,
    /// `std::time::Instant` (the operating system's monotonic clock).
    Std,
}

impl ClockSource {
    /// `tsc` or `std`, as `HYPERKIT_CLOCK` spells them.
    pub const fn as_str(self) -> &'static str {
        match self {
            ClockSource::Tsc => "tsc",
            ClockSource::Std => "std",
        }
    }
}

impl fmt::Display for ClockSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What `HYPERKIT_CLOCK` asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ClockChoice {
    Auto,
    Tsc,
    Std,
}

/// The variable that chooses the clock.
pub(crate) const CLOCK_VAR: &str = "HYPERKIT_CLOCK";

impl ClockChoice {
    /// Reads a value of `HYPERKIT_CLOCK` (unset or empty is `auto`).
    pub(crate) fn parse(value: Option<&str>) -> Result<Self, String> {
        match value.map(str::trim) {
            None | Some("" | "auto") => Ok(ClockChoice::Auto),
            Some("tsc") => Ok(ClockChoice::Tsc),
            Some("std") => Ok(ClockChoice::Std),
            Some(_) => Err("is not a clock: write `auto` (the default), `tsc` or `std`".to_owned()),
        }
    }
}

/// What the machine says about its time-stamp counter.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Machine<'a> {
    /// The CPU reports an invariant counter and `rdtscp`.
    pub(crate) invariant_tsc: bool,
    /// The kernel's current clock source, where the platform has one to read.
    pub(crate) kernel_source: Option<&'a str>,
}

/// The source a choice gives on a machine: the counter only when the CPU
/// says it is invariant and no kernel has given up on it.
pub(crate) fn decide(choice: ClockChoice, machine: Machine<'_>) -> ClockSource {
    let kernel_trusts = machine
        .kernel_source
        .is_none_or(|source| source.trim() == "tsc");
    match choice {
        ClockChoice::Std => ClockSource::Std,
        ClockChoice::Tsc if machine.invariant_tsc => ClockSource::Tsc,
        ClockChoice::Tsc => ClockSource::Std,
        ClockChoice::Auto if machine.invariant_tsc && kernel_trusts => ClockSource::Tsc,
        ClockChoice::Auto => ClockSource::Std,
    }
}

#[cfg(target_arch = "x86_64")]
fn cpu_has_invariant_tsc() -> bool {
    let cpuid = raw_cpuid::CpuId::new();
    let invariant = cpuid
        .get_advanced_power_mgmt_info()
        .is_some_and(|apm| apm.has_invariant_tsc());
    let rdtscp = cpuid
        .get_extended_processor_and_feature_identifiers()
        .is_some_and(|f| f.has_rdtscp());
    invariant && rdtscp
}

#[cfg(not(target_arch = "x86_64"))]
fn cpu_has_invariant_tsc() -> bool {
    // Other architectures' counters go through `quanta` too once measured
    // here; until then they use `Instant`.
    false
}

fn kernel_clock_source() -> Option<String> {
    if cfg!(target_os = "linux") {
        // A short file; a failure to read it (no sysfs in a container) is
        // "unknown", not "untrusted".
        std::fs::read_to_string("/sys/devices/system/clocksource/clocksource0/current_clocksource")
            .ok()
    } else {
        None
    }
}

/// A clock read as raw ticks and turned into nanoseconds only for
/// differences.
pub(crate) struct Clock {
    source: Source,
}

enum Source {
    /// Nanoseconds per 2^32 ticks, from `quanta`'s calibration: a tick
    /// difference becomes nanoseconds with one multiplication and a shift,
    /// inlined where the call is timed (`quanta`'s own conversion is a
    /// function call away).
    Tsc {
        ns_per_2_32: u64,
    },
    Std(Instant),
}

/// Reads the time-stamp counter.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn rdtsc() -> u64 {
    // SAFETY: `rdtsc` exists on every x86_64 CPU and has no preconditions;
    // the intrinsic is `unsafe` only as all of `core::arch` is. Reading it
    // here rather than through `quanta::Clock::raw` (the same instruction
    // behind a call and a match) saves about a tenth of a tracked call
    // (`track_overhead`). Tested by `the_calibrated_counter_measures_like_instant`.
    #[allow(unsafe_code)]
    unsafe {
        core::arch::x86_64::_rdtsc()
    }
}

#[cfg(not(target_arch = "x86_64"))]
#[inline(always)]
fn rdtsc() -> u64 {
    0
}

impl Clock {
    /// A clock of `source`; `Tsc` calibrates (see the module docs).
    pub(crate) fn new(source: ClockSource) -> Self {
        Clock {
            source: match source {
                ClockSource::Tsc => {
                    let ns_per_2_32 = quanta::Clock::new().delta_as_nanos(0, 1 << 32);
                    // A counter between 100 MHz and 10 GHz; anything else
                    // is a calibration gone wrong, and `Instant` is used.
                    if (429_496_729..=42_949_672_960).contains(&ns_per_2_32) {
                        Source::Tsc { ns_per_2_32 }
                    } else {
                        Source::Std(Instant::now())
                    }
                }
                ClockSource::Std => Source::Std(Instant::now()),
            },
        }
    }

    /// Which source this clock reads.
    pub(crate) fn source(&self) -> ClockSource {
        match self.source {
            Source::Tsc { .. } => ClockSource::Tsc,
            Source::Std(_) => ClockSource::Std,
        }
    }

    /// The current time in this clock's ticks.
    #[inline(always)]
    pub(crate) fn now(&self) -> u64 {
        match &self.source {
            Source::Tsc { .. } => rdtsc(),
            Source::Std(epoch) => u64::try_from(epoch.elapsed().as_nanos()).unwrap_or(u64::MAX),
        }
    }

    /// Nanoseconds from `start` to `end` (both from [`now`](Self::now));
    /// zero when `end` is not after `start`.
    #[inline(always)]
    pub(crate) fn nanos(&self, start: u64, end: u64) -> u64 {
        let ticks = end.saturating_sub(start);
        match &self.source {
            Source::Tsc { ns_per_2_32 } => {
                // At most 2^64 * 2^40 before the shift: no overflow in u128.
                ((u128::from(ticks) * u128::from(*ns_per_2_32)) >> 32) as u64
            }
            Source::Std(_) => ticks,
        }
    }
}

static CLOCK: OnceLock<Clock> = OnceLock::new();

/// The process's clock, chosen on first use.
#[inline(always)]
pub(crate) fn clock() -> &'static Clock {
    match CLOCK.get() {
        Some(clock) => clock,
        None => first_use(),
    }
}

#[cold]
#[inline(never)]
fn first_use() -> &'static Clock {
    CLOCK.get_or_init(|| {
        // A bad value is reported by `init()`; here, before or without it,
        // the default applies.
        let choice = ClockChoice::parse(std::env::var(CLOCK_VAR).ok().as_deref())
            .unwrap_or(ClockChoice::Auto);
        let kernel = kernel_clock_source();
        Clock::new(decide(
            choice,
            Machine {
                invariant_tsc: cpu_has_invariant_tsc(),
                kernel_source: kernel.as_deref(),
            },
        ))
    })
}

/// The source tracked calls are timed with in this process (chosen, and the
/// counter calibrated, on first use).
pub fn clock_source() -> ClockSource {
    clock().source()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const INVARIANT: Machine<'static> = Machine {
        invariant_tsc: true,
        kernel_source: Some("tsc\n"),
    };

    #[test]
    fn the_counter_is_used_only_when_the_cpu_and_the_kernel_trust_it() {
        assert_eq!(decide(ClockChoice::Auto, INVARIANT), ClockSource::Tsc);
        let unknown_kernel = Machine {
            kernel_source: None,
            ..INVARIANT
        };
        assert_eq!(decide(ClockChoice::Auto, unknown_kernel), ClockSource::Tsc);
        let not_invariant = Machine {
            invariant_tsc: false,
            ..INVARIANT
        };
        assert_eq!(decide(ClockChoice::Auto, not_invariant), ClockSource::Std);
        let kernel_gave_up = Machine {
            kernel_source: Some("kvm-clock\n"),
            ..INVARIANT
        };
        assert_eq!(decide(ClockChoice::Auto, kernel_gave_up), ClockSource::Std);
    }

    #[test]
    fn the_variable_forces_std_always_and_tsc_only_when_invariant() {
        assert_eq!(decide(ClockChoice::Std, INVARIANT), ClockSource::Std);
        let kernel_gave_up = Machine {
            kernel_source: Some("hpet"),
            ..INVARIANT
        };
        assert_eq!(decide(ClockChoice::Tsc, kernel_gave_up), ClockSource::Tsc);
        let not_invariant = Machine {
            invariant_tsc: false,
            kernel_source: Some("tsc"),
        };
        assert_eq!(decide(ClockChoice::Tsc, not_invariant), ClockSource::Std);
    }

    #[test]
    fn the_variable_is_parsed_strictly() {
        assert_eq!(ClockChoice::parse(None), Ok(ClockChoice::Auto));
        assert_eq!(ClockChoice::parse(Some(" std ")), Ok(ClockChoice::Std));
        assert_eq!(ClockChoice::parse(Some("tsc")), Ok(ClockChoice::Tsc));
        let e = ClockChoice::parse(Some("rdtsc")).unwrap_err();
        assert!(e.contains("`std`"), "{e}");
        let e = crate::init::MonitoringConfig::from_lookup(|k| {
            (k == CLOCK_VAR).then(|| "rdtsc".to_owned())
        })
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("HYPERKIT_CLOCK=\"rdtsc\" is invalid"), "{e}");
    }

    /// Both sources time the same interval as `Instant` does. Load on the
    /// machine stretches the interval but not the agreement: both clocks are
    /// read back to back at each end.
    fn agrees_with_instant(source: ClockSource) {
        let clock = Clock::new(source);
        assert_eq!(clock.source(), source);
        let (t0, r0) = (Instant::now(), clock.now());
        std::thread::sleep(Duration::from_millis(50));
        let (r1, t1) = (clock.now(), Instant::now());
        let std_ns = (t1 - t0).as_nanos() as f64;
        let ns = clock.nanos(r0, r1) as f64;
        // The reads at each end are a few hundred ns apart at most, unless the
        // thread is descheduled between them: 2% of at least 50 ms is 1 ms.
        assert!(
            (ns - std_ns).abs() <= std_ns * 0.02,
            "{source}: {ns} ns against Instant's {std_ns} ns"
        );
        assert_eq!(clock.nanos(r1, r0), 0, "a reversed interval is zero");
    }

    #[test]
    fn the_std_fallback_measures_like_instant() {
        agrees_with_instant(ClockSource::Std);
    }

    #[test]
    fn the_calibrated_counter_measures_like_instant_where_the_cpu_has_one() {
        if !cpu_has_invariant_tsc() {
            eprintln!("no invariant TSC on this CPU: only the fallback is in use here");
            return;
        }
        agrees_with_instant(ClockSource::Tsc);
    }

    #[test]
    fn tick_differences_convert_as_quantas_calibration_says() {
        if !cpu_has_invariant_tsc() {
            return;
        }
        let clock = Clock::new(ClockSource::Tsc);
        let quanta = quanta::Clock::new();
        // From a few ticks to about an hour of ticks at a few GHz.
        for ticks in [1u64, 1_000, 3_000_000, 1 << 32, 10_000_000_000_000] {
            let ours = clock.nanos(1_000, 1_000 + ticks) as f64;
            let theirs = quanta.delta_as_nanos(1_000, 1_000 + ticks) as f64;
            assert!(
                (ours - theirs).abs() <= 1.0 + theirs * 1e-6,
                "{ticks} ticks: {ours} ns against quanta's {theirs} ns"
            );
        }
    }
}
