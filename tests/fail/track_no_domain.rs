use hyperkit_obs::track;

#[track]
fn deploy() {}

fn main() {}
