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

use std::fmt;
use std::time::Duration;

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

/// A duration in the unit a person reads at a glance: three significant
/// digits below a minute (`850ns`, `12.3µs`, `53ms`, `2.36s`, `59.9s`),
/// whole seconds below an hour (`1m`, `1m5s`, `59m59s`), whole minutes
/// above (`1h`, `1h30m`, `26h5m`). Rounds half up, and a value that rounds
/// up to the next unit is written in it (999.5 ms is `1s`, 59.95 s is `1m`).
/// Honours width and alignment (`{:>6}`).
///
/// ```
/// use hyperkit_obs::logs::HumanDuration;
/// use std::time::Duration;
///
/// assert_eq!(HumanDuration(Duration::from_nanos(2_357_999_374)).to_string(), "2.36s");
/// assert_eq!(HumanDuration(Duration::from_millis(53)).to_string(), "53ms");
/// assert_eq!(HumanDuration(Duration::from_secs(90)).to_string(), "1m30s");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct HumanDuration(pub Duration);

impl HumanDuration {
    /// A duration of `ns` nanoseconds, the unit of ECS `event.duration`.
    pub fn from_nanos(ns: u64) -> Self {
        HumanDuration(Duration::from_nanos(ns))
    }
}

const NS_PER_S: u128 = 1_000_000_000;

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(&human(self.0.as_nanos()))
    }
}

fn human(ns: u128) -> String {
    if ns < 1_000 {
        return format!("{ns}ns");
    }
    for (unit, suffix, limit) in [
        (1_000, "µs", 1_000),
        (1_000_000, "ms", 1_000),
        (NS_PER_S, "s", 60),
    ] {
        if ns >= unit * limit {
            continue;
        }
        if let Some((scaled, decimals)) = three_significant_digits(ns, unit)
            && scaled < limit * 10u128.pow(decimals)
        {
            return format!("{}{suffix}", decimal(scaled, decimals));
        }
    }
    let seconds = (ns + NS_PER_S / 2) / NS_PER_S;
    if seconds < 3_600 {
        return match (seconds / 60, seconds % 60) {
            (m, 0) => format!("{m}m"),
            (m, s) => format!("{m}m{s}s"),
        };
    }
    let minutes = (ns + 30 * NS_PER_S) / (60 * NS_PER_S);
    match (minutes / 60, minutes % 60) {
        (h, 0) => format!("{h}h"),
        (h, m) => format!("{h}h{m}m"),
    }
}

/// `ns / unit` rounded half up to three significant digits, as an integer
/// and its number of decimals; `None` when it rounds to 1000 or more.
fn three_significant_digits(ns: u128, unit: u128) -> Option<(u128, u32)> {
    (0..=2).rev().find_map(|decimals| {
        let scaled = (ns * 10u128.pow(decimals) + unit / 2) / unit;
        (scaled < 1_000).then_some((scaled, decimals))
    })
}

/// `scaled / 10^decimals` without trailing zeros: `(236, 2)` is `2.36`,
/// `(530, 1)` is `53`.
fn decimal(scaled: u128, decimals: u32) -> String {
    let power = 10u128.pow(decimals);
    let (whole, fraction) = (scaled / power, scaled % power);
    if fraction == 0 {
        return whole.to_string();
    }
    let digits = format!("{fraction:0width$}", width = decimals as usize);
    format!("{whole}.{}", digits.trim_end_matches('0'))
}

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

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::layer::SubscriberExt;

    fn human_ns(ns: u64) -> String {
        HumanDuration::from_nanos(ns).to_string()
    }

    const MS: u64 = 1_000_000;
    const S: u64 = 1_000_000_000;

    #[test]
    fn below_a_microsecond_durations_are_whole_nanoseconds() {
        assert_eq!(human_ns(0), "0ns");
        assert_eq!(human_ns(1), "1ns");
        assert_eq!(human_ns(999), "999ns");
    }

    #[test]
    fn below_a_minute_durations_have_three_significant_digits_without_trailing_zeros() {
        assert_eq!(human_ns(1_000), "1µs");
        assert_eq!(human_ns(1_500), "1.5µs");
        assert_eq!(human_ns(12_345), "12.3µs");
        assert_eq!(human_ns(5_210_000), "5.21ms");
        assert_eq!(human_ns(53 * MS), "53ms");
        assert_eq!(human_ns(532 * MS + 400_000), "532ms");
        assert_eq!(human_ns(2_357_999_374), "2.36s");
        assert_eq!(human_ns(2_300 * MS), "2.3s");
        assert_eq!(human_ns(S), "1s");
        assert_eq!(human_ns(59_940 * MS), "59.9s");
    }

    #[test]
    fn rounding_is_half_up() {
        assert_eq!(human_ns(53_449_999), "53.4ms");
        assert_eq!(human_ns(53_450_000), "53.5ms");
        assert_eq!(human_ns(1_234_999), "1.23ms");
        assert_eq!(human_ns(1_235_000), "1.24ms");
    }

    #[test]
    fn a_value_that_rounds_up_to_the_next_unit_is_written_in_it() {
        assert_eq!(human_ns(9_995), "10µs");
        assert_eq!(human_ns(99_950), "100µs");
        assert_eq!(human_ns(999_499), "999µs");
        assert_eq!(human_ns(999_500), "1ms");
        assert_eq!(human_ns(999_499_999), "999ms");
        assert_eq!(human_ns(999_500_000), "1s");
        assert_eq!(human_ns(59_949_999_999), "59.9s");
        assert_eq!(human_ns(59_950 * MS), "1m");
        assert_eq!(human_ns(59_990 * MS), "1m");
    }

    #[test]
    fn from_a_minute_durations_are_whole_seconds_and_from_an_hour_whole_minutes() {
        assert_eq!(human_ns(60 * S), "1m");
        assert_eq!(human_ns(61_400 * MS), "1m1s");
        assert_eq!(human_ns(61_500 * MS), "1m2s");
        assert_eq!(human_ns(90 * S), "1m30s");
        assert_eq!(human_ns(120 * S), "2m");
        assert_eq!(human_ns(3_599_499 * MS), "59m59s");
        assert_eq!(human_ns(3_599_500 * MS), "1h");
        assert_eq!(human_ns(3_600 * S), "1h");
        assert_eq!(human_ns(3_629 * S), "1h");
        assert_eq!(human_ns(3_630 * S), "1h1m");
        assert_eq!(human_ns(5_400 * S), "1h30m");
        assert_eq!(human_ns(7_200 * S), "2h");
        assert_eq!(human_ns(26 * 3_600 * S + 5 * 60 * S), "26h5m");
        assert_eq!(human_ns(u64::MAX), "5124095h35m");
    }

    #[test]
    fn a_human_duration_honours_width_and_alignment() {
        let d = HumanDuration(Duration::from_millis(53));
        assert_eq!(format!("[{d:>6}|{d:<6}]"), "[  53ms|53ms  ]");
    }

    #[test]
    fn colour_needs_a_terminal_no_no_color_and_a_terminal_that_is_not_dumb() {
        let os = |s: &'static str| Some(std::ffi::OsStr::new(s));
        assert!(colour_allowed_by(true, None, os("xterm-256color")));
        assert!(colour_allowed_by(true, None, None));
        assert!(
            colour_allowed_by(true, os(""), os("xterm")),
            "empty NO_COLOR"
        );
        assert!(!colour_allowed_by(false, None, os("xterm")));
        assert!(!colour_allowed_by(true, os("1"), os("xterm")));
        assert!(!colour_allowed_by(true, None, os("dumb")));
    }

    use crate::logs::testing::Lines;

    /// The lines `emit` logs, each without its timestamp (checked to be
    /// there).
    fn lines_of(colour: bool, emit: impl FnOnce()) -> Vec<String> {
        let lines = Lines::default();
        let subscriber = tracing_subscriber::registry()
            .with(text_layer().with_writer(lines.clone()).with_ansi(colour));
        tracing::subscriber::with_default(subscriber, emit);
        let text = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
        text.lines()
            .map(|line| {
                if colour {
                    return line.to_owned();
                }
                let (time, rest) = line.split_once(' ').unwrap();
                assert!(
                    time.len() == 24 && time.ends_with('Z') && time.as_bytes()[10] == b'T',
                    "{line}"
                );
                rest.to_owned()
            })
            .collect()
    }

    #[test]
    fn a_failed_call_reads_as_one_sentence_with_its_labels_duration_and_error_once() {
        let lines = lines_of(false, || {
            let span = tracing::info_span!("complete", model = "gpt-4o", task = "codegen");
            let _in = span.enter();
            let error = "gpt-4o: 429 rate limited";
            tracing::error!(target: "demo", status = "failure", event.duration = 69_095_539u64,
                error.message = %error, "complete failed: {}", error);
        });
        assert_eq!(
            lines,
            [
                "ERROR complete{model=gpt-4o task=codegen}: demo: complete failed: gpt-4o: 429 rate limited took=69.1ms status=failure"
            ]
        );
    }

    #[test]
    fn a_successful_call_shows_no_status() {
        let lines = lines_of(false, || {
            let span = tracing::info_span!("build", chain = "solana");
            let _in = span.enter();
            tracing::info!(target: "demo", status = "success", event.duration = 2_320_708_449u64, "build succeeded");
        });
        assert_eq!(
            lines,
            [" INFO build{chain=solana}: demo: build succeeded took=2.32s"]
        );
    }

    #[test]
    fn nested_spans_are_listed_from_the_outermost_and_other_fields_follow_in_order() {
        let lines = lines_of(false, || {
            let outer = tracing::info_span!("job", id = 7u64);
            let _o = outer.enter();
            let inner = tracing::info_span!("deploy", region = "eu west");
            let _i = inner.enter();
            tracing::warn!(target: "agent", status = "cancelled", attempt = 2, reason = "", ok = true, "deploy was cancelled");
        });
        assert_eq!(
            lines,
            [
                r#" WARN job{id=7}:deploy{region="eu west"}: agent: deploy was cancelled status=cancelled attempt=2 reason="" ok=true"#
            ]
        );
    }

    #[test]
    fn an_error_message_the_message_does_not_contain_is_kept() {
        let lines = lines_of(false, || {
            tracing::event!(target: "agent", Level::ERROR, error.message = "disk full", "cannot save");
        });
        assert_eq!(
            lines,
            [r#"ERROR agent: cannot save error.message="disk full""#]
        );
    }

    #[test]
    fn a_duration_that_is_not_a_count_of_nanoseconds_is_left_as_it_is() {
        let lines = lines_of(false, || {
            tracing::event!(target: "agent", Level::INFO, event.duration = -5i64, "odd");
        });
        assert_eq!(lines, [" INFO agent: odd event.duration=-5"]);
    }

    #[test]
    fn control_characters_in_logged_values_are_escaped() {
        let lines = lines_of(false, || {
            tracing::warn!(target: "agent", user = "\x1b[2Jeve", note = ?"a\x07b", "hello \x1b[31mred\u{9b}");
        });
        assert_eq!(
            lines,
            [r#" WARN agent: hello \x1b[31mred\u{9b} user="\u{1b}[2Jeve" note="a\u{7}b""#]
        );
    }

    #[test]
    fn without_colour_no_escape_code_is_written_and_with_it_the_level_is_coloured() {
        let emit = || {
            let span = tracing::info_span!("build", chain = "bsc");
            let _in = span.enter();
            tracing::error!(status = "failure", event.duration = 5u64, "build failed");
        };
        let plain = lines_of(false, emit);
        assert!(!plain[0].contains('\x1b'), "{plain:?}");
        let coloured = lines_of(true, emit);
        assert!(coloured[0].contains("\x1b[31mERROR\x1b[0m"), "{coloured:?}");
        assert!(coloured[0].contains("\x1b[1mbuild\x1b[0m"), "{coloured:?}");
    }
}
