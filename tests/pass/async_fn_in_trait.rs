//! A native `async fn` in a trait implementation (no `async-trait`).

use hyperkit_obs::track_query;

trait Store {
    async fn load(&self, key: &str) -> Option<String>;
}

struct Memory;

impl Store for Memory {
    #[track_query(operation = "load", db = "memory")]
    async fn load(&self, key: &str) -> Option<String> {
        (key == "present").then(|| "value".to_owned())
    }
}

use test_support::metrics::counter_total as counter;

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    assert_eq!(
        rt.block_on(Memory.load("present")).as_deref(),
        Some("value")
    );
    assert_eq!(rt.block_on(Memory.load("absent")), None);
    assert_eq!(
        counter(
            "hyperkit_db_queries_total",
            &[("operation", "load"), ("status", "success")]
        ),
        2
    );
}
