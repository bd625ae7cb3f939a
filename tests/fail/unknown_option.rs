use hyperkit_obs::track_build;

#[track_build(chain, levle = "debug")]
fn build(chain: &str) {}

fn main() {}
