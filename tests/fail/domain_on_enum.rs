use hyperkit_obs::Domain;

#[derive(Domain)]
enum Deploy {
    Staging,
    Production,
}

fn main() {}
