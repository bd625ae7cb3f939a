use hyperkit_obs::track_build;

#[track_build(chain = "ether\neum")]
fn build() {}

fn main() {}
