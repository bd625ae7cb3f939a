use hyperkit_obs::track_build;

#[track_build(chain, provider = "openai")]
fn build(chain: &str) {}

fn main() {}
