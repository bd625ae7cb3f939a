use hyperkit_obs::{Domain, track};

#[derive(Domain)]
struct Deploy {
    region: String,
}

#[track(Deploy, region = zone)]
fn deploy(zone: u32) {}

fn main() {}
