//! `#[tracing::instrument]` above or below the tracking attribute: both
//! orders compile, keep the future `Send`, and record the call once.

use hyperkit_obs::track_build;

#[track_build(chain)]
#[tracing::instrument(skip(source))]
async fn outer(chain: &str, source: &str) -> Result<usize, String> {
    tokio::task::yield_now().await;
    Ok(source.len())
}

#[tracing::instrument(skip(source))]
#[track_build(chain)]
async fn inner(chain: &str, source: &str) -> Result<usize, String> {
    tokio::task::yield_now().await;
    Err(format!("cannot build {source}"))
}

#[tracing::instrument]
#[track_build(chain)]
fn sync_inner(chain: &str) -> u32 {
    7
}

fn assert_send<T: Send>(_: &T) {}

use test_support::metrics::counter_total as counter;

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();

    let fut = outer("outer", "abc");
    assert_send(&fut);
    assert_eq!(rt.block_on(fut), Ok(3));

    let fut = inner("inner", "abc");
    assert_send(&fut);
    assert_eq!(rt.block_on(fut), Err("cannot build abc".to_owned()));

    assert_eq!(sync_inner("sync"), 7);

    let builds = |chain, status| {
        counter(
            "hyperkit_builds_total",
            &[("chain", chain), ("status", status)],
        )
    };
    assert_eq!(builds("outer", "success"), 1);
    assert_eq!(builds("inner", "failure"), 1);
    assert_eq!(builds("sync", "success"), 1);
}
