use hyperkit_obs::track_build;

#[track_build(chain = 1.5)]
fn build() {}

fn main() {}
