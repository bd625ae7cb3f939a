use hyperkit_obs::track_build;

#[track_build("ethereum")]
fn build() {}

fn main() {}
