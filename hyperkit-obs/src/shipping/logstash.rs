//! The Logstash shipper (`LOGSTASH_URL=tcp://host:port`): each document as
//! one JSON line (document + `\n`) over TCP to a Logstash `tcp` input with
//! the `json_lines` codec (`infrastructure/logstash/pipeline/`).
//!
//! It never blocks the caller (see [`super`]) and never panics. When the
//! connection cannot be made or breaks, it reconnects with exponential
//! backoff and jitter, keeping the queued lines in order.
//!
//! TCP acknowledges bytes to the peer's kernel, not to Logstash: a line
//! written just before Logstash went away may never have been read. So
//! after a reconnect the shipper first sends again the lines it wrote
//! during the last [`LogstashConfig::resend_window`] (default 1 s, at most
//! [`RESEND_MAX_BYTES`]) before the break was seen, then the rest. Logstash
//! may therefore receive those lines twice (add a `fingerprint` filter to
//! deduplicate); every other line arrives exactly once. "Delivered" in the
//! status means written to the socket.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::{FailureLog, Lifecycle, ShipperGuard, ShippingError, WorkerIo};
use crate::config::ConfigError;
use crate::util::next_backoff;

/// The most bytes of recently written lines kept for a resend.
pub const RESEND_MAX_BYTES: usize = 1 << 20;
/// The most bytes written in one go.
const WRITE_CHUNK: usize = 256 * 1024;

/// Where and how to ship JSON lines to Logstash.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct LogstashConfig {
    /// `LOGSTASH_URL=tcp://host:port`: the `tcp` input's address.
    pub address: String,
    /// `HYPERKIT_LOGSTASH_QUEUE_CAPACITY` (default 10000): documents waiting
    /// to be written; more are dropped and counted.
    pub queue_capacity: usize,
    /// `HYPERKIT_LOGSTASH_RESEND_WINDOW_MS` (default 1000): lines written
    /// this recently before a broken connection was noticed are sent again
    /// after reconnecting.
    pub resend_window: Duration,
    /// `HYPERKIT_LOGSTASH_TIMEOUT_MS` (default 10000): the limit of one
    /// connect or write.
    pub timeout: Duration,
    /// `HYPERKIT_LOGSTASH_RETRY_INITIAL_MS` (default 100): the first wait
    /// before reconnecting; it doubles on each failure.
    pub retry_initial: Duration,
    /// `HYPERKIT_LOGSTASH_RETRY_MAX_MS` (default 30000): the longest wait
    /// before reconnecting.
    pub retry_max: Duration,
}

impl LogstashConfig {
    /// A configuration for `address` (`host:port`) with the defaults.
    pub fn new(address: impl Into<String>) -> Self {
        LogstashConfig {
            address: address.into(),
            queue_capacity: 10_000,
            resend_window: Duration::from_secs(1),
            timeout: Duration::from_secs(10),
            retry_initial: Duration::from_millis(100),
            retry_max: Duration::from_secs(30),
        }
    }

    /// Reads `LOGSTASH_URL` and the `HYPERKIT_LOGSTASH_*` variables through
    /// `var` (which returns a set, non-blank variable); `None` when
    /// `LOGSTASH_URL` is not set.
    ///
    /// ```
    /// use hyperkit_obs::shipping::LogstashConfig;
    ///
    /// let c = LogstashConfig::from_lookup(|k| {
    ///     (k == "LOGSTASH_URL").then(|| "tcp://logstash:5044".to_owned())
    /// })
    /// .unwrap()
    /// .unwrap();
    /// assert_eq!(c.address, "logstash:5044");
    /// ```
    pub fn from_lookup(var: impl Fn(&str) -> Option<String>) -> Result<Option<Self>, ConfigError> {
        const EXAMPLE: &str = "tcp://127.0.0.1:5044";
        let Some(url) = var("LOGSTASH_URL") else {
            return Ok(None);
        };
        let url = url.trim();
        let Some(rest) = url
            .get(..6)
            .filter(|s| s.eq_ignore_ascii_case("tcp://"))
            .map(|_| &url[6..])
        else {
            return Err(crate::config::invalid(
                "LOGSTASH_URL",
                url,
                "must be tcp://host:port (the address of a Logstash tcp input with the \
                 json_lines codec)",
                EXAMPLE,
            ));
        };
        let rest = rest.trim_end_matches('/');
        let port_ok = rest.rsplit_once(':').is_some_and(|(host, port)| {
            !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0)
        });
        if !port_ok || rest.contains('/') || rest.contains('@') {
            return Err(crate::config::invalid(
                "LOGSTASH_URL",
                url,
                "must be tcp://host:port with a port from 1 to 65535 and nothing after it",
                EXAMPLE,
            ));
        }
        let mut c = LogstashConfig::new(rest);
        if let Some(v) = var("HYPERKIT_LOGSTASH_QUEUE_CAPACITY") {
            c.queue_capacity = super::parse_number(
                "HYPERKIT_LOGSTASH_QUEUE_CAPACITY",
                &v,
                1,
                1_000_000,
                "10000",
            )? as usize;
        }
        let ms = |name: &'static str, min: u64, max: u64, example: &'static str| {
            var(name)
                .map(|v| {
                    super::parse_number(name, &v, min, max, example).map(Duration::from_millis)
                })
                .transpose()
        };
        if let Some(d) = ms("HYPERKIT_LOGSTASH_RESEND_WINDOW_MS", 0, 60_000, "1000")? {
            c.resend_window = d;
        }
        if let Some(d) = ms("HYPERKIT_LOGSTASH_TIMEOUT_MS", 1, 600_000, "10000")? {
            c.timeout = d;
        }
        if let Some(d) = ms("HYPERKIT_LOGSTASH_RETRY_INITIAL_MS", 1, 600_000, "100")? {
            c.retry_initial = d;
        }
        if let Some(d) = ms("HYPERKIT_LOGSTASH_RETRY_MAX_MS", 1, 3_600_000, "30000")? {
            c.retry_max = d;
        }
        Ok(Some(c))
    }
}

impl LogstashConfig {
    /// The values as `(variable, value)` pairs, for `hyperkit-obs check`.
    pub fn describe(&self) -> Vec<(&'static str, String)> {
        vec![
            ("LOGSTASH_URL", format!("tcp://{}", self.address)),
            (
                "HYPERKIT_LOGSTASH_QUEUE_CAPACITY",
                self.queue_capacity.to_string(),
            ),
            (
                "HYPERKIT_LOGSTASH_RESEND_WINDOW_MS",
                self.resend_window.as_millis().to_string(),
            ),
            (
                "HYPERKIT_LOGSTASH_TIMEOUT_MS",
                self.timeout.as_millis().to_string(),
            ),
            (
                "HYPERKIT_LOGSTASH_RETRY_INITIAL_MS",
                self.retry_initial.as_millis().to_string(),
            ),
            (
                "HYPERKIT_LOGSTASH_RETRY_MAX_MS",
                self.retry_max.as_millis().to_string(),
            ),
        ]
    }
}

/// Starts the Logstash shipper on its own thread and registers the
/// `logstash` readiness check.
pub fn start(config: &LogstashConfig) -> Result<ShipperGuard, ShippingError> {
    let config = config.clone();
    super::spawn(
        "logstash",
        format!("tcp://{}", config.address),
        config.queue_capacity,
        move |io| run(config, io),
    )
}

struct Line {
    bytes: Arc<[u8]>,
    /// A resend of a line already counted as delivered.
    resend: bool,
}

async fn run(config: LogstashConfig, io: WorkerIo) {
    let WorkerIo {
        rx,
        mut control,
        shared,
    } = io;
    let mut lc = Lifecycle::new();
    let mut log = FailureLog::new();
    let mut pending: VecDeque<Line> = VecDeque::new();
    let mut recent: VecDeque<(Instant, Arc<[u8]>)> = VecDeque::new();
    let mut recent_bytes = 0usize;
    let mut conn: Option<TcpStream> = None;
    let mut backoff = Duration::ZERO;
    let mut retry_at: Option<Instant> = None;
    let mut buf = Vec::with_capacity(WRITE_CHUNK);
    loop {
        lc.poll(&mut control);
        while let Ok(doc) = rx.try_recv() {
            pending.push_back(Line {
                bytes: doc.bytes,
                resend: false,
            });
        }
        let now = Instant::now();
        while recent
            .front()
            .is_some_and(|(t, _)| now.duration_since(*t) > config.resend_window)
        {
            if let Some((_, l)) = recent.pop_front() {
                recent_bytes -= l.len();
            }
        }
        if let Some(stream) = &conn
            && !alive(stream)
        {
            conn = None;
            log.log(
                &shared,
                &format!(
                    "the connection to Logstash at {} closed; reconnecting and sending the last {} \
                     lines again",
                    config.address,
                    recent.len()
                ),
            );
            requeue_recent(&mut pending, &mut recent, &mut recent_bytes);
        }
        if lc.past_deadline() {
            let undelivered = pending.iter().filter(|l| !l.resend).count();
            shared.dropped(undelivered);
            if undelivered > 0 {
                log.log(
                    &shared,
                    &format!(
                        "{undelivered} log lines could not be written to Logstash at {} before the \
                         shutdown deadline and are dropped",
                        config.address
                    ),
                );
            }
            break;
        }
        if lc.stop_at.is_some() && pending.is_empty() {
            break;
        }
        if conn.is_none() && retry_at.is_none_or(|t| now >= t) {
            let connect = tokio::time::timeout(config.timeout, TcpStream::connect(&config.address));
            let Some(connected) = lc.run(&mut control, connect).await else {
                continue;
            };
            match connected {
                Ok(Ok(stream)) => {
                    let _ = stream.set_nodelay(true);
                    conn = Some(stream);
                    retry_at = None;
                    shared.set_error(None);
                }
                Ok(Err(e)) => {
                    log.log(
                        &shared,
                        &format!("cannot connect to Logstash at {}: {e}", config.address),
                    );
                    backoff = next_backoff(backoff, config.retry_initial, config.retry_max);
                    retry_at = Some(Instant::now() + backoff);
                }
                Err(_) => {
                    log.log(
                        &shared,
                        &format!(
                            "connecting to Logstash at {} timed out after {} ms",
                            config.address,
                            config.timeout.as_millis()
                        ),
                    );
                    backoff = next_backoff(backoff, config.retry_initial, config.retry_max);
                    retry_at = Some(Instant::now() + backoff);
                }
            }
        }
        if let Some(stream) = conn.as_mut()
            && !pending.is_empty()
        {
            buf.clear();
            let mut n = 0;
            for line in &pending {
                if n > 0 && buf.len() + line.bytes.len() >= WRITE_CHUNK {
                    break;
                }
                let start = buf.len();
                buf.extend_from_slice(&line.bytes);
                // JSON allows whitespace for a raw newline outside strings
                // (inside one it is invalid anyway); json_lines splits on it.
                for b in &mut buf[start..] {
                    if *b == b'\n' {
                        *b = b' ';
                    }
                }
                buf.push(b'\n');
                n += 1;
            }
            let write = tokio::time::timeout(config.timeout, stream.write_all(&buf));
            let Some(written) = lc.run(&mut control, write).await else {
                // The shutdown deadline passed mid-write: what was written
                // is unknown, so the lines count as undelivered.
                continue;
            };
            match written {
                Ok(Ok(())) => {
                    let written = Instant::now();
                    let mut counted = 0;
                    for line in pending.drain(..n) {
                        if !line.resend {
                            counted += 1;
                        }
                        recent_bytes += line.bytes.len();
                        recent.push_back((written, line.bytes));
                    }
                    while recent_bytes > RESEND_MAX_BYTES {
                        if let Some((_, l)) = recent.pop_front() {
                            recent_bytes -= l.len();
                        }
                    }
                    shared.delivered(counted);
                    backoff = Duration::ZERO;
                    shared.set_error(None);
                    lc.answer(&shared);
                    continue;
                }
                Ok(Err(e)) => {
                    log.log(
                        &shared,
                        &format!("writing to Logstash at {} failed: {e}", config.address),
                    );
                }
                Err(_) => {
                    log.log(
                        &shared,
                        &format!(
                            "writing to Logstash at {} timed out after {} ms",
                            config.address,
                            config.timeout.as_millis()
                        ),
                    );
                }
            }
            conn = None;
            requeue_recent(&mut pending, &mut recent, &mut recent_bytes);
            backoff = next_backoff(backoff, config.retry_initial, config.retry_max);
            retry_at = Some(Instant::now() + backoff);
        }
        lc.answer(&shared);
        lc.wait(&mut control, retry_at.filter(|_| conn.is_none()))
            .await;
    }
    if let Some(mut stream) = conn {
        let _ = tokio::time::timeout(Duration::from_secs(1), stream.shutdown()).await;
    }
    for w in lc.waiters.drain(..) {
        let _ = w.send(());
    }
}

/// Whether the connection still stands. A Logstash `tcp` input never
/// writes, so anything readable is the end of the connection (or an error).
fn alive(stream: &TcpStream) -> bool {
    let mut probe = [0u8; 64];
    match stream.try_read(&mut probe) {
        Ok(0) => false,
        Ok(_) => true,
        Err(e) => e.kind() == std::io::ErrorKind::WouldBlock,
    }
}

fn requeue_recent(
    pending: &mut VecDeque<Line>,
    recent: &mut VecDeque<(Instant, Arc<[u8]>)>,
    recent_bytes: &mut usize,
) {
    while let Some((_, bytes)) = recent.pop_back() {
        pending.push_front(Line {
            bytes,
            resend: true,
        });
    }
    *recent_bytes = 0;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from(vars: &[(&str, &str)]) -> Result<Option<LogstashConfig>, ConfigError> {
        LogstashConfig::from_lookup(|k| {
            vars.iter()
                .find(|(name, _)| *name == k)
                .map(|(_, v)| (*v).to_owned())
        })
    }

    #[test]
    fn shipping_logstash_is_off_without_its_url() {
        assert_eq!(from(&[]).unwrap(), None);
    }

    #[test]
    fn shipping_logstash_reads_a_tcp_url_and_its_limits() {
        let c = from(&[
            ("LOGSTASH_URL", "TCP://logstash.internal:5044/"),
            ("HYPERKIT_LOGSTASH_QUEUE_CAPACITY", "50"),
            ("HYPERKIT_LOGSTASH_RESEND_WINDOW_MS", "0"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(c.address, "logstash.internal:5044");
        assert_eq!(c.queue_capacity, 50);
        assert_eq!(c.resend_window, Duration::ZERO);
    }

    #[test]
    fn shipping_logstash_errors_name_the_variable_and_show_an_example() {
        for (var, value) in [
            ("LOGSTASH_URL", "http://logstash:5044"),
            ("LOGSTASH_URL", "tcp://logstash"),
            ("LOGSTASH_URL", "tcp://:5044"),
            ("LOGSTASH_URL", "tcp://logstash:99999"),
        ] {
            let e = from(&[(var, value)]).unwrap_err().to_string();
            assert!(e.starts_with("LOGSTASH_URL="), "{e}");
            assert!(e.contains("tcp://127.0.0.1:5044"), "{e}");
        }
        let e = from(&[
            ("LOGSTASH_URL", "tcp://l:1"),
            ("HYPERKIT_LOGSTASH_QUEUE_CAPACITY", "0"),
        ])
        .unwrap_err()
        .to_string();
        assert!(e.contains("HYPERKIT_LOGSTASH_QUEUE_CAPACITY"), "{e}");
    }
}
