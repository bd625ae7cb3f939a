use hyperkit_obs::Domain;

#[derive(Domain)]
struct Deploy(String, String);

fn main() {}
