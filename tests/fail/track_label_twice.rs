use hyperkit_obs::{Domain, track};

#[derive(Domain)]
struct Deploy {
    env: String,
}

#[track(Deploy, env = "prod", env = "staging")]
fn deploy() {}

fn main() {}
