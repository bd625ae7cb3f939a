//! The demo in a real pseudo-terminal: a tmux server of its own (its own
//! socket, no configuration file), one 160×40 window, read back with
//! `capture-pane`. The demo runs twenty times faster than real latencies,
//! in a fresh directory, on a free port, without the caller's `HYPERKIT_*`,
//! `RUST_LOG` or `NO_COLOR`. Every wait polls the screen against a deadline
//! made for a loaded 2-core machine. Without tmux the tests fail with the
//! command that installs it.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use test_support::process::require_installed;
use test_support::wait::POLL;
use test_support::{TempDir, free_port};

const INSTALL_TMUX: &str = "apt-get install -y --no-install-recommends tmux";

/// How long the demo may take to show what a test waits for.
pub(crate) const WITHIN: Duration = Duration::from_secs(120);

const COLUMNS: u16 = 160;
pub(crate) const ROWS: u16 = 40;

/// Variables of the caller's shell that would change what the demo shows.
pub(crate) fn settings_to_drop() -> Vec<String> {
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
pub(crate) struct Tmux {
    tmux: PathBuf,
    socket: PathBuf,
    /// The shell in the window, whose child the demo is.
    pid: u32,
}

impl Tmux {
    /// Runs a tmux command against this server; its standard output.
    pub(crate) fn tmux(&self, args: &[&str]) -> String {
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
    pub(crate) fn screen(&self) -> String {
        self.tmux(&["capture-pane", "-p", "-J", "-t", "demo"])
    }

    /// The visible screen row by row: a log line longer than the terminal
    /// is as many rows as it takes there.
    pub(crate) fn rows(&self) -> String {
        self.tmux(&["capture-pane", "-p", "-t", "demo"])
    }

    /// The visible screen with the escape codes of its colours and
    /// attributes.
    pub(crate) fn screen_with_attributes(&self) -> String {
        self.tmux(&["capture-pane", "-p", "-e", "-t", "demo"])
    }

    /// The scrollback and the screen, wrapped lines joined.
    pub(crate) fn everything(&self) -> String {
        self.tmux(&["capture-pane", "-p", "-J", "-S", "-", "-t", "demo"])
    }

    /// A tmux format of the pane (`#{cursor_flag}`, …).
    pub(crate) fn format(&self, format: &str) -> String {
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
    pub(crate) fn wait_for(
        &self,
        what: &str,
        check: impl Fn(&str) -> Result<(), String>,
    ) -> String {
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
    pub(crate) fn wait_exit(&self) -> i32 {
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
pub(crate) struct Terminal {
    tmux: Tmux,
    pub(crate) port: u16,
    /// Dropped after `tmux`, once the demo is gone.
    pub(crate) dir: TempDir,
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
    pub(crate) fn start(name: &str, env: &[(&str, &str)]) -> Terminal {
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
