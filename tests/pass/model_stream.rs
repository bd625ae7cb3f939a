//! `#[track_model]` on every stream shape the macro recognises: `impl
//! Stream` (with `+ Send`, `+ Unpin`, by any path), `Pin<Box<dyn Stream>>`,
//! `BoxStream`, `LocalBoxStream`, a type alias with the `stream` option, and
//! an `async fn` returning a stream or `Result<stream, E>`. Each keeps its
//! signature and bounds, and its call lasts until the stream ends.

use std::pin::Pin;

use futures_core::Stream;
use futures_util::StreamExt;
use futures_util::stream::{self, BoxStream, LocalBoxStream};
use hyperkit_obs::{ModelChunk, track_model};

struct Token(&'static str);

impl ModelChunk for Token {
    fn output_tokens(&self) -> Option<u64> {
        Some(1)
    }
}

#[derive(Debug)]
struct ModelError;

impl std::fmt::Display for ModelError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("model error")
    }
}

fn tokens() -> impl Stream<Item = Token> + Send + Unpin + 'static {
    stream::iter([Token("a"), Token("b")])
}

#[track_model(model, task = "impl_send")]
fn impl_send(model: &str) -> impl Stream<Item = Token> + Send {
    tokens()
}

#[track_model(model, task = "impl_unpin")]
fn impl_unpin(model: &str) -> impl futures_core::Stream<Item = Result<Token, ModelError>> + Unpin {
    tokens().map(Ok)
}

#[track_model(model, task = "pin_box")]
fn pin_box(model: &str) -> Pin<Box<dyn Stream<Item = Token> + Send>> {
    Box::pin(tokens())
}

#[track_model(model, task = "box_stream")]
fn box_stream<'a>(model: &str, words: &'a [&'static str]) -> BoxStream<'a, Token> {
    stream::iter(words.iter().map(|w| Token(w))).boxed()
}

#[track_model(model, task = "local_box_stream")]
fn local_box_stream(model: &str) -> LocalBoxStream<'static, Token> {
    tokens().boxed_local()
}

type Tokens = Pin<Box<dyn Stream<Item = Token> + Send>>;

#[track_model(model, task = "alias", stream)]
fn alias(model: &str) -> Tokens {
    Box::pin(tokens())
}

#[track_model(model, task = "async_result")]
async fn async_result(model: &str, fail: bool) -> Result<impl Stream<Item = Token> + Send, ModelError> {
    if fail {
        return Err(ModelError);
    }
    Ok(tokens())
}

#[track_model(model, task = "async_boxed")]
async fn async_boxed(model: &str) -> Result<BoxStream<'static, Result<Token, ModelError>>, ModelError> {
    Ok(tokens().map(Ok).boxed())
}

#[track_model(model, task = "async_alias", stream)]
async fn async_alias(model: &str) -> Result<Tokens, ModelError> {
    Ok(Box::pin(tokens()))
}

#[track_model(model, task = "async_plain")]
async fn async_plain(model: &str) -> impl Stream<Item = Token> {
    tokens()
}

struct Client;

impl Client {
    #[track_model(model, task = "method")]
    fn method<'s>(&'s self, model: &str) -> impl Stream<Item = Token> + Send + 's {
        let _ = self;
        tokens()
    }
}

fn assert_send<T: Send>(_: &T) {}
fn assert_unpin<T: Unpin>(_: &T) {}

use test_support::metrics::counter_total as counter;

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let calls = |task, status| {
        counter(
            "hyperkit_model_calls_total",
            &[("model", "m"), ("task", task), ("status", status)],
        )
    };
    let count = |s: Pin<Box<dyn Stream<Item = Token> + '_>>| rt.block_on(s.count());

    let s = impl_send("m");
    assert_send(&s);
    assert_eq!(calls("impl_send", "success"), 0, "not finished at creation");
    assert_eq!(count(Box::pin(s)), 2);
    assert_eq!(calls("impl_send", "success"), 1);

    let s = impl_unpin("m");
    assert_unpin(&s);
    assert_eq!(rt.block_on(s.count()), 2);
    assert_eq!(calls("impl_unpin", "success"), 1);

    let s = pin_box("m");
    assert_send(&s);
    assert_eq!(count(s), 2);
    assert_eq!(calls("pin_box", "success"), 1);

    let words = ["x", "y", "z"];
    assert_eq!(count(box_stream("m", &words)), 3);
    assert_eq!(calls("box_stream", "success"), 1);

    assert_eq!(count(local_box_stream("m")), 2);
    assert_eq!(calls("local_box_stream", "success"), 1);

    assert_eq!(count(alias("m")), 2);
    assert_eq!(calls("alias", "success"), 1);

    let s = rt.block_on(async_result("m", false)).unwrap();
    assert_send(&s);
    assert_eq!(count(Box::pin(s)), 2);
    assert_eq!(calls("async_result", "success"), 1);
    assert!(rt.block_on(async_result("m", true)).is_err());
    assert_eq!(calls("async_result", "failure"), 1);

    let s = rt.block_on(async_boxed("m")).unwrap();
    assert_eq!(rt.block_on(s.count()), 2);
    assert_eq!(calls("async_boxed", "success"), 1);

    assert_eq!(count(rt.block_on(async_alias("m")).unwrap()), 2);
    assert_eq!(calls("async_alias", "success"), 1);

    assert_eq!(count(Box::pin(rt.block_on(async_plain("m")))), 2);
    assert_eq!(calls("async_plain", "success"), 1);

    let client = Client;
    let s = client.method("m");
    assert_send(&s);
    assert_eq!(count(Box::pin(s)), 2);
    assert_eq!(calls("method", "success"), 1);

    let output = counter(
        "hyperkit_model_tokens_total",
        &[("model", "m"), ("task", "box_stream"), ("type", "output")],
    );
    assert_eq!(output, 3, "one token per item, summed");
}
