//! Every macro, sync and async, finds the runtime through `crate = obs`.

#[derive(Clone, Copy, obs::LabelValue)]
#[label(crate = obs)]
enum Chain {
    Ethereum,
}

#[obs::track_build(chain, crate = obs)]
fn build(chain: Chain) -> Result<u32, String> {
    let _ = chain;
    Ok(2)
}

#[obs::track_model(model, task = "codegen", crate = obs)]
async fn complete(model: &str) -> String {
    model.to_owned()
}

#[obs::track_query(operation = "select", crate = ::obs)]
fn select() -> usize {
    1
}

/// Deployments: a domain of the user's, found through `crate = obs` too.
#[derive(obs::Domain)]
#[domain(crate = obs, prefix = "renamed_deploy")]
struct Deploy {
    chain: Chain,
    region: String,
}

#[obs::track(Deploy, chain, region = "eu-west-1", crate = obs)]
fn deploy(chain: Chain) -> Result<(), String> {
    let _ = chain;
    Ok(())
}

fn main() {
    assert_eq!(deploy(Chain::Ethereum), Ok(()));
    assert_eq!(build(Chain::Ethereum), Ok(2));
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    assert_eq!(rt.block_on(complete("small-1")), "small-1");
    assert_eq!(select(), 1);
    let families = obs::registry().gather();
    for name in ["hyperkit_builds_total", "hyperkit_model_calls_total", "hyperkit_db_queries_total", "renamed_deploy_calls_total"] {
        assert!(families.iter().any(|f| f.name() == name), "{name}");
    }
}
