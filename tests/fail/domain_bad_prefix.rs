use hyperkit_obs::Domain;

#[derive(Domain)]
#[domain(prefix = "acme-deploy")]
struct Deploy {
    env: String,
}

fn main() {}
