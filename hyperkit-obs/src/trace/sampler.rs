//! Which new spans are sampled (recorded, exported, given exemplars): the
//! OpenTelemetry samplers that `OTEL_TRACES_SAMPLER` names, held in two
//! atomics so a decision takes no lock.
//!
//! Only a span's start consults it: a child of a local tracked call or of
//! an incoming request follows its parent's sampled flag (the parent-based
//! samplers, the default), and a root draws on its trace id, so every
//! process that sees the trace decides alike.

use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};

use super::id::TraceId;

/// A sampler, as `OTEL_TRACES_SAMPLER` and `OTEL_TRACES_SAMPLER_ARG` name
/// them.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
#[non_exhaustive]
pub enum Sampler {
    /// `always_on`: every span.
    AlwaysOn,
    /// `always_off`: no span.
    AlwaysOff,
    /// `traceidratio`: a fraction of traces, by trace id, whatever the
    /// parent says.
    TraceIdRatio(f64),
    /// `parentbased_always_on` (the default): as the parent, else every
    /// root.
    #[default]
    ParentBasedAlwaysOn,
    /// `parentbased_always_off`: as the parent, else no root.
    ParentBasedAlwaysOff,
    /// `parentbased_traceidratio`: as the parent, else a fraction of roots.
    ParentBasedTraceIdRatio(f64),
}

impl Sampler {
    /// The sampler named by `OTEL_TRACES_SAMPLER`'s value `name`, with
    /// `OTEL_TRACES_SAMPLER_ARG`'s value `arg` (for the ratio samplers; 1.0
    /// when unset). `Err` says what is wrong.
    pub fn from_name(name: &str, arg: Option<&str>) -> Result<Sampler, String> {
        let ratio = || -> Result<f64, String> {
            match arg {
                None => Ok(1.0),
                Some(a) => match a.trim().parse::<f64>() {
                    Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
                    _ => Err(format!(
                        "OTEL_TRACES_SAMPLER_ARG={a:?} is not a ratio between 0 and 1"
                    )),
                },
            }
        };
        Ok(match name.trim() {
            "always_on" => Sampler::AlwaysOn,
            "always_off" => Sampler::AlwaysOff,
            "traceidratio" => Sampler::TraceIdRatio(ratio()?),
            "parentbased_always_on" => Sampler::ParentBasedAlwaysOn,
            "parentbased_always_off" => Sampler::ParentBasedAlwaysOff,
            "parentbased_traceidratio" => Sampler::ParentBasedTraceIdRatio(ratio()?),
            other => {
                return Err(format!(
                    "unknown sampler {other:?}: use always_on, always_off, traceidratio, \
                     parentbased_always_on, parentbased_always_off or parentbased_traceidratio"
                ));
            }
        })
    }

    /// The name `OTEL_TRACES_SAMPLER` gives it.
    pub fn name(self) -> &'static str {
        match self {
            Sampler::AlwaysOn => "always_on",
            Sampler::AlwaysOff => "always_off",
            Sampler::TraceIdRatio(_) => "traceidratio",
            Sampler::ParentBasedAlwaysOn => "parentbased_always_on",
            Sampler::ParentBasedAlwaysOff => "parentbased_always_off",
            Sampler::ParentBasedTraceIdRatio(_) => "parentbased_traceidratio",
        }
    }
}

const ALWAYS_ON: u8 = 0;
const ALWAYS_OFF: u8 = 1;
const RATIO: u8 = 2;
/// Added to the root rule of a parent-based sampler.
const PARENT_BASED: u8 = 4;

static KIND: AtomicU8 = AtomicU8::new(PARENT_BASED | ALWAYS_ON);
/// A trace id's low 63 bits below this are sampled (OpenTelemetry's
/// `TraceIdRatioBased`, so other SDKs decide alike).
static BOUND: AtomicU64 = AtomicU64::new(1 << 63);

fn bound(ratio: f64) -> u64 {
    if ratio >= 1.0 {
        1 << 63
    } else if ratio > 0.0 {
        (ratio * (1u64 << 63) as f64) as u64
    } else {
        0
    }
}

/// Makes `sampler` the process's sampler.
pub fn set_sampler(sampler: Sampler) {
    let (kind, ratio) = match sampler {
        Sampler::AlwaysOn => (ALWAYS_ON, 1.0),
        Sampler::AlwaysOff => (ALWAYS_OFF, 0.0),
        Sampler::TraceIdRatio(r) => (RATIO, r),
        Sampler::ParentBasedAlwaysOn => (PARENT_BASED | ALWAYS_ON, 1.0),
        Sampler::ParentBasedAlwaysOff => (PARENT_BASED | ALWAYS_OFF, 0.0),
        Sampler::ParentBasedTraceIdRatio(r) => (PARENT_BASED | RATIO, r),
    };
    BOUND.store(bound(ratio), Ordering::Relaxed);
    KIND.store(kind, Ordering::Relaxed);
}

/// The process's sampler.
pub fn sampler() -> Sampler {
    let kind = KIND.load(Ordering::Relaxed);
    let ratio = BOUND.load(Ordering::Relaxed) as f64 / (1u64 << 63) as f64;
    match (kind & PARENT_BASED != 0, kind & !PARENT_BASED) {
        (false, ALWAYS_ON) => Sampler::AlwaysOn,
        (false, ALWAYS_OFF) => Sampler::AlwaysOff,
        (false, _) => Sampler::TraceIdRatio(ratio),
        (true, ALWAYS_ON) => Sampler::ParentBasedAlwaysOn,
        (true, ALWAYS_OFF) => Sampler::ParentBasedAlwaysOff,
        (true, _) => Sampler::ParentBasedTraceIdRatio(ratio),
    }
}

/// Whether a new span of trace `trace_id` is sampled, given its parent's
/// sampled flag (`None` for a root).
#[inline]
pub(crate) fn decide(parent_sampled: Option<bool>, trace_id: TraceId) -> bool {
    let kind = KIND.load(Ordering::Relaxed);
    if kind & PARENT_BASED != 0
        && let Some(sampled) = parent_sampled
    {
        return sampled;
    }
    match kind & !PARENT_BASED {
        ALWAYS_ON => true,
        ALWAYS_OFF => false,
        _ => ((trace_id.to_u128() as u64) >> 1) < BOUND.load(Ordering::Relaxed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_standard_name_parses_and_others_are_refused() {
        for name in [
            "always_on",
            "always_off",
            "traceidratio",
            "parentbased_always_on",
            "parentbased_always_off",
            "parentbased_traceidratio",
        ] {
            assert_eq!(Sampler::from_name(name, Some("0.5")).unwrap().name(), name);
        }
        assert!(Sampler::from_name("jaeger_remote", None).is_err());
        assert!(Sampler::from_name("traceidratio", Some("1.5")).is_err());
        assert!(Sampler::from_name("traceidratio", Some("half")).is_err());
        assert_eq!(
            Sampler::from_name("traceidratio", None).unwrap(),
            Sampler::TraceIdRatio(1.0)
        );
    }

    #[test]
    fn the_ratio_bound_is_the_one_opentelemetry_uses() {
        assert_eq!(bound(0.0), 0);
        assert_eq!(bound(1.0), 1 << 63);
        assert_eq!(bound(0.5), 1 << 62);
    }
}
