//! [`HumanDuration`]: a duration written as a person reads it at a glance.
//! Integer arithmetic on the nanoseconds, so rounding is exact, and for
//! any `Duration` it never panics or overflows.

use std::fmt;
use std::time::Duration;

/// A duration in the unit a person reads at a glance: three significant
/// digits below a minute (`850ns`, `12.3µs`, `53ms`, `2.36s`, `59.9s`),
/// whole seconds below an hour (`1m`, `1m5s`, `59m59s`), whole minutes
/// above (`1h`, `1h30m`, `26h5m`). Rounds half up, and a value that rounds
/// up to the next unit is written in it (999.5 ms is `1s`, 59.95 s is `1m`).
/// Honours width and alignment (`{:>6}`).
///
/// ```
/// use hyperkit_obs::logs::HumanDuration;
/// use std::time::Duration;
///
/// assert_eq!(HumanDuration(Duration::from_nanos(2_357_999_374)).to_string(), "2.36s");
/// assert_eq!(HumanDuration(Duration::from_millis(53)).to_string(), "53ms");
/// assert_eq!(HumanDuration(Duration::from_secs(90)).to_string(), "1m30s");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct HumanDuration(pub Duration);

impl HumanDuration {
    /// A duration of `ns` nanoseconds, the unit of ECS `event.duration`.
    pub fn from_nanos(ns: u64) -> Self {
        HumanDuration(Duration::from_nanos(ns))
    }
}

const NS_PER_S: u128 = 1_000_000_000;

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(&human(self.0.as_nanos()))
    }
}

fn human(ns: u128) -> String {
    if ns < 1_000 {
        return format!("{ns}ns");
    }
    for (unit, suffix, limit) in [
        (1_000, "µs", 1_000),
        (1_000_000, "ms", 1_000),
        (NS_PER_S, "s", 60),
    ] {
        if ns >= unit * limit {
            continue;
        }
        if let Some((scaled, decimals)) = three_significant_digits(ns, unit)
            && scaled < limit * 10u128.pow(decimals)
        {
            return format!("{}{suffix}", decimal(scaled, decimals));
        }
    }
    let seconds = (ns + NS_PER_S / 2) / NS_PER_S;
    if seconds < 3_600 {
        return match (seconds / 60, seconds % 60) {
            (m, 0) => format!("{m}m"),
            (m, s) => format!("{m}m{s}s"),
        };
    }
    let minutes = (ns + 30 * NS_PER_S) / (60 * NS_PER_S);
    match (minutes / 60, minutes % 60) {
        (h, 0) => format!("{h}h"),
        (h, m) => format!("{h}h{m}m"),
    }
}

/// `ns / unit` rounded half up to three significant digits, as an integer
/// and its number of decimals; `None` when it rounds to 1000 or more.
fn three_significant_digits(ns: u128, unit: u128) -> Option<(u128, u32)> {
    (0..=2).rev().find_map(|decimals| {
        let scaled = (ns * 10u128.pow(decimals) + unit / 2) / unit;
        (scaled < 1_000).then_some((scaled, decimals))
    })
}

/// `scaled / 10^decimals` without trailing zeros: `(236, 2)` is `2.36`,
/// `(530, 1)` is `53`.
fn decimal(scaled: u128, decimals: u32) -> String {
    let power = 10u128.pow(decimals);
    let (whole, fraction) = (scaled / power, scaled % power);
    if fraction == 0 {
        return whole.to_string();
    }
    let digits = format!("{fraction:0width$}", width = decimals as usize);
    format!("{whole}.{}", digits.trim_end_matches('0'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn human_ns(ns: u64) -> String {
        HumanDuration::from_nanos(ns).to_string()
    }

    const MS: u64 = 1_000_000;
    const S: u64 = 1_000_000_000;

    #[test]
    fn below_a_microsecond_durations_are_whole_nanoseconds() {
        assert_eq!(human_ns(0), "0ns");
        assert_eq!(human_ns(1), "1ns");
        assert_eq!(human_ns(999), "999ns");
    }

    #[test]
    fn below_a_minute_durations_have_three_significant_digits_without_trailing_zeros() {
        assert_eq!(human_ns(1_000), "1µs");
        assert_eq!(human_ns(1_500), "1.5µs");
        assert_eq!(human_ns(12_345), "12.3µs");
        assert_eq!(human_ns(5_210_000), "5.21ms");
        assert_eq!(human_ns(53 * MS), "53ms");
        assert_eq!(human_ns(532 * MS + 400_000), "532ms");
        assert_eq!(human_ns(2_357_999_374), "2.36s");
        assert_eq!(human_ns(2_300 * MS), "2.3s");
        assert_eq!(human_ns(S), "1s");
        assert_eq!(human_ns(59_940 * MS), "59.9s");
    }

    #[test]
    fn rounding_is_half_up() {
        assert_eq!(human_ns(53_449_999), "53.4ms");
        assert_eq!(human_ns(53_450_000), "53.5ms");
        assert_eq!(human_ns(1_234_999), "1.23ms");
        assert_eq!(human_ns(1_235_000), "1.24ms");
    }

    #[test]
    fn a_value_that_rounds_up_to_the_next_unit_is_written_in_it() {
        assert_eq!(human_ns(9_995), "10µs");
        assert_eq!(human_ns(99_950), "100µs");
        assert_eq!(human_ns(999_499), "999µs");
        assert_eq!(human_ns(999_500), "1ms");
        assert_eq!(human_ns(999_499_999), "999ms");
        assert_eq!(human_ns(999_500_000), "1s");
        assert_eq!(human_ns(59_949_999_999), "59.9s");
        assert_eq!(human_ns(59_950 * MS), "1m");
        assert_eq!(human_ns(59_990 * MS), "1m");
    }

    #[test]
    fn from_a_minute_durations_are_whole_seconds_and_from_an_hour_whole_minutes() {
        assert_eq!(human_ns(60 * S), "1m");
        assert_eq!(human_ns(61_400 * MS), "1m1s");
        assert_eq!(human_ns(61_500 * MS), "1m2s");
        assert_eq!(human_ns(90 * S), "1m30s");
        assert_eq!(human_ns(120 * S), "2m");
        assert_eq!(human_ns(3_599_499 * MS), "59m59s");
        assert_eq!(human_ns(3_599_500 * MS), "1h");
        assert_eq!(human_ns(3_600 * S), "1h");
        assert_eq!(human_ns(3_629 * S), "1h");
        assert_eq!(human_ns(3_630 * S), "1h1m");
        assert_eq!(human_ns(5_400 * S), "1h30m");
        assert_eq!(human_ns(7_200 * S), "2h");
        assert_eq!(human_ns(26 * 3_600 * S + 5 * 60 * S), "26h5m");
        assert_eq!(human_ns(u64::MAX), "5124095h35m");
    }

    #[test]
    fn a_human_duration_honours_width_and_alignment() {
        let d = HumanDuration(Duration::from_millis(53));
        assert_eq!(format!("[{d:>6}|{d:<6}]"), "[  53ms|53ms  ]");
    }
}
