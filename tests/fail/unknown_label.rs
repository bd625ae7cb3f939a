use hyperkit_obs::track_build;

#[track_build(chian)]
fn build(chain: &str) {}

fn main() {}
