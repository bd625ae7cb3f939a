use hyperkit_obs::track_build;

#[track_build(chain =)]
fn build(chain: &str) {}

fn main() {}
