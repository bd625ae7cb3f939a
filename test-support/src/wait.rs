//! Waiting on a condition, always against a deadline: a test states what it
//! waits for and how long that may take on a loaded machine, and fails with
//! that (and the last thing it saw) when the time runs out. Nothing here
//! sleeps in the hope that something has happened meanwhile.

use std::time::{Duration, Instant};

/// Pause between two attempts of [`eventually`].
pub const POLL: Duration = Duration::from_millis(100);

/// Pause between two checks of [`wait_until`]: conditions read from memory
/// or a file are cheap.
const CHECK_EVERY: Duration = Duration::from_millis(5);

/// Waits for `condition`, checking it every 5 ms, at most `within`;
/// returns whether it held.
pub fn wait_until(within: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(CHECK_EVERY);
    }
}

/// [`wait_until`], failing the test with `what` when `within` passes.
#[track_caller]
pub fn wait_for(what: &str, within: Duration, condition: impl FnMut() -> bool) {
    assert!(
        wait_until(within, condition),
        "timed out after {within:?} waiting for {what}"
    );
}

/// Checks `probe` every 5 ms until it yields a value, and returns it;
/// fails the test with `what` when `within` passes first.
#[track_caller]
pub fn wait_for_value<T>(what: &str, within: Duration, mut probe: impl FnMut() -> Option<T>) -> T {
    let mut value = None;
    wait_for(what, within, || {
        value = probe();
        value.is_some()
    });
    value.expect("the condition held")
}

/// Runs `attempt` until it returns `Ok`, every [`POLL`], at most for
/// `within` (and at most `within / POLL` + 1 times); panics with `what` and
/// the last error.
pub async fn eventually<T>(
    what: &str,
    within: Duration,
    attempt: impl AsyncFnMut() -> Result<T, String>,
) -> T {
    eventually_every(what, within, POLL, attempt).await
}

/// [`eventually`] with another pause between attempts: shorter for what is
/// cheap to ask, such as this process's own state.
pub async fn eventually_every<T>(
    what: &str,
    within: Duration,
    every: Duration,
    mut attempt: impl AsyncFnMut() -> Result<T, String>,
) -> T {
    let started = Instant::now();
    let max_attempts = within.as_millis() / every.as_millis().max(1) + 1;
    let mut last = String::from("no attempt");
    for _ in 0..max_attempts {
        match attempt().await {
            Ok(value) => return value,
            Err(e) => last = e,
        }
        if started.elapsed() >= within {
            break;
        }
        tokio::time::sleep(every).await;
    }
    panic!(
        "{what}: still not so after {:.1} s; last: {last}",
        started.elapsed().as_secs_f64()
    )
}
