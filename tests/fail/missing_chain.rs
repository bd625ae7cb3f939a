use hyperkit_obs::track_build;

#[track_build]
fn build(chain: &str) {}

fn main() {}
