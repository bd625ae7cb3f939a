use hyperkit_obs::track_build;

struct Spec {
    name: String,
}

#[track_build(chain = spec)]
fn build(spec: &Spec) -> usize {
    spec.name.len()
}

fn main() {}
