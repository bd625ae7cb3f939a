//! The label sets of one tracking macro, each with its pre-resolved metric
//! handles, and the cardinality guard.
//!
//! A [`LabelSets`] maps an exact tuple of label values to a `&'static` bundle
//! of handles (counters, histogram, gauge), created once and never freed: the
//! cardinality limits bound how many can exist. Two limits apply to the
//! labels fed at run time (strings, integers); labels with a fixed set of
//! values (enums, literals, `bool`) are never replaced:
//! - a label that already holds [`max_label_values`] distinct values records
//!   every new value as [`OVERFLOW_VALUE`], counted in
//!   `hyperkit_obs_label_overflow_total{metric,label}`;
//! - a family that already holds [`max_label_sets`] label sets records a new
//!   tuple with every runtime label set to [`OVERFLOW_VALUE`], counted in
//!   `hyperkit_obs_label_overflow_total{metric,label="*"}`.
//!
//! Each limit is warned about once per family. Lookups of known tuples take
//! a read lock and one hash; nothing here blocks for long or panics.

use std::borrow::Cow;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{PoisonError, RwLock};

use hashbrown::{Equivalent, HashMap, HashSet};

use crate::label::{OVERFLOW_VALUE, sanitize};

/// Default for the number of distinct values one label keeps.
pub const DEFAULT_MAX_LABEL_VALUES: usize = 1000;

static MAX_LABEL_VALUES: AtomicUsize = AtomicUsize::new(DEFAULT_MAX_LABEL_VALUES);

/// Sets how many distinct values a label fed at run time keeps before new
/// values are recorded as `__overflow__`. Applies to values first seen after
/// the call. `init()` sets it from `HYPERKIT_MAX_LABEL_VALUES`.
pub fn set_max_label_values(limit: usize) {
    MAX_LABEL_VALUES.store(limit.max(1), Ordering::Relaxed);
}

/// The current per-label limit on distinct values.
pub fn max_label_values() -> usize {
    MAX_LABEL_VALUES.load(Ordering::Relaxed)
}

/// Default for the number of label sets one family keeps.
pub const DEFAULT_MAX_LABEL_SETS: usize = 10_000;

static MAX_LABEL_SETS: AtomicUsize = AtomicUsize::new(DEFAULT_MAX_LABEL_SETS);

/// Sets how many label sets one family keeps before a new tuple is
/// recorded with its runtime labels as `__overflow__`. `init()` sets it from
/// `HYPERKIT_MAX_LABEL_SETS`.
pub fn set_max_label_sets(limit: usize) {
    MAX_LABEL_SETS.store(limit.max(1), Ordering::Relaxed);
}

/// The current per-family limit on label sets.
pub fn max_label_sets() -> usize {
    MAX_LABEL_SETS.load(Ordering::Relaxed)
}

/// The `label` value of `hyperkit_obs_label_overflow_total` when a family
/// reached its limit of label sets.
pub const ALL_LABELS: &str = "*";

/// An owned label tuple, hashed element by element with lengths so that no
/// two distinct tuples are confused.
#[derive(PartialEq, Eq)]
struct Key(Box<[Box<str>]>);

/// A borrowed label tuple that finds a [`Key`] without allocating.
struct KeyRef<'a>(&'a [Cow<'a, str>]);

fn hash_parts<'a, H: Hasher>(parts: impl ExactSizeIterator<Item = &'a str>, state: &mut H) {
    state.write_usize(parts.len());
    for p in parts {
        state.write_usize(p.len());
        state.write(p.as_bytes());
    }
}

impl Hash for Key {
    fn hash<H: Hasher>(&self, state: &mut H) {
        hash_parts(self.0.iter().map(|s| &**s), state);
    }
}

impl Hash for KeyRef<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        hash_parts(self.0.iter().map(|s| &**s), state);
    }
}

impl Equivalent<Key> for KeyRef<'_> {
    fn equivalent(&self, key: &Key) -> bool {
        key.0.len() == self.0.len() && key.0.iter().zip(self.0).all(|(a, b)| **a == **b)
    }
}

/// One label set: its values (sanitised) and its handles. Created once per
/// distinct tuple and never freed, so it can be handed out as `&'static`.
pub struct Entry<H: 'static> {
    values: Box<[Box<str>]>,
    /// The pre-resolved metric handles.
    pub handles: H,
}

impl<H> Entry<H> {
    /// Whether this entry's values are exactly `values`.
    #[inline]
    pub fn is(&self, values: &[Cow<'_, str>]) -> bool {
        self.values.len() == values.len()
            && self
                .values
                .iter()
                .zip(values)
                .all(|(a, b)| same_text(a.as_bytes(), b.as_bytes()))
    }

    /// The label values, sanitised, in label order.
    pub fn values(&self) -> impl Iterator<Item = &str> {
        self.values.iter().map(|v| &**v)
    }

    /// The values as stored.
    pub(crate) fn value_slice(&self) -> &[Box<str>] {
        &self.values
    }
}

impl<H> Entry<H> {
    /// Value `i`, or `""` past the last.
    pub(crate) fn value(&'static self, i: usize) -> &'static str {
        self.values.get(i).map_or("", |v| &**v)
    }
}

/// Byte equality, inlined for the short values labels usually hold
/// (`memcmp` is a call into libc, which costs more than comparing up to
/// sixteen bytes as two words).
#[inline(always)]
pub(crate) fn same_text(a: &[u8], b: &[u8]) -> bool {
    let word = |s: &[u8], at: usize| {
        s.get(at..at + 8)
            .and_then(|w| <[u8; 8]>::try_from(w).ok())
            .map_or(0, u64::from_ne_bytes)
    };
    let n = a.len();
    if n != b.len() {
        false
    } else if (8..=16).contains(&n) {
        // Two words, overlapping when shorter than sixteen bytes.
        word(a, 0) == word(b, 0) && word(a, n - 8) == word(b, n - 8)
    } else {
        a == b
    }
}

struct Inner<H: 'static> {
    sets: HashMap<Key, &'static Entry<H>>,
    /// The entries in the order they were made, for collection.
    order: Vec<&'static Entry<H>>,
    /// Distinct values admitted per label position.
    distinct: Vec<HashSet<Box<str>>>,
}

/// All label sets of one macro's metrics.
pub struct LabelSets<H: 'static> {
    /// The family named in `hyperkit_obs_label_overflow_total{metric}`.
    metric: &'static str,
    label_names: &'static [&'static str],
    make: fn(&[&str]) -> H,
    warned: [AtomicBool; 4],
    warned_sets: AtomicBool,
    inner: RwLock<Option<Inner<H>>>,
}

impl<H: Sync + 'static> LabelSets<H> {
    /// Label sets for `label_names` (at most four); `make` builds the handles
    /// for one tuple of sanitised values.
    pub(crate) const fn new(
        metric: &'static str,
        label_names: &'static [&'static str],
        make: fn(&[&str]) -> H,
    ) -> Self {
        LabelSets {
            metric,
            label_names,
            make,
            warned: [const { AtomicBool::new(false) }; 4],
            warned_sets: AtomicBool::new(false),
            inner: RwLock::new(None),
        }
    }

    /// The entry for these label values (one per label name), all of them
    /// fed at run time.
    pub fn get(&'static self, values: &[Cow<'_, str>]) -> &'static Entry<H> {
        self.get_with(values, u64::MAX)
    }

    /// The entry for these label values (one per label name); bit `i` of
    /// `open` says label `i` was fed at run time (only those are ever
    /// replaced by `__overflow__`).
    pub fn get_with(&'static self, values: &[Cow<'_, str>], open: u64) -> &'static Entry<H> {
        // A known tuple is stored sanitised, so a raw value that finds it was
        // clean: sanitise only on a miss.
        {
            let guard = self.inner.read().unwrap_or_else(PoisonError::into_inner);
            if let Some(e) = guard.as_ref().and_then(|i| i.sets.get(&KeyRef(values))) {
                return e;
            }
        }
        let mut values: Vec<Cow<'_, str>> = values.iter().map(|v| sanitize(v)).collect();
        {
            let guard = self.inner.read().unwrap_or_else(PoisonError::into_inner);
            if let Some(inner) = guard.as_ref() {
                if let Some(e) = inner.sets.get(&KeyRef(&values)) {
                    return e;
                }
                if self.apply_overflow(inner, &mut values, open)
                    && let Some(e) = inner.sets.get(&KeyRef(&values))
                {
                    return e;
                }
            }
        }
        let mut guard = self.inner.write().unwrap_or_else(PoisonError::into_inner);
        let inner = guard.get_or_insert_with(|| Inner {
            sets: HashMap::new(),
            order: Vec::new(),
            distinct: self.label_names.iter().map(|_| HashSet::new()).collect(),
        });
        if let Some(e) = inner.sets.get(&KeyRef(&values)) {
            return e;
        }
        self.apply_overflow(inner, &mut values, open);
        if let Some(e) = inner.sets.get(&KeyRef(&values)) {
            return e;
        }
        let parts: Vec<&str> = values.iter().map(|v| &**v).collect();
        let entry: &'static Entry<H> = Box::leak(Box::new(Entry {
            values: parts.iter().map(|p| Box::from(*p)).collect(),
            handles: (self.make)(&parts),
        }));
        for (seen, value) in inner.distinct.iter_mut().zip(&parts) {
            if !seen.contains(*value) {
                seen.insert(Box::from(*value));
            }
        }
        inner.sets.insert(Key(entry.values.clone()), entry);
        inner.order.push(entry);
        entry
    }

    /// The number of label sets created so far.
    pub fn len(&self) -> usize {
        self.inner
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .map_or(0, |i| i.sets.len())
    }

    /// Every label set, in the order they were made. Holds the read lock
    /// only while the pointers are copied.
    pub fn entries(&self) -> Vec<&'static Entry<H>> {
        self.inner
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .map_or_else(Vec::new, |i| i.order.clone())
    }

    /// Whether no label set was created yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Replaces with the overflow value each runtime value whose label is
    /// full and has not seen it, then, if the family is full and the tuple
    /// is new, every runtime value. Returns whether anything was replaced.
    fn apply_overflow(&self, inner: &Inner<H>, values: &mut [Cow<'_, str>], open: u64) -> bool {
        let is_open = |i: usize| i >= 64 || open & (1 << i) != 0;
        let limit = max_label_values();
        let mut replaced = false;
        for (i, value) in values.iter_mut().enumerate() {
            if !is_open(i) {
                continue;
            }
            let seen = &inner.distinct[i];
            if seen.len() >= limit && !seen.contains(&**value) && value != OVERFLOW_VALUE {
                let label = self.label_names[i];
                super::label_overflow(self.metric, label);
                if !self.warned[i.min(3)].swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        metric = self.metric,
                        label,
                        limit,
                        "label `{label}` of `{}` reached {limit} distinct values; new values are recorded as `{OVERFLOW_VALUE}` (raise HYPERKIT_MAX_LABEL_VALUES if this is expected)",
                        self.metric
                    );
                }
                *value = Cow::Borrowed(OVERFLOW_VALUE);
                replaced = true;
            }
        }
        let sets = max_label_sets();
        let any_open = (0..values.len()).any(is_open);
        if any_open && inner.sets.len() >= sets && !inner.sets.contains_key(&KeyRef(values)) {
            let all_overflow = values
                .iter()
                .enumerate()
                .all(|(i, v)| !is_open(i) || v == OVERFLOW_VALUE);
            if !all_overflow {
                for (i, value) in values.iter_mut().enumerate() {
                    if is_open(i) {
                        *value = Cow::Borrowed(OVERFLOW_VALUE);
                    }
                }
                super::label_overflow(self.metric, ALL_LABELS);
                if !self.warned_sets.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        metric = self.metric,
                        limit = sets,
                        "`{}` reached {sets} label sets; new ones are recorded with their runtime labels as `{OVERFLOW_VALUE}` (raise HYPERKIT_MAX_LABEL_SETS if this is expected)",
                        self.metric
                    );
                }
                replaced = true;
            }
        }
        replaced
    }
}

#[cfg(test)]
mod tests {
    use super::same_text;

    #[test]
    fn text_is_equal_exactly_when_every_byte_is() {
        for n in 0..40usize {
            let a: Vec<u8> = (0..n).map(|i| b'a' + (i % 26) as u8).collect();
            assert!(same_text(&a, &a.clone()), "length {n}");
            for at in 0..n {
                let mut b = a.clone();
                b[at] ^= 0x20;
                assert!(!same_text(&a, &b), "length {n}, byte {at} differs");
            }
            let mut longer = a.clone();
            longer.push(b'z');
            assert!(!same_text(&a, &longer), "length {n} against {}", n + 1);
        }
    }
}
