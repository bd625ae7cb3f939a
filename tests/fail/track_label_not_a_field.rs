use hyperkit_obs::{Domain, track};

#[derive(Domain)]
struct Deploy {
    env: String,
    region: String,
}

#[track(Deploy, env = "prod", regoin = "eu-west-1")]
fn deploy() {}

fn main() {}
