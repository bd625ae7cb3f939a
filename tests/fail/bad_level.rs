use hyperkit_obs::track_build;

#[track_build(chain, level = "verbose")]
fn build(chain: &str) {}

fn main() {}
