//! The Logstash shipper (`LOGSTASH_URL=tcp://host:port`): each document as
//! one JSON line (document + `\n`) over TCP to a Logstash `tcp` input with
//! the `json_lines` codec (`infrastructure/logstash/pipeline/`).
//!
//! It runs on the shared export runtime ([`crate::export`]): it never
//! blocks the caller and never panics. When the connection cannot be made
//! or breaks, it reconnects with exponential backoff and jitter, keeping
//! the queued lines in order.
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
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::ship::{Document, ShipperGuard, ShippingError};
use crate::config::ConfigError;
use crate::export::{self, Delivery, Exporter, Housekeeping};

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
    /// use hyperkit_obs::logs::logstash::LogstashConfig;
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
            c.queue_capacity = crate::config::parse_number(
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
                    crate::config::parse_number(name, &v, min, max, example)
                        .map(Duration::from_millis)
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

/// The sink name of the shipper: its `sink` label, readiness check and
/// thread.
pub const SINK: &str = "logstash";

/// Starts the Logstash shipper on the shared export runtime and registers
/// the `logstash` readiness check. Never waits for Logstash.
pub fn start(config: &LogstashConfig) -> Result<ShipperGuard, ShippingError> {
    let options = export::Options::new(SINK, format!("tcp://{}", config.address))
        .capacity(config.queue_capacity)
        .batch(WRITE_BATCH, WRITE_CHUNK)
        .retry(config.retry_initial, config.retry_max);
    let exporter = LinesExporter {
        config: config.clone(),
        conn: None,
        recent: VecDeque::new(),
        recent_bytes: 0,
        resend: VecDeque::new(),
        buf: Vec::with_capacity(WRITE_CHUNK),
    };
    export::spawn(options, exporter).map_err(|e| ShippingError::Setup {
        sink: SINK,
        message: e.to_string(),
    })
}

/// Documents written in one go, at most.
const WRITE_BATCH: usize = 4096;

struct LinesExporter {
    config: LogstashConfig,
    conn: Option<TcpStream>,
    /// Lines written during the resend window, with when.
    recent: VecDeque<(Instant, Arc<[u8]>)>,
    recent_bytes: usize,
    /// Lines to write again, before anything new, after a reconnect. They
    /// were counted as delivered when first written.
    resend: VecDeque<Arc<[u8]>>,
    buf: Vec<u8>,
}

impl LinesExporter {
    /// Forgets lines older than the resend window.
    fn expire(&mut self, now: Instant) {
        while self
            .recent
            .front()
            .is_some_and(|(t, _)| now.duration_since(*t) > self.config.resend_window)
        {
            if let Some((_, l)) = self.recent.pop_front() {
                self.recent_bytes -= l.len();
            }
        }
    }

    /// The connection broke: what was written lately goes again first.
    fn broken(&mut self) {
        self.conn = None;
        while let Some((_, line)) = self.recent.pop_back() {
            self.resend.push_front(line);
        }
        self.recent_bytes = 0;
    }

    /// Notices a connection Logstash closed while idle.
    fn check_alive(&mut self, house: &mut Housekeeping<'_>) {
        if let Some(stream) = &self.conn
            && !alive(stream)
        {
            house.log(&format!(
                "the connection to Logstash at {} closed; reconnecting and sending the last {} \
                 lines again",
                self.config.address,
                self.recent.len()
            ));
            self.broken();
        }
    }

    fn connect(&mut self, deadline: Option<Instant>) -> Result<(), String> {
        let timeout = match deadline {
            Some(d) => d
                .saturating_duration_since(Instant::now())
                .min(self.config.timeout),
            None => self.config.timeout,
        }
        .max(Duration::from_millis(1));
        let address = &self.config.address;
        let addrs: Vec<SocketAddr> = address
            .to_socket_addrs()
            .map_err(|e| format!("cannot resolve Logstash at {address}: {e}"))?
            .collect();
        let mut last = format!("{address} resolves to no address");
        for addr in addrs {
            match TcpStream::connect_timeout(&addr, timeout) {
                Ok(stream) => {
                    let _ = stream.set_nodelay(true);
                    let _ = stream.set_write_timeout(Some(self.config.timeout));
                    self.conn = Some(stream);
                    return Ok(());
                }
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                    last = format!(
                        "connecting to Logstash at {address} timed out after {} ms",
                        timeout.as_millis()
                    );
                }
                Err(e) => last = format!("cannot connect to Logstash at {address}: {e}"),
            }
        }
        Err(last)
    }

    /// Writes `lines` as JSON lines in chunks; returns how many were
    /// written whole before an error, if one happened.
    fn write<'l>(
        &mut self,
        lines: impl Iterator<Item = &'l Arc<[u8]>>,
    ) -> Result<usize, (usize, String)> {
        let Some(stream) = self.conn.as_mut() else {
            return Err((0, "not connected".to_owned()));
        };
        let mut written = 0;
        let mut in_buf = 0;
        self.buf.clear();
        for line in lines {
            if in_buf > 0 && self.buf.len() + line.len() >= WRITE_CHUNK {
                write_out(&mut self.buf, stream)
                    .map_err(|e| (written, describe(&self.config, &e)))?;
                written += in_buf;
                in_buf = 0;
            }
            let start = self.buf.len();
            self.buf.extend_from_slice(line);
            // JSON allows whitespace for a raw newline outside strings
            // (inside one it is invalid anyway); json_lines splits on it.
            for b in &mut self.buf[start..] {
                if *b == b'\n' {
                    *b = b' ';
                }
            }
            self.buf.push(b'\n');
            in_buf += 1;
        }
        if in_buf > 0 {
            write_out(&mut self.buf, stream).map_err(|e| (written, describe(&self.config, &e)))?;
            written += in_buf;
        }
        Ok(written)
    }

    fn remember(&mut self, line: Arc<[u8]>, at: Instant) {
        self.recent_bytes += line.len();
        self.recent.push_back((at, line));
        while self.recent_bytes > RESEND_MAX_BYTES {
            if let Some((_, l)) = self.recent.pop_front() {
                self.recent_bytes -= l.len();
            }
        }
    }
}

/// Writes `buf` whole and empties it.
fn write_out(buf: &mut Vec<u8>, stream: &mut TcpStream) -> std::io::Result<()> {
    let r = stream.write_all(buf);
    buf.clear();
    r
}

fn describe(config: &LogstashConfig, e: &std::io::Error) -> String {
    if matches!(
        e.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    ) {
        format!(
            "writing to Logstash at {} timed out after {} ms",
            config.address,
            config.timeout.as_millis()
        )
    } else {
        format!("writing to Logstash at {} failed: {e}", config.address)
    }
}

impl Exporter for LinesExporter {
    type Item = Document;

    fn weight(&self, doc: &Document) -> usize {
        doc.bytes.len() + 1
    }

    fn tick(&mut self, house: &mut Housekeeping<'_>) {
        self.expire(Instant::now());
        self.check_alive(house);
    }

    fn export(&mut self, batch: Vec<Document>, delivery: &mut Delivery<'_, Document>) {
        self.expire(Instant::now());
        self.check_alive(delivery.housekeeping());
        if self.conn.is_none()
            && let Err(message) = self.connect(delivery.deadline())
        {
            delivery.fail(message);
            delivery.retry_all(batch);
            return;
        }
        if !self.resend.is_empty() {
            let resend: Vec<Arc<[u8]>> = self.resend.drain(..).collect();
            match self.write(resend.iter()) {
                Ok(_) => {
                    let now = Instant::now();
                    for line in resend {
                        self.remember(line, now);
                    }
                }
                Err((n, message)) => {
                    self.resend.extend(resend.into_iter().skip(n));
                    self.broken();
                    delivery.fail(message);
                    delivery.retry_all(batch);
                    return;
                }
            }
        }
        match self.write(batch.iter().map(|d| &d.bytes)) {
            Ok(_) => {
                let now = Instant::now();
                for doc in batch {
                    self.remember(doc.bytes, now);
                }
            }
            Err((n, message)) => {
                // Lines written whole before the error count as written
                // and go again with the recent ones; the rest are retried.
                let now = Instant::now();
                let mut rest = batch.into_iter();
                for doc in rest.by_ref().take(n) {
                    self.remember(doc.bytes, now);
                }
                self.broken();
                delivery.fail(message);
                delivery.retry_all(rest);
            }
        }
    }

    fn close(&mut self) {
        if let Some(stream) = self.conn.take() {
            let _ = stream.shutdown(std::net::Shutdown::Write);
        }
    }
}

/// Whether the connection still stands. A Logstash `tcp` input never
/// writes, so anything readable is the end of the connection (or an error).
fn alive(stream: &TcpStream) -> bool {
    if stream.set_nonblocking(true).is_err() {
        return false;
    }
    let mut probe = [0u8; 64];
    let alive = match (&*stream).read(&mut probe) {
        Ok(0) => false,
        Ok(_) => true,
        Err(e) => e.kind() == std::io::ErrorKind::WouldBlock,
    };
    alive && stream.set_nonblocking(false).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from(vars: &[(&str, &str)]) -> Result<Option<LogstashConfig>, ConfigError> {
        LogstashConfig::from_lookup(crate::config::lookup(vars))
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
