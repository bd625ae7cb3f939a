//! Every page followed (`next_page_token`), and values JSON cannot hold
//! travelling as MLflow spells them.

use std::collections::HashSet;

use hyperkit_obs::mlflow::{ExperimentTracker, Metric};
use serde_json::{Value, json};

use super::fixture::Fixture;
use super::{client, config, seeded_run};

#[tokio::test]
async fn search_all_runs_follows_next_page_token_to_the_last_page() {
    let fixture = Fixture::start();
    let experiment = fixture.seed_experiment("many runs");
    let seeded: HashSet<String> = (0..2_345)
        .map(|_| fixture.seed_run(&experiment, &[], &[]))
        .collect();
    fixture.set_page_size(1_000);
    let runs = client(&fixture, &[])
        .search_all_runs(&[&experiment], "")
        .await
        .unwrap();
    assert_eq!(runs.len(), 2_345);
    let ids: HashSet<String> = runs.into_iter().map(|r| r.info.run_id).collect();
    assert_eq!(ids, seeded, "every run, none twice");
    let pages = fixture.requests_to("runs/search");
    assert_eq!(pages.len(), 3);
    assert!(pages[0].json().get("page_token").is_none());
    assert_eq!(pages[1].json()["page_token"], "offset-1000");
    assert_eq!(pages[2].json()["page_token"], "offset-2000");
}

#[tokio::test]
async fn acceptance_rate_counts_runs_on_every_page() {
    let fixture = Fixture::start();
    let experiment = fixture.seed_experiment("acceptance");
    // 2,345 runs of model-x: i % 3 == 0 accepted, 1 rejected, 2 undecided;
    // and runs of another model, which must not count.
    for i in 0..2_345 {
        let metrics: &[(&str, f64)] = match i % 3 {
            0 => &[("accepted", 1.0)],
            1 => &[("accepted", 0.0)],
            _ => &[],
        };
        fixture.seed_run(&experiment, &[("model", "model-x"), ("task", "t")], metrics);
        if i % 5 == 0 {
            fixture.seed_run(&experiment, &[("model", "model-y")], &[("accepted", 1.0)]);
        }
    }
    // The server pages at 400 even though the client asks for 1,000.
    fixture.set_page_size(400);
    let tracker = ExperimentTracker::with_config("acceptance", &config(&fixture, &[]))
        .await
        .unwrap();
    assert_eq!(tracker.experiment_id(), experiment);
    let rate = tracker.acceptance_rate("model-x").await.unwrap();
    assert_eq!(
        (rate.accepted, rate.rejected, rate.undecided),
        (782, 782, 781)
    );
    assert_eq!(rate.rate(), Some(0.5));
    let pages = fixture.requests_to("runs/search");
    assert_eq!(pages.len(), 6, "2,345 runs at 400 a page");
    assert!(
        pages
            .iter()
            .all(|p| p.json()["filter"] == "params.model = 'model-x'")
    );
}

#[tokio::test]
async fn metric_history_follows_next_page_token() {
    let fixture = Fixture::start();
    let run = seeded_run(&fixture);
    let client = client(&fixture, &[]);
    let metrics: Vec<Metric> = (0..2_500)
        .map(|i| Metric {
            key: "loss".to_owned(),
            value: f64::from(i) / 8.0,
            timestamp: 1_700_000_000_000 + i64::from(i),
            step: i64::from(i),
        })
        .collect();
    client.log_batch(&run, &metrics, &[], &[]).await.unwrap();
    fixture.set_page_size(1_000);
    let history = client.metric_history(&run, "loss").await.unwrap();
    assert_eq!(history, metrics);
    assert_eq!(fixture.count("metrics/get-history"), 3);
    assert!(
        client
            .metric_history(&run, "other")
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn non_finite_metric_values_travel_as_mlflow_spells_them() {
    let fixture = Fixture::start();
    let experiment = fixture.seed_experiment("diverging");
    let run = fixture.seed_run(&experiment, &[], &[]);
    let client = client(&fixture, &[]);
    let metrics = [
        Metric::new("loss", f64::NAN, 1),
        Metric::new("grad", f64::INFINITY, 1),
        Metric::new("lr", f64::NEG_INFINITY, 1),
        Metric::new("ok", 0.25, 1),
    ];
    client.log_batch(&run, &metrics, &[], &[]).await.unwrap();
    // MLflow's REST API is protobuf JSON: a double that is not finite is
    // the string "NaN", "Infinity" or "-Infinity" (not null).
    let sent = fixture.requests_to("runs/log-batch")[0].json();
    let values: Vec<Value> = sent["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["value"].clone())
        .collect();
    assert_eq!(
        values,
        [
            json!("NaN"),
            json!("Infinity"),
            json!("-Infinity"),
            json!(0.25)
        ]
    );

    // And a server's answers holding them are read, not refused.
    let history = client.metric_history(&run, "loss").await.unwrap();
    assert_eq!(history.len(), 1);
    assert!(history[0].value.is_nan());
    let runs = client.search_all_runs(&[&experiment], "").await.unwrap();
    let data = &runs[0].data;
    assert!(data.metric("loss").unwrap().is_nan());
    assert_eq!(data.metric("grad"), Some(f64::INFINITY));
    assert_eq!(data.metric("lr"), Some(f64::NEG_INFINITY));
    assert_eq!(data.metric("ok"), Some(0.25));
}
