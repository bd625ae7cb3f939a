use hyperkit_obs::Domain;

#[derive(Domain)]
#[domain(buckets = [1.0, 5.0, 2.5, 10.0])]
struct Deploy {
    env: String,
}

fn main() {}
