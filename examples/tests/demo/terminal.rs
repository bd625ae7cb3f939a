//! The demo as a person sees it (issue 20): at a terminal, a live summary at
//! the bottom with only WARN and ERROR lines above it, and a terminal given
//! back clean on Ctrl-C; with stdout piped, plain lines.
//!
//! The terminal tests run the demo in a real pseudo-terminal (`tmux`).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Instant;

use test_support::wait::POLL;
use test_support::{TempDir, free_port};

use crate::tmux::{ROWS, Terminal, WITHIN, settings_to_drop};

const CHAINS: [&str; 5] = ["ethereum", "solana", "polygon", "arbitrum", "bsc"];
const MODELS: [&str; 3] = ["gpt-4o", "claude-sonnet", "llama-3-70b"];

/// colour or an attribute (not the resets and defaults: `0`, `39`, `49`).
fn colours_and_attributes(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    for sequence in text.split('\x1b').skip(1) {
        let Some(body) = sequence.strip_prefix('[') else {
            continue;
        };
        let Some(end) = body.find(|c: char| ('\x40'..='\x7e').contains(&c)) else {
            continue;
        };
        if body[end..].starts_with('m') {
            found.extend(
                body[..end]
                    .split(';')
                    .filter(|p| !matches!(*p, "" | "0" | "39" | "49"))
                    .map(str::to_owned),
            );
        }
    }
    found
}

/// Whether `line` is a log line: `<RFC 3339 time> <LEVEL> …`.
fn is_log_line(line: &str) -> bool {
    let bytes = line.as_bytes();
    bytes.len() > 30 && bytes[4] == b'-' && bytes[10] == b'T' && line[..24].ends_with('Z')
}

/// Whether `text` is a duration in the units of a person: `850ns`,
/// `12.3µs`, `53ms`, `2.36s` (at most three figures), `1m`, `1m5s`, `1h`,
/// `1h30m`.
fn is_human_duration(text: &str) -> bool {
    let digits = |n: &str| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit());
    let three_figures = |n: &str| match n.split_once('.') {
        Some((whole, fraction)) => {
            digits(whole) && digits(fraction) && whole.len() + fraction.len() <= 3
        }
        None => digits(n) && n.len() <= 3,
    };
    let below_a_minute = ["ns", "µs", "ms", "s"]
        .iter()
        .any(|unit| text.strip_suffix(unit).is_some_and(three_figures));
    let minutes_or_hours = match text.strip_suffix('s') {
        Some(rest) => rest
            .split_once('m')
            .is_some_and(|(m, s)| digits(m) && digits(s)),
        None => text.strip_suffix('m').is_some_and(|rest| {
            digits(rest)
                || rest
                    .split_once('h')
                    .is_some_and(|(h, m)| digits(h) && digits(m))
        }),
    };
    let hours = text.strip_suffix('h').is_some_and(digits);
    below_a_minute || minutes_or_hours || hours
}

/// Builds finished so far, from the `all` row of the builds table.
fn builds_finished(screen: &str) -> Option<u64> {
    let row = screen
        .lines()
        .find(|l| l.starts_with(" all ") && l.contains('│'))?;
    let mut cells = row.split_whitespace().skip(1);
    let mut number = || cells.next()?.replace(',', "").parse::<u64>().ok();
    Some(number()? + number()?)
}

fn error_lines(screen: &str) -> Vec<&str> {
    screen
        .lines()
        .filter(|l| is_log_line(l) && l.contains(" ERROR "))
        .collect()
}

#[test]
fn durations_in_human_units_are_told_from_raw_counts() {
    for human in [
        "850ns", "12.3µs", "53ms", "2.36s", "59.9s", "1m", "1m5s", "1h", "1h30m",
    ] {
        assert!(is_human_duration(human), "{human}");
    }
    for raw in ["2357999374", "2357999374ns", "1.2345s", "ms", "1m5", "s"] {
        assert!(!is_human_duration(raw), "{raw}");
    }
}

#[test]
fn on_a_terminal_the_live_summary_stays_at_the_bottom_under_warnings_and_errors_only() {
    let terminal = Terminal::start("demo-terminal", &[("HYPERKIT_DEMO_FAILURE_RATE", "0.5")]);
    let port = terminal.port;
    let screen = terminal.wait_for(
        "a finished build in the summary, under an ERROR line",
        |s| match (builds_finished(s), error_lines(s).len()) {
            (Some(n), errors) if n > 0 && errors > 0 => Ok(()),
            (builds, errors) => Err(format!("{builds:?} builds finished, {errors} ERROR lines")),
        },
    );

    let lines: Vec<&str> = screen.lines().collect();
    // Counted unjoined: a long ERROR line (a deploy's, under a build's span)
    // wraps onto two rows of the terminal and is one line of `screen`.
    let rows = terminal.rows();
    assert_eq!(rows.lines().count(), usize::from(ROWS), "{rows}");
    assert!(
        rows.lines()
            .last()
            .is_some_and(|l| l.contains("hyperkit-obs logs tail")),
        "the summary ends on the last row, saying how to see every event:\n{rows}"
    );
    assert!(
        screen.contains(&format!("status page http://127.0.0.1:{port}/"))
            && screen.contains(&format!("metrics http://127.0.0.1:{port}/metrics")),
        "both addresses are in the summary:\n{screen}"
    );
    for name in [
        "builds",
        "model calls",
        "queries",
        "dropped",
        "logstore",
        "mlflow",
    ]
    .iter()
    .chain(&CHAINS)
    .chain(&MODELS)
    {
        assert!(screen.contains(name), "{name} is in the summary:\n{screen}");
    }
    assert!(
        !lines.iter().any(|l| l.contains(" INFO ")),
        "no INFO line is printed:\n{screen}"
    );
    for line in lines.iter().filter(|l| is_log_line(l)) {
        let took = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("took="))
            .unwrap_or_else(|| panic!("a tracked call's line says how long it took: {line}"));
        assert!(is_human_duration(took), "{took} in: {line}");
        assert!(!line.contains("event.duration"), "{line}");
    }
    assert!(
        colours_and_attributes(&terminal.screen_with_attributes()).contains(&"31".to_owned()),
        "ERROR is red on a terminal that allows colour"
    );

    terminal.tmux(&["send-keys", "-t", "demo", "C-c"]);
    assert_eq!(terminal.wait_exit(), 0, "{}", terminal.everything());
    let all = terminal.everything();
    for expected in [
        "stopping: cancelling",
        "final summary after",
        "flushed; bye",
    ] {
        assert!(all.contains(expected), "{expected:?} after Ctrl-C:\n{all}");
    }
    assert!(
        !all.contains("Ctrl-C stops"),
        "no trace of the live area is left on the terminal:\n{all}"
    );
    assert_eq!(
        terminal
            .format("#{cursor_flag} #{wrap_flag} #{scroll_region_upper} #{scroll_region_lower}"),
        format!("1 1 0 {}", ROWS - 1),
        "the cursor is shown, lines wrap and the whole screen scrolls again"
    );

    let store = hyperkit_obs::logs::LogStore::open(terminal.dir.path().join("hyperkit-data/logs"))
        .expect("the local log store opens");
    let query = hyperkit_obs::logs::Query::parse("level:info AND succeeded").unwrap();
    let stored = store.search(&query, &Default::default()).unwrap();
    assert!(
        !stored.is_empty(),
        "the INFO events the terminal did not show are in the local store"
    );
}

#[test]
fn with_rust_log_set_it_decides_what_prints_above_the_summary() {
    let terminal = Terminal::start("demo-rust-log", &[("RUST_LOG", "info")]);
    let screen = terminal.wait_for("INFO lines above the live summary", |s| {
        let info = s
            .lines()
            .filter(|l| is_log_line(l) && l.contains(" INFO ") && l.contains(" succeeded took="))
            .count();
        match (s.contains("Ctrl-C stops"), info) {
            (true, 10..) => Ok(()),
            (live, info) => Err(format!("live summary: {live}, {info} INFO lines")),
        }
    });
    let last = screen.lines().last().unwrap_or_default();
    assert!(
        last.contains("hyperkit-obs logs tail"),
        "the summary keeps the last rows while lines scroll above it:\n{screen}"
    );
    assert!(
        !screen.contains("WARN and ERROR only"),
        "the summary does not claim INFO is hidden:\n{screen}"
    );
}

#[test]
fn with_no_color_the_summary_is_live_and_nothing_is_coloured() {
    let terminal = Terminal::start(
        "demo-no-color",
        &[("NO_COLOR", "1"), ("HYPERKIT_DEMO_FAILURE_RATE", "0.5")],
    );
    terminal.wait_for("the live summary under an ERROR line", |s| {
        match (s.contains("Ctrl-C stops"), error_lines(s).len()) {
            (true, 1..) => Ok(()),
            (live, errors) => Err(format!("live summary: {live}, {errors} ERROR lines")),
        }
    });
    let styled = terminal.screen_with_attributes();
    assert_eq!(
        colours_and_attributes(&styled),
        Vec::<String>::new(),
        "{styled}"
    );
}

#[test]
fn on_a_dumb_terminal_the_summary_is_a_plain_line_every_5_s() {
    let terminal = Terminal::start("demo-dumb", &[("TERM", "dumb")]);
    let screen = terminal.wait_for("a summary line", |s| {
        s.lines()
            .any(|l| l.starts_with('[') && l.contains("s] builds: "))
            .then_some(())
            .ok_or_else(|| "no summary line yet".to_owned())
    });
    assert!(!screen.contains("Ctrl-C stops"), "no live area:\n{screen}");
    assert_eq!(
        terminal.format("#{scroll_region_upper} #{scroll_region_lower}"),
        format!("0 {}", ROWS - 1),
        "the whole screen scrolls"
    );
    let styled = terminal.screen_with_attributes();
    assert_eq!(
        colours_and_attributes(&styled),
        Vec::<String>::new(),
        "{styled}"
    );
    assert!(!screen.lines().any(|l| l.contains(" INFO ")), "{screen}");
}

#[test]
fn with_stdout_piped_the_output_is_plain_lines_with_a_summary_line_every_5_s() {
    let dir = TempDir::new("demo-piped");
    let mut demo = Command::new(env!("CARGO_BIN_EXE_demo"));
    for key in settings_to_drop() {
        demo.env_remove(key);
    }
    let mut child = demo
        .current_dir(dir.path())
        .env(
            "HYPERKIT_METRICS_ADDR",
            format!("127.0.0.1:{}", free_port()),
        )
        .env("HYPERKIT_DEMO_SPEED", "20")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("the demo starts");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            if tx.send(line.expect("stdout is UTF-8")).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + WITHIN;
    let mut lines = Vec::new();
    while !lines
        .iter()
        .any(|l: &String| l.starts_with('[') && l.contains("s] builds: "))
    {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => lines.push(line),
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("no summary line within {WITHIN:?}: {lines:#?}");
            }
        }
    }

    let interrupted = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(interrupted.success());
    let exited = Instant::now() + WITHIN;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() >= exited {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the demo did not exit within {WITHIN:?} of SIGINT");
        }
        std::thread::sleep(POLL);
    };
    lines.extend(rx.iter());
    assert!(status.success(), "exit status {status:?}: {lines:#?}");

    let escaped: Vec<&String> = lines.iter().filter(|l| l.contains('\x1b')).collect();
    assert!(escaped.is_empty(), "lines with escape codes: {escaped:#?}");
    for line in lines.iter().filter(|l| l.starts_with('{')) {
        serde_json::from_str::<serde_json::Value>(line)
            .unwrap_or_else(|e| panic!("a log line is one JSON object ({e}): {line}"));
    }
    assert!(
        lines.iter().any(|l| l.contains("final summary after")),
        "{lines:#?}"
    );
    assert_eq!(
        lines.last().map(String::as_str),
        Some("flushed; bye"),
        "{lines:#?}"
    );
}
