use hyperkit_obs::{Domain, track};

#[derive(Domain)]
struct Deploy {
    env: String,
    region: String,
}

#[track(Deploy, env = "prod")]
fn deploy() {}

fn main() {}
