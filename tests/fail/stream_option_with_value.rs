use std::pin::Pin;

use futures_core::Stream;
use hyperkit_obs::track_model;

type Tokens = Pin<Box<dyn Stream<Item = String> + Send>>;

#[track_model(model, task = "chat", stream = true)]
fn chat(model: &str) -> Tokens {
    Box::pin(futures_util::stream::iter(vec![String::from("hello")]))
}

fn main() {}
