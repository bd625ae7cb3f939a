use hyperkit_obs::track_build;

trait Builder {
    #[track_build(chain)]
    fn build(&self, chain: &str) -> u32;
}

fn main() {}
