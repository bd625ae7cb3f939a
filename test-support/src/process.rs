//! Server processes for tests: the demo, Prometheus, Alertmanager, the
//! Pushgateway, `mlflow server`.
//!
//! A [`Process`] runs on 127.0.0.1, on a free port (another one if that was
//! taken meanwhile) or a given one, in a fresh temporary directory (its
//! working directory, with its stdout and stderr logs, kept across
//! restarts). It is ready when its start returns: its readiness path
//! answered 200 before a deadline, polled, never slept on blindly. It runs
//! in a process group of its own and is stopped by signalling that group by
//! PID (SIGKILL at once, or SIGTERM and SIGKILL after a grace period), so
//! the workers a server forks go with it; it is stopped when dropped, and
//! its logs are printed when the test fails.
//!
//! Starting and stopping are synchronous; async tests use [`start`] and
//! [`start_on`], which wait on a blocking thread rather than on the test's
//! runtime.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::scratch::{TempDir, free_port};
use crate::wait::POLL;

/// Attempts at starting a server whose free port was taken meanwhile.
const PORT_ATTEMPTS: usize = 3;

/// How long a stopped server's port may take to be free again.
const PORT_FREED_WITHIN: Duration = Duration::from_secs(20);

/// Time one HTTP request of a test may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Lines of each log printed when a test fails.
const LOG_LINES: usize = 60;

/// How a server is stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// SIGKILL at once: the server dies as in a crash.
    Kill,
    /// SIGTERM, then SIGKILL if it still runs after this long.
    Term(Duration),
}

type Configure = dyn FnMut(&mut Command, u16, &Path) + Send;

/// How to start a server: its program, how to configure it for a port and
/// a directory, when it is ready and how it stops.
pub struct Spec {
    name: String,
    program: PathBuf,
    ready_path: String,
    ready_within: Duration,
    poll: Duration,
    stop: Stop,
    configure: Box<Configure>,
}

impl std::fmt::Debug for Spec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spec")
            .field("name", &self.name)
            .field("program", &self.program)
            .field("ready_path", &self.ready_path)
            .field("ready_within", &self.ready_within)
            .field("stop", &self.stop)
            .finish_non_exhaustive()
    }
}

impl Spec {
    /// `program`, called `name` in messages; ready when `GET /` answers 200
    /// within 30 s (polled every [`POLL`]); stopped with SIGKILL.
    pub fn new(name: &str, program: impl Into<PathBuf>) -> Spec {
        Spec {
            name: name.to_owned(),
            program: program.into(),
            ready_path: "/".to_owned(),
            ready_within: Duration::from_secs(30),
            poll: POLL,
            stop: Stop::Kill,
            configure: Box::new(|_, _, _| {}),
        }
    }

    /// Ready when `GET path` answers 200, which may take `within`.
    pub fn ready(mut self, path: &str, within: Duration) -> Spec {
        self.ready_path = path.to_owned();
        self.ready_within = within;
        self
    }

    /// Readiness asked every `every`.
    pub fn poll(mut self, every: Duration) -> Spec {
        self.poll = every;
        self
    }

    /// Stopped as `stop` says.
    pub fn stop(mut self, stop: Stop) -> Spec {
        self.stop = stop;
        self
    }

    /// `configure(command, port, dir)` adds the arguments, environment and
    /// files for `port` and the server's directory; called at every start.
    pub fn configure(
        mut self,
        configure: impl FnMut(&mut Command, u16, &Path) + Send + 'static,
    ) -> Spec {
        self.configure = Box::new(configure);
        self
    }
}

/// A running server process; stopped when dropped.
pub struct Process {
    spec: Spec,
    port: u16,
    dir: TempDir,
    child: Option<Child>,
    http: reqwest::Client,
}

impl std::fmt::Debug for Process {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Process")
            .field("name", &self.spec.name)
            .field("port", &self.port)
            .field("pid", &self.pid())
            .finish_non_exhaustive()
    }
}

impl Process {
    /// Starts `spec` on a free port and waits until it is ready; tries
    /// another port (a bounded number of times) when the one it got was
    /// taken meanwhile. Panics with the server's logs when it does not get
    /// ready.
    pub fn start(spec: Spec) -> Process {
        let mut process = Process::new(spec, free_port());
        for attempt in 1..=PORT_ATTEMPTS {
            match process.spawn_and_wait() {
                Ok(()) => return process,
                // Another process may have taken the port between our probe
                // and the server's bind.
                Err(log)
                    if attempt < PORT_ATTEMPTS
                        && log.to_lowercase().contains("address already in use") =>
                {
                    process.port = free_port();
                }
                Err(log) => panic!("{log}"),
            }
        }
        unreachable!("the last attempt returns or panics")
    }

    /// Starts `spec` on `port` (where its clients already look: a restart)
    /// and waits until it is ready. No other port is tried: a port taken
    /// meanwhile fails the test.
    pub fn start_on(spec: Spec, port: u16) -> Process {
        let mut process = Process::new(spec, port);
        if let Err(log) = process.spawn_and_wait() {
            panic!("{log}");
        }
        process
    }

    fn new(spec: Spec, port: u16) -> Process {
        let dir = TempDir::new(&spec.name);
        Process {
            spec,
            port,
            dir,
            child: None,
            http: reqwest::Client::builder()
                .timeout(REQUEST_TIMEOUT)
                .no_proxy()
                .build()
                .expect("build an HTTP client"),
        }
    }

    /// `127.0.0.1:port`.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:port`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr())
    }

    /// `http://127.0.0.1:port<path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr())
    }

    /// Its directory: its working directory, where its logs are.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The PID of its main process (also its process group's id), while it
    /// runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether it is running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Stops it as its [`Spec`] says and reaps it; does nothing when it is
    /// not running. Its directory stays, for [`Process::restart`].
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let group = child.id();
        if let Stop::Term(grace) = self.spec.stop {
            signal_group("TERM", group);
            let deadline = Instant::now() + grace;
            // Waited for without reaping it: while the leader is a zombie its
            // pid, hence the group id, cannot be reused, so that the SIGKILL
            // below reaches only workers that outlived it.
            while !exited(group) {
                if Instant::now() >= deadline {
                    eprintln!(
                        "{} (pid {group}) still running {grace:?} after SIGTERM: SIGKILL",
                        self.spec.name
                    );
                    break;
                }
                std::thread::sleep(POLL);
            }
        }
        signal_group("KILL", group);
        let _ = child.wait();
    }

    /// Stops it if it runs and starts it again on the same port, in the same
    /// directory (a crash or a restart in a fault test); returns once it is
    /// ready.
    pub fn restart(&mut self) {
        self.stop();
        // The old process's socket may take a moment to be released.
        let deadline = Instant::now() + PORT_FREED_WITHIN;
        while TcpListener::bind(self.addr()).is_err() {
            assert!(
                Instant::now() < deadline,
                "port {} still taken {PORT_FREED_WITHIN:?} after {} stopped",
                self.port,
                self.spec.name
            );
            std::thread::sleep(POLL);
        }
        if let Err(log) = self.spawn_and_wait() {
            panic!("{log}");
        }
    }

    /// The last `lines` lines of its stdout and stderr (of every start).
    pub fn logs(&self, lines: usize) -> String {
        let tail = |file: &str| {
            let text = std::fs::read_to_string(self.dir.path().join(file)).unwrap_or_default();
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        };
        let name = &self.spec.name;
        format!(
            "--- {name} on {} ({}) stderr, last {lines} lines ---\n{}\n--- {name} stdout, last {lines} lines ---\n{}",
            self.addr(),
            self.pid()
                .map_or("stopped".to_owned(), |p| format!("pid {p}")),
            tail("stderr.log"),
            tail("stdout.log"),
        )
    }

    /// `GET path`: the status and the body, or why the request failed.
    pub async fn get(&self, path: &str) -> Result<(u16, String), String> {
        self.get_with(path, &[]).await
    }

    /// `GET path?query`.
    pub async fn get_with(
        &self,
        path: &str,
        query: &[(&str, &str)],
    ) -> Result<(u16, String), String> {
        let url = self.url(path);
        let response = self
            .http
            .get(&url)
            .query(query)
            .send()
            .await
            .map_err(|e| format!("GET {url}: {e}"))?;
        let status = response.status().as_u16();
        let body = response
            .text()
            .await
            .map_err(|e| format!("GET {url}: reading the body: {e}"))?;
        Ok((status, body))
    }

    /// Starts the server on its port and waits until it is ready; the error
    /// is a message with its logs (it is stopped then).
    fn spawn_and_wait(&mut self) -> Result<(), String> {
        let log = |file: &str| {
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.dir.path().join(file))
                .unwrap_or_else(|e| panic!("cannot open the {} {file}: {e}", self.spec.name))
        };
        let mut cmd = Command::new(&self.spec.program);
        cmd.current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(log("stdout.log"))
            .stderr(log("stderr.log"));
        (self.spec.configure)(&mut cmd, self.port, self.dir.path());
        // Its own process group, so that stopping it reaches what it forks.
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let child = cmd.spawn().map_err(|e| {
            format!(
                "cannot start {} ({}): {e}",
                self.spec.name,
                self.spec.program.display()
            )
        })?;
        let pid = child.id();
        self.child = Some(child);

        let started = Instant::now();
        let within = self.spec.ready_within;
        loop {
            if exited(pid) {
                // Its workers too, before the leader is reaped.
                signal_group("KILL", pid);
                let status = self.child.take().map(|mut c| c.wait());
                return Err(format!(
                    "{} exited ({status:?}) before it was ready\n{}",
                    self.spec.name,
                    self.logs(LOG_LINES)
                ));
            }
            let last = match http_status(self.port, &self.spec.ready_path) {
                Ok(200) => return Ok(()),
                Ok(status) => format!("HTTP {status}"),
                Err(e) => e,
            };
            if started.elapsed() >= within {
                self.stop();
                return Err(format!(
                    "{} was not ready at {} within {within:?}; last answer: {last}\n{}",
                    self.spec.name,
                    self.url(&self.spec.ready_path),
                    self.logs(LOG_LINES)
                ));
            }
            std::thread::sleep(self.spec.poll);
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            eprintln!("{}", self.logs(LOG_LINES));
        }
    }
}

/// [`Process::start`] from async code.
pub async fn start(spec: Spec) -> Process {
    blocking(move || Process::start(spec)).await
}

/// [`Process::start_on`] from async code.
pub async fn start_on(spec: Spec, port: u16) -> Process {
    blocking(move || Process::start_on(spec, port)).await
}

/// Runs `f` on tokio's blocking threads; its panic is the caller's.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    match tokio::task::spawn_blocking(f).await {
        Ok(value) => value,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

/// Whether process `pid` (a child not yet reaped) has exited: it is a
/// zombie, or gone.
pub fn exited(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name, which is in parentheses.
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with(['Z', 'X'])),
        Err(_) => true,
    }
}

/// `kill -<signal> -- -<group>`; errors (no such group) are ignored.
fn signal_group(signal: &str, group: u32) {
    // `-0` or `-1` would signal this test's own group, or every process.
    if group <= 1 {
        return;
    }
    let _ = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg("--")
        .arg(format!("-{group}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// The status of `GET path` on 127.0.0.1:`port`, over a plain socket.
fn http_status(port: u16, path: &str) -> Result<u16, String> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let timeout = Duration::from_secs(2);
    let mut stream =
        TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("connect: {e}"))?;
    stream
        .set_read_timeout(Some(timeout))
        .and_then(|()| stream.set_write_timeout(Some(timeout)))
        .map_err(|e| e.to_string())?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| format!("send: {e}"))?;
    let mut head = [0u8; 64];
    let mut got = 0;
    while got < 12 {
        match stream.read(&mut head[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) => return Err(format!("read: {e}")),
        }
    }
    let line = String::from_utf8_lossy(&head[..got]).into_owned();
    line.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("not an HTTP answer: {line:?}"))
}

/// Removes the variables of the test's environment whose names start with
/// `prefix` (`HYPERKIT_`, `MLFLOW_`) from `cmd`'s: a server runs with what
/// the test configures, not what the developer's shell holds.
pub fn scrub_env(cmd: &mut Command, prefix: &str) {
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with(prefix) {
            cmd.env_remove(&key);
        }
    }
}

/// The path of the installed program `binary` (on `PATH`, or in
/// `/usr/bin`, `/usr/sbin`); panics with `install`, the command that
/// installs it, when it is missing.
pub fn require_installed(binary: &str, install: &str) -> PathBuf {
    let found = std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .chain([PathBuf::from("/usr/bin"), PathBuf::from("/usr/sbin")])
        .map(|dir| dir.join(binary))
        .find(|p| p.is_file());
    match found {
        Some(path) => path,
        None => panic!(
            "`{binary}` is not installed; this test needs it. Install it with:\n    {install}"
        ),
    }
}

/// What a command did, run to its end by [`run`].
#[derive(Debug)]
pub struct Finished {
    /// How it exited.
    pub status: ExitStatus,
    /// Everything it wrote on stdout.
    pub stdout: String,
    /// Everything it wrote on stderr.
    pub stderr: String,
}

/// Runs `cmd` to its end, for at most `within`: stdin empty, stdout and
/// stderr into files of a fresh directory (also its working directory
/// unless `cmd` names one), polled every [`POLL`]. Panics with what it
/// wrote on stderr when it outlives `within` (it is killed then), calling
/// it `what`.
pub fn run(what: &str, cmd: &mut Command, within: Duration) -> Finished {
    let dir = TempDir::new("run");
    let out = dir.path().join("stdout");
    let err = dir.path().join("stderr");
    let create = |path: &Path| {
        File::create(path).unwrap_or_else(|e| panic!("cannot create {}: {e}", path.display()))
    };
    if cmd.get_current_dir().is_none() {
        cmd.current_dir(dir.path());
    }
    cmd.stdin(Stdio::null())
        .stdout(create(&out))
        .stderr(create(&err));
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
    let started = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if started.elapsed() < within => std::thread::sleep(POLL),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "{what} still running after {within:?}; killed. stderr:\n{}",
                    std::fs::read_to_string(&err).unwrap_or_default()
                );
            }
            Err(e) => panic!("waiting for {what}: {e}"),
        }
    };
    Finished {
        status,
        stdout: std::fs::read_to_string(&out).unwrap_or_default(),
        stderr: std::fs::read_to_string(&err).unwrap_or_default(),
    }
}

/// The name libtest gives the test function `name` of the module whose
/// `module_path!()` is `module_path`: the path without the crate's own
/// name, as `--exact` wants it when a test binary runs one of its tests in
/// a child process.
pub fn test_name(module_path: &str, name: &str) -> String {
    match module_path.split_once("::") {
        Some((_, module)) => format!("{module}::{name}"),
        None => name.to_owned(),
    }
}
