use hyperkit_obs::track_build;

#[track_build(chain)]
struct Build {
    chain: String,
}

fn main() {}
