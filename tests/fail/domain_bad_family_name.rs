use hyperkit_obs::Domain;

#[derive(Domain)]
#[domain(counter = "9_deploys_total")]
struct Deploy {
    env: String,
}

fn main() {}
