//! The file store's specification, by concern: experiments, runs written
//! and read back, the YAML of `meta.yaml`, damaged and half-written
//! stores, and property tests. Here are the fixtures they share.

use std::fs;
use std::path::{Path, PathBuf};

use super::write::random_hex32;
use super::*;
use crate::mlflow::{KeyValue, Metric, RunRecord, RunStatus};

mod damage;
mod experiments;
mod fuzz;
mod runs;
mod yaml;

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
