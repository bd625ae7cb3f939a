use hyperkit_obs::{Domain, LabelValue, track};

#[derive(Clone, Copy, LabelValue)]
enum Env {
    Staging,
    Production,
}

#[derive(Domain)]
struct Deploy {
    env: Env,
}

#[track(Deploy, env = "staging")]
fn deploy() {}

fn main() {}
