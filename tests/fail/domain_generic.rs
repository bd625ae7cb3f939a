use hyperkit_obs::Domain;

#[derive(Domain)]
struct Deploy<E> {
    env: E,
}

fn main() {}
