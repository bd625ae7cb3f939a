use hyperkit_obs::Domain;

#[derive(Domain)]
#[domain(in_flight = false, gauge = "deploys_running")]
struct Deploy {
    env: String,
}

fn main() {}
