//! `runs/log-batch` split to MLflow's limits (count, body size, value
//! length), everything sent exactly once, invalid keys refused before
//! anything is sent.

use std::collections::HashSet;

use hyperkit_obs::mlflow::{KeyValue, Metric, MlflowError};

use super::fixture::{Fixture, Request};
use super::{client, seeded_run};

/// Checks every log-batch request against MLflow's limits.
fn assert_within_limits(requests: &[Request]) {
    for (i, r) in requests.iter().enumerate() {
        let body = r.json();
        let n = |k: &str| body[k].as_array().map_or(0, Vec::len);
        let (m, p, t) = (n("metrics"), n("params"), n("tags"));
        assert!(
            m <= 1000 && p <= 100 && t <= 100,
            "request {i}: {m} metrics {p} params {t} tags"
        );
        assert!(m + p + t <= 1000, "request {i}: {} entities", m + p + t);
        assert!(
            r.body.len() <= 1_000_000,
            "request {i}: {} bytes",
            r.body.len()
        );
        assert!(m + p + t > 0, "request {i} is empty");
    }
}

#[tokio::test]
async fn log_batch_splits_by_count_limits_and_sends_everything_exactly_once() {
    let fixture = Fixture::start();
    let run = seeded_run(&fixture);
    let metrics: Vec<Metric> = (0..2_500)
        .map(|i| Metric {
            key: format!("metric_{}", i % 40),
            value: f64::from(i) * 0.5,
            timestamp: 1_700_000_000_000 + i64::from(i),
            step: i64::from(i / 40),
        })
        .collect();
    let params: Vec<KeyValue> = (0..250)
        .map(|i| KeyValue::new(format!("param_{i}"), format!("value {i}")))
        .collect();
    let tags: Vec<KeyValue> = (0..150)
        .map(|i| KeyValue::new(format!("tag.{i}"), format!("t{i}")))
        .collect();
    client(&fixture, &[])
        .log_batch(&run, &metrics, &params, &tags)
        .await
        .expect("every part accepted");

    let requests = fixture.requests_to("runs/log-batch");
    assert!(requests.len() >= 3, "{} requests", requests.len());
    assert_within_limits(&requests);
    let mut sent_metrics = Vec::new();
    let mut sent_params = Vec::new();
    let mut sent_tags = Vec::new();
    for r in &requests {
        let body = r.json();
        assert_eq!(body["run_id"], run.as_str());
        for m in body["metrics"].as_array().into_iter().flatten() {
            sent_metrics.push(serde_json::from_value::<Metric>(m.clone()).unwrap());
        }
        for p in body["params"].as_array().into_iter().flatten() {
            sent_params.push(serde_json::from_value::<KeyValue>(p.clone()).unwrap());
        }
        for t in body["tags"].as_array().into_iter().flatten() {
            sent_tags.push(serde_json::from_value::<KeyValue>(t.clone()).unwrap());
        }
    }
    // Everything, each once: same length and same set (the inputs are
    // distinct, so equal sets of equal size mean no duplicate).
    let key = |m: &Metric| (m.key.clone(), m.step, m.timestamp, m.value.to_bits());
    assert_eq!(sent_metrics.len(), 2_500);
    assert_eq!(
        sent_metrics.iter().map(key).collect::<HashSet<_>>(),
        metrics.iter().map(key).collect::<HashSet<_>>()
    );
    assert_eq!(sent_params.len(), 250);
    assert_eq!(
        sent_params.into_iter().collect::<HashSet<_>>(),
        params.into_iter().collect::<HashSet<_>>()
    );
    assert_eq!(sent_tags.len(), 150);
    assert_eq!(
        sent_tags.into_iter().collect::<HashSet<_>>(),
        tags.into_iter().collect::<HashSet<_>>()
    );
    // And the fixture's store agrees.
    let state = fixture.state();
    let stored = state.runs.iter().find(|r| r.run_id == run).unwrap();
    assert_eq!(
        (stored.metrics.len(), stored.params.len(), stored.tags.len()),
        (2_500, 250, 150)
    );
}

#[tokio::test]
async fn log_batch_splits_by_body_size_and_cuts_long_values_as_python_does() {
    let fixture = Fixture::start();
    let run = seeded_run(&fixture);
    let client = client(&fixture, &[]);

    // 40 params of 30 KB: MLflow keeps 6,000 characters of a param value,
    // and its Python client cuts longer ones to 5,997 and `...`.
    let long: Vec<KeyValue> = (0..40)
        .map(|i| KeyValue::new(format!("long_{i}"), format!("{i:02}").repeat(15_000)))
        .collect();
    client.log_batch(&run, &[], &long, &[]).await.unwrap();
    let requests = fixture.requests_to("runs/log-batch");
    assert_within_limits(&requests);
    let sent: Vec<KeyValue> = requests
        .iter()
        .flat_map(|r| serde_json::from_value::<Vec<KeyValue>>(r.json()["params"].clone()).unwrap())
        .collect();
    assert_eq!(sent.len(), 40);
    for (kv, original) in sent.iter().zip(&long) {
        assert_eq!(kv.key, original.key);
        assert_eq!(kv.value.chars().count(), 6_000);
        assert_eq!(kv.value, format!("{}...", &original.value[..5_997]));
    }

    // 40 params and 40 tags at their longest, in 4-byte UTF-8: 24 KB and
    // 32 KB each, 2.24 MB in all; far under the count limits, so only the
    // size limit can split them.
    let params: Vec<KeyValue> = (0..40)
        .map(|i| KeyValue::new(format!("wide_{i}"), "🦀".repeat(6_000)))
        .collect();
    let tags: Vec<KeyValue> = (0..40)
        .map(|i| KeyValue::new(format!("wide_tag_{i}"), "🦀".repeat(8_000)))
        .collect();
    let before = fixture.count("runs/log-batch");
    client.log_batch(&run, &[], &params, &tags).await.unwrap();
    let requests = fixture.requests_to("runs/log-batch")[before..].to_vec();
    assert_within_limits(&requests);
    assert!(
        requests.len() >= 3,
        "2.24 MB in {} requests",
        requests.len()
    );
    let total: usize = requests.iter().map(|r| r.body.len()).sum();
    assert!(total > 2_000_000, "{total} bytes sent");
    let count = |k: &str| -> usize {
        requests
            .iter()
            .map(|r| r.json()[k].as_array().map_or(0, Vec::len))
            .sum()
    };
    assert_eq!((count("params"), count("tags")), (40, 40), "each sent once");
}

#[tokio::test]
async fn an_invalid_key_fails_before_any_request_is_sent() {
    let fixture = Fixture::start();
    let run = seeded_run(&fixture);
    let client = client(&fixture, &[]);
    let long_key = "k".repeat(251);
    // Enough valid entities for several requests, the bad key last.
    let mut metrics: Vec<Metric> = (0..2_000)
        .map(|i| Metric::new(format!("m{i}"), 1.0, 1))
        .collect();
    metrics.push(Metric::new(long_key.clone(), 1.0, 1));
    let e = client
        .log_batch(&run, &metrics, &[], &[])
        .await
        .unwrap_err();
    assert!(
        matches!(&e, MlflowError::InvalidKey { key, .. } if *key == long_key),
        "{e:?}"
    );

    let params = [
        KeyValue::new("ok", "1"),
        KeyValue::new(long_key.clone(), "v"),
    ];
    let e = client.log_batch(&run, &[], &params, &[]).await.unwrap_err();
    assert!(matches!(e, MlflowError::InvalidKey { .. }), "{e:?}");
    let tags = [KeyValue::new(long_key.clone(), "v")];
    let e = client.log_batch(&run, &[], &[], &tags).await.unwrap_err();
    assert!(matches!(e, MlflowError::InvalidKey { .. }), "{e:?}");
    let e = client.create_run("0", "r", 1, &tags).await.unwrap_err();
    assert!(matches!(e, MlflowError::InvalidKey { .. }), "{e:?}");

    assert_eq!(fixture.requests().len(), 0, "nothing was sent");
    // 250 characters is MLflow's limit, and accepted.
    let ok = [Metric::new("k".repeat(250), 1.0, 1)];
    client.log_batch(&run, &ok, &[], &[]).await.unwrap();
    assert_eq!(fixture.requests().len(), 1);
}
