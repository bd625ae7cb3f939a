use hyperkit_obs::track_build;

#[track_build(chain)]
fn build(network: &str, size: u32) {}

fn main() {}
