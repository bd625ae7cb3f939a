use hyperkit_obs::track;

#[track(env = "prod")]
fn deploy() {}

fn main() {}
