//! `#[track_build]` on a method of an `#[async_trait]` implementation: the
//! boxed future stays `Send` and the call is recorded when it completes.

use async_trait::async_trait;
use hyperkit_obs::track_build;

#[async_trait]
trait Builder {
    async fn build(&self, chain: &str, source: &str) -> Result<usize, String>;
}

struct Compiler {
    optimize: bool,
}

#[async_trait]
impl Builder for Compiler {
    #[track_build(chain)]
    async fn build(&self, chain: &str, source: &str) -> Result<usize, String> {
        tokio::task::yield_now().await;
        if source.is_empty() {
            return Err("empty source".to_owned());
        }
        Ok(source.len() * if self.optimize { 1 } else { 2 })
    }
}

fn assert_send<T: Send>(_: &T) {}

use test_support::metrics::counter_total as counter;

fn main() {
    let compiler: Box<dyn Builder + Send + Sync> = Box::new(Compiler { optimize: false });
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();

    let fut = compiler.build("optimism", "abc");
    assert_send(&fut);
    assert_eq!(
        counter("hyperkit_builds_total", &[("chain", "optimism")]),
        0,
        "recorded before completion"
    );
    assert_eq!(rt.block_on(fut), Ok(6));
    assert_eq!(
        rt.block_on(compiler.build("optimism", "")),
        Err("empty source".to_owned())
    );

    let builds = |status| {
        counter(
            "hyperkit_builds_total",
            &[("chain", "optimism"), ("status", status)],
        )
    };
    assert_eq!(builds("success"), 1);
    assert_eq!(builds("failure"), 1);
}
