//! Log lines for people at a terminal (`HYPERKIT_LOG_FORMAT=text`, the
//! default when stdout is one): a [`tracing_subscriber::fmt`] event formatter,
//! [`TextFormat`], and span field formatter, [`TextFields`].
//!
//! ```text
//! 2026-12-01T22:15:53.071Z ERROR complete{model=gpt-4o task=codegen}: demo: complete failed: gpt-4o: 429 rate limited took=69.1ms status=failure
//! 2026-12-01T22:15:52.978Z  INFO build{chain=solana}: demo: build succeeded took=2.32s
//! ```
//!
//! A tracked call's closing event reads as a sentence: its `event.duration`
//! (nanoseconds) becomes `took=` in human units ([`HumanDuration`]), its
//! `status` is shown only when it is not `success`, and its `error.message`
//! only when the message does not already say it. It owns the look of a line
//! and nothing else: the JSON lines and every sink keep the ECS document.
//!
//! It never writes an escape code when the writer says no colour
//! ([`colour_allowed`] decides for stdout), and never lets a logged value
//! write one: control characters in values are escaped.
//!
//! This module holds the layer and the line's layout; `duration` is
//! [`HumanDuration`].

use std::fmt;

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

mod duration;
#[cfg(test)]
mod tests;

pub use duration::HumanDuration;

/// Whether lines written to a stream may be coloured: only on a terminal,
/// and neither when `NO_COLOR` is set to anything but the empty string
/// (<https://no-color.org>) nor when `TERM=dumb`.
///
/// ```
/// use std::io::IsTerminal;
/// let colour = hyperkit_obs::logs::colour_allowed(std::io::stdout().is_terminal());
/// # let _ = colour;
/// ```
pub fn colour_allowed(stream_is_terminal: bool) -> bool {
    colour_allowed_by(
        stream_is_terminal,
        std::env::var_os("NO_COLOR").as_deref(),
        std::env::var_os("TERM").as_deref(),
    )
}

fn colour_allowed_by(
    stream_is_terminal: bool,
    no_color: Option<&std::ffi::OsStr>,
    term: Option<&std::ffi::OsStr>,
) -> bool {
    stream_is_terminal && no_color.is_none_or(|v| v.is_empty()) && term.is_none_or(|t| t != "dumb")
}

/// The layer that writes [`TextFormat`] lines to stdout, coloured when
/// [`colour_allowed`] says so. It is a `tracing_subscriber::fmt::Layer`:
/// `.with_writer(…)` and `.with_ansi(…)` change where and how it writes.
///
/// ```
/// use tracing_subscriber::layer::SubscriberExt;
///
/// let subscriber = tracing_subscriber::registry()
///     .with(hyperkit_obs::logs::text_layer().with_writer(std::io::sink));
/// tracing::subscriber::with_default(subscriber, || tracing::warn!(chain = "ethereum", "slow"));
/// ```
pub fn text_layer<S>() -> tracing_subscriber::fmt::Layer<S, TextFields, TextFormat>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    use std::io::IsTerminal;
    tracing_subscriber::fmt::layer()
        .fmt_fields(TextFields)
        .event_format(TextFormat)
        .with_ansi(colour_allowed(std::io::stdout().is_terminal()))
}

/// Formats an event as one line:
/// `<time> <LEVEL> <span>{<labels>}: <target>: <message> took=… <fields>`.
///
/// The time is UTC with milliseconds, as in the JSON lines. Spans are listed
/// from the outermost, with the fields [`TextFields`] recorded on them.
#[derive(Clone, Copy, Debug, Default)]
pub struct TextFormat;

/// Formats span fields as `key=value` pairs separated by spaces, a value
/// quoted only when it would otherwise be ambiguous (`chain=ethereum`,
/// `reason="out of gas"`).
#[derive(Clone, Copy, Debug, Default)]
pub struct TextFields;

impl<'writer> FormatFields<'writer> for TextFields {
    fn format_fields<R: RecordFields>(
        &self,
        mut writer: Writer<'writer>,
        fields: R,
    ) -> fmt::Result {
        let mut visitor = PairWriter {
            result: Ok(()),
            separate: false,
            writer: &mut writer,
        };
        fields.record(&mut visitor);
        visitor.result
    }
}

/// Writes every field it visits as a `key=value` pair.
struct PairWriter<'a, 'w> {
    writer: &'a mut Writer<'w>,
    separate: bool,
    result: fmt::Result,
}

impl PairWriter<'_, '_> {
    fn pair(&mut self, key: &str, value: &Value) {
        if self.result.is_ok() {
            self.result = write_pair(self.writer, self.separate, key, value);
            self.separate = true;
        }
    }
}

impl Visit for PairWriter<'_, '_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.pair(field.name(), &Value::Text(value.to_owned()));
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.pair(field.name(), &Value::Text(value.to_string()));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.pair(field.name(), &Value::Debug(format!("{value:?}")));
    }
}

/// A field's value as it will be written.
enum Value {
    /// A string: quoted when empty or holding a space, `"`, `=` or a control
    /// character.
    Text(String),
    /// A value's `Debug` (or, for `%` fields, `Display`) text, written as
    /// it is but for control characters, as `tracing_subscriber::fmt` does.
    Debug(String),
}

fn write_pair(w: &mut Writer<'_>, separate: bool, key: &str, value: &Value) -> fmt::Result {
    if separate {
        w.write_char(' ')?;
    }
    let key = key.strip_prefix("r#").unwrap_or(key);
    paint(w, ITALIC, key)?;
    paint(w, DIM, "=")?;
    match value {
        Value::Text(text) if needs_quotes(text) => write!(w, "{text:?}"),
        Value::Text(text) | Value::Debug(text) => write_escaped(w, text),
    }
}

fn needs_quotes(text: &str) -> bool {
    text.is_empty()
        || text
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '"' || c == '=')
}

/// Writes `text` with every control character but newline and tab escaped
/// (`\x1b`, `\u{9b}`), so that no logged value can move the cursor or change
/// the colours of the terminal it is read on.
fn write_escaped(w: &mut Writer<'_>, text: &str) -> fmt::Result {
    for c in text.chars() {
        match c {
            '\n' | '\t' => w.write_char(c)?,
            c if c.is_control() && (c as u32) < 0x80 => write!(w, "\\x{:02x}", c as u32)?,
            c if c.is_control() => write!(w, "\\u{{{:x}}}", c as u32)?,
            c => w.write_char(c)?,
        }
    }
    Ok(())
}

const BOLD: &str = "\x1b[1m";
const DIM: &str = "\x1b[2m";
const ITALIC: &str = "\x1b[3m";
const RESET: &str = "\x1b[0m";

/// Writes `text` in `style` when the writer allows escape codes, plain
/// otherwise.
fn paint(w: &mut Writer<'_>, style: &str, text: &str) -> fmt::Result {
    if w.has_ansi_escapes() {
        write!(w, "{style}{text}{RESET}")
    } else {
        w.write_str(text)
    }
}

fn level_style(level: &Level) -> &'static str {
    match *level {
        Level::ERROR => "\x1b[31m",
        Level::WARN => "\x1b[33m",
        Level::INFO => "\x1b[32m",
        Level::DEBUG => "\x1b[34m",
        Level::TRACE => "\x1b[35m",
    }
}

/// The fields of one event, sorted into the ones the line treats specially
/// and the rest, in the order they were recorded.
#[derive(Default)]
struct EventFields {
    message: Option<String>,
    status: Option<String>,
    duration_ns: Option<u64>,
    error_message: Option<String>,
    others: Vec<(&'static str, Value)>,
}

impl EventFields {
    fn set(&mut self, field: &Field, value: Value) {
        let text = |v: Value| match v {
            Value::Text(t) | Value::Debug(t) => t,
        };
        match field.name() {
            "message" => self.message = Some(text(value)),
            "status" => self.status = Some(text(value)),
            "error.message" => self.error_message = Some(text(value)),
            name => self.others.push((name, value)),
        }
    }
}

impl Visit for EventFields {
    fn record_u64(&mut self, field: &Field, value: u64) {
        if field.name() == "event.duration" {
            self.duration_ns = Some(value);
        } else {
            self.set(field, Value::Debug(value.to_string()));
        }
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        match u64::try_from(value) {
            Ok(ns) if field.name() == "event.duration" => self.duration_ns = Some(ns),
            _ => self.set(field, Value::Debug(value.to_string())),
        }
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.set(field, Value::Text(value.to_owned()));
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.set(field, Value::Text(value.to_string()));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.set(field, Value::Debug(format!("{value:?}")));
    }
}

impl<S, N> FormatEvent<S, N> for TextFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut w: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        let mut time = Vec::with_capacity(24);
        super::time::write_rfc3339_millis(crate::util::unix_ms(), &mut time);
        paint(&mut w, DIM, &String::from_utf8_lossy(&time))?;
        w.write_char(' ')?;
        paint(
            &mut w,
            level_style(meta.level()),
            &format!("{:>5}", meta.level()),
        )?;
        w.write_char(' ')?;

        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                paint(&mut w, BOLD, span.name())?;
                let extensions = span.extensions();
                if let Some(fields) = extensions.get::<FormattedFields<N>>()
                    && !fields.is_empty()
                {
                    paint(&mut w, BOLD, "{")?;
                    w.write_str(fields)?;
                    paint(&mut w, BOLD, "}")?;
                }
                paint(&mut w, DIM, ":")?;
            }
            w.write_char(' ')?;
        }
        paint(&mut w, DIM, meta.target())?;
        paint(&mut w, DIM, ":")?;

        let mut fields = EventFields::default();
        event.record(&mut fields);
        let message = fields.message.as_deref().unwrap_or_default();
        if !message.is_empty() {
            w.write_char(' ')?;
            write_escaped(&mut w, message)?;
        }
        if let Some(ns) = fields.duration_ns {
            let took = Value::Debug(HumanDuration::from_nanos(ns).to_string());
            write_pair(&mut w, true, "took", &took)?;
        }
        if let Some(status) = fields.status.filter(|s| s != "success") {
            write_pair(&mut w, true, "status", &Value::Text(status))?;
        }
        if let Some(error) = fields
            .error_message
            .filter(|e| !message.contains(e.as_str()))
        {
            write_pair(&mut w, true, "error.message", &Value::Text(error))?;
        }
        for (name, value) in &fields.others {
            write_pair(&mut w, true, name, value)?;
        }
        writeln!(w)
    }
}
