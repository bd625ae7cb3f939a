//! Stdout a pipe nobody reads, or closed: tracked calls never block, and
//! the lines that do not fit are dropped and counted.

use std::io::Read;
use std::time::{Duration, Instant};

use test_support::process::test_name;

use crate::{complete, dropped, fault, report, run_child};

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
        &test_name(
            module_path!(),
            "a_stdout_nobody_reads_never_blocks_a_tracked_call_and_counts_what_it_drops",
        ),
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
    // A call that wrote to the pipe itself would never return (nobody
    // reads it); a second leaves room for a thread descheduled on a loaded
    // 2-core machine, where 50 ms did not (3 runs in 8 at load 4 to 5).
    assert!(
        slowest < 1_000_000,
        "the slowest tracked call took {slowest} µs with stdout blocked"
    );
}

#[test]
fn a_closed_stdout_never_blocks_a_tracked_call_and_counts_what_it_refused() {
    if fault().is_some() {
        stdout_child();
    }
    let report = run_child(
        &test_name(
            module_path!(),
            "a_closed_stdout_never_blocks_a_tracked_call_and_counts_what_it_refused",
        ),
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
    // As above: a write that waited would not return within the second.
    assert!(
        slowest < 1_000_000,
        "the slowest tracked call took {slowest} µs with stdout closed"
    );
}
