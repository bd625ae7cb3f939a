use hyperkit_obs::LabelValue;

#[derive(LabelValue)]
struct Chain {
    name: String,
}

fn main() {}
