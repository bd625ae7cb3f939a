use hyperkit_obs::Domain;

#[derive(Domain)]
#[domain(prefx = "acme_deploy")]
struct Deploy {
    env: String,
}

fn main() {}
