use futures_core::Stream;
use hyperkit_obs::track_model;

#[track_model(model, task = "chat")]
fn chat(model: &str) -> impl Stream<Item = String> {
    futures_util::stream::iter(vec![String::from("hello")])
}

fn main() {}
