//! The process is killed (SIGKILL) while it writes runs to `./mlruns`:
//! each run is wholly there or wholly absent, and the next start removes
//! what the killed writer left.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use test_support::TempDir;
use test_support::process::test_name;

use crate::{CHILD_DEADLINE, complete, fault};

fn writer_child(root: &Path) -> ! {
    use hyperkit_obs::mlflow::{self, MlflowConfig};
    let config = MlflowConfig::from_lookup(|k| match k {
        "MLFLOW_TRACKING_URI" => Some(root.display().to_string()),
        "MLFLOW_EXPERIMENT_NAME" => Some("killed".to_owned()),
        _ => None,
    })
    .expect("the config");
    let _guard = mlflow::start(&config).expect("the exporter starts");
    eprintln!("WRITING");
    loop {
        let _ = complete("model-k", "written until killed");
        std::thread::yield_now();
    }
}

#[test]
fn a_writer_killed_mid_run_leaves_whole_runs_and_its_litter_goes_at_the_next_start() {
    use hyperkit_obs::mlflow::FileStore;
    if let Some(root) = fault().and_then(|f| f.strip_prefix("killed:").map(PathBuf::from)) {
        writer_child(&root);
    }
    let dir = TempDir::new("faults-killed");
    let root = dir.path().join("mlruns");
    let fault = format!("killed:{}", root.display());
    let child_test = test_name(
        module_path!(),
        "a_writer_killed_mid_run_leaves_whole_runs_and_its_litter_goes_at_the_next_start",
    );
    for round in 0..5 {
        let exe = std::env::current_exe().unwrap();
        let mut child = Command::new(exe)
            .args(["--exact", &child_test, "--nocapture"])
            .env("HYPERKIT_FAULT", &fault)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        let mut line = String::new();
        while !line.contains("WRITING") {
            line.clear();
            assert!(stderr.read_line(&mut line).unwrap() > 0, "the writer died");
        }
        // Let it write for a while, a different while each round, then kill
        // it without warning.
        let experiment_runs = || {
            std::fs::read_dir(&root)
                .into_iter()
                .flatten()
                .flatten()
                .filter(|e| e.path().join("meta.yaml").is_file())
                .map(|e| std::fs::read_dir(e.path()).map_or(0, |d| d.count()))
                .sum::<usize>()
        };
        let target = experiment_runs() + 50 * (round + 1);
        test_support::wait::wait_for("runs to be written", CHILD_DEADLINE, || {
            experiment_runs() >= target
        });
        child.kill().unwrap();
        child.wait().unwrap();

        // Every run is whole or absent; the next start tidies up.
        let store = FileStore::open(&root).expect("the store reopens");
        let litter: Vec<PathBuf> = std::fs::read_dir(&root)
            .unwrap()
            .flatten()
            .flat_map(|e| std::fs::read_dir(e.path()).into_iter().flatten().flatten())
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with(".tmp-"))
            })
            .collect();
        assert!(litter.is_empty(), "left behind: {litter:?}");
        let experiment = store.experiment_by_name("killed").unwrap().unwrap();
        let runs = store
            .runs(&experiment.experiment_id)
            .expect("every run reads back");
        for run in &runs {
            let dir = root.join(&experiment.experiment_id).join(&run.info.run_id);
            assert!(dir.join("meta.yaml").is_file());
            for param in ["model", "task"] {
                assert!(
                    run.data.params.iter().any(|p| p.key == param),
                    "run {} lacks param {param}",
                    run.info.run_id
                );
            }
        }
        // Directories of the experiment are runs with a meta.yaml, and
        // nothing else but MLflow's own.
        for entry in std::fs::read_dir(root.join(&experiment.experiment_id))
            .unwrap()
            .flatten()
        {
            let name = entry.file_name().to_string_lossy().into_owned();
            if entry.path().is_dir()
                && !["tags", "datasets", "traces", "models"].contains(&name.as_str())
            {
                assert!(
                    entry.path().join("meta.yaml").is_file(),
                    "half a run: {name}"
                );
            }
        }
    }
}
