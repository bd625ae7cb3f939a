//! Exemplars: for each histogram bucket and each calls counter of a label
//! set, the sampled call that last updated it (its trace and span ids, its
//! value and when), as OpenMetrics shows them after a sample.
//!
//! Only a sampled call writes here, after its metrics are recorded; an
//! unsampled call never touches this module. The slots of a label set are
//! made on its first sampled call and guarded by a lock that a writer only
//! tries: a call that finds it taken (another thread writing the same
//! label set, or a scrape reading it) leaves the exemplar to the next call
//! rather than wait. Nothing here blocks or panics.

use std::sync::{Mutex, PoisonError};
use std::time::SystemTime;

use crate::trace::{SpanId, TraceId};

/// One exemplar.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Exemplar {
    pub(crate) trace_id: TraceId,
    pub(crate) span_id: SpanId,
    /// The observed duration, in nanoseconds (a counter's exemplar has
    /// value 1: the increment).
    pub(crate) value_ns: u64,
    /// When the call finished.
    pub(crate) at: SystemTime,
}

/// The exemplars of one label set.
pub(crate) struct Exemplars {
    slots: Mutex<Slots>,
}

#[derive(Clone, Default)]
pub(crate) struct Slots {
    /// One per bucket (the last `+Inf`).
    pub(crate) buckets: Vec<Option<Exemplar>>,
    /// One per status (success, failure, panic, cancelled).
    pub(crate) calls: [Option<Exemplar>; 4],
}

impl Exemplars {
    /// Slots for a histogram of `buckets` buckets (`+Inf` included).
    pub(crate) fn new(buckets: usize) -> Self {
        Exemplars {
            slots: Mutex::new(Slots {
                buckets: vec![None; buckets],
                calls: [None; 4],
            }),
        }
    }

    /// Records `exemplar` for bucket `bucket` and status `status`, unless
    /// another thread holds the slots right now.
    pub(crate) fn offer(&self, bucket: usize, status: usize, exemplar: Exemplar) {
        let Ok(mut slots) = self.slots.try_lock() else {
            return;
        };
        if let Some(slot) = slots.buckets.get_mut(bucket) {
            *slot = Some(exemplar);
        }
        if let Some(slot) = slots.calls.get_mut(status) {
            *slot = Some(exemplar);
        }
    }

    /// A copy of the slots, for a scrape.
    pub(crate) fn snapshot(&self) -> Slots {
        self.slots
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// Appends ` # {trace_id="…",span_id="…"} <value> <timestamp>` to a sample
/// line (before its newline), as OpenMetrics writes an exemplar.
pub(crate) fn write(out: &mut Vec<u8>, exemplar: &Exemplar, value: impl FnOnce(&mut Vec<u8>)) {
    out.extend_from_slice(b" # {trace_id=\"");
    exemplar.trace_id.write_hex(out);
    out.extend_from_slice(b"\",span_id=\"");
    exemplar.span_id.write_hex(out);
    out.extend_from_slice(b"\"} ");
    value(out);
    out.push(b' ');
    let since = exemplar
        .at
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    crate::util::write_u64(out, since.as_secs());
    out.push(b'.');
    crate::util::write_padded(out, u64::from(since.subsec_millis()), 3);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn exemplar(ns: u64) -> Exemplar {
        Exemplar {
            trace_id: TraceId::from_u128(0xabc).unwrap(),
            span_id: SpanId::from_u64(0xdef).unwrap(),
            value_ns: ns,
            at: SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_042),
        }
    }

    #[test]
    fn the_last_offer_wins_and_is_written_as_openmetrics_wants() {
        let e = Exemplars::new(3);
        e.offer(1, 0, exemplar(5));
        e.offer(1, 1, exemplar(7));
        let s = e.snapshot();
        assert_eq!(s.buckets[1].unwrap().value_ns, 7);
        assert_eq!(s.calls[0].unwrap().value_ns, 5);
        assert!(s.buckets[0].is_none() && s.calls[2].is_none());
        let mut out = Vec::new();
        write(&mut out, &s.buckets[1].unwrap(), |o| o.push(b'1'));
        assert_eq!(
            String::from_utf8(out).unwrap(),
            format!(
                " # {{trace_id=\"{:032x}\",span_id=\"{:016x}\"}} 1 1700000000.042",
                0xabc, 0xdef
            )
        );
    }

    #[test]
    fn an_offer_out_of_range_is_ignored() {
        let e = Exemplars::new(1);
        e.offer(9, 9, exemplar(1));
        let s = e.snapshot();
        assert!(s.buckets[0].is_none() && s.calls.iter().all(Option::is_none));
    }
}
