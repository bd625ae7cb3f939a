//! Label values: the [`LabelValue`] trait, its implementations for the
//! standard types, and the runtime sanitising that keeps any value safe for the
//! exposition format.
//!
//! Nothing here allocates for a value that is already clean, and nothing here
//! panics: a value that is too long or holds control characters is repaired,
//! never rejected.

use std::borrow::Cow;
use std::fmt;
use std::rc::Rc;
use std::sync::Arc;

/// Longest label value kept, in bytes; longer values are cut at a character
/// boundary.
pub const MAX_LABEL_LEN: usize = 128;

/// The value recorded in place of a new label value once a label has reached
/// its cardinality limit.
pub const OVERFLOW_VALUE: &str = "__overflow__";

/// A type whose values can be used as a metric label value.
///
/// Implemented for `str`, `String`, `Cow<str>`, `Box<str>`, `Arc<str>`,
/// `Rc<str>`, the integer types and `bool`, and by `#[derive(LabelValue)]` for
/// fieldless enums:
///
/// ```
/// use hyperkit_obs::LabelValue;
///
/// #[derive(Clone, Copy, LabelValue)]
/// enum Chain {
///     Ethereum,                  // "ethereum"
///     #[label = "bsc"]
///     BinanceSmartChain,         // "bsc"
/// }
///
/// assert_eq!(Chain::BinanceSmartChain.as_label(), "bsc");
/// assert_eq!(<Chain as LabelValue>::VALUES, Some(&["ethereum", "bsc"][..]));
/// ```
///
/// A type with a fixed set of values reports it in [`VALUES`](Self::VALUES);
/// the tracking macros then resolve each value's metric handles once per call
/// site and index them by [`index`](Self::index), so a call never hashes the
/// label. Types with an open set of values (strings, integers) are looked up
/// by value and fall under the cardinality limit.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be used as a metric label value",
    label = "this label value's type does not implement `LabelValue`",
    note = "label values can be `&str`, `String`, `Cow<str>`, integers, `bool`, or a fieldless enum with `#[derive(hyperkit_obs::LabelValue)]`",
    note = "for any other type, give the label an expression that yields one of these, e.g. `chain = spec.chain.name()`"
)]
pub trait LabelValue {
    /// Every value this type can take, in [`index`](Self::index) order, or
    /// `None` when the set is open (strings, integers).
    const VALUES: Option<&'static [&'static str]> = None;

    /// The position of `self` in [`VALUES`](Self::VALUES). Only meaningful
    /// when `VALUES` is `Some`; an index out of range is treated as an open
    /// value, never as an error.
    fn index(&self) -> usize {
        0
    }

    /// The label value as text. For a type with fixed `VALUES` this must equal
    /// `VALUES[self.index()]`.
    fn as_label(&self) -> Cow<'_, str>;
}

impl<T: LabelValue + ?Sized> LabelValue for &T {
    const VALUES: Option<&'static [&'static str]> = T::VALUES;
    #[inline]
    fn index(&self) -> usize {
        (**self).index()
    }
    #[inline]
    fn as_label(&self) -> Cow<'_, str> {
        (**self).as_label()
    }
}

impl<T: LabelValue + ?Sized> LabelValue for &mut T {
    const VALUES: Option<&'static [&'static str]> = T::VALUES;
    #[inline]
    fn index(&self) -> usize {
        (**self).index()
    }
    #[inline]
    fn as_label(&self) -> Cow<'_, str> {
        (**self).as_label()
    }
}

macro_rules! str_like {
    ($($ty:ty),*) => {$(
        impl LabelValue for $ty {
            #[inline]
            fn as_label(&self) -> Cow<'_, str> {
                Cow::Borrowed(&**self)
            }
        }
    )*};
}
impl LabelValue for str {
    #[inline]
    fn as_label(&self) -> Cow<'_, str> {
        Cow::Borrowed(self)
    }
}
str_like!(String, Cow<'_, str>, Box<str>, Arc<str>, Rc<str>);

macro_rules! integer {
    ($($ty:ty),*) => {$(
        impl LabelValue for $ty {
            #[inline]
            fn as_label(&self) -> Cow<'_, str> {
                Cow::Owned(self.to_string())
            }
        }
    )*};
}
integer!(
    u8, u16, u32, u64, u128, usize, i8, i16, i32, i64, i128, isize
);

impl LabelValue for bool {
    const VALUES: Option<&'static [&'static str]> = Some(&["false", "true"]);
    #[inline]
    fn index(&self) -> usize {
        usize::from(*self)
    }
    #[inline]
    fn as_label(&self) -> Cow<'_, str> {
        Cow::Borrowed(if *self { "true" } else { "false" })
    }
}

/// A label given as a string literal in the attribute. Its call site is its
/// whole value set, so it resolves like a one-variant enum: once per site.
#[doc(hidden)]
#[derive(Clone, Copy, Debug)]
pub struct Literal(pub &'static str);

impl LabelValue for Literal {
    const VALUES: Option<&'static [&'static str]> = Some(&[""]);
    #[inline]
    fn as_label(&self) -> Cow<'_, str> {
        Cow::Borrowed(self.0)
    }
}

/// A label value as the generated code hands it to the runtime: type-checked
/// once, where the user wrote it, then passed around without generics.
#[doc(hidden)]
#[derive(Clone, Copy)]
pub struct LabelRef<'a> {
    /// The type's fixed value set and this value's index in it.
    pub(crate) fixed: Option<(&'static [&'static str], usize)>,
    /// An open value that is borrowed text (`&str`, `String`, …), read once
    /// here so the lookup neither calls through `value` nor allocates.
    borrowed: Option<&'a str>,
    value: &'a dyn LabelText,
}

trait LabelText {
    fn text(&self) -> Cow<'_, str>;
}

impl<L: LabelValue> LabelText for L {
    #[inline]
    fn text(&self) -> Cow<'_, str> {
        self.as_label()
    }
}

impl<'a> LabelRef<'a> {
    /// Erases `value`'s type, keeping its fixed index if it has one.
    #[inline]
    pub fn new<L: LabelValue>(value: &'a L) -> Self {
        let fixed = L::VALUES.and_then(|values| {
            let i = value.index();
            (i < values.len()).then_some((values, i))
        });
        let borrowed = match (fixed, L::VALUES) {
            (None, None) => match value.as_label() {
                Cow::Borrowed(text) => Some(text),
                Cow::Owned(_) => None,
            },
            _ => None,
        };
        LabelRef {
            fixed,
            borrowed,
            value,
        }
    }

    /// The value when it is borrowed text (an open value of a string type).
    #[inline(always)]
    pub(crate) fn borrowed(&self) -> Option<&'a str> {
        self.borrowed
    }

    /// The value as text, not yet sanitised.
    #[inline]
    pub fn text(&self) -> Cow<'a, str> {
        match self.borrowed {
            Some(text) => Cow::Borrowed(text),
            None => self.value.text(),
        }
    }
}

impl<'a> LabelRef<'a> {
    /// The value as the metrics carry it ([`sanitize`]d), borrowed when it
    /// can be: what the call's span records (as a `str`, which layers take
    /// without formatting).
    #[inline]
    pub fn sanitized(&self) -> Cow<'a, str> {
        match self.text() {
            Cow::Borrowed(text) => sanitize(text),
            Cow::Owned(text) => match sanitize(&text) {
                Cow::Borrowed(_) => Cow::Owned(text),
                Cow::Owned(clean) => Cow::Owned(clean),
            },
        }
    }
}

impl fmt::Display for LabelRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&sanitize(&self.text()))
    }
}

/// Makes a label value safe for every consumer: at most [`MAX_LABEL_LEN`]
/// bytes (cut at a character boundary) and no control characters (each one is
/// replaced by `_`). Borrows when the value is already clean.
pub fn sanitize(value: &str) -> Cow<'_, str> {
    let clean = value.len() <= MAX_LABEL_LEN && !value.chars().any(char::is_control);
    if clean {
        return Cow::Borrowed(value);
    }
    let mut out = String::with_capacity(value.len().min(MAX_LABEL_LEN));
    for c in value.chars() {
        let c = if c.is_control() { '_' } else { c };
        if out.len() + c.len_utf8() > MAX_LABEL_LEN {
            break;
        }
        out.push(c);
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    //! The sanitiser's specification, then property tests that fuzz it with
    //! arbitrary text, lossy-decoded bytes and values full of control and
    //! multi-byte characters on both sides of the length limit. Each property
    //! runs proptest's default 256 cases (about a second for the lot in a
    //! debug build); `PROPTEST_CASES` sets the count of every property, so
    //! 100 times more, about three minutes, is:
    //!
    //! ```text
    //! PROPTEST_CASES=25600 cargo test -p hyperkit-obs --lib label::
    //! ```

    use proptest::prelude::*;

    use super::*;

    #[test]
    fn clean_values_are_borrowed_unchanged() {
        assert!(matches!(sanitize("ethereum"), Cow::Borrowed("ethereum")));
    }

    #[test]
    fn control_characters_are_replaced() {
        assert_eq!(sanitize("a\nb\"c\u{0}"), "a_b\"c_");
    }

    #[test]
    fn long_values_are_cut_at_a_char_boundary() {
        let long = "é".repeat(100); // 200 bytes
        let cut = sanitize(&long);
        assert!(cut.len() <= MAX_LABEL_LEN);
        assert_eq!(cut.chars().count(), MAX_LABEL_LEN / 2);
    }

    #[test]
    fn bool_is_a_fixed_set() {
        assert_eq!(true.index(), 1);
        assert_eq!(<bool as LabelValue>::VALUES.unwrap()[true.index()], "true");
        assert_eq!(42u64.as_label(), "42");
    }

    /// Label values as callers hand them over: mostly plain text, with
    /// control characters (C0, DEL, C1), multi-byte characters and lengths
    /// on both sides of [`MAX_LABEL_LEN`].
    fn values() -> impl Strategy<Value = String> {
        let char = prop_oneof![
            6 => prop::char::range('a', 'z'),
            1 => prop::char::range('\0', '\u{1f}'),
            1 => prop::char::range('\u{7f}', '\u{9f}'),
            1 => prop::sample::select(vec!['é', '日', '🦀', '"', '\\', ' ', '\u{2028}']),
            1 => any::<char>(),
        ];
        prop_oneof![
            prop::collection::vec(char, 0..200).prop_map(String::from_iter),
            any::<String>(),
            prop::collection::vec(any::<u8>(), 0..300)
                .prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
        ]
    }

    proptest! {
        #[test]
        fn sanitized_values_fit_the_limit_and_hold_no_control_characters(value in values()) {
            let out = sanitize(&value);
            prop_assert!(out.len() <= MAX_LABEL_LEN, "{} bytes", out.len());
            prop_assert!(!out.chars().any(char::is_control), "{:?}", out);
        }

        #[test]
        fn sanitizing_keeps_the_longest_prefix_that_fits_with_control_characters_as_underscores(
            value in values(),
        ) {
            let out = sanitize(&value);
            let mut input = value.chars();
            for kept in out.chars() {
                let c = input.next();
                prop_assert!(
                    c == Some(kept) || (c.is_some_and(char::is_control) && kept == '_'),
                    "{:?} became {:?}", value, out
                );
            }
            // Cut only where the next character would not fit.
            if let Some(next) = input.next() {
                let next = if next.is_control() { '_' } else { next };
                prop_assert!(out.len() + next.len_utf8() > MAX_LABEL_LEN, "{:?} became {:?}", value, out);
            }
        }

        #[test]
        fn sanitizing_twice_changes_nothing_and_borrows(value in values()) {
            let once = sanitize(&value).into_owned();
            let twice = sanitize(&once);
            prop_assert!(matches!(twice, Cow::Borrowed(_)), "{:?}", once);
            prop_assert_eq!(twice, once.as_str());
        }

        #[test]
        fn exactly_the_clean_values_are_borrowed_unchanged(value in values()) {
            let clean = value.len() <= MAX_LABEL_LEN && !value.chars().any(char::is_control);
            match sanitize(&value) {
                Cow::Borrowed(out) => {
                    prop_assert!(clean, "{:?}", value);
                    prop_assert!(std::ptr::eq(out, value.as_str()));
                }
                Cow::Owned(out) => prop_assert!(!clean && out != value, "{:?}", value),
            }
        }
    }
}
