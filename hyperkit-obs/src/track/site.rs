//! Per-call-site resolution of label values to metric handles.
//!
//! Each annotated function owns a `static` [`Site`]. When every label of the
//! site has a fixed value set (a literal, an enum deriving `LabelValue`, a
//! `bool`), the site keeps one slot per combination of values and a call
//! costs an index computation and an atomic load. Otherwise the call looks
//! its tuple up in the macro's [`LabelSets`].

use std::sync::OnceLock;

use crate::label::LabelValue;
use crate::metrics::LabelSets;

/// Label combinations a site caches; larger fixed sets are looked up.
const MAX_SLOTS: usize = 4096;

/// The handle cache of one annotated function.
pub struct Site<H: 'static> {
    slots: OnceLock<Box<[OnceLock<&'static H>]>>,
}

impl<H: Sync + 'static> Site<H> {
    /// An empty site, for a `static`.
    #[allow(clippy::new_without_default)]
    pub const fn new() -> Self {
        Site {
            slots: OnceLock::new(),
        }
    }

    #[inline]
    fn slot(&self, len: usize, index: usize, init: impl FnOnce() -> &'static H) -> &'static H {
        let slots = self
            .slots
            .get_or_init(|| (0..len).map(|_| OnceLock::new()).collect());
        match slots.get(index) {
            Some(slot) => slot.get_or_init(init),
            None => init(),
        }
    }
}

/// The fixed position of `v` among `L`'s values, if `L` has a fixed set.
#[inline]
fn fixed<L: LabelValue + ?Sized>(v: &L) -> Option<(usize, usize)> {
    let values = L::VALUES?;
    let i = v.index();
    (i < values.len()).then_some((i, values.len()))
}

/// Handles for a one-label macro.
#[inline]
pub fn resolve1<H, A>(site: &Site<H>, sets: &'static LabelSets<H>, a: &A) -> &'static H
where
    H: Sync + 'static,
    A: LabelValue + ?Sized,
{
    let lookup = || sets.get(&[&a.as_label()]);
    match fixed(a) {
        Some((i, n)) if n <= MAX_SLOTS => site.slot(n, i, lookup),
        _ => lookup(),
    }
}

/// Handles for a two-label macro.
#[inline]
pub fn resolve2<H, A, B>(site: &Site<H>, sets: &'static LabelSets<H>, a: &A, b: &B) -> &'static H
where
    H: Sync + 'static,
    A: LabelValue + ?Sized,
    B: LabelValue + ?Sized,
{
    let lookup = || sets.get(&[&a.as_label(), &b.as_label()]);
    match (fixed(a), fixed(b)) {
        (Some((i, n)), Some((j, m))) if n.saturating_mul(m) <= MAX_SLOTS => {
            site.slot(n * m, i * m + j, lookup)
        }
        _ => lookup(),
    }
}
