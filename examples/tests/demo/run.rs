//! The main job runs, reports progress, and exits 0 on SIGTERM after
//! recording the calls it cancelled.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn demo_runs_and_exits_cleanly_on_sigterm() {
    // A fresh working directory: the embedded stores go there.
    let dir = std::env::temp_dir().join(format!("hyperkit-demo-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_demo"))
        .current_dir(&dir)
        .env("HYPERKIT_METRICS_ADDR", "127.0.0.1:0")
        .env("HYPERKIT_DEMO_SPEED", "200")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("demo starts");
    let rx = crate::stdout_lines(&mut child);

    // Wait (with a deadline) for a progress line that shows finished builds.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut lines = Vec::new();
    let progressed = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                // The summary line (`[   5s] builds: 3 ok, 1 failed, …`), not
                // the banner's `receives builds: POST …`.
                let done = line.starts_with('[')
                    && line.contains("] builds: ")
                    && !line.contains("builds: 0 ok, 0 failed");
                lines.push(line);
                if done {
                    break true;
                }
            }
            Err(_) => break false,
        }
    };
    assert!(
        progressed,
        "no progress with finished builds within 60 s: {lines:#?}"
    );

    let pid = child.id().to_string();
    let killed = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(killed.success());
    let status = child.wait().unwrap();
    lines.extend(rx.iter());
    assert!(status.success(), "demo exit status {status:?}: {lines:#?}");
    assert!(lines.iter().any(|l| l == "flushed; bye"), "{lines:#?}");

    // Embedded defaults, no servers: model calls became MLflow runs in
    // ./mlruns and every log line went to the local store.
    let runs: usize = std::fs::read_dir(dir.join("mlruns"))
        .expect("./mlruns was written")
        .flatten()
        .filter(|e| e.file_name() != "0" && e.path().join("meta.yaml").is_file())
        .map(|experiment| {
            std::fs::read_dir(experiment.path())
                .unwrap()
                .flatten()
                .filter(|run| run.path().join("meta.yaml").is_file())
                .count()
        })
        .sum();
    assert!(runs > 0, "no MLflow run in ./mlruns");
    assert!(
        dir.join("hyperkit-data/logs")
            .join(hyperkit_obs::logs::store::DB_FILE)
            .is_file(),
        "no local log store"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
