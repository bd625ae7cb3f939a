//! What only model calls have: call ids, token usage and acceptance, in
//! `hyperkit_model_tokens_total{model,task,type}` and
//! `hyperkit_model_acceptance_total{model,task,accepted}`, cost in
//! `hyperkit_model_cost_usd_total{model,task}` (see `crate::prices`), and
//! quality scores in `hyperkit_model_score{model,task,score}`.

use std::cell::Cell;
use std::num::NonZeroU64;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::metrics::DomainHandles;
use crate::model::Usage;

/// Ids each thread takes from the process-wide sequence at once, so that
/// threads making model calls do not all write one shared counter.
const BLOCK: u64 = 1024;

/// The next unclaimed block of the process's call ids.
static NEXT_BLOCK: AtomicU64 = AtomicU64::new(1);

thread_local! {
    /// This thread's next id and the end of its block.
    static IDS: Cell<(u64, u64)> = const { Cell::new((0, 0)) };
}

/// The next id of this thread's block, claiming a new block when it is
/// used up.
#[inline]
fn take(ids: &Cell<(u64, u64)>) -> u64 {
    let (next, end) = ids.get();
    let (next, end) = if next < end {
        (next, end)
    } else {
        let start = NEXT_BLOCK.fetch_add(BLOCK, Ordering::Relaxed);
        (start, start + BLOCK)
    };
    ids.set((next + 1, end));
    next
}

/// A new model call's sequence number (its id with its label set): unique
/// in the process (and, with the process key, across processes), increasing
/// on each thread.
#[inline]
pub(crate) fn next_call_id() -> Option<NonZeroU64> {
    let seq = IDS
        .try_with(take)
        // A call made while this thread's locals are destroyed takes an id
        // of its own from the sequence.
        .unwrap_or_else(|_| NEXT_BLOCK.fetch_add(1, Ordering::Relaxed));
    NonZeroU64::new(seq)
}

/// Records the token usage, cost and acceptance read from a model call's
/// output; returns the cost in pico-dollars when the model is priced.
#[inline]
pub(crate) fn record_usage(handles: &DomainHandles, usage: &Usage) -> Option<u64> {
    let Some(m) = &handles.model else {
        return None;
    };
    if let Some(n) = usage.input_tokens {
        m.input_tokens.inc_by(n);
    }
    if let Some(n) = usage.output_tokens {
        m.output_tokens.inc_by(n);
    }
    if let Some(a) = usage.accepted {
        record_acceptance(handles, a);
    }
    m.pricing.record(usage)
}

/// Counts one output whose acceptance became known.
pub(crate) fn record_acceptance(handles: &DomainHandles, accepted: bool) {
    if let Some(m) = &handles.model {
        m.acceptance[usize::from(accepted)].inc();
    }
}

/// The series of one score name of one model and task.
pub(crate) struct ScoreHandles {
    histogram: crate::metrics::DurationHistogram,
    out_of_range: prometheus::IntCounter,
}

impl ScoreHandles {
    fn new(values: &[&str]) -> Self {
        let f = &*crate::metrics::FAMILIES;
        ScoreHandles {
            histogram: f.model_score.child(values),
            out_of_range: f.model_score_out_of_range_total.child(values),
        }
    }
}

/// The score series, under the cardinality guard: the `score` label (the
/// only one fed here; model and task come from an admitted label set)
/// keeps `HYPERKIT_MAX_LABEL_VALUES` distinct names, and the family
/// `HYPERKIT_MAX_LABEL_SETS` label sets, beyond which a new one is
/// recorded as `__overflow__` and counted in
/// `hyperkit_obs_label_overflow_total{metric="hyperkit_model_score"}`.
static SCORES: crate::metrics::LabelSets<ScoreHandles> = crate::metrics::LabelSets::new(
    "hyperkit_model_score",
    &["model", "task", "score"],
    ScoreHandles::new,
);

/// Counts one score of a call of `model` and `task`: in the histogram when
/// it is within [0, 1], as out of range otherwise.
pub(crate) fn record_score(model: &str, task: &str, name: &str, value: f64) {
    use std::borrow::Cow;
    let entry = SCORES.get_with(
        &[
            Cow::Borrowed(model),
            Cow::Borrowed(task),
            Cow::Borrowed(name),
        ],
        0b100,
    );
    if (0.0..=1.0).contains(&value) {
        entry
            .handles
            .histogram
            .observe(std::time::Duration::from_secs_f64(value));
    } else {
        entry.handles.out_of_range.inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn call_ids_are_unique_across_threads_and_increase_on_each() {
        let per_thread = BLOCK * 3 + 7;
        let threads: Vec<_> = (0..4)
            .map(|_| {
                std::thread::spawn(move || {
                    (0..per_thread)
                        .map(|_| IDS.with(take))
                        .collect::<Vec<u64>>()
                })
            })
            .collect();
        let mut all = Vec::new();
        for t in threads {
            let ids = t.join().expect("no panic");
            assert!(
                ids.windows(2).all(|w| w[0] < w[1]),
                "increasing on a thread"
            );
            all.extend(ids);
        }
        let n = all.len();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), n, "no id given twice");
        assert!(all.iter().all(|id| *id > 0));
    }
}
