use hyperkit_obs::track_build;

#[track_build(chain = "ethereum")]
const fn build(size: u32) -> u32 {
    size * 2
}

fn main() {}
