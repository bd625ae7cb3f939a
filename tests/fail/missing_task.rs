use hyperkit_obs::track_model;

#[track_model(model)]
fn complete(model: &str, prompt: &str) -> usize {
    prompt.len()
}

fn main() {}
