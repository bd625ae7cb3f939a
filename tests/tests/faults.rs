//! Faults a program meets in production, each run in a child process of
//! this test binary (the test re-runs itself with `HYPERKIT_FAULT` set, so
//! that what it breaks — stdout, a disk, the process itself — is the
//! child's alone):
//!
//! - stdout a pipe nobody reads, or closed: tracked calls never block, and
//!   the lines that do not fit are dropped and counted;
//! - the disk under the local log store, or under the MLflow file store,
//!   fills up: the caller never blocks, drops are counted, the readiness
//!   check shows the sink failing, and writing resumes by itself when space
//!   returns, with nothing corrupt. The disk is a real one: a 1 MiB tmpfs,
//!   mounted in a private mount namespace (`unshare --user
//!   --map-root-user --mount`), grown with `mount -o remount` when space
//!   returns;
//! - the process is killed (SIGKILL) while it writes runs to `./mlruns`:
//!   each run is wholly there or wholly absent, and the next start removes
//!   what the killed writer left.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hyperkit_obs::track_model;

/// How long a child may take, generous for a loaded 2-core machine.
const CHILD_DEADLINE: Duration = Duration::from_secs(120);

#[track_model(model, task = "faults")]
fn complete(model: &str, prompt: &str) -> Result<String, String> {
    Ok(format!("{model}: {} tokens", prompt.len()))
}

/// The fault this process is the child for, if it is one.
fn fault() -> Option<String> {
    std::env::var("HYPERKIT_FAULT").ok()
}

/// A `RESULT key=value …` line of a child, as a lookup.
struct Report(Vec<(String, String)>);

impl Report {
    fn get(&self, key: &str) -> u64 {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or_else(|| panic!("no numeric `{key}` in the child's report"))
    }
}

/// Prints the child's result on stderr (stdout may be what is broken) and
/// ends the child without the test harness's own output.
fn report(pairs: &[(&str, u64)]) -> ! {
    let line: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect();
    eprintln!("RESULT {}", line.join(" "));
    std::process::exit(0);
}

/// Runs this test in a child with `HYPERKIT_FAULT=fault` and `env`, its
/// stdout as `stdout` says, and returns its report; fails on a child that
/// fails or outlives [`CHILD_DEADLINE`].
fn run_child(
    test: &str,
    fault: &str,
    env: &[(&str, &str)],
    wrap: Option<&[&str]>,
    stdout: fn(&mut Child),
) -> Report {
    let exe = std::env::current_exe().expect("the test binary");
    let mut cmd = match wrap {
        Some(prefix) => {
            let mut c = Command::new(prefix[0]);
            c.args(&prefix[1..]).arg(&exe);
            c
        }
        None => Command::new(&exe),
    };
    cmd.args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env("HYPERKIT_FAULT", fault)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("the child starts");
    stdout(&mut child);
    let stderr = child.stderr.take().expect("stderr is piped");
    let reader = std::thread::spawn(move || {
        let mut lines = Vec::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            lines.push(line);
        }
        lines
    });
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("the child can be waited for") {
            break status;
        }
        if started.elapsed() > CHILD_DEADLINE {
            let _ = child.kill();
            panic!("the {fault} child ran past {CHILD_DEADLINE:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let lines = reader.join().expect("stderr is read");
    let result = lines.iter().find_map(|l| l.strip_prefix("RESULT "));
    match result {
        Some(r) if status.success() => Report(
            r.split_whitespace()
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
        ),
        _ => panic!("the {fault} child failed ({status}):\n{}", lines.join("\n")),
    }
}

/// `unshare` into a private mount namespace where this test may mount.
const PRIVATE_MOUNTS: &[&str] = &["unshare", "--user", "--map-root-user", "--mount", "--"];

fn mount_tmpfs(dir: &Path, size: &str) {
    let status = Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
        .arg(dir)
        .status()
        .expect("mount runs");
    assert!(
        status.success(),
        "cannot mount a tmpfs on {}",
        dir.display()
    );
}

fn grow_tmpfs(dir: &Path, size: &str) {
    let status = Command::new("mount")
        .args(["-o", &format!("remount,size={size}")])
        .arg(dir)
        .status()
        .expect("mount runs");
    assert!(
        status.success(),
        "cannot grow the tmpfs on {}",
        dir.display()
    );
}

fn dropped(sink: &str) -> u64 {
    common::counter("hyperkit_obs_dropped_total", &[("sink", sink)])
}

fn readiness(check: &str) -> hyperkit_obs::health::CheckStatus {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let r = rt.block_on(hyperkit_obs::health::readiness(
        Duration::from_secs(5),
        Duration::ZERO,
    ));
    r.checks
        .get(check)
        .cloned()
        .unwrap_or_else(|| panic!("no `{check}` check: {:?}", r.checks.keys()))
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "hyperkit-obs-faults-{name}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos())
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

// ---------------------------------------------------------------- stdout

/// The child of the stdout tests: JSON lines on stdout through `init()`,
/// 30,000 tracked calls, the slowest one timed.
fn stdout_child() -> ! {
    let obs = hyperkit_obs::init().expect("init");
    let mut slowest = Duration::ZERO;
    const CALLS: u64 = 30_000;
    for i in 0..CALLS {
        let started = Instant::now();
        let _ = complete("model-a", &format!("prompt {i}"));
        slowest = slowest.max(started.elapsed());
    }
    let dropped_lines = dropped("stdout");
    // The guard's drop gives stdout its flush deadline; a pipe nobody reads
    // takes all of it.
    drop(obs);
    report(&[
        ("calls", CALLS),
        ("slowest_us", slowest.as_micros() as u64),
        ("dropped", dropped_lines),
    ]);
}

const STDOUT_ENV: &[(&str, &str)] = &[
    ("HYPERKIT_LOG_FORMAT", "json"),
    ("HYPERKIT_LOG_STORE", "false"),
    ("HYPERKIT_MLFLOW_ENABLED", "false"),
    ("RUST_LOG", "info"),
];

#[test]
fn a_stdout_nobody_reads_never_blocks_a_tracked_call_and_counts_what_it_drops() {
    if fault().is_some() {
        stdout_child();
    }
    // The pipe stays open in the `Child` and is never read: it fills
    // after about 64 KiB.
    let report = run_child(
        "a_stdout_nobody_reads_never_blocks_a_tracked_call_and_counts_what_it_drops",
        "stdout-full",
        STDOUT_ENV,
        None,
        |child| {
            let _ = child;
        },
    );
    let (calls, slowest, lost) = (
        report.get("calls"),
        report.get("slowest_us"),
        report.get("dropped"),
    );
    // Each call's line is about 400 bytes: a 64 KiB pipe and the 16,384
    // lines of the queue hold a fraction of 30,000.
    assert!(
        lost >= calls - 16_384 - 1_000,
        "{lost} of {calls} lines dropped"
    );
    assert!(
        slowest < 50_000,
        "the slowest tracked call took {slowest} µs with stdout blocked"
    );
}

#[test]
fn a_closed_stdout_never_blocks_a_tracked_call_and_counts_what_it_refused() {
    if fault().is_some() {
        stdout_child();
    }
    let report = run_child(
        "a_closed_stdout_never_blocks_a_tracked_call_and_counts_what_it_refused",
        "stdout-closed",
        STDOUT_ENV,
        None,
        |child| {
            // libtest writes its own lines first (`running 1 test`, then
            // `test <name> ... ` before the body runs); closing before they
            // are written would fail the harness, not the code under test.
            // Read up to the test's own line, then close: from here on
            // every write fails with EPIPE.
            let mut stdout = child.stdout.take().expect("stdout is piped");
            let mut seen = Vec::new();
            let mut byte = [0u8; 1];
            while !seen.ends_with(b" ... ") {
                match stdout.read(&mut byte) {
                    Ok(1) => seen.push(byte[0]),
                    _ => break,
                }
            }
            drop(stdout);
        },
    );
    let (calls, slowest, lost) = (
        report.get("calls"),
        report.get("slowest_us"),
        report.get("dropped"),
    );
    assert!(
        lost > calls / 2,
        "{lost} of {calls} lines counted as dropped"
    );
    assert!(
        slowest < 50_000,
        "the slowest tracked call took {slowest} µs with stdout closed"
    );
}

// ----------------------------------------------------- a disk that fills up

/// Waits for `condition`, at most `within`, failing the child with `what`.
fn wait(what: &str, within: Duration, condition: impl FnMut() -> bool) {
    common::wait_for(what, within, condition);
}

fn log_entry(i: u64) -> hyperkit_obs::logs::store::StoreEntry {
    use hyperkit_obs::logs::{FieldValue, LogRecord, ecs_document};
    let mut record = LogRecord::new(
        1_795_000_000_000 + i as i64,
        "info",
        "faults",
        format!("event {i}: {}", "padding ".repeat(40)),
    );
    record.fields.push(("seq", FieldValue::U64(i)));
    let mut document = Vec::new();
    ecs_document(&record, "faults", &mut document);
    hyperkit_obs::logs::store::StoreEntry { record, document }
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
    let mut slowest = Duration::ZERO;
    let mut sent = 0u64;
    let mut send = |n: u64, sent: &mut u64| {
        let mut accepted = 0;
        for _ in 0..n {
            let started = Instant::now();
            if sink.send(log_entry(*sent)) {
                accepted += 1;
            }
            *sent += 1;
            slowest = slowest.max(started.elapsed());
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
        ("slowest_us", slowest.as_micros() as u64),
    ]);
}

#[test]
fn a_full_disk_under_the_log_store_costs_counted_drops_never_a_blocked_caller_and_heals() {
    if let Some(dir) = fault().and_then(|f| f.strip_prefix("logstore:").map(PathBuf::from)) {
        logstore_child(&dir);
    }
    let dir = scratch("logstore");
    let fault = format!("logstore:{}", dir.display());
    let report = run_child(
        "a_full_disk_under_the_log_store_costs_counted_drops_never_a_blocked_caller_and_heals",
        &fault,
        &[],
        Some(PRIVATE_MOUNTS),
        |_| {},
    );
    let _ = std::fs::remove_dir_all(&dir);
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
        "the slowest send took {} µs",
        report.get("slowest_us")
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
    let mut slowest = Duration::ZERO;
    let mut calls = 0u64;
    let mut call = |calls: &mut u64| {
        let started = Instant::now();
        let _ = complete(
            &format!("model-{}", *calls % 3),
            "a prompt to fill the disk",
        );
        slowest = slowest.max(started.elapsed());
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
        ("slowest_us", slowest.as_micros() as u64),
    ]);
}

#[test]
fn a_full_disk_under_the_mlflow_file_store_costs_counted_drops_never_a_blocked_caller_and_heals() {
    if let Some(dir) = fault().and_then(|f| f.strip_prefix("mlflow:").map(PathBuf::from)) {
        mlflow_child(&dir);
    }
    let dir = scratch("mlflow");
    let fault = format!("mlflow:{}", dir.display());
    let report = run_child(
        "a_full_disk_under_the_mlflow_file_store_costs_counted_drops_never_a_blocked_caller_and_heals",
        &fault,
        &[],
        Some(PRIVATE_MOUNTS),
        |_| {},
    );
    let _ = std::fs::remove_dir_all(&dir);
    assert!(report.get("runs") > 0);
    assert_eq!(
        report.get("calls"),
        report.get("runs") + report.get("dropped"),
        "every call is a run or counted as dropped"
    );
    assert!(
        report.get("slowest_us") < 50_000,
        "the slowest call took {} µs",
        report.get("slowest_us")
    );
}

// ------------------------------------------- a process killed mid-write

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
    let dir = scratch("killed");
    let root = dir.join("mlruns");
    let fault = format!("killed:{}", root.display());
    for round in 0..5 {
        let exe = std::env::current_exe().unwrap();
        let mut child = Command::new(exe)
            .args([
                "--exact",
                "a_writer_killed_mid_run_leaves_whole_runs_and_its_litter_goes_at_the_next_start",
                "--nocapture",
            ])
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
        common::wait_for("runs to be written", CHILD_DEADLINE, || {
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
    let _ = std::fs::remove_dir_all(&dir);
}
