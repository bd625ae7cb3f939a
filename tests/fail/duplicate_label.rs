use hyperkit_obs::track_build;

#[track_build(chain, chain = "ethereum")]
fn build(chain: &str) {}

fn main() {}
