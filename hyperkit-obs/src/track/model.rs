//! Handles of `#[track_model]`: `hyperkit_model_calls_total{model,task,status}`,
//! `hyperkit_model_latency_seconds{model,task}`,
//! `hyperkit_model_tokens_total{model,task,type}` and
//! `hyperkit_model_acceptance_total{model,task,accepted}`.

use std::time::Duration;

use prometheus::IntCounter;

use std::num::NonZeroU64;
use std::sync::atomic::{AtomicU64, Ordering};

use super::{Handles, Status};
use crate::metrics::{DurationHistogram, FAMILIES, LabelSets};
use crate::model::{CallId, Usage};

/// The pre-resolved metrics of one (model, task) pair.
pub struct ModelHandles {
    /// `model` and `task`.
    values: Box<[Box<str>]>,
    calls: [IntCounter; 4],
    latency: DurationHistogram,
    input_tokens: IntCounter,
    output_tokens: IntCounter,
    /// Indexed by `accepted as usize`.
    acceptance: [IntCounter; 2],
}

impl ModelHandles {
    fn new(labels: &[&str]) -> Self {
        let (model, task) = (labels[0], labels[1]);
        let f = &*FAMILIES;
        ModelHandles {
            values: Box::new([Box::from(model), Box::from(task)]),
            calls: Status::ALL.map(|s| f.model_calls_total.child(&[model, task, s.as_str()])),
            latency: f.model_latency.child(&[model, task]),
            input_tokens: f.model_tokens_total.child(&[model, task, "input"]),
            output_tokens: f.model_tokens_total.child(&[model, task, "output"]),
            acceptance: ["false", "true"]
                .map(|a| f.model_acceptance_total.child(&[model, task, a])),
        }
    }

    /// The `model` label.
    pub fn model(&self) -> &str {
        &self.values[0]
    }

    /// The `task` label.
    pub fn task(&self) -> &str {
        &self.values[1]
    }

    /// Counts one output whose acceptance became known.
    pub fn record_acceptance(&self, accepted: bool) {
        self.acceptance[usize::from(accepted)].inc();
    }
}

/// The sequence of model call ids in this process.
static NEXT_CALL: AtomicU64 = AtomicU64::new(1);

impl Handles for ModelHandles {
    fn domain(&self) -> &'static str {
        "model"
    }

    fn labels(&self) -> (&'static [&'static str], &[Box<str>]) {
        (&["model", "task"], &self.values)
    }

    #[inline]
    fn call_id(&'static self) -> Option<CallId> {
        let seq = NEXT_CALL.fetch_add(1, Ordering::Relaxed);
        NonZeroU64::new(seq).map(|seq| CallId::new(seq, self))
    }

    #[inline]
    fn record(&self, status: Status, elapsed: Duration) {
        self.calls[status.index()].inc();
        self.latency.observe(elapsed);
    }

    #[inline]
    fn record_usage(&self, usage: &Usage) {
        if let Some(n) = usage.input_tokens {
            self.input_tokens.inc_by(n);
        }
        if let Some(n) = usage.output_tokens {
            self.output_tokens.inc_by(n);
        }
        if let Some(a) = usage.accepted {
            self.record_acceptance(a);
        }
    }
}

/// Every (model, task) pair seen by `#[track_model]`.
pub static MODELS: LabelSets<ModelHandles> = LabelSets::new(
    "hyperkit_model_calls_total",
    &["model", "task"],
    ModelHandles::new,
);
