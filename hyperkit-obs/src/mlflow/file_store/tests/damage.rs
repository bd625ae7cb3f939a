//! Damaged and half-written stores: a malformed `meta.yaml`, a run being
//! written, what a killed writer leaves, and files no MLflow writes, each
//! a store error or invisible, never a panic.

use super::*;

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
