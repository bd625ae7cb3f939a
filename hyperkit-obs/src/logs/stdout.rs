//! Stdout as a sink: log lines are queued, not written, on the caller's
//! thread, and a worker of the shared export runtime writes them. A slow
//! terminal, a pipe nobody reads or a closed stdout costs the caller one
//! queue send at worst: a full queue drops the line and counts it in
//! `hyperkit_obs_dropped_total{sink="stdout"}`, and a stdout that refuses
//! writes (`EPIPE`) drops and counts what it refused.
//!
//! [`NonBlockingStdout`] is a `tracing_subscriber` `MakeWriter`: each event's
//! writer gathers its line and queues it whole when dropped, so lines never
//! interleave. [`init()`](crate::init) writes both the JSON and the text lines
//! through it, and its guard's drop flushes what is queued.

use std::io::Write;
use std::sync::OnceLock;
use std::time::Duration;

use crate::export::{self, Delivery, Exporter, Guard, Handle};

/// The sink name: its `sink` label and readiness check.
pub(crate) const SINK: &str = "stdout";

/// Lines waiting to be written, at most.
const CAPACITY: usize = 16_384;

/// How long the flush of [`init()`](crate::init)'s guard waits for queued
/// lines.
pub const FLUSH_DEADLINE: Duration = Duration::from_secs(2);

struct Lines;

impl Exporter for Lines {
    type Item = Vec<u8>;

    fn weight(&self, line: &Vec<u8>) -> usize {
        line.len()
    }

    fn export(&mut self, batch: Vec<Vec<u8>>, delivery: &mut Delivery<'_, Vec<u8>>) {
        let stdout = std::io::stdout();
        let mut out = stdout.lock();
        let mut written = 0;
        for line in &batch {
            match out.write_all(line) {
                Ok(()) => written += 1,
                Err(e) => {
                    // Nobody reads stdout any more: what it refused is lost,
                    // counted, and said on stderr (which this does not use).
                    let lost = batch.len() - written;
                    delivery.reject(lost);
                    delivery.fail(format!("cannot write log lines to stdout: {e}"));
                    return;
                }
            }
        }
        let _ = out.flush();
    }
}

static SINK_GUARD: OnceLock<Option<Guard<Vec<u8>>>> = OnceLock::new();

/// The process's stdout sink, started on first use (`None` if its thread
/// could not start: lines are then dropped and counted). Its runtime never
/// reports its own failures to stdout (their log line would come back
/// here): they go to the sink's status and readiness check.
fn handle() -> Option<Handle<Vec<u8>>> {
    SINK_GUARD
        .get_or_init(|| {
            let options = export::Options::new(SINK, "stdout")
                .capacity(CAPACITY)
                .batch(1024, 256 * 1024)
                .shutdown_deadline(FLUSH_DEADLINE);
            export::spawn(options, Lines).ok()
        })
        .as_ref()
        .map(Guard::handle)
}

/// Waits until the lines queued so far are written, for at most
/// `deadline`; `true` when they were (or nothing was ever queued).
pub fn flush(deadline: Duration) -> bool {
    SINK_GUARD
        .get()
        .and_then(Option::as_ref)
        .is_none_or(|g| g.flush(deadline))
}

/// A `MakeWriter` for stdout that never blocks the caller (see the
/// [module](self) docs).
///
/// ```
/// use tracing_subscriber::layer::SubscriberExt;
///
/// let subscriber = tracing_subscriber::registry().with(
///     hyperkit_obs::logs::layer("agent").with_writer(hyperkit_obs::logs::NonBlockingStdout),
/// );
/// tracing::subscriber::with_default(subscriber, || tracing::info!("queued, not written here"));
/// assert!(hyperkit_obs::logs::flush_stdout(std::time::Duration::from_secs(5)));
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct NonBlockingStdout;

/// One event's line on its way to the stdout sink: queued when dropped.
#[derive(Debug)]
pub struct LineWriter {
    line: Vec<u8>,
}

impl Write for LineWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.line.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for LineWriter {
    fn drop(&mut self) {
        if self.line.is_empty() {
            return;
        }
        match handle() {
            Some(h) => {
                h.send(std::mem::take(&mut self.line));
            }
            None => crate::metrics::record_dropped(SINK, 1),
        }
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for NonBlockingStdout {
    type Writer = LineWriter;

    fn make_writer(&'a self) -> LineWriter {
        LineWriter {
            line: Vec::with_capacity(256),
        }
    }
}
