use hyperkit_obs::track_build;

#[track_build(chain = "__overflow__")]
fn build() {}

fn main() {}
