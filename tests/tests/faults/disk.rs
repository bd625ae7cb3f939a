//! The disk under the local log store, or under the MLflow file store,
//! fills up: the caller never blocks, drops are counted, the readiness
//! check shows the sink failing, and writing resumes by itself when space
//! returns, with nothing corrupt. The disk is a real one: a 1 MiB tmpfs,
//! mounted in a private mount namespace, grown with `mount -o remount` when
//! space returns.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use test_support::TempDir;
use test_support::process::test_name;
use test_support::sink::Slowest;

use crate::{
    CHILD_DEADLINE, PRIVATE_MOUNTS, complete, fault, grow_tmpfs, mount_tmpfs, readiness, report,
    run_child,
};

/// Waits for `condition`, at most `within`, failing the child with `what`.
fn wait(what: &str, within: Duration, condition: impl FnMut() -> bool) {
    test_support::wait::wait_for(what, within, condition);
}

fn log_entry(i: u64) -> hyperkit_obs::logs::store::StoreEntry {
    use hyperkit_obs::logs::{FieldValue, LogRecord};
    let mut record = LogRecord::new(
        1_795_000_000_000 + i as i64,
        "info",
        "faults",
        format!("event {i}: {}", "padding ".repeat(40)),
    );
    record.fields.push(("seq", FieldValue::U64(i)));
    hyperkit_obs::logs::store::StoreEntry::new(&record, "faults")
}

fn logstore_child(dir: &Path) -> ! {
    use hyperkit_obs::logs::store::{self, WriterOptions};
    use hyperkit_obs::logs::{LogStore, Query, SearchOptions};

    mount_tmpfs(dir, "1m");
    let logs = dir.join("logs");
    let options = WriterOptions {
        queue_capacity: 2_000,
        batch_size: 100,
        ..WriterOptions::default()
    };
    let (sink, guard) = store::start(&logs, options).expect("the store opens on the tmpfs");
    let mut slowest = Slowest::default();
    let mut sent = 0u64;
    let mut send = |n: u64, sent: &mut u64| {
        let mut accepted = 0;
        for _ in 0..n {
            if slowest.time(|| sink.send(log_entry(*sent))) {
                accepted += 1;
            }
            *sent += 1;
        }
        accepted
    };
    // Fill the disk: send until the writer reports it failing.
    let deadline = Instant::now() + CHILD_DEADLINE / 2;
    while !guard.status().failing {
        assert!(
            Instant::now() < deadline,
            "the disk never filled: {:?}",
            guard.status()
        );
        send(200, &mut sent);
        if guard.status().queued > 1_000 {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    let failing = guard.status();
    assert!(
        failing
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("full") || e.contains("disk")),
        "{failing:?}"
    );
    let check = readiness("logstore");
    assert_eq!(check.status, "fail", "{check:?}");
    // While it is full: the queue holds what it can, the rest is dropped,
    // counted exactly.
    let before = guard.status();
    let offered = 5_000;
    let accepted = send(offered, &mut sent);
    let during = guard.status();
    assert_eq!(
        during.dropped - before.dropped,
        offered - accepted,
        "every event refused is counted"
    );
    assert!(
        accepted <= 2_000,
        "the queue is bounded: {accepted} accepted"
    );

    // Space returns: what was kept is written, by itself.
    grow_tmpfs(dir, "64m");
    wait("the writer to catch up", CHILD_DEADLINE / 2, || {
        guard.flush(Duration::from_millis(500))
    });
    let after = guard.status();
    assert!(!after.failing, "{after:?}");
    assert_eq!(readiness("logstore").status, "pass");
    let delivered = after.delivered;
    drop(guard);
    let reopened = LogStore::open(&logs).expect("the store reopens: not corrupt");
    let stored = reopened.count().expect("the store counts");
    assert_eq!(stored, delivered, "every event delivered is stored");
    let newest = reopened
        .search(&Query::parse("padding").unwrap(), &SearchOptions::default())
        .expect("the store searches");
    assert!(!newest.is_empty());
    report(&[
        ("sent", sent),
        ("stored", stored),
        ("dropped", after.dropped),
        ("slowest_us", slowest.took.as_micros() as u64),
        ("preempted", slowest.preempted as u64),
    ]);
}

#[test]
fn a_full_disk_under_the_log_store_costs_counted_drops_never_a_blocked_caller_and_heals() {
    if let Some(dir) = fault().and_then(|f| f.strip_prefix("logstore:").map(PathBuf::from)) {
        logstore_child(&dir);
    }
    let dir = TempDir::new("faults-logstore");
    let fault = format!("logstore:{}", dir.path().display());
    let report = run_child(
        &test_name(
            module_path!(),
            "a_full_disk_under_the_log_store_costs_counted_drops_never_a_blocked_caller_and_heals",
        ),
        &fault,
        &[],
        Some(PRIVATE_MOUNTS),
        |_| {},
    );
    assert!(report.get("stored") > 0);
    assert!(
        report.get("dropped") > 0,
        "the disk was full long enough to drop"
    );
    assert_eq!(
        report.get("sent"),
        report.get("stored") + report.get("dropped"),
        "every event is stored or counted as dropped"
    );
    assert!(
        report.get("slowest_us") < 50_000,
        "the slowest send took {} µs ({} preempted by the scheduler, not timed)",
        report.get("slowest_us"),
        report.get("preempted")
    );
}

fn mlflow_child(dir: &Path) -> ! {
    use hyperkit_obs::mlflow::{self, FileStore, MlflowConfig};

    mount_tmpfs(dir, "1m");
    let root = dir.join("mlruns");
    let config = MlflowConfig::from_lookup(|k| match k {
        "MLFLOW_TRACKING_URI" => Some(root.display().to_string()),
        "MLFLOW_EXPERIMENT_NAME" => Some("faults".to_owned()),
        "HYPERKIT_MLFLOW_QUEUE_CAPACITY" => Some("300".to_owned()),
        _ => None,
    })
    .expect("the config");
    let guard = mlflow::start(&config).expect("the exporter starts on the tmpfs");
    let mut slowest = Slowest::default();
    let mut calls = 0u64;
    let mut call = |calls: &mut u64| {
        let model = format!("model-{}", *calls % 3);
        let _ = slowest.time(|| complete(&model, "a prompt to fill the disk"));
        *calls += 1;
    };
    let deadline = Instant::now() + CHILD_DEADLINE / 2;
    while !mlflow::status().is_some_and(|s| s.failing) {
        assert!(
            Instant::now() < deadline,
            "the disk never filled: {:?}",
            mlflow::status()
        );
        for _ in 0..20 {
            call(&mut calls);
        }
        if mlflow::status().is_some_and(|s| s.queued > 200) {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    assert_eq!(readiness("mlflow").status, "fail");
    let before = mlflow::status().unwrap();
    for _ in 0..1_000 {
        call(&mut calls);
    }
    let during = mlflow::status().unwrap();
    assert!(during.queued <= 300, "the queue is bounded: {during:?}");
    assert!(
        during.dropped > before.dropped,
        "calls past the bound are counted"
    );
    assert_eq!(
        during.rejected, 0,
        "a full disk drops nothing for good: {during:?}"
    );

    grow_tmpfs(dir, "256m");
    wait("the exporter to catch up", CHILD_DEADLINE / 2, || {
        mlflow::flush(Duration::from_millis(500))
    });
    let after = mlflow::status().unwrap();
    assert!(!after.failing, "{after:?}");
    drop(guard);
    let store = FileStore::open(&root).expect("the store reopens");
    let experiment = store
        .experiment_by_name("faults")
        .unwrap()
        .expect("the experiment");
    let runs = store
        .runs(&experiment.experiment_id)
        .expect("every run reads back whole");
    assert_eq!(
        runs.len() as u64,
        after.delivered,
        "every run delivered is there"
    );
    report(&[
        ("calls", calls),
        ("runs", runs.len() as u64),
        ("dropped", after.dropped),
        ("slowest_us", slowest.took.as_micros() as u64),
        ("preempted", slowest.preempted as u64),
    ]);
}

#[test]
fn a_full_disk_under_the_mlflow_file_store_costs_counted_drops_never_a_blocked_caller_and_heals() {
    if let Some(dir) = fault().and_then(|f| f.strip_prefix("mlflow:").map(PathBuf::from)) {
        mlflow_child(&dir);
    }
    let dir = TempDir::new("faults-mlflow");
    let fault = format!("mlflow:{}", dir.path().display());
    let report = run_child(
        &test_name(
            module_path!(),
            "a_full_disk_under_the_mlflow_file_store_costs_counted_drops_never_a_blocked_caller_and_heals",
        ),
        &fault,
        &[],
        Some(PRIVATE_MOUNTS),
        |_| {},
    );
    assert!(report.get("runs") > 0);
    assert_eq!(
        report.get("calls"),
        report.get("runs") + report.get("dropped"),
        "every call is a run or counted as dropped"
    );
    assert!(
        report.get("slowest_us") < 50_000,
        "the slowest call took {} µs ({} preempted by the scheduler, not timed)",
        report.get("slowest_us"),
        report.get("preempted")
    );
}
