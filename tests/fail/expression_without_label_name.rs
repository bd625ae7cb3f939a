use hyperkit_obs::track_build;

struct Spec {
    chain: String,
}

#[track_build(spec.chain)]
fn build(spec: &Spec) {}

fn main() {}
