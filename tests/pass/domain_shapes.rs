//! Every function shape the built-in macros support, tracked under a domain
//! of the user's declared in another module: sync, `async`, `impl Future`,
//! `#[async_trait]`, inherent and trait methods, a generic function and an
//! axum handler. Futures stay `Send`; each call is counted under the domain.

use std::future::Future;
use std::sync::Arc;

use async_trait::async_trait;
use axum::extract::{Path, State};
use hyperkit_obs::track;

mod domains {
    use hyperkit_obs::{Domain, LabelValue};

    #[derive(Clone, Copy, LabelValue)]
    pub enum Env {
        Staging,
        Production,
    }

    /// Deployments.
    #[derive(Domain)]
    #[domain(prefix = "shapes_deploy")]
    pub struct Deploy {
        env: Env,
        region: String,
    }
}

use domains::{Deploy, Env};

#[track(Deploy, env, region = "sync")]
fn sync_fn(env: Env) -> Result<u8, String> {
    Ok(1)
}

#[track(Deploy, env, region)]
async fn async_fn(env: Env, region: &str) -> u8 {
    tokio::task::yield_now().await;
    2
}

#[track(Deploy, env = Env::Staging, region = "impl-future")]
fn impl_future(n: u8) -> impl Future<Output = u8> + Send {
    async move { n }
}

#[async_trait]
trait Deployer {
    async fn deploy(&self, env: Env) -> Result<u8, String>;
}

struct Service {
    region: String,
}

impl Service {
    #[track(Deploy, env, region = self.region.as_str())]
    fn method(&self, env: Env) -> u8 {
        3
    }
}

#[async_trait]
impl Deployer for Service {
    #[track(Deploy, env, region = self.region.as_str())]
    async fn deploy(&self, env: Env) -> Result<u8, String> {
        tokio::task::yield_now().await;
        Ok(4)
    }
}

#[track(Deploy, env = Env::Production, region = region.as_ref())]
fn generic<R: AsRef<str>>(region: R) -> usize {
    region.as_ref().len()
}

#[track(Deploy, env = Env::Production, region)]
async fn handler(State(count): State<Arc<()>>, Path(region): Path<String>) -> String {
    let _ = count;
    region
}

fn assert_send<T: Send>(_: &T) {}

use test_support::metrics::counter_total as counter;

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    assert_eq!(sync_fn(Env::Production), Ok(1));
    let fut = async_fn(Env::Staging, "async");
    assert_send(&fut);
    assert_eq!(rt.block_on(fut), 2);
    let fut = impl_future(5);
    assert_send(&fut);
    assert_eq!(rt.block_on(fut), 5);
    let service = Service {
        region: "method".into(),
    };
    assert_eq!(service.method(Env::Staging), 3);
    let fut = service.deploy(Env::Staging);
    assert_send(&fut);
    assert_eq!(rt.block_on(fut), Ok(4));
    assert_eq!(generic("generic"), 7);
    assert_eq!(generic(String::from("generic")), 7);
    let _router: axum::Router = axum::Router::new()
        .route("/deploy/{region}", axum::routing::post(handler))
        .with_state(Arc::new(()));
    assert_eq!(
        rt.block_on(handler(State(Arc::new(())), Path("axum".into()))),
        "axum"
    );

    let calls = |region| {
        counter(
            "shapes_deploy_calls_total",
            &[("region", region), ("status", "success")],
        )
    };
    for (region, n) in [
        ("sync", 1),
        ("async", 1),
        ("impl-future", 1),
        ("method", 2),
        ("generic", 2),
        ("axum", 1),
    ] {
        assert_eq!(calls(region), n, "{region}");
    }
}
