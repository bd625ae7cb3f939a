//! The demo as a person sees it (issue 20): at a terminal, a live summary at
//! the bottom with only WARN and ERROR lines above it, and a terminal given
//! back clean on Ctrl-C; with stdout piped, plain lines.
//!
//! The terminal tests run the demo in a real pseudo-terminal: a tmux server
//! of their own (its own socket, no configuration file), one 160×40 window,
//! read back with `capture-pane`. The demo runs twenty times faster than
//! real latencies, in a fresh directory, on a free port, without the
//! caller's `HYPERKIT_*`, `RUST_LOG` or `NO_COLOR`. Every wait polls the
//! screen against a deadline made for a loaded 2-core machine. Without tmux
//! the tests fail with the command that installs it.

mod support;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::{POLL, TempDir, free_port, require_installed};

const INSTALL_TMUX: &str = "apt-get install -y --no-install-recommends tmux";

/// How long the demo may take to show what a test waits for.
const WITHIN: Duration = Duration::from_secs(120);

const COLUMNS: u16 = 160;
const ROWS: u16 = 40;

const CHAINS: [&str; 5] = ["ethereum", "solana", "polygon", "arbitrum", "bsc"];
const MODELS: [&str; 3] = ["gpt-4o", "claude-sonnet", "llama-3-70b"];

/// Variables of the caller's shell that would change what the demo shows.
fn settings_to_drop() -> Vec<String> {
    const PREFIXES: [&str; 8] = [
        "HYPERKIT_",
        "RUST_LOG",
        "NO_COLOR",
        "MLFLOW_",
        "SENTRY_",
        "ELASTICSEARCH_",
        "LOGSTASH_",
        "OTEL_",
    ];
    std::env::vars_os()
        .filter_map(|(key, _)| key.into_string().ok())
        .filter(|key| PREFIXES.iter().any(|p| key.starts_with(p)))
        .collect()
}

/// What the shell around the demo prints, with the demo's exit status,
/// once the demo exits.
const EXITED: &str = "demo exited with status";

/// The demo's exit status, once the screen says it.
fn exit_status(screen: &str) -> Option<i32> {
    let line = screen.lines().find(|l| l.starts_with(EXITED))?;
    Some(line[EXITED.len()..].trim().parse().unwrap_or(-1))
}

/// `arg` quoted for `sh`.
fn quoted(arg: &str) -> String {
    format!("'{}'", arg.replace('\'', "'\\''"))
}

/// A tmux server of its own with one window, `demo`; killed, with what
/// runs in it, when dropped.
struct Tmux {
    tmux: PathBuf,
    socket: PathBuf,
    /// The shell in the window, whose child the demo is.
    pid: u32,
}

impl Tmux {
    /// Runs a tmux command against this server; its standard output.
    fn tmux(&self, args: &[&str]) -> String {
        let out = Command::new(&self.tmux)
            .arg("-S")
            .arg(&self.socket)
            .args(args)
            .output()
            .expect("tmux runs");
        assert!(
            out.status.success(),
            "tmux {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The visible screen as text, wrapped lines joined.
    fn screen(&self) -> String {
        self.tmux(&["capture-pane", "-p", "-J", "-t", "demo"])
    }

    /// The visible screen with the escape codes of its colours and
    /// attributes.
    fn screen_with_attributes(&self) -> String {
        self.tmux(&["capture-pane", "-p", "-e", "-t", "demo"])
    }

    /// The scrollback and the screen, wrapped lines joined.
    fn everything(&self) -> String {
        self.tmux(&["capture-pane", "-p", "-J", "-S", "-", "-t", "demo"])
    }

    /// A tmux format of the pane (`#{cursor_flag}`, …).
    fn format(&self, format: &str) -> String {
        self.tmux(&["display-message", "-p", "-t", "demo", format])
            .trim()
            .to_owned()
    }

    /// Polls `check` with the screen and the demo's exit status (once it
    /// exited) until it returns `Some`, for at most [`WITHIN`]; `None` when
    /// time ran out or the demo exited without `check` accepting.
    fn poll<T>(&self, mut check: impl FnMut(&str, Option<i32>) -> Option<T>) -> Option<T> {
        let deadline = Instant::now() + WITHIN;
        loop {
            let screen = self.screen();
            let exited = exit_status(&screen);
            if let Some(value) = check(&screen, exited) {
                return Some(value);
            }
            if exited.is_some() || Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(POLL);
        }
    }

    /// Waits until `check` accepts the screen; panics with `what`, the last
    /// reason and the whole terminal when the demo exits first or time runs
    /// out.
    fn wait_for(&self, what: &str, check: impl Fn(&str) -> Result<(), String>) -> String {
        let mut last = String::from("no screen yet");
        let screen = self.poll(|screen, _| match check(screen) {
            Ok(()) => Some(screen.to_owned()),
            Err(why) => {
                last = why;
                None
            }
        });
        screen.unwrap_or_else(|| {
            panic!(
                "{what}: not on screen within {WITHIN:?}; last: {last}\n{}",
                self.everything()
            )
        })
    }

    /// Waits for the window's process to exit; its exit status.
    fn wait_exit(&self) -> i32 {
        self.poll(|_, exited| exited).unwrap_or_else(|| {
            panic!(
                "the demo did not exit within {WITHIN:?}:\n{}",
                self.everything()
            )
        })
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let run = |arg: &[&str]| {
            Command::new(&self.tmux)
                .arg("-S")
                .arg(&self.socket)
                .args(arg)
                .output()
        };
        if std::thread::panicking()
            && let Ok(out) = run(&["capture-pane", "-p", "-J", "-S", "-", "-t", "demo"])
        {
            eprintln!(
                "--- the demo's terminal ---\n{}",
                String::from_utf8_lossy(&out.stdout)
            );
        }
        let children = std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", self.pid))
            .unwrap_or_default();
        let _ = run(&["kill-server"]);
        // tmux hangs the shell and the demo up; wait until they are gone, so
        // that their directory is removed after them.
        let gone = Instant::now() + Duration::from_secs(10);
        for pid in children
            .split_whitespace()
            .chain([self.pid.to_string().as_str()])
        {
            while pid != "0"
                && std::path::Path::new(&format!("/proc/{pid}")).exists()
                && Instant::now() < gone
            {
                std::thread::sleep(POLL);
            }
        }
    }
}

/// The demo in a 160×40 terminal, in a fresh directory, listening on `port`.
struct Terminal {
    tmux: Tmux,
    port: u16,
    /// Dropped after `tmux`, once the demo is gone.
    dir: TempDir,
}

impl std::ops::Deref for Terminal {
    type Target = Tmux;
    fn deref(&self) -> &Tmux {
        &self.tmux
    }
}

impl Terminal {
    /// Starts the demo with `env` added, and waits until it listens (on
    /// another free port if the first one was taken meanwhile).
    fn start(name: &str, env: &[(&str, &str)]) -> Terminal {
        let program = require_installed("tmux", INSTALL_TMUX);
        let dir = TempDir::new(name);
        for attempt in 1..=3 {
            let port = free_port();
            let socket = dir.path().join(format!("tmux-{attempt}.sock"));
            let mut demo = vec!["env".to_owned()];
            for key in settings_to_drop() {
                demo.extend(["-u".to_owned(), key]);
            }
            demo.push(format!("HYPERKIT_METRICS_ADDR=127.0.0.1:{port}"));
            demo.push("HYPERKIT_DEMO_SPEED=20".to_owned());
            demo.extend(env.iter().map(|(k, v)| format!("{k}={v}")));
            demo.push(env!("CARGO_BIN_EXE_demo").to_owned());
            // The shell stays after the demo, so the terminal keeps the
            // state the demo left it in, and says how the demo exited. Its
            // trap (reset for the demo) lets it outlive a Ctrl-C.
            let script = format!(
                "trap : INT; {}; echo \"{EXITED} $?\"; exec sleep 3600",
                demo.iter().map(|a| quoted(a)).collect::<Vec<_>>().join(" ")
            );
            let started = Command::new(&program)
                .arg("-S")
                .arg(&socket)
                .args(["-f", "/dev/null", "new-session", "-d", "-s", "demo"])
                .args(["-x", &COLUMNS.to_string(), "-y", &ROWS.to_string()])
                .arg("-c")
                .arg(dir.path())
                .args(["sh", "-c", &script])
                .output()
                .expect("tmux runs");
            assert!(
                started.status.success(),
                "tmux new-session failed: {}",
                String::from_utf8_lossy(&started.stderr)
            );
            let mut tmux = Tmux {
                tmux: program.clone(),
                socket,
                pid: 0,
            };
            tmux.pid = tmux.format("#{pane_pid}").parse().unwrap_or(0);
            let listening = format!("http://127.0.0.1:{port}/");
            let started = tmux.poll(|screen, exited| match exited {
                None if screen.contains(&listening) => Some(true),
                None => None,
                Some(_) => Some(false),
            });
            if started == Some(true) {
                return Terminal { tmux, port, dir };
            }
            let screen = tmux.everything();
            assert!(
                attempt < 3 && screen.contains("already in use"),
                "the demo did not start listening on 127.0.0.1:{port} within {WITHIN:?}:\n{screen}"
            );
        }
        unreachable!("the third attempt returns or panics")
    }
}

/// The parameters of every SGR sequence (`ESC [ … m`) in `text` that sets a
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
    assert_eq!(lines.len(), usize::from(ROWS), "{screen}");
    assert!(
        lines[lines.len() - 1].contains("hyperkit-obs logs tail"),
        "the summary ends on the last row, saying how to see every event:\n{screen}"
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
