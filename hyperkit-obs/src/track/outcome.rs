//! Reading the outcome and model usage of a return value whose type the macro
//! only knows syntactically.
//!
//! The generated code calls `(&&&Wrap(&out)).__hk_outcome()` and
//! `(&&&Wrap(&out)).__hk_usage()`. Method resolution tries the most specific
//! implementation first (most references), so a `Result` whose error has
//! `Display` is read with its message, any other `Result` as a failure without
//! one, and every other type as a success. This is resolved at compile time
//! and costs nothing at run time.

use std::fmt::Display;

use super::Outcome;
use crate::model::{ModelOutput, Usage};

/// A borrowed return value, the receiver of the methods below.
pub struct Wrap<'a, T: ?Sized>(pub &'a T);

/// `Result<T, E>` with `E: Display`.
pub trait ResultDisplayOutcome<'a> {
    /// The outcome, with the error's message.
    fn __hk_outcome(&self) -> Outcome<'a>;
}

impl<'a, T, E: Display> ResultDisplayOutcome<'a> for &&Wrap<'a, Result<T, E>> {
    #[inline]
    fn __hk_outcome(&self) -> Outcome<'a> {
        match self.0 {
            Ok(_) => Outcome::Success,
            Err(e) => Outcome::Failure(Some(e), std::any::type_name::<E>()),
        }
    }
}

/// Any `Result<T, E>`.
pub trait ResultOutcome<'a> {
    /// The outcome, without a message.
    fn __hk_outcome(&self) -> Outcome<'a>;
}

impl<'a, T, E> ResultOutcome<'a> for &Wrap<'a, Result<T, E>> {
    #[inline]
    fn __hk_outcome(&self) -> Outcome<'a> {
        match self.0 {
            Ok(_) => Outcome::Success,
            Err(_) => Outcome::Failure(None, std::any::type_name::<E>()),
        }
    }
}

/// Any other type: returning is success.
pub trait ValueOutcome<'a> {
    /// Always [`Outcome::Success`].
    fn __hk_outcome(&self) -> Outcome<'a>;
}

impl<'a, T: ?Sized> ValueOutcome<'a> for Wrap<'a, T> {
    #[inline]
    fn __hk_outcome(&self) -> Outcome<'a> {
        Outcome::Success
    }
}

/// `Result<T, E>` with `T: ModelOutput`: usage of the `Ok` value.
pub trait ResultUsage {
    /// The usage, or `None` for an `Err`.
    fn __hk_usage(&self) -> Option<Usage>;
}

impl<T: ModelOutput, E> ResultUsage for &&Wrap<'_, Result<T, E>> {
    #[inline]
    fn __hk_usage(&self) -> Option<Usage> {
        self.0.as_ref().ok().map(Usage::of)
    }
}

/// A type implementing `ModelOutput`.
pub trait ValueUsage {
    /// The usage.
    fn __hk_usage(&self) -> Option<Usage>;
}

impl<T: ModelOutput + ?Sized> ValueUsage for &Wrap<'_, T> {
    #[inline]
    fn __hk_usage(&self) -> Option<Usage> {
        Some(Usage::of(self.0))
    }
}

/// Any other type: no usage.
pub trait NoUsage {
    /// Always `None`.
    fn __hk_usage(&self) -> Option<Usage>;
}

impl<T: ?Sized> NoUsage for Wrap<'_, T> {
    #[inline]
    fn __hk_usage(&self) -> Option<Usage> {
        None
    }
}

/// A label value whose type is a `LabelValue`: its sanitised text, for the
/// call's span.
pub trait ValueLabel<'a> {
    /// The value as the metrics carry it.
    fn __hk_label(&self) -> std::borrow::Cow<'a, str>;
}

impl<'a, T: crate::LabelValue> ValueLabel<'a> for &Wrap<'a, T> {
    #[inline]
    fn __hk_label(&self) -> std::borrow::Cow<'a, str> {
        crate::label::LabelRef::new(self.0).sanitized()
    }
}

/// Any other value: only in code the compiler already rejects (the value
/// does not fit its field), so that no second error follows from the span.
pub trait NoValueLabel {
    /// Nothing.
    fn __hk_label(&self) -> std::borrow::Cow<'static, str>;
}

impl<T: ?Sized> NoValueLabel for Wrap<'_, T> {
    #[inline]
    fn __hk_label(&self) -> std::borrow::Cow<'static, str> {
        std::borrow::Cow::Borrowed("")
    }
}

// The tests write the receiver exactly as the generated code does.
#[cfg(test)]
#[allow(clippy::needless_borrow)]
mod tests {
    use super::*;
    use crate::track::Outcome;

    struct Out(u64);
    impl ModelOutput for Out {
        fn output_tokens(&self) -> Option<u64> {
            Some(self.0)
        }
    }
    struct NoDisplay;

    fn is_failure(o: Outcome<'_>) -> Option<Option<String>> {
        match o {
            Outcome::Success => None,
            Outcome::Failure(m, _) => Some(m.map(|d| d.to_string())),
        }
    }

    #[test]
    fn results_are_read_by_their_most_specific_shape() {
        let err: Result<u8, String> = Err("boom".into());
        assert_eq!(
            is_failure((&&&Wrap(&err)).__hk_outcome()),
            Some(Some("boom".into()))
        );
        let err: Result<u8, NoDisplay> = Err(NoDisplay);
        assert_eq!(is_failure((&&&Wrap(&err)).__hk_outcome()), Some(None));
        let ok: Result<u8, NoDisplay> = Ok(1);
        assert_eq!(is_failure((&&&Wrap(&ok)).__hk_outcome()), None);
        assert_eq!(is_failure((&&&Wrap(&5u8)).__hk_outcome()), None);
    }

    #[test]
    fn usage_comes_from_the_ok_value_or_the_value() {
        let ok: Result<Out, String> = Ok(Out(7));
        assert_eq!((&&&Wrap(&ok)).__hk_usage().unwrap().output_tokens, Some(7));
        let err: Result<Out, String> = Err("x".into());
        assert_eq!((&&&Wrap(&err)).__hk_usage(), None);
        assert_eq!(
            (&&&Wrap(&Out(3))).__hk_usage().unwrap().output_tokens,
            Some(3)
        );
        assert_eq!((&&&Wrap(&"text")).__hk_usage(), None);
    }
}
