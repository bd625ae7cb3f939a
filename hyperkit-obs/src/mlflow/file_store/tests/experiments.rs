//! Opening a store and its experiments: the layout MLflow expects, awkward
//! names, and one experiment however many callers create it at once.

use std::sync::{Arc, Barrier};

use super::*;
use crate::mlflow::Experiment;

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
