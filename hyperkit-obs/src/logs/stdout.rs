//! Log lines written off the caller's thread: each event's line is queued,
//! not written, and a worker of the shared export runtime writes it. A slow
//! terminal, a pipe nobody reads or a closed stdout costs the caller one
//! queue send at worst: a full queue drops the line and counts it in
//! `hyperkit_obs_dropped_total{sink}`, and a destination that refuses
//! writes (`EPIPE`) drops and counts what it refused.
//!
//! [`NonBlockingStdout`] is the process's stdout, started on first use;
//! [`non_blocking`] makes the same for any other `Write` (a file, stderr).
//! Both are `tracing_subscriber` `MakeWriter`s: each event's writer gathers
//! its line and queues it whole when dropped, so lines never interleave.
//! [`init()`](crate::init) writes both the JSON and the text lines to stdout
//! through them, and its guard's drop flushes what is queued.
//!
//! Unlike `tracing_appender::non_blocking`, the caller never wakes the
//! worker (it looks for lines every [`TICK`](crate::export::TICK)), so a
//! line costs the caller no system call.

use std::io::Write;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use crate::export::{self, Delivery, Exporter, Guard, Handle, SpawnError};

/// The sink name of stdout: its `sink` label and readiness check.
pub(crate) const SINK: &str = "stdout";

/// Lines waiting to be written, at most.
const CAPACITY: usize = 16_384;

/// Bytes handed to the destination in one write: a batch of lines goes in
/// a few writes, not one per line (stdout is line-buffered).
const WRITE_BLOCK: usize = 64 * 1024;

/// How long the flush of [`init()`](crate::init)'s guard waits for queued
/// lines.
pub const FLUSH_DEADLINE: Duration = Duration::from_secs(2);

/// One line on its way to a line writer's worker. The ECS layer shares its
/// document's bytes with the store and the shippers, without a newline;
/// the worker adds it.
#[derive(Clone, Debug)]
pub struct QueuedLine {
    bytes: Arc<[u8]>,
    newline: bool,
}

impl QueuedLine {
    /// A document (a JSON object, no newline) written as one line.
    pub(crate) fn document(bytes: Arc<[u8]>) -> QueuedLine {
        QueuedLine {
            bytes,
            newline: true,
        }
    }
}

/// The worker's side: writes each batch to `W`.
struct Lines<W> {
    out: W,
    /// Where `out` goes, for the sink's status.
    name: &'static str,
    block: Vec<u8>,
}

impl<W: Write> Lines<W> {
    /// Writes the lines gathered in `block`; `Err` when the destination
    /// refused them.
    fn write_block(&mut self) -> std::io::Result<()> {
        let result = self.out.write_all(&self.block);
        self.block.clear();
        result
    }
}

impl<W: Write + Send + 'static> Exporter for Lines<W> {
    type Item = QueuedLine;

    fn weight(&self, line: &QueuedLine) -> usize {
        line.bytes.len() + usize::from(line.newline)
    }

    fn export(&mut self, batch: Vec<QueuedLine>, delivery: &mut Delivery<'_, QueuedLine>) {
        // Lines in the block, and lines written before it.
        let (mut pending, mut written) = (0, 0);
        for (i, line) in batch.iter().enumerate() {
            self.block.extend_from_slice(&line.bytes);
            if line.newline {
                self.block.push(b'\n');
            }
            pending += 1;
            if self.block.len() >= WRITE_BLOCK || i + 1 == batch.len() {
                if let Err(e) = self.write_block() {
                    // Nobody reads any more: what it refused is lost,
                    // counted, and said in the sink's status.
                    delivery.reject(batch.len() - written);
                    delivery.fail(format!("cannot write log lines to {}: {e}", self.name));
                    return;
                }
                written += pending;
                pending = 0;
            }
        }
        let _ = self.out.flush();
        if self.block.capacity() > 4 * WRITE_BLOCK {
            self.block = Vec::new();
        }
    }
}

/// The options of a line writer's sink named `sink`.
fn options(sink: &'static str, target: &str) -> export::Options {
    export::Options::new(sink, target)
        .capacity(CAPACITY)
        .batch(1024, 256 * 1024)
        .shutdown_deadline(FLUSH_DEADLINE)
}

/// The stdout sink's guard, and a handle to it (`None` if its thread could
/// not start: lines are then dropped and counted).
static STDOUT: OnceLock<Option<(NonBlockingGuard, NonBlocking)>> = OnceLock::new();

/// The process's stdout sink, started on first use. Its runtime never
/// reports its own failures to stdout (their log line would come back
/// here): they go to the sink's status and readiness check.
pub(crate) fn stdout_handle() -> Option<&'static Handle<QueuedLine>> {
    STDOUT
        .get_or_init(|| {
            let lines = Lines {
                out: std::io::stdout(),
                name: "stdout",
                block: Vec::new(),
            };
            let guard = export::spawn(options(SINK, "stdout"), lines).ok()?;
            let handle = guard.handle();
            Some((guard, NonBlocking { handle }))
        })
        .as_ref()
        .map(|(_, writer)| &writer.handle)
}

/// Waits until the lines queued for stdout so far are written, for at
/// most `deadline`; `true` when they were (or nothing was ever queued).
pub fn flush(deadline: Duration) -> bool {
    STDOUT
        .get()
        .and_then(Option::as_ref)
        .is_none_or(|(g, _)| g.flush(deadline))
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

/// A `MakeWriter` that queues each line for a worker writing to another
/// destination, made by [`non_blocking`]. Cloning it is cheap; every clone
/// queues for the same worker.
#[derive(Clone, Debug)]
pub struct NonBlocking {
    pub(crate) handle: Handle<QueuedLine>,
}

/// Stops a [`non_blocking`] writer's worker when dropped, after writing
/// what is queued (within [`FLUSH_DEADLINE`]; what is left then is dropped
/// and counted). [`Guard::flush`] waits for the lines queued so far.
pub type NonBlockingGuard = Guard<QueuedLine>;

/// Writes log lines to `writer` on a worker thread of its own, a sink named
/// `sink` (its `hyperkit_obs_dropped_total` label, readiness check and
/// thread name), as [`NonBlockingStdout`] does for stdout.
///
/// ```
/// use tracing_subscriber::layer::SubscriberExt;
///
/// let path = std::env::temp_dir().join(format!("non-blocking-doc-{}.log", std::process::id()));
/// let (writer, guard) = hyperkit_obs::logs::non_blocking("agent-log", std::fs::File::create(&path)?)?;
/// let subscriber = tracing_subscriber::registry()
///     .with(hyperkit_obs::logs::layer("agent").with_writer(writer));
/// tracing::subscriber::with_default(subscriber, || tracing::info!("to the file"));
/// drop(guard); // writes what is queued, then stops
/// assert!(std::fs::read_to_string(&path)?.contains("\"message\":\"to the file\""));
/// # std::fs::remove_file(&path)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn non_blocking<W>(
    sink: &'static str,
    writer: W,
) -> Result<(NonBlocking, NonBlockingGuard), SpawnError>
where
    W: Write + Send + 'static,
{
    let lines = Lines {
        out: writer,
        name: sink,
        block: Vec::new(),
    };
    let guard = export::spawn(options(sink, sink), lines)?;
    let handle = guard.handle();
    Ok((NonBlocking { handle }, guard))
}

/// One event's line on its way to a line writer's worker: queued whole
/// when dropped.
#[derive(Debug)]
pub struct LineWriter<'a> {
    line: Vec<u8>,
    to: Option<&'a Handle<QueuedLine>>,
    sink: &'static str,
}

impl LineWriter<'_> {
    /// Room for a line whose first part is `first`: a layer that writes
    /// its line at once (the ECS layer) allocates it exactly once; one that
    /// writes it in pieces starts with room for a typical line.
    fn reserve_first(&mut self, first: usize) {
        const TYPICAL: usize = 256;
        self.line
            .reserve_exact(if first >= TYPICAL / 2 { first } else { TYPICAL });
    }
}

impl Write for LineWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.line.capacity() == 0 {
            self.reserve_first(buf.len());
        }
        self.line.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for LineWriter<'_> {
    fn drop(&mut self) {
        if self.line.is_empty() {
            return;
        }
        match self.to {
            Some(h) => {
                h.send(QueuedLine {
                    bytes: Arc::from(std::mem::take(&mut self.line)),
                    newline: false,
                });
            }
            None => crate::metrics::record_dropped(self.sink, 1),
        }
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for NonBlockingStdout {
    type Writer = LineWriter<'static>;

    fn make_writer(&'a self) -> LineWriter<'static> {
        LineWriter {
            line: Vec::new(),
            to: stdout_handle(),
            sink: SINK,
        }
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for NonBlocking {
    type Writer = LineWriter<'a>;

    fn make_writer(&'a self) -> LineWriter<'a> {
        LineWriter {
            line: Vec::new(),
            to: Some(&self.handle),
            sink: self.handle.sink(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use tracing_subscriber::fmt::MakeWriter;

    /// A destination that keeps what it is given, and its writes.
    #[derive(Clone, Default)]
    struct Kept(Arc<Mutex<(Vec<u8>, usize)>>);

    impl Write for Kept {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let mut kept = self.0.lock().unwrap();
            kept.0.extend_from_slice(buf);
            kept.1 += 1;
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// A destination that refuses every write, as a closed pipe does.
    struct Closed;

    impl Write for Closed {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            Err(std::io::ErrorKind::BrokenPipe.into())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn lines_arrive_whole_in_order_and_a_batch_in_few_writes() {
        let kept = Kept::default();
        let (writer, guard) = non_blocking("test-lines", kept.clone()).unwrap();
        for i in 0..3_000 {
            let mut line = writer.make_writer();
            // In pieces, as a formatting layer writes them.
            write!(line, "line {i}").unwrap();
            line.write_all(b" end\n").unwrap();
        }
        assert!(guard.flush(Duration::from_secs(30)));
        assert_eq!(guard.status().delivered, 3_000);
        let (bytes, writes) = kept.0.lock().unwrap().clone();
        let text = String::from_utf8(bytes).unwrap();
        let expected: String = (0..3_000).map(|i| format!("line {i} end\n")).collect();
        assert_eq!(text, expected);
        assert!(writes < 300, "{writes} writes for 3,000 lines");
    }

    #[test]
    fn the_ecs_layer_hands_its_document_over_and_the_worker_ends_the_line() {
        use tracing_subscriber::layer::SubscriberExt;
        let kept = Kept::default();
        let (writer, guard) = non_blocking("test-ecs", kept.clone()).unwrap();
        // The ECS layer queues its document's bytes (no newline); a text
        // layer on the same worker writes its line through `LineWriter`.
        let subscriber = tracing_subscriber::registry()
            .with(crate::logs::layer("agent").with_writer(writer.clone()))
            .with(crate::logs::text_layer().with_writer(writer));
        tracing::subscriber::with_default(subscriber, || {
            for i in 0..3 {
                tracing::info!(n = i, "event {i}");
            }
        });
        assert!(guard.flush(Duration::from_secs(30)));
        let text = String::from_utf8(kept.0.lock().unwrap().0.clone()).unwrap();
        let lines: Vec<&str> = text.split_terminator('\n').collect();
        assert!(text.ends_with('\n'), "{text}");
        assert_eq!(lines.len(), 6, "{text}");
        let json: Vec<serde_json::Value> = lines
            .iter()
            .filter(|l| l.starts_with('{'))
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(json.len(), 3, "{text}");
        for (i, v) in json.iter().enumerate() {
            assert_eq!(v["message"], format!("event {i}"));
            assert_eq!(v["n"], i);
        }
        assert_eq!(
            lines
                .iter()
                .filter(|l| l.contains("event 2") && !l.starts_with('{'))
                .count(),
            1,
            "{text}"
        );
    }

    #[test]
    fn a_writer_is_not_sent_the_news_of_its_own_trouble() {
        use tracing_subscriber::layer::SubscriberExt;
        let kept = Kept::default();
        let (writer, guard) = non_blocking("test-own", kept.clone()).unwrap();
        let subscriber =
            tracing_subscriber::registry().with(crate::logs::layer("agent").with_writer(writer));
        tracing::subscriber::with_default(subscriber, || {
            tracing::warn!(target: crate::export::LOG_TARGET, sink = "test-own", "own trouble");
            tracing::warn!(target: crate::export::LOG_TARGET, sink = "other", "another's trouble");
        });
        assert!(guard.flush(Duration::from_secs(30)));
        let text = String::from_utf8(kept.0.lock().unwrap().0.clone()).unwrap();
        assert!(!text.contains("own trouble\""), "{text}");
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(text.contains("another's trouble"), "{text}");
    }

    #[test]
    fn a_destination_that_refuses_loses_its_lines_counted() {
        let (writer, guard) = non_blocking("test-closed", Closed).unwrap();
        for _ in 0..10 {
            writer.make_writer().write_all(b"lost\n").unwrap();
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while guard.status().rejected < 10 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        let status = guard.status();
        assert_eq!((status.rejected, status.delivered), (10, 0));
        assert!(status.last_error.is_some_and(|e| e.contains("test-closed")));
    }

    #[test]
    fn a_line_written_at_once_is_allocated_once_and_exactly() {
        let (writer, _guard) = non_blocking("test-exact", std::io::sink()).unwrap();
        let mut line = writer.make_writer();
        line.write_all(&[b'x'; 517]).unwrap();
        assert_eq!(line.line.capacity(), 517);
        let mut pieces = writer.make_writer();
        pieces.write_all(b"ts=").unwrap();
        assert_eq!(pieces.line.capacity(), 256);
    }
}
