//! Functions returning `impl Future`, with `+ Send` and `+ Unpin`: the
//! returned future keeps those bounds, and the call is recorded when it
//! completes, not when it is created.

use std::future::{Future, ready};

use hyperkit_obs::track_query;

#[track_query(operation = "plain")]
fn plain(n: u32) -> impl Future<Output = u32> {
    async move { n + 1 }
}

#[track_query(operation = "sendable")]
fn sendable(n: u32) -> impl Future<Output = Result<u32, String>> + Send {
    async move { if n > 0 { Ok(n) } else { Err("zero".to_owned()) } }
}

#[track_query(operation = "unpinned")]
fn unpinned(n: u32) -> impl Future<Output = u32> + Send + Unpin {
    ready(n * 10)
}

fn assert_send<T: Send>(_: &T) {}
fn assert_unpin<T: Unpin>(_: &T) {}

use test_support::metrics::counter_total as counter;

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let queries = |op, status| {
        counter(
            "hyperkit_db_queries_total",
            &[("operation", op), ("status", status)],
        )
    };

    let fut = sendable(0);
    assert_send(&fut);
    assert_eq!(
        queries("sendable", "failure"),
        0,
        "nothing is recorded before the first poll"
    );
    assert_eq!(rt.block_on(fut), Err("zero".to_owned()));
    assert_eq!(rt.block_on(sendable(3)), Ok(3));
    assert_eq!(queries("sendable", "failure"), 1);
    assert_eq!(queries("sendable", "success"), 1);

    let mut fut = unpinned(4);
    assert_send(&fut);
    assert_unpin(&fut);
    assert_eq!(rt.block_on(&mut fut), 40);
    assert_eq!(queries("unpinned", "success"), 1);

    assert_eq!(rt.block_on(plain(1)), 2);
    assert_eq!(queries("plain", "success"), 1);
}
