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

fn counter(family: &str, labels: &[(&str, &str)]) -> u64 {
    hyperkit_obs::registry()
        .gather()
        .iter()
        .filter(|f| f.name() == family)
        .flat_map(|f| f.get_metric())
        .filter(|m| {
            let got = m.get_label();
            labels
                .iter()
                .all(|(k, v)| got.iter().any(|l| l.name() == *k && l.value() == *v))
        })
        .map(|m| m.get_counter().get_value() as u64)
        .sum()
}

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
