//! The demo as its users see it: it runs and stops cleanly (`run`), one
//! trace follows a build through its two services (`one_trace`), at a
//! terminal and piped (`terminal`, in tmux), its status page in a real
//! browser (`status_page`), and for minutes at speed (`soak`, ignored).
//!
//! Each test runs the demo in a process of its own. Some status page tests
//! serve this process's own (empty) history instead: nothing else here
//! tracks a call or counts a drop in this process, which they rely on.

mod one_trace;
mod run;
mod soak;
mod status_page;
mod terminal;
mod tmux;

/// The lines `child` writes on its (piped) stdout, as they come: a thread
/// reads them all along, so the demo never blocks on a full pipe.
fn stdout_lines(child: &mut std::process::Child) -> std::sync::mpsc::Receiver<String> {
    use std::io::{BufRead, BufReader};
    let stdout = child.stdout.take().expect("stdout is piped");
    let (tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    lines
}
