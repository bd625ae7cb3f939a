use hyperkit_obs::track;

struct Deploy {
    env: String,
}

#[track(Deploy, env = "prod")]
fn deploy() {}

fn main() {}
