use super::read::{latest, parse_metric_line};
use super::*;
use crate::mlflow::{RunData, RunInfo};

use std::sync::{Arc, Barrier};

/// A fresh directory under the system's temporary directory, removed when
/// dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!(
            "hyperkit-obs-file-store-{name}-{}-{}",
            std::process::id(),
            random_hex32()
        ));
        fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn store(&self) -> FileStore {
        FileStore::open(self.0.join("mlruns")).unwrap()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn record() -> RunRecord {
    RunRecord {
        run_name: "call: summarize 'doc'".to_owned(),
        start_time: 1_700_000_000_000,
        end_time: Some(1_700_000_001_500),
        status: RunStatus::Finished,
        params: vec![
            KeyValue::new("model", "gpt-4o-mini"),
            KeyValue::new("prompt/template", "Summarize: {doc}\nin two lines"),
        ],
        metrics: vec![
            Metric::new("latency_ms", 1500.0, 1_700_000_001_500),
            Metric {
                key: "tokens/out".to_owned(),
                value: 10.0,
                timestamp: 1_700_000_000_100,
                step: 0,
            },
            Metric {
                key: "tokens/out".to_owned(),
                value: 42.0,
                timestamp: 1_700_000_000_200,
                step: 1,
            },
            Metric::new("ratio", 0.1, 1_700_000_001_500),
        ],
        tags: vec![
            KeyValue::new("gen_ai.request.model", "gpt-4o-mini"),
            KeyValue::new("empty", ""),
        ],
    }
}

fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn open_creates_the_default_experiment_and_trash_as_mlflow_does() {
    let tmp = TempDir::new("open");
    let store = tmp.store();
    assert!(store.root().is_absolute());
    assert!(store.root().join(".trash").is_dir());
    let meta = fs::read_to_string(store.root().join("0/meta.yaml")).unwrap();
    let root = store.root().display();
    assert_eq!(
        meta,
        format!(
            "artifact_location: file://{root}/0\ncreation_time: {t}\nexperiment_id: '0'\nlast_update_time: {t}\nlifecycle_stage: active\nname: Default\n",
            t = meta
                .lines()
                .nth(1)
                .unwrap()
                .strip_prefix("creation_time: ")
                .unwrap()
        )
    );
    assert_eq!(
        store.experiments().unwrap(),
        vec![Experiment {
            experiment_id: "0".to_owned(),
            name: "Default".to_owned(),
            lifecycle_stage: "active".to_owned(),
        }]
    );
    // Opening again changes nothing.
    let again = FileStore::open(store.root()).unwrap();
    assert_eq!(
        fs::read_to_string(again.root().join("0/meta.yaml")).unwrap(),
        meta
    );
    // A deleted Default experiment (in .trash) is not created again.
    fs::rename(store.root().join("0"), store.root().join(".trash/0")).unwrap();
    let again = FileStore::open(store.root()).unwrap();
    assert!(!again.root().join("0").exists());
    assert_eq!(again.experiments().unwrap(), vec![]);
    assert_eq!(
        again
            .experiment_by_name("Default")
            .unwrap()
            .unwrap()
            .experiment_id,
        "0"
    );
}

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
fn awkward_strings_are_quoted_and_read_back() {
    let awkward = [
        "hyperkit: model calls",
        "it's",
        "'quoted'",
        "a #b",
        "a#b",
        "- x",
        "-",
        "yes",
        "No",
        "null",
        "~",
        "123",
        "0x1F",
        "1.5e3",
        ".inf",
        "2024-01-01",
        "",
        " lead",
        "trail ",
        "tab\there",
        "line\nbreak",
        "a\n\nb",
        "\n",
        "crlf\r\n",
        "é ünï ☃ 日本",
        "back\\slash",
        "trailing backslash\\",
        "nul\0x",
        "bell\u{7}",
        "dq\"x",
        "\"",
        "@at",
        "%pc",
        "&anchor",
        "*alias",
        "!tag",
        "|block",
        ">fold",
        "[list]",
        "{map}",
        "a, b",
        "key: value: more",
        "ends with colon:",
        "e\u{2028}x",
        "bom\u{FEFF}",
        "nbsp\u{A0}",
        "<<",
        "=",
        "?",
        "🦀 crab",
        &"x ".repeat(100),
    ];
    for s in awkward {
        let written = format!("name: {}\nnext: 1\n", yaml_str(s));
        assert!(!yaml_str(s).contains('\n'), "{s:?} → {written:?}");
        let yaml = Yaml::parse(&written).unwrap_or_else(|e| panic!("{s:?} → {written:?}: {e}"));
        let path = Path::new("meta.yaml");
        assert_eq!(
            yaml.opt_string(path, "name").unwrap().unwrap_or_default(),
            s,
            "{written:?}"
        );
        assert_eq!(yaml.opt_int(path, "next").unwrap(), Some(1));
    }
    // Exactly what PyYAML writes, where it quotes.
    assert_eq!(yaml_str("hyperkit: model calls"), "'hyperkit: model calls'");
    assert_eq!(yaml_str("run: o'ne"), "'run: o''ne'");
    assert_eq!(yaml_str("it's"), "it's");
    assert_eq!(yaml_str("Default"), "Default");
    assert_eq!(yaml_str("0"), "'0'");
    assert_eq!(yaml_str(""), "''");
    assert_eq!(yaml_str("tab\there"), "\"tab\\there\"");
    assert_eq!(yaml_str("nul\0x"), "\"nul\\0x\"");
    assert_eq!(yaml_str("é ünï ☃"), "é ünï ☃");
}

#[test]
fn what_pyyaml_writes_is_read() {
    // `yaml.safe_dump({"name": s}, default_flow_style=False,
    // allow_unicode=True)` for awkward names, long ones folded.
    let cases = [
        ("name: 'line\n\n  break'\n", "line\nbreak"),
        ("name: 'a\n\n\n  b'\n", "a\n\nb"),
        (
            "name: xxxxxxxxxxxxxxxxxxxxxxxxxxxxxx yyyyyyyyyyyyyyyyyyyyyyyyyyyyyy zzzzzzzzzzzzzzzzzzzzzzzzzzzzzz\n  wwwwwwwwww\n",
            "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxx yyyyyyyyyyyyyyyyyyyyyyyyyyyyyy zzzzzzzzzzzzzzzzzzzzzzzzzzzzzz wwwwwwwwww",
        ),
        (
            "name: 'long\\ x x x x x x x x x x x x x x x x x x x x x x x x x x x x x x x x x x x\n  x x x x x x x x x x x x x x x x x x x x x x x x x '\n",
            "long\\ x x x x x x x x x x x x x x x x x x x x x x x x x x x x x x x x x x x x x x x x x x x x x x x x x x x x x x x x x x x x ",
        ),
        ("name: \"tab\\there\"\n", "tab\there"),
        ("name: \"nul\\0x\"\n", "nul\0x"),
        ("name: \"a\\\n  \\ b\"\n", "a b"),
        ("name: back\\slash\n", "back\\slash"),
        ("name: dq\"x\n", "dq\"x"),
        ("name: 'it''s'\n", "it's"),
    ];
    for (text, expected) in cases {
        let yaml = Yaml::parse(text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
        assert_eq!(
            yaml.string(Path::new("m"), "name").unwrap(),
            expected,
            "{text:?}"
        );
    }
    // MLflow 3's experiment meta.yaml, extra keys and nulls included.
    let yaml = Yaml::parse(
        "artifact_location: file:///tmp/x/mlruns/0\ncreation_time: 1795754986068\neffective_trace_archival_retention: null\nexperiment_id: '0'\nlifecycle_stage: active\nname: Default\ntrace_location: null\ntags:\n- a\n- b\n",
    )
    .unwrap();
    let path = Path::new("m");
    assert_eq!(yaml.id(path, "experiment_id").unwrap(), "0");
    assert_eq!(yaml.opt_string(path, "trace_location").unwrap(), None);
    assert_eq!(
        yaml.opt_int(path, "creation_time").unwrap(),
        Some(1_795_754_986_068)
    );
}

#[test]
fn experiment_names_with_awkward_characters() {
    let tmp = TempDir::new("names");
    let store = tmp.store();
    let names = [
        "hyperkit: model calls",
        "it's 'quoted'",
        "# not a comment",
        "yes",
        "12345",
        "multi\nline",
        "é ☃",
    ];
    let ids: Vec<String> = names
        .iter()
        .map(|n| store.get_or_create_experiment(n).unwrap())
        .collect();
    for (name, id) in names.iter().zip(&ids) {
        let found = store.experiment_by_name(name).unwrap().unwrap();
        assert_eq!((&found.name, &found.experiment_id), (&name.to_string(), id));
        assert_eq!(&store.get_or_create_experiment(name).unwrap(), id);
    }
    let meta = fs::read_to_string(store.root().join(&ids[0]).join("meta.yaml")).unwrap();
    assert!(meta.contains("\nname: 'hyperkit: model calls'\n"), "{meta}");
    assert_eq!(store.experiments().unwrap().len(), names.len() + 1);
    assert!(store.experiment_by_name("absent").unwrap().is_none());
    let err = store.get_or_create_experiment("").unwrap_err();
    assert!(matches!(err, MlflowError::Store { .. }), "{err}");
}

#[test]
fn concurrent_get_or_create_makes_one_experiment() {
    let tmp = TempDir::new("concurrent");
    let root = tmp.store().root().to_owned();
    let barrier = Arc::new(Barrier::new(8));
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let barrier = Arc::clone(&barrier);
            let root = root.clone();
            std::thread::spawn(move || {
                // Each thread opens its own store, as another process would.
                let store = FileStore::open(root).unwrap();
                barrier.wait();
                store.get_or_create_experiment("shared: name").unwrap()
            })
        })
        .collect();
    let mut ids: Vec<String> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 1, "{ids:?}");
    let dirs: Vec<String> = entries(&root)
        .into_iter()
        .filter(|n| root.join(n).is_dir())
        .collect();
    assert_eq!(dirs, [".trash", "0", ids[0].as_str()]);
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

#[test]
fn a_malformed_meta_yaml_is_a_store_error_naming_the_file() {
    let tmp = TempDir::new("malformed");
    let store = tmp.store();
    let exp = store.get_or_create_experiment("e").unwrap();
    let run_id = store.log_run(&exp, &record()).unwrap();
    let meta = store.root().join(&exp).join(&run_id).join("meta.yaml");
    let good = fs::read_to_string(&meta).unwrap();
    for bad in [
        "this is not yaml",
        "run_id: 'unterminated\n",
        &good.replace("status: 3", "status: 9"),
        &good.replace("start_time: 1700000000000", "start_time: soon"),
        &good.replace("experiment_id: ", "experiment: "),
    ] {
        fs::write(&meta, bad).unwrap();
        for err in [
            store.runs(&exp).unwrap_err(),
            store.run(&run_id).unwrap_err(),
        ] {
            match &err {
                MlflowError::Store { path, .. } => assert_eq!(path, &meta, "{bad:?}"),
                other => panic!("{bad:?}: {other}"),
            }
            assert!(err.to_string().contains("meta.yaml"), "{err}");
        }
    }
    fs::write(&meta, good).unwrap();
    let metric = store
        .root()
        .join(&exp)
        .join(&run_id)
        .join("metrics/latency_ms");
    fs::write(&metric, "12 not-a-number 0\n").unwrap();
    match store.runs(&exp).unwrap_err() {
        MlflowError::Store { path, .. } => assert_eq!(path, metric),
        other => panic!("{other}"),
    }
    let exp_meta = store.root().join(&exp).join("meta.yaml");
    fs::write(&exp_meta, "name: [unclosed\n").unwrap();
    match store.experiments().unwrap_err() {
        MlflowError::Store { path, .. } => assert_eq!(path, exp_meta),
        other => panic!("{other}"),
    }
}

#[test]
fn a_run_being_written_is_invisible() {
    let tmp = TempDir::new("in-progress");
    let store = tmp.store();
    // What log_run leaves between its steps: a temporary directory without
    // meta.yaml, then the run's directory without meta.yaml.
    let tmp_run = store
        .root()
        .join("0")
        .join(format!(".tmp-{}", random_hex32()));
    let half = store.root().join("0").join(random_hex32());
    for dir in [&tmp_run, &half] {
        for sub in ["metrics", "params", "artifacts", "tags"] {
            fs::create_dir_all(dir.join(sub)).unwrap();
        }
        fs::write(dir.join("params/p"), "v").unwrap();
    }
    assert_eq!(store.runs("0").unwrap(), vec![]);
    let id = half.file_name().unwrap().to_str().unwrap();
    assert_eq!(store.run(id).unwrap(), None);
}

#[test]
fn reopening_removes_what_a_killed_writer_left_and_finishes_a_run_renamed_halfway() {
    let tmp = TempDir::new("recover");
    let store = tmp.store();
    let whole = store.log_run("0", &record()).unwrap();
    // Killed before the first rename: a hidden temporary directory.
    let litter = store
        .root()
        .join("0")
        .join(format!(".tmp-{}", random_hex32()));
    fs::create_dir_all(litter.join("params")).unwrap();
    fs::write(litter.join("params/p"), "v").unwrap();
    // Killed between the two renames: the run is whole, its meta.yaml still
    // under its temporary name.
    let halfway = store.log_run("0", &record()).unwrap();
    let dir = store.root().join("0").join(&halfway);
    fs::rename(dir.join("meta.yaml"), dir.join(META_TMP)).unwrap();
    assert_eq!(
        store.runs("0").unwrap().len(),
        1,
        "a half-renamed run is not seen"
    );

    let store = tmp.store();
    assert!(
        !litter.exists(),
        "the temporary directory is removed at the next start"
    );
    let runs = store.runs("0").unwrap();
    let mut ids: Vec<&str> = runs.iter().map(|r| r.info.run_id.as_str()).collect();
    ids.sort_unstable();
    let mut want = vec![whole.as_str(), halfway.as_str()];
    want.sort_unstable();
    assert_eq!(ids, want, "the half-renamed run is finished, whole");
    assert_eq!(
        store.run(&halfway).unwrap().unwrap().data.params,
        store.run(&whole).unwrap().unwrap().data.params
    );
}

#[test]
fn a_hostile_store_is_refused_with_store_errors_not_read_whole() {
    let tmp = TempDir::new("hostile");
    let store = tmp.store();
    let id = store.log_run("0", &record()).unwrap();
    let dir = store.root().join("0").join(&id);

    // A param file far larger than any MLflow writes.
    let big = dir.join("params").join("huge");
    fs::write(&big, vec![b'x'; (super::read::MAX_VALUE_FILE + 1) as usize]).unwrap();
    let e = store.run(&id).unwrap_err().to_string();
    assert!(e.contains("larger than"), "{e}");
    fs::remove_file(&big).unwrap();

    // Keys nested past any sane depth.
    let mut deep = dir.join("tags");
    for i in 0..(super::read::MAX_KEY_DEPTH + 2) {
        deep = deep.join(format!("d{i}"));
    }
    fs::create_dir_all(&deep).unwrap();
    fs::write(deep.join("leaf"), "v").unwrap();
    let e = store.run(&id).unwrap_err().to_string();
    assert!(e.contains("nested deeper"), "{e}");
    fs::remove_dir_all(dir.join("tags").join("d0")).unwrap();

    // A meta.yaml of a megabyte and more.
    let meta = dir.join("meta.yaml");
    let mut text = fs::read_to_string(&meta).unwrap();
    text.push_str(&format!("junk: '{}'\n", "y".repeat(1 << 20)));
    fs::write(&meta, text).unwrap();
    let e = store.run(&id).unwrap_err().to_string();
    assert!(e.contains("larger than"), "{e}");
}

// Property tests as fuzzers: whatever bytes a meta.yaml or a metric file
// holds, reading it gives a value or a Store error, never a panic. Run 100
// times more by hand with `PROPTEST_CASES=25600 cargo test -p hyperkit-obs
// --lib mlflow::file_store`.
mod fuzz {
    use super::super::read::parse_metric_line;
    use super::super::yaml::Yaml;
    use proptest::prelude::*;

    fn yamlish() -> impl Strategy<Value = String> {
        let piece = prop_oneof![
            Just("run_id: abc\n".to_owned()),
            Just("status: 3\n".to_owned()),
            Just("  continued\n".to_owned()),
            Just("- item\n".to_owned()),
            Just("key: 'it''s'\n".to_owned()),
            Just("key: \"a\\x41\\u263A\\\n  b\"\n".to_owned()),
            Just("key: \"unterminated\n".to_owned()),
            Just("key: [1, 2\n".to_owned()),
            Just("---\n".to_owned()),
            Just("#comment\n".to_owned()),
            "[ -~]{0,20}\n",
            any::<String>(),
        ];
        proptest::collection::vec(piece, 0..40).prop_map(|v| v.concat())
    }

    proptest! {
        #[test]
        fn any_meta_yaml_text_parses_or_is_refused(text in yamlish()) {
            let _ = Yaml::parse(&text);
        }

        #[test]
        fn arbitrary_bytes_as_meta_yaml_parse_or_are_refused(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let _ = Yaml::parse(&String::from_utf8_lossy(&bytes));
        }

        #[test]
        fn any_metric_line_parses_or_is_refused(line in "[0-9 .eE+\\-naif]{0,64}|\\PC{0,64}") {
            if let Some(m) = parse_metric_line(&line, "k") {
                prop_assert_eq!(m.key, "k");
            }
        }
    }
}
