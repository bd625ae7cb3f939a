//! Runs written and read back: round trips, metric values and their
//! latest, tags replaced, values cut to MLflow's limits and bad keys
//! refused before anything is written.

use super::super::read::{latest, parse_metric_line};
use super::super::write::python_float;
use super::super::yaml::yaml_str;
use super::*;
use crate::mlflow::{MAX_PARAM_VALUE_LENGTH, MAX_TAG_VALUE_LENGTH, Run, RunData, RunInfo};

#[test]
fn a_run_round_trips_through_runs_and_run() {
    let tmp = TempDir::new("round-trip");
    let store = tmp.store();
    let exp = store
        .get_or_create_experiment("hyperkit: model calls")
        .unwrap();
    assert_eq!(exp.len(), 18, "{exp}");
    let rec = record();
    let run_id = store.log_run(&exp, &rec).unwrap();
    assert_eq!(run_id.len(), 32);
    assert!(run_id.chars().all(|c| matches!(c, '0'..='9' | 'a'..='f')));

    let dir = store.root().join(&exp).join(&run_id);
    assert_eq!(
        entries(&dir),
        ["artifacts", "meta.yaml", "metrics", "params", "tags"]
    );
    let mut expected_entries = vec!["meta.yaml".to_owned(), run_id.clone()];
    expected_entries.sort();
    assert_eq!(entries(&store.root().join(&exp)), expected_entries);
    assert_eq!(
        fs::read_to_string(dir.join("params/prompt/template")).unwrap(),
        "Summarize: {doc}\nin two lines"
    );
    assert_eq!(
        fs::read_to_string(dir.join("metrics/tokens/out")).unwrap(),
        "1700000000100 10.0 0\n1700000000200 42.0 1\n"
    );
    assert_eq!(
        fs::read_to_string(dir.join("tags/mlflow.runName")).unwrap(),
        "call: summarize 'doc'"
    );
    let meta = fs::read_to_string(dir.join("meta.yaml")).unwrap();
    let user = std::env::var("USER")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| "unknown".to_owned());
    assert_eq!(
        meta,
        format!(
            "artifact_uri: file://{}/artifacts\nend_time: 1700000001500\nentry_point_name: ''\nexperiment_id: '{exp}'\nlifecycle_stage: active\nrun_id: {run_id}\nrun_name: 'call: summarize ''doc'''\nrun_uuid: {run_id}\nsource_name: ''\nsource_type: 4\nsource_version: ''\nstart_time: 1700000000000\nstatus: 3\ntags: []\nuser_id: {}\n",
            dir.display(),
            yaml_str(&user)
        )
        .replace(&format!("run_id: {run_id}"), &format!("run_id: {}", yaml_str(&run_id)))
        .replace(&format!("run_uuid: {run_id}"), &format!("run_uuid: {}", yaml_str(&run_id)))
    );

    let expected = Run {
        info: RunInfo {
            run_id: run_id.clone(),
            experiment_id: exp.clone(),
            run_name: rec.run_name.clone(),
            status: RunStatus::Finished,
            start_time: rec.start_time,
            end_time: rec.end_time,
            lifecycle_stage: "active".to_owned(),
        },
        data: RunData {
            metrics: vec![
                rec.metrics[0].clone(),
                rec.metrics[3].clone(),
                rec.metrics[2].clone(),
            ],
            params: vec![rec.params[0].clone(), rec.params[1].clone()],
            tags: vec![
                KeyValue::new("empty", ""),
                KeyValue::new("gen_ai.request.model", "gpt-4o-mini"),
                KeyValue::new("mlflow.runName", rec.run_name.clone()),
            ],
        },
    };
    assert_eq!(store.runs(&exp).unwrap(), vec![expected.clone()]);
    assert_eq!(store.run(&run_id).unwrap(), Some(expected));
    assert_eq!(store.run(&random_hex32()).unwrap(), None);
    assert_eq!(
        store.metric_history(&run_id, "tokens/out").unwrap(),
        rec.metrics[1..3].to_vec()
    );
    assert_eq!(store.metric_history(&run_id, "absent").unwrap(), vec![]);
    assert_eq!(store.runs("0").unwrap(), vec![]);
}

#[test]
fn log_metric_appends_and_set_tag_replaces() {
    let tmp = TempDir::new("append");
    let store = tmp.store();
    let run_id = store.log_run("0", &record()).unwrap();
    let later = Metric {
        key: "tokens/out".to_owned(),
        value: f64::NAN,
        timestamp: 1_700_000_000_300,
        step: 2,
    };
    store.log_metric(&run_id, &later).unwrap();
    store
        .log_metric(&run_id, &Metric::new("new", f64::NEG_INFINITY, 5))
        .unwrap();
    store
        .set_tag(&run_id, &KeyValue::new("gen_ai.request.model", "other"))
        .unwrap();
    store
        .set_tag(&run_id, &KeyValue::new("a/b", "nested"))
        .unwrap();
    let run = store.run(&run_id).unwrap().unwrap();
    assert!(run.data.metric("tokens/out").unwrap().is_nan());
    assert_eq!(run.data.metric("new"), Some(f64::NEG_INFINITY));
    assert_eq!(run.data.tag("gen_ai.request.model"), Some("other"));
    assert_eq!(run.data.tag("a/b"), Some("nested"));
    assert_eq!(
        store.metric_history(&run_id, "tokens/out").unwrap().len(),
        3
    );
    let dir = store.root().join("0").join(&run_id);
    assert_eq!(
        fs::read_to_string(dir.join("metrics/new")).unwrap(),
        "5 -inf 0\n"
    );
    // No temporary file left behind.
    assert!(entries(&dir).iter().all(|n| !n.starts_with('.')));

    let unknown = random_hex32();
    let err = store.log_metric(&unknown, &later).unwrap_err();
    assert!(matches!(err, MlflowError::Store { .. }), "{err}");
    let err = store.set_tag("../0", &KeyValue::new("k", "v")).unwrap_err();
    assert!(matches!(err, MlflowError::Store { .. }), "{err}");
}

#[test]
fn a_record_without_end_time_is_running() {
    let tmp = TempDir::new("running");
    let store = tmp.store();
    let mut rec = record();
    rec.end_time = None;
    let run_id = store.log_run("0", &rec).unwrap();
    let meta = fs::read_to_string(store.root().join("0").join(&run_id).join("meta.yaml")).unwrap();
    assert!(meta.contains("\nend_time: null\n"), "{meta}");
    assert!(meta.contains("\nstatus: 1\n"), "{meta}");
    let run = store.run(&run_id).unwrap().unwrap();
    assert_eq!(run.info.status, RunStatus::Running);
    assert_eq!(run.info.end_time, None);
}

#[test]
fn latest_metric_is_max_step_then_timestamp_then_value() {
    let m = |value: f64, timestamp: i64, step: i64| Metric {
        key: "m".to_owned(),
        value,
        timestamp,
        step,
    };
    let tmp = TempDir::new("latest");
    let store = tmp.store();
    let mut rec = record();
    rec.metrics = vec![
        // A later timestamp at a lower step loses.
        m(1.0, 900, 1),
        m(2.0, 100, 3),
        m(5.0, 100, 3),
        m(3.0, 200, 3),
        m(4.0, 150, 3),
        m(9.0, 999, 2),
    ];
    let run_id = store.log_run("0", &rec).unwrap();
    assert_eq!(
        store.run(&run_id).unwrap().unwrap().data.metric("m"),
        Some(3.0)
    );
    // Same step and timestamp: the greater value.
    store.log_metric(&run_id, &m(7.0, 200, 3)).unwrap();
    store.log_metric(&run_id, &m(6.0, 200, 3)).unwrap();
    assert_eq!(
        store.run(&run_id).unwrap().unwrap().data.metric("m"),
        Some(7.0)
    );
    // A higher step wins even with an older timestamp.
    store.log_metric(&run_id, &m(-1.0, 1, 4)).unwrap();
    assert_eq!(
        store.run(&run_id).unwrap().unwrap().data.metric("m"),
        Some(-1.0)
    );
    assert_eq!(latest(&[]), None);
    // NaN never compares greater: the first of the ties stays (Python's max).
    let nan_first = [m(f64::NAN, 1, 0), m(2.0, 1, 0)];
    assert!(latest(&nan_first).unwrap().value.is_nan());
}

#[test]
fn metric_values_are_written_as_python_reads_them() {
    for (v, text) in [
        (3.0, "3.0"),
        (0.1, "0.1"),
        (1e20, "1e20"),
        (1e-7, "1e-7"),
        (-2.5, "-2.5"),
        (f64::NAN, "nan"),
        (f64::INFINITY, "inf"),
        (f64::NEG_INFINITY, "-inf"),
        (f64::MAX, "1.7976931348623157e308"),
    ] {
        assert_eq!(python_float(v), text);
        let back: f64 = text.parse().unwrap();
        assert!(back == v || (v.is_nan() && back.is_nan()), "{text}");
    }
    // What Python writes, read back.
    let m = parse_metric_line("1795754993179 1e+20 5", "k").unwrap();
    assert_eq!((m.timestamp, m.value, m.step), (1_795_754_993_179, 1e20, 5));
    assert_eq!(parse_metric_line("1 2.5", "k").unwrap().step, 0);
    assert_eq!(parse_metric_line("1 2.5 3 ds digest", "k").unwrap().step, 0);
    assert!(parse_metric_line("1 2.5 3 4", "k").is_none());
    assert!(parse_metric_line("x 2.5 3", "k").is_none());
}

#[test]
fn long_values_are_truncated_as_mlflow_does() {
    let tmp = TempDir::new("truncate");
    let store = tmp.store();
    let mut rec = record();
    rec.params
        .push(KeyValue::new("long_param", "p".repeat(7000)));
    rec.tags.push(KeyValue::new("long_tag", "é".repeat(9000)));
    let run_id = store.log_run("0", &rec).unwrap();
    let run = store.run(&run_id).unwrap().unwrap();
    let param = run.data.param("long_param").unwrap();
    assert_eq!(param.chars().count(), MAX_PARAM_VALUE_LENGTH);
    assert_eq!(
        param,
        format!("{}...", "p".repeat(MAX_PARAM_VALUE_LENGTH - 3))
    );
    let tag = run.data.tag("long_tag").unwrap();
    assert_eq!(tag, format!("{}...", "é".repeat(MAX_TAG_VALUE_LENGTH - 3)));
    store
        .set_tag(&run_id, &KeyValue::new("later", "x".repeat(8001)))
        .unwrap();
    let run = store.run(&run_id).unwrap().unwrap();
    assert_eq!(
        run.data.tag("later").unwrap().chars().count(),
        MAX_TAG_VALUE_LENGTH
    );
}

#[test]
fn a_bad_key_is_refused_before_anything_is_written() {
    let tmp = TempDir::new("bad-key");
    let store = tmp.store();
    let exp = store.get_or_create_experiment("e").unwrap();
    for bad in ["../escape", "a//b", "", "semi;colon", "/abs", "a/"] {
        for place in 0..3 {
            let mut rec = record();
            match place {
                0 => rec.params.push(KeyValue::new(bad, "v")),
                1 => rec.metrics.push(Metric::new(bad, 1.0, 1)),
                _ => rec.tags.push(KeyValue::new(bad, "v")),
            }
            let err = store.log_run(&exp, &rec).unwrap_err();
            assert!(
                matches!(err, MlflowError::InvalidKey { .. }),
                "{bad:?}: {err}"
            );
        }
    }
    let mut dup = record();
    dup.params.push(KeyValue::new("model", "another"));
    assert!(matches!(
        store.log_run(&exp, &dup).unwrap_err(),
        MlflowError::InvalidKey { .. }
    ));
    assert_eq!(entries(&store.root().join(&exp)), ["meta.yaml"]);
    // Unknown or path-like experiment ids are refused too.
    for exp in ["../x", ".trash", ""] {
        let err = store.log_run(exp, &record()).unwrap_err();
        assert!(matches!(err, MlflowError::Store { .. }), "{exp:?}: {err}");
    }
    let err = store.log_run("123", &record()).unwrap_err();
    assert!(
        matches!(&err, MlflowError::ExperimentNotFound { experiment_id } if experiment_id == "123"),
        "{err}"
    );
    let run_id = store.log_run(&exp, &record()).unwrap();
    let err = store
        .log_metric(&run_id, &Metric::new("../x", 1.0, 1))
        .unwrap_err();
    assert!(matches!(err, MlflowError::InvalidKey { .. }), "{err}");
}
