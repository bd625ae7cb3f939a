use hyperkit_obs::track_build;

#[track_build(chain)]
fn deploy(chain: &str) -> u32 {
    let x = ;
    x
}

fn main() {}
