//! The Prometheus text exposition of the registry (and its OpenMetrics
//! form, with exemplars), with hyperkit-obs's own families written straight
//! from their cells.
//!
//! `prometheus::TextEncoder` needs every family as protobuf messages first:
//! a `Metric` and `LabelPair`s with owned strings per series, then a string
//! per number. For the families this crate owns that is most of a scrape's
//! cost, so [`render`] writes them itself, each label set's label text made
//! once when the set is made, numbers formatted into the output buffer, and
//! asks `gather()` only for the collectors a user registered (ours step
//! aside while it runs). The output is the same text, families in name
//! order as `gather()` gives them; a family's series keep the order their
//! label sets were made in (`gather()` sorts them by label values, which
//! Prometheus does not need).
//!
//! Writing never blocks a tracked call: a domain's label sets are copied
//! (pointers) under a read lock, and each cell is read with atomic loads.

use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{PoisonError, RwLock};

use prometheus::{Encoder, IntCounter, IntGauge, Registry, TextEncoder};

use super::domain::DomainMetrics;
use super::exemplars::Exemplar;
use super::family::Family;
use super::histogram::DurationHistogram;

thread_local! {
    /// Set while [`render`] gathers the foreign collectors: ours return
    /// nothing then, since they are written natively.
    static NATIVE_PASS: Cell<bool> = const { Cell::new(false) };
}

/// Whether this thread is gathering for [`render`], so our collectors
/// should return nothing.
pub(crate) fn native_pass() -> bool {
    NATIVE_PASS.with(Cell::get)
}

/// The exposition format: Prometheus text (the default) or OpenMetrics
/// (on request, with exemplars and `# EOF`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Format {
    Text,
    OpenMetrics,
}

/// A family written natively.
#[derive(Clone, Copy)]
pub(crate) enum Native {
    DomainCalls(&'static DomainMetrics),
    DomainDuration(&'static DomainMetrics),
    DomainInFlight(&'static DomainMetrics),
    Counters(&'static Family<IntCounter>),
    Gauges(&'static Family<IntGauge>),
    Durations(&'static Family<DurationHistogram>),
    Usd(&'static Family<crate::prices::UsdCounter>),
}

impl Native {
    fn name(self) -> &'static str {
        match self {
            Native::DomainCalls(d) => d.spec().calls_total(),
            Native::DomainDuration(d) => d.spec().duration_seconds(),
            Native::DomainInFlight(d) => d.spec().in_flight().unwrap_or_default(),
            Native::Counters(f) => f.name(),
            Native::Gauges(f) => f.name(),
            Native::Durations(f) => f.name(),
            Native::Usd(f) => f.name(),
        }
    }

    fn write(self, out: &mut Vec<u8>, format: Format) {
        match self {
            Native::DomainCalls(d) => d.write_calls(out, format),
            Native::DomainDuration(d) => d.write_durations(out, format),
            Native::DomainInFlight(d) => d.write_in_flight(out, format),
            Native::Counters(f) => f.write(out, "counter", format, |out, name, labels, c| {
                sample(out, name, "", labels, "", c.get());
            }),
            Native::Usd(f) => f.write(out, "counter", format, |out, name, labels, c| {
                line(out, name, "", labels, "");
                decimal(out, c.picos(), 12);
                out.push(b'\n');
            }),
            Native::Gauges(f) => f.write(out, "gauge", format, |out, name, labels, g| {
                line(out, name, "", labels, "");
                let v = g.get();
                if v < 0 {
                    out.push(b'-');
                }
                number(out, v.unsigned_abs());
                out.push(b'\n');
            }),
            Native::Durations(f) => f.write(out, "histogram", format, |out, name, labels, h| {
                let le = le_labels(h.bounds());
                let (cumulative, count) = h.cumulative();
                let sum = h.sum_seconds();
                histogram(out, name, labels, &le, cumulative, count, None, |out| {
                    out.extend_from_slice(sum.to_string().as_bytes());
                });
            }),
        }
    }
}

/// The families written natively, added as they are registered.
static NATIVES: RwLock<Vec<Native>> = RwLock::new(Vec::new());

/// Adds a family to those [`render`] writes itself.
pub(crate) fn add(native: Native) {
    NATIVES
        .write()
        .unwrap_or_else(PoisonError::into_inner)
        .push(native);
}

/// The size of the last render, so the next one allocates once.
static LAST_LEN: AtomicUsize = AtomicUsize::new(64 * 1024);

/// The registry in the Prometheus text format, as `/metrics` serves it.
pub fn render(registry: &Registry) -> Vec<u8> {
    render_as(registry, Format::Text)
}

/// The registry in the OpenMetrics text format, with the exemplars of
/// sampled tracked calls on the calls counters and the duration buckets,
/// ending in `# EOF`, as `/metrics` serves it to a scraper that asks for
/// it ([`prefers_openmetrics`](super::prefers_openmetrics)).
pub fn render_openmetrics(registry: &Registry) -> Vec<u8> {
    render_as(registry, Format::OpenMetrics)
}

fn render_as(registry: &Registry, format: Format) -> Vec<u8> {
    let mut out = Vec::with_capacity(LAST_LEN.load(Ordering::Relaxed) + 4096);
    if !std::ptr::eq(registry, super::registry()) {
        // Someone else's registry holds none of our families natively.
        let families = registry.gather();
        match format {
            Format::Text => {
                if TextEncoder::new().encode(&families, &mut out).is_err() {
                    out.clear();
                }
            }
            Format::OpenMetrics => {
                for f in &families {
                    super::openmetrics::encode_family(f, &mut out);
                }
                out.extend_from_slice(b"# EOF\n");
            }
        }
        return out;
    }
    NATIVE_PASS.with(|p| p.set(true));
    let foreign = registry.gather();
    NATIVE_PASS.with(|p| p.set(false));
    let natives: Vec<Native> = NATIVES
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();

    // Both lists in name order, merged as `gather()` would have sorted them.
    let mut natives: Vec<(&str, Native)> = natives.iter().map(|n| (n.name(), *n)).collect();
    natives.sort_by_key(|(name, _)| *name);
    let mut foreign = foreign.into_iter().peekable();
    let encoder = TextEncoder::new();
    let write_foreign = |out: &mut Vec<u8>, family| match format {
        Format::Text => {
            let start = out.len();
            // A family the encoder refuses is left out, not the whole scrape.
            if encoder.encode(std::slice::from_ref(&family), out).is_err() {
                out.truncate(start);
            }
        }
        Format::OpenMetrics => super::openmetrics::encode_family(&family, out),
    };
    for (name, native) in natives {
        while let Some(f) = foreign.next_if(|f| f.name() < name) {
            write_foreign(&mut out, f);
        }
        native.write(&mut out, format);
    }
    for f in foreign {
        write_foreign(&mut out, f);
    }
    if format == Format::OpenMetrics {
        out.extend_from_slice(b"# EOF\n");
    }
    LAST_LEN.store(out.len(), Ordering::Relaxed);
    out
}

/// `# HELP` and `# TYPE` lines of family `name` of Prometheus type `kind`
/// (in OpenMetrics a counter's family name has no `_total`, and its help
/// escapes `"` too).
pub(crate) fn header(
    out: &mut Vec<u8>,
    name: &str,
    help: &str,
    kind: &'static str,
    format: Format,
) {
    let (name, kind) = match format {
        Format::Text => (name, kind),
        Format::OpenMetrics => super::openmetrics::family_of(name, kind),
    };
    out.extend_from_slice(b"# HELP ");
    out.extend_from_slice(name.as_bytes());
    out.push(b' ');
    escape(out, help, format == Format::OpenMetrics);
    out.extend_from_slice(b"\n# TYPE ");
    out.extend_from_slice(name.as_bytes());
    out.push(b' ');
    out.extend_from_slice(kind.as_bytes());
    out.push(b'\n');
}

/// Appends `value` escaped as the text format wants: `\` and newline always,
/// `"` inside label values.
pub(crate) fn escape(out: &mut Vec<u8>, value: &str, quote: bool) {
    let needs = |b: &u8| *b == b'\\' || *b == b'\n' || (quote && *b == b'"');
    if !value.as_bytes().iter().any(needs) {
        out.extend_from_slice(value.as_bytes());
        return;
    }
    for b in value.bytes() {
        match b {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'"' if quote => out.extend_from_slice(b"\\\""),
            _ => out.push(b),
        }
    }
}

/// `name="value",…` for these labels (no braces), escaped.
pub(crate) fn label_text<'a>(
    names: impl IntoIterator<Item = &'a str>,
    values: impl IntoIterator<Item = &'a str>,
) -> Box<str> {
    let mut out = Vec::new();
    for (i, (name, value)) in names.into_iter().zip(values).enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b"=\"");
        escape(&mut out, value, true);
        out.push(b'"');
    }
    // Label names are ASCII and values were UTF-8: escaping kept it so.
    String::from_utf8(out).map_or_else(|_| Box::from(""), String::into_boxed_str)
}

use crate::util::write_u64 as number;

/// Appends `ns` nanoseconds as seconds, as few digits as exactness needs
/// (`1.5`, `0.000000941`, `3`).
pub(crate) fn seconds(out: &mut Vec<u8>, ns: u64) {
    decimal(out, ns, 9);
}

/// Appends `n` units of 10^-`scale` (at most 19) as a decimal number, as
/// few digits as exactness needs: nanoseconds as seconds, pico-dollars as
/// dollars.
pub(crate) fn decimal(out: &mut Vec<u8>, n: u64, scale: usize) {
    let unit = 10u64.pow(scale as u32);
    number(out, n / unit);
    let mut frac = n % unit;
    if frac == 0 {
        return;
    }
    let mut width = scale;
    while frac.is_multiple_of(10) {
        frac /= 10;
        width -= 1;
    }
    out.push(b'.');
    let mut digits = [b'0'; 19];
    let mut i = width;
    while frac > 0 {
        i -= 1;
        digits[i] = b'0' + (frac % 10) as u8;
        frac /= 10;
    }
    out.extend_from_slice(&digits[..width]);
}

/// Starts a sample line: the name, its `suffix` (`_bucket`, `_sum`, …), the
/// labels (`labels`, then `extra`, either may be empty; no braces at all
/// when both are) and the space before the value.
#[inline]
pub(crate) fn line(out: &mut Vec<u8>, name: &str, suffix: &str, labels: &[u8], extra: &str) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(suffix.as_bytes());
    if labels.is_empty() && extra.is_empty() {
        out.push(b' ');
        return;
    }
    out.push(b'{');
    out.extend_from_slice(labels);
    if !extra.is_empty() {
        if !labels.is_empty() {
            out.push(b',');
        }
        out.extend_from_slice(extra.as_bytes());
    }
    out.extend_from_slice(b"} ");
}

/// One sample line with an integer value.
#[inline]
pub(crate) fn sample(
    out: &mut Vec<u8>,
    name: &str,
    suffix: &str,
    labels: &[u8],
    extra: &str,
    value: u64,
) {
    line(out, name, suffix, labels, extra);
    number(out, value);
    out.push(b'\n');
}

/// The `le="…"` label of each bucket bound, as the encoder writes bounds.
pub(crate) fn le_labels(bounds: &[f64]) -> Vec<String> {
    bounds.iter().map(|b| format!("le=\"{b}\"")).collect()
}

/// The lines of one histogram series: the cumulative buckets (their `le`
/// labels from [`le_labels`]), `+Inf`, the sum and the count; each bucket
/// with its exemplar when `exemplars` are given (OpenMetrics only).
#[allow(clippy::too_many_arguments)]
pub(crate) fn histogram(
    out: &mut Vec<u8>,
    name: &str,
    labels: &[u8],
    le: &[String],
    cumulative: impl IntoIterator<Item = u64>,
    count: u64,
    exemplars: Option<&[Option<Exemplar>]>,
    sum: impl FnOnce(&mut Vec<u8>),
) {
    let bucket = |out: &mut Vec<u8>, i: usize, le: &str, n: u64| {
        line(out, name, "_bucket", labels, le);
        number(out, n);
        if let Some(Some(e)) = exemplars.and_then(|e| e.get(i)) {
            super::exemplars::write(out, e, |out| seconds(out, e.value_ns));
        }
        out.push(b'\n');
    };
    for (i, (bound, n)) in le.iter().zip(cumulative).enumerate() {
        bucket(out, i, bound, n);
    }
    bucket(out, le.len(), "le=\"+Inf\"", count);
    line(out, name, "_sum", labels, "");
    sum(out);
    out.push(b'\n');
    sample(out, name, "_count", labels, "", count);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// Each sample of an exposition: (name, sorted labels) -> value. The
    /// text format does not order series or labels, so neither does this.
    fn samples(text: &str) -> BTreeMap<(String, Vec<String>), f64> {
        text.lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .map(|l| {
                let (series, value) = l.rsplit_once(' ').expect("a value");
                let (name, labels) = match series.split_once('{') {
                    Some((n, rest)) => (n, rest.trim_end_matches('}')),
                    None => (series, ""),
                };
                let mut labels: Vec<String> = labels
                    .split("\",")
                    .filter(|p| !p.is_empty())
                    .map(|p| p.trim_end_matches('"').to_owned())
                    .collect();
                labels.sort();
                ((name.to_owned(), labels), value.parse().expect("a number"))
            })
            .collect()
    }

    fn text(f: impl FnOnce(&mut Vec<u8>)) -> String {
        let mut out = Vec::new();
        f(&mut out);
        String::from_utf8(out).unwrap()
    }

    /// The `# HELP`/`# TYPE` lines, in order.
    fn headers(text: &str) -> Vec<&str> {
        text.lines().filter(|l| l.starts_with('#')).collect()
    }

    #[derive(crate::Domain)]
    #[domain(crate = crate, prefix = "render_test", buckets = [0.5, 1.0])]
    struct RenderTest {
        kind: String,
        attempt: u8,
    }

    #[crate::track(RenderTest, kind, attempt, crate = crate)]
    fn job(kind: &str, attempt: u8, fail: bool) -> Result<(), String> {
        if fail { Err("no".into()) } else { Ok(()) }
    }

    /// Held by the tests that track `RenderTest` calls: one renders the
    /// registry and gathers it again, and a call another test tracks in
    /// between (a series of its own) would be in one and not the other.
    static RENDER_TEST: std::sync::Mutex<()> = std::sync::Mutex::new(());

    #[test]
    fn a_domain_is_written_as_the_encoder_writes_its_protobuf_form() {
        let _one_at_a_time = RENDER_TEST.lock().unwrap_or_else(|e| e.into_inner());
        let _ = job("a\"quoted\\kind", 1, false);
        let _ = job("plain", 2, true);
        let _ = job("plain", 2, false);
        let ours = String::from_utf8(render(crate::registry())).unwrap();
        let families: Vec<_> = crate::registry()
            .gather()
            .into_iter()
            .filter(|f| f.name().starts_with("render_test"))
            .collect();
        let theirs = TextEncoder::new().encode_to_string(&families).unwrap();
        let only_ours: String = ours
            .lines()
            .filter(|l| l.contains("render_test"))
            .map(|l| format!("{l}\n"))
            .collect();
        assert_eq!(samples(&only_ours), samples(&theirs));
        assert_eq!(headers(&only_ours), headers(&theirs));
        assert!(!samples(&theirs).is_empty());
    }

    #[crate::track(RenderTest, kind = "exemplary", attempt, crate = crate)]
    fn sampled_job(attempt: u8) {}

    #[test]
    fn openmetrics_gives_counters_their_family_name_exemplars_and_an_eof() {
        let _one_at_a_time = RENDER_TEST.lock().unwrap_or_else(|e| e.into_inner());
        crate::trace::enable();
        sampled_job(7);
        let text = String::from_utf8(render_openmetrics(crate::registry())).unwrap();
        assert!(text.ends_with("# EOF\n"), "{text}");
        assert!(
            text.contains("# TYPE render_test_calls counter\n"),
            "{text}"
        );
        let calls = text
            .lines()
            .find(|l| {
                l.starts_with("render_test_calls_total{status=\"success\",kind=\"exemplary\"")
            })
            .expect("the success series");
        let (sample, exemplar) = calls.split_once(" # ").expect("an exemplar");
        assert!(sample.ends_with(" 1"), "{calls}");
        assert!(exemplar.starts_with("{trace_id=\""), "{calls}");
        let bucket = text
            .lines()
            .find(|l| l.starts_with("render_test_duration_seconds_bucket{kind=\"exemplary\",attempt=\"7\",le=\"0.5\"}"))
            .expect("the first bucket");
        assert!(bucket.contains(" # {trace_id=\""), "{bucket}");
        let plain = String::from_utf8(render(crate::registry())).unwrap();
        assert!(!plain.contains("# EOF") && !plain.contains("trace_id"));
    }

    #[test]
    fn families_of_counters_gauges_and_histograms_are_written_as_the_encoder_does() {
        use prometheus::core::Collector;
        use prometheus::proto::MetricType;
        let counters: &'static Family<IntCounter> = Box::leak(Box::new(Family::new(
            "t_total",
            "help \\ me\nplease",
            &["a"],
            MetricType::COUNTER,
            |n, h| IntCounter::new(n, h).unwrap(),
        )));
        counters.child(&["x\ny\"z"]).inc_by(3);
        counters.child(&["z"]).inc();
        let gauges: &'static Family<IntGauge> = Box::leak(Box::new(Family::new(
            "t_gauge",
            "g",
            &[],
            MetricType::GAUGE,
            |n, h| IntGauge::new(n, h).unwrap(),
        )));
        gauges.child(&[]).set(-4);
        let durations: &'static Family<DurationHistogram> = Box::leak(Box::new(Family::new(
            "t_seconds",
            "d",
            &["b"],
            MetricType::HISTOGRAM,
            |_, _| DurationHistogram::new(&[0.25, 2.0]),
        )));
        durations
            .child(&["q"])
            .observe(std::time::Duration::from_millis(300));
        durations
            .child(&["q"])
            .observe(std::time::Duration::from_secs(5));

        let mut ours = Vec::new();
        for native in [
            Native::Counters(counters),
            Native::Gauges(gauges),
            Native::Durations(durations),
        ] {
            native.write(&mut ours, Format::Text);
        }
        let ours = String::from_utf8(ours).unwrap();
        let mut families = counters.collect();
        families.extend(gauges.collect());
        families.extend(durations.collect());
        let theirs = TextEncoder::new().encode_to_string(&families).unwrap();
        assert_eq!(samples(&ours), samples(&theirs));
        assert_eq!(headers(&ours), headers(&theirs));
        assert_eq!(samples(&ours).len(), 2 + 1 + 5);
    }

    #[test]
    fn numbers_and_seconds_are_written_exactly() {
        assert_eq!(text(|o| seconds(o, 0)), "0");
        assert_eq!(text(|o| seconds(o, 941)), "0.000000941");
        assert_eq!(text(|o| seconds(o, 1_500_000_000)), "1.5");
        assert_eq!(text(|o| seconds(o, 3_000_000_000)), "3");
        assert_eq!(text(|o| seconds(o, 12_000_000_001)), "12.000000001");
        assert_eq!(text(|o| decimal(o, 1_234_560_000_000_000, 12)), "1234.56");
        assert_eq!(text(|o| decimal(o, 7_500_000_000, 12)), "0.0075");
        assert_eq!(text(|o| decimal(o, 1, 12)), "0.000000000001");
    }

    #[test]
    fn label_values_are_escaped_as_the_text_format_wants() {
        assert_eq!(
            &*label_text(["a", "b"], ["x\"y", "back\\slash\nline"]),
            "a=\"x\\\"y\",b=\"back\\\\slash\\nline\""
        );
        assert_eq!(text(|o| escape(o, "say \"hi\"\n", false)), "say \"hi\"\\n");
    }

    #[test]
    fn a_series_without_labels_has_no_braces() {
        assert_eq!(text(|o| sample(o, "up", "", b"", "", 1)), "up 1\n");
        assert_eq!(
            text(|o| sample(o, "h", "_bucket", b"", "le=\"1\"", 2)),
            "h_bucket{le=\"1\"} 2\n"
        );
        assert_eq!(
            text(|o| sample(o, "h", "_bucket", b"a=\"b\"", "le=\"1\"", 2)),
            "h_bucket{a=\"b\",le=\"1\"} 2\n"
        );
    }
}
