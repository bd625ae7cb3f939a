//! Per-call-site resolution of label values to metric handles.
//!
//! Each annotated function owns a `static` [`Site`]. When every label of the
//! call has a fixed value set (a literal, an enum deriving `LabelValue`, a
//! `bool`), the site keeps one slot per combination of values and a call
//! costs an index computation and two atomic loads. Otherwise the site
//! remembers the last label set it resolved, so a function called with the
//! same open values again (the common case) compares strings instead of
//! hashing; on a miss it looks the tuple up in the macro's [`LabelSets`].
//!
//! A `static` in a generic function is shared by all its instances, so the
//! site of a generic function remembers which value sets its slots were
//! built for and resolves calls with other sets by lookup.

use std::borrow::Cow;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicPtr, Ordering};

use crate::label::LabelRef;
use crate::metrics::{Entry, LabelSets, same_text};

/// Label combinations a site caches; larger fixed sets are looked up.
const MAX_SLOTS: usize = 4096;

struct Slots<H: 'static> {
    /// The value set of each label the slots were built for.
    sets: Box<[&'static [&'static str]]>,
    cells: Box<[OnceLock<&'static Entry<H>>]>,
}

/// The handle cache of one annotated function.
pub struct Site<H: 'static> {
    /// The function's name.
    pub function: &'static str,
    /// The function's module path.
    pub module: &'static str,
    /// Emits the closing event of a call here (generated per site, so the
    /// event's target is the user's module).
    pub(crate) log: super::LogFn,
    slots: OnceLock<Slots<H>>,
    /// A generic function's site: its instances may give labels of other
    /// types, so the slots' value sets are checked on each call.
    generic: bool,
    /// The entry of the last open label set resolved here (null at first).
    /// Only ever holds pointers from `&'static Entry`, which are never freed.
    last: AtomicPtr<Entry<H>>,
}

impl<H: Sync + 'static> Site<H> {
    /// An empty site for `function` in `module`, for a `static`; `log`
    /// emits its calls' closing events.
    pub const fn new(function: &'static str, module: &'static str, log: super::LogFn) -> Self {
        Site {
            function,
            module,
            log,
            slots: OnceLock::new(),
            generic: false,
            last: AtomicPtr::new(std::ptr::null_mut()),
        }
    }

    /// An empty site for a generic function, whose label types may differ
    /// between its instances.
    pub const fn generic(function: &'static str, module: &'static str, log: super::LogFn) -> Self {
        Site {
            function,
            module,
            log,
            slots: OnceLock::new(),
            generic: true,
            last: AtomicPtr::new(std::ptr::null_mut()),
        }
    }

    fn last(&self) -> Option<&'static Entry<H>> {
        let ptr = self.last.load(Ordering::Acquire);
        // SAFETY: `last` is null or was stored from a `&'static Entry<H>`
        // (entries are leaked by `LabelSets` and never freed), so the pointer
        // is valid, aligned and immutable for the rest of the program.
        #[allow(unsafe_code)]
        unsafe {
            ptr.as_ref()
        }
    }

    fn remember(&self, entry: &'static Entry<H>) {
        self.last
            .store(std::ptr::from_ref(entry).cast_mut(), Ordering::Release);
    }
}

fn same_set(a: &'static [&'static str], b: &'static [&'static str]) -> bool {
    std::ptr::eq(a, b) || a == b
}

/// The label set of one call, its labels in the domain's order.
#[inline(always)]
pub fn resolve<H: Sync + 'static, const N: usize>(
    site: &Site<H>,
    sets: &'static LabelSets<H>,
    labels: [LabelRef<'_>; N],
) -> &'static Entry<H> {
    if let Some(entry) = resolve_fixed(site, sets, &labels) {
        return entry;
    }
    if let Some(entry) = last_borrowed(site, &labels) {
        return entry;
    }
    resolve_open(site, sets, labels)
}

/// The site's last open label set, when every label is borrowed text (a
/// `&str`, a `String`) equal to its value: the common call of a function
/// whose labels are string parameters, given the same values again, costs
/// a word comparison or two per label, inline.
#[inline(always)]
fn last_borrowed<H: Sync + 'static, const N: usize>(
    site: &Site<H>,
    labels: &[LabelRef<'_>; N],
) -> Option<&'static Entry<H>> {
    let last = site.last()?;
    let values = last.value_slice();
    let same = values.len() == N
        && values.iter().zip(labels).all(|(value, label)| {
            label
                .borrowed()
                .is_some_and(|text| same_text(value.as_bytes(), text.as_bytes()))
        });
    same.then_some(last)
}

#[inline]
fn resolve_open<H: Sync + 'static, const N: usize>(
    site: &Site<H>,
    sets: &'static LabelSets<H>,
    labels: [LabelRef<'_>; N],
) -> &'static Entry<H> {
    let values: [Cow<'_, str>; N] = labels.map(|l| l.text());
    if let Some(last) = site.last()
        && last.is(&values)
    {
        return last;
    }
    let open = labels
        .iter()
        .enumerate()
        .filter(|(_, l)| l.fixed.is_none())
        .fold(0u64, |mask, (i, _)| mask | (1 << i.min(63)));
    let entry = sets.get_with(&values, open);
    if entry.is(&values) {
        site.remember(entry);
    }
    entry
}

#[inline(always)]
fn resolve_fixed<H: Sync + 'static, const N: usize>(
    site: &Site<H>,
    sets: &'static LabelSets<H>,
    labels: &[LabelRef<'_>; N],
) -> Option<&'static Entry<H>> {
    let mut total = 1usize;
    let mut index = 0usize;
    for label in labels {
        let (set, i) = label.fixed?;
        total = total.checked_mul(set.len())?;
        index = index * set.len() + i;
    }
    if total > MAX_SLOTS {
        return None;
    }
    // The common call: the slots and this combination's slot are made, and
    // a non-generic function's slots fit its labels. Three loads, inline;
    // the rest (making them, a generic function's check) is out of line,
    // so the labels are only written to memory there.
    if !site.generic
        && let Some(slots) = site.slots.get()
        && let Some(entry) = slots.cells.get(index).and_then(OnceLock::get)
    {
        return Some(*entry);
    }
    // The labels by value: copied to memory in the cold call's block only,
    // where passing them by reference would keep them there on every call.
    fill_fixed(site, sets, *labels, total, index)
}

/// [`resolve_fixed`] for a slot not made yet, or a generic function's.
#[cold]
#[inline(never)]
fn fill_fixed<H: Sync + 'static, const N: usize>(
    site: &Site<H>,
    sets: &'static LabelSets<H>,
    labels: [LabelRef<'_>; N],
    total: usize,
    index: usize,
) -> Option<&'static Entry<H>> {
    let slots = site.slots.get_or_init(|| Slots {
        sets: labels.iter().filter_map(|l| l.fixed.map(|f| f.0)).collect(),
        cells: (0..total).map(|_| OnceLock::new()).collect(),
    });
    // A non-generic function's labels always have the same types, so the
    // slots fit them; a generic one's are checked.
    if site.generic {
        let built_for_these = slots.cells.len() == total
            && slots
                .sets
                .iter()
                .zip(&labels)
                .all(|(s, l)| l.fixed.is_some_and(|(set, _)| same_set(s, set)));
        if !built_for_these {
            return None;
        }
    }
    let cell = slots.cells.get(index)?;
    Some(*cell.get_or_init(|| {
        let values: [Cow<'_, str>; N] = std::array::from_fn(|i| labels[i].text());
        // Every label has a fixed set of values: none is ever replaced.
        sets.get_with(&values, 0)
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_log(_: &super::super::Finished<'_>) {}

    fn joined(values: &[&str]) -> String {
        values.join("|")
    }

    static SETS: LabelSets<String> = LabelSets::new("site_test_calls_total", &["a", "b"], joined);
    static SITE: Site<String> = Site::new("f", "m", no_log);

    fn resolved(a: &str, b: &str) -> &'static Entry<String> {
        resolve(&SITE, &SETS, [LabelRef::new(&a), LabelRef::new(&b)])
    }

    #[test]
    fn open_values_given_again_find_their_set_and_other_values_their_own() {
        let ab_c = resolved("ab", "c");
        assert_eq!(ab_c.handles, "ab|c");
        // The same values again: the site's last set, compared word by word.
        assert!(std::ptr::eq(resolved("ab", "c"), ab_c));
        // The same bytes split another way are another set, not the last.
        let a_bc = resolved("a", "bc");
        assert_eq!(a_bc.handles, "a|bc");
        assert!(std::ptr::eq(resolved("ab", "c"), ab_c));
        assert_eq!(
            resolved("ab", "d").handles,
            "ab|d",
            "every label is compared"
        );
        // Values as long as the two-word comparison reads, differing only in
        // their middle byte or their last.
        let long = resolved("0123456789abcdef", "x");
        assert_eq!(long.handles, "0123456789abcdef|x");
        assert_eq!(
            resolved("01234567X9abcdef", "x").handles,
            "01234567X9abcdef|x"
        );
        assert_eq!(
            resolved("0123456789abcdeF", "x").handles,
            "0123456789abcdeF|x"
        );
        // A value that needs sanitising finds the set of its sanitised text,
        // and that text given as is finds the same set.
        let cleaned = resolved("x\ny", "c");
        assert_eq!(cleaned.handles, "x_y|c");
        assert!(std::ptr::eq(resolved("x_y", "c"), cleaned));
        assert!(std::ptr::eq(resolved("x\ny", "c"), cleaned));
    }
}
