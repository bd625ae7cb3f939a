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
//!
//! A binary of its own: its children re-run it, one test each (`--exact`,
//! the name `test_name` gives), and set up the process-wide state
//! (`init()`, exporters) that the test breaks.

mod disk;
mod killed;
mod stdout;

use std::io::{BufRead, BufReader};
use std::path::Path;
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
    test_support::metrics::dropped(sink)
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
