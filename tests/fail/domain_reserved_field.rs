use hyperkit_obs::Domain;

#[derive(Domain)]
struct Deploy {
    env: String,
    status: String,
}

fn main() {}
