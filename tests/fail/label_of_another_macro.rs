use hyperkit_obs::track_build;

#[track_build(chain, db = "postgres")]
fn build(chain: &str) {}

fn main() {}
