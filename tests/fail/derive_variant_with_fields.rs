use hyperkit_obs::LabelValue;

#[derive(LabelValue)]
enum Chain {
    Ethereum,
    Custom(String),
}

fn main() {}
