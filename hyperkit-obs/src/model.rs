//! What a model call's return value tells `#[track_model]`: token counts and
//! acceptance, through [`ModelOutput`].

/// Implemented by the return type of a `#[track_model]` function (or the `Ok`
/// type of a `Result`) to report token usage and acceptance. Every method has
/// a default of "unknown", so implement only what the type knows.
///
/// ```
/// use hyperkit_obs::{track_model, ModelOutput};
///
/// struct Completion { text: String, prompt_tokens: u64, completion_tokens: u64 }
///
/// impl ModelOutput for Completion {
///     fn input_tokens(&self) -> Option<u64> { Some(self.prompt_tokens) }
///     fn output_tokens(&self) -> Option<u64> { Some(self.completion_tokens) }
/// }
///
/// #[track_model(model, task = "summarize")]
/// fn summarize(model: &str, text: &str) -> Result<Completion, std::io::Error> {
///     Ok(Completion { text: text[..4].to_owned(), prompt_tokens: 12, completion_tokens: 4 })
/// }
///
/// assert_eq!(summarize("small-1", "some long text").unwrap().text, "some");
/// ```
pub trait ModelOutput {
    /// Tokens sent to the model.
    fn input_tokens(&self) -> Option<u64> {
        None
    }
    /// Tokens the model produced.
    fn output_tokens(&self) -> Option<u64> {
        None
    }
    /// Whether the output was accepted, when that is known at return.
    fn accepted(&self) -> Option<bool> {
        None
    }
}

impl<T: ModelOutput + ?Sized> ModelOutput for &T {
    fn input_tokens(&self) -> Option<u64> {
        (**self).input_tokens()
    }
    fn output_tokens(&self) -> Option<u64> {
        (**self).output_tokens()
    }
    fn accepted(&self) -> Option<bool> {
        (**self).accepted()
    }
}

impl<T: ModelOutput + ?Sized> ModelOutput for Box<T> {
    fn input_tokens(&self) -> Option<u64> {
        (**self).input_tokens()
    }
    fn output_tokens(&self) -> Option<u64> {
        (**self).output_tokens()
    }
    fn accepted(&self) -> Option<bool> {
        (**self).accepted()
    }
}

/// Usage read from a [`ModelOutput`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// Tokens sent to the model.
    pub input_tokens: Option<u64>,
    /// Tokens the model produced.
    pub output_tokens: Option<u64>,
    /// Whether the output was accepted.
    pub accepted: Option<bool>,
}

impl Usage {
    /// Reads the usage of `output`.
    pub fn of<T: ModelOutput + ?Sized>(output: &T) -> Self {
        Usage {
            input_tokens: output.input_tokens(),
            output_tokens: output.output_tokens(),
            accepted: output.accepted(),
        }
    }
}
