use hyperkit_obs::track;

#[track(env, region)]
fn deploy(env: &str, region: &str) {}

fn main() {}
