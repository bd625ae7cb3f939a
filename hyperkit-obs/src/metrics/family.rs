//! A metric family whose children are keyed by the exact tuple of label
//! values.
//!
//! The `prometheus` crate's `MetricVec` finds a child by an FNV hash of the
//! label values written back to back, and never compares the values: `("ab",
//! "c")` and `("a", "bc")` hash alike and share a child. A [`Family`] compares
//! the values themselves, so no pair of label sets can ever merge. It must
//! never panic: a poisoned lock is recovered, not propagated.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::{Mutex, MutexGuard, PoisonError};

use hashbrown::HashTable;

use prometheus::core::{Collector, Desc, Metric};
use prometheus::proto::{LabelPair, MetricFamily, MetricType};

/// Each child with its label values (in label-name order), in the order
/// they were created, and an index over them by value: finding or adding a
/// child costs one hash, whatever the family's size.
struct Children<M> {
    list: Vec<(Box<[Box<str>]>, M)>,
    /// Each child's `name="value",…`, escaped, for the exposition.
    texts: Vec<Box<str>>,
    index: HashTable<usize>,
    hasher: hashbrown::DefaultHashBuilder,
}

/// The hash of a tuple, element by element with lengths, so that no two
/// distinct tuples are confused by it.
fn hash_of<'a>(
    hasher: &hashbrown::DefaultHashBuilder,
    values: impl ExactSizeIterator<Item = &'a str>,
) -> u64 {
    let mut h = hasher.build_hasher();
    h.write_usize(values.len());
    for v in values {
        h.write_usize(v.len());
        h.write(v.as_bytes());
    }
    h.finish()
}

/// One metric family (name, help, label names) with one child metric per
/// distinct label-value tuple.
pub(crate) struct Family<M> {
    name: &'static str,
    help: &'static str,
    label_names: &'static [&'static str],
    kind: MetricType,
    desc: Desc,
    make: fn(&'static str, &'static str) -> M,
    children: Mutex<Children<M>>,
}

impl<M: Metric + Clone> Family<M> {
    /// A family; `make` builds one unlabelled child (its labels are added at
    /// collection).
    pub(crate) fn new(
        name: &'static str,
        help: &'static str,
        label_names: &'static [&'static str],
        kind: MetricType,
        make: fn(&'static str, &'static str) -> M,
    ) -> Self {
        let desc = Desc::new(
            name.to_owned(),
            help.to_owned(),
            label_names.iter().map(|l| (*l).to_owned()).collect(),
            HashMap::new(),
        )
        .unwrap_or_else(|e| unreachable!("built-in metric {name} has an invalid descriptor: {e}"));
        Family {
            name,
            help,
            label_names,
            kind,
            desc,
            make,
            children: Mutex::new(Children {
                list: Vec::new(),
                texts: Vec::new(),
                index: HashTable::new(),
                hasher: hashbrown::DefaultHashBuilder::default(),
            }),
        }
    }

    /// The child for exactly these label values (one per label name), created
    /// on first use. Values must already be sanitised.
    pub(crate) fn child(&self, values: &[&str]) -> M {
        debug_assert_eq!(values.len(), self.label_names.len(), "{}", self.name);
        let mut guard = self.lock();
        let children = &mut *guard;
        let hash = hash_of(&children.hasher, values.iter().copied());
        let list = &children.list;
        let same = |i: &usize| list[*i].0.iter().map(|s| &**s).eq(values.iter().copied());
        if let Some(&i) = children.index.find(hash, same) {
            return children.list[i].1.clone();
        }
        let m = (self.make)(self.name, self.help);
        let i = children.list.len();
        children
            .list
            .push((values.iter().map(|v| Box::from(*v)).collect(), m.clone()));
        children.texts.push(super::render::label_text(
            self.label_names.iter().copied(),
            values.iter().copied(),
        ));
        let Children {
            list,
            index,
            hasher,
            ..
        } = children;
        index.insert_unique(hash, i, |j| {
            hash_of(hasher, list[*j].0.iter().map(|v| &**v))
        });
        m
    }

    /// The family's name.
    pub(crate) fn name(&self) -> &'static str {
        self.name
    }

    /// Writes the family in the text format: its header, then `series` for
    /// each child with its label text. Holds the family's lock meanwhile,
    /// which only a new child (never a tracked call) waits for.
    pub(crate) fn write(
        &self,
        out: &mut Vec<u8>,
        kind: &'static str,
        format: super::render::Format,
        series: impl Fn(&mut Vec<u8>, &str, &[u8], &M),
    ) {
        let children = self.lock();
        if children.list.is_empty() {
            return;
        }
        super::render::header(out, self.name, self.help, kind, format);
        for ((_, child), labels) in children.list.iter().zip(&children.texts) {
            series(out, self.name, labels.as_bytes(), child);
        }
    }

    fn lock(&self) -> MutexGuard<'_, Children<M>> {
        self.children.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl<M: Metric + Clone + Send + Sync> Collector for Family<M> {
    fn desc(&self) -> Vec<&Desc> {
        vec![&self.desc]
    }

    fn collect(&self) -> Vec<MetricFamily> {
        if super::render::native_pass() {
            return Vec::new();
        }
        let children = self.lock();
        let mut metrics = Vec::with_capacity(children.list.len());
        for (values, child) in children.list.iter() {
            let mut metric = child.metric();
            let pairs = self
                .label_names
                .iter()
                .zip(values.iter())
                .map(|(name, value)| {
                    let mut pair = LabelPair::default();
                    pair.set_name((*name).to_owned());
                    pair.set_value(value.to_string());
                    pair
                })
                .collect();
            metric.set_label(pairs);
            metrics.push(metric);
        }
        drop(children);
        let mut family = MetricFamily::default();
        family.set_name(self.name.to_owned());
        family.set_help(self.help.to_owned());
        family.set_field_type(self.kind);
        family.set_metric(metrics);
        vec![family]
    }
}

/// Lets a `&'static Family` be registered in a `prometheus::Registry`.
pub(crate) struct Registered<M: 'static>(pub(crate) &'static Family<M>);

impl<M: Metric + Clone + Send + Sync> Collector for Registered<M> {
    fn desc(&self) -> Vec<&Desc> {
        self.0.desc()
    }
    fn collect(&self) -> Vec<MetricFamily> {
        self.0.collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus::IntCounter;

    fn counter(name: &'static str, help: &'static str) -> IntCounter {
        IntCounter::new(name, help).expect("valid test metric")
    }

    #[test]
    fn tuples_that_concatenate_alike_stay_apart() {
        let family = Family::new("t_total", "test", &["a", "b"], MetricType::COUNTER, counter);
        family.child(&["ab", "c"]).inc();
        family.child(&["a", "bc"]).inc_by(5);
        family.child(&["ab", "c"]).inc();
        let mf = family.collect().remove(0);
        let mut seen: Vec<(String, String, f64)> = mf
            .get_metric()
            .iter()
            .map(|m| {
                let l = m.get_label();
                (
                    l[0].value().to_owned(),
                    l[1].value().to_owned(),
                    m.get_counter().get_value(),
                )
            })
            .collect();
        seen.sort_by(|x, y| x.0.cmp(&y.0));
        assert_eq!(
            seen,
            vec![
                ("a".into(), "bc".into(), 5.0),
                ("ab".into(), "c".into(), 2.0)
            ]
        );
    }
}
