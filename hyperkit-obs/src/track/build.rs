//! Handles of `#[track_build]`: `hyperkit_builds_total{status,chain}`,
//! `hyperkit_build_duration_seconds{chain}`, `hyperkit_active_builds{chain}`.

use std::time::Duration;

use prometheus::{IntCounter, IntGauge};

use super::{Handles, Status};
use crate::metrics::{DurationHistogram, FAMILIES, LabelSets};

/// The pre-resolved metrics of one chain.
pub struct BuildHandles {
    calls: [IntCounter; 4],
    duration: DurationHistogram,
    values: Box<[Box<str>]>,
    active: IntGauge,
}

impl BuildHandles {
    fn new(labels: &[&str]) -> Self {
        let chain = labels[0];
        let f = &*FAMILIES;
        BuildHandles {
            calls: Status::ALL.map(|s| f.builds_total.child(&[s.as_str(), chain])),
            values: Box::new([Box::from(chain)]),
            duration: f.build_duration.child(&[chain]),
            active: f.active_builds.child(&[chain]),
        }
    }
}

impl Handles for BuildHandles {
    fn domain(&self) -> &'static str {
        "build"
    }

    fn labels(&self) -> (&'static [&'static str], &[Box<str>]) {
        (&["chain"], &self.values)
    }

    #[inline]
    fn record(&self, status: Status, elapsed: Duration) {
        self.calls[status.index()].inc();
        self.duration.observe(elapsed);
    }

    #[inline]
    fn in_flight(&self) -> Option<&IntGauge> {
        Some(&self.active)
    }
}

/// Every chain seen by `#[track_build]`.
pub static BUILDS: LabelSets<BuildHandles> =
    LabelSets::new("hyperkit_builds_total", &["chain"], BuildHandles::new);
