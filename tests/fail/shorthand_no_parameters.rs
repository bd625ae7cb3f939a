use hyperkit_obs::track_build;

#[track_build(chain)]
fn build() {}

fn main() {}
