//! The OpenMetrics 1.0 text format (<https://openmetrics.io>): what
//! `/metrics` serves to a scraper that asks for it (Prometheus does, and
//! needs it for exemplars), beside the Prometheus text format that stays
//! the default.
//!
//! Our own families are written by `render` with a format flag; this module
//! holds what is OpenMetrics' alone: choosing the format from an `Accept`
//! header, and writing the families of collectors a user registered (from
//! their protobuf form, as `TextEncoder` does for the text format). It
//! never panics and never fails: a family it cannot express is written as
//! `unknown`.

use prometheus::proto::{MetricFamily, MetricType};

/// The content type of the OpenMetrics text format.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Whether a scraper's `Accept` header prefers OpenMetrics (version 1.0.0,
/// 0.0.1 or none given) to the text format: its quality is above zero and
/// not below `text/plain`'s.
///
/// ```
/// use hyperkit_obs::metrics::prefers_openmetrics;
/// // What Prometheus 2.x sends.
/// assert!(prefers_openmetrics("application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"));
/// assert!(!prefers_openmetrics("text/plain;version=0.0.4"));
/// assert!(!prefers_openmetrics("application/openmetrics-text;q=0, text/plain"));
/// ```
pub fn prefers_openmetrics(accept: &str) -> bool {
    let mut openmetrics = 0.0f32;
    let mut text = 0.0f32;
    for range in accept.split(',') {
        let mut parts = range.split(';').map(str::trim);
        let media = parts.next().unwrap_or("").to_ascii_lowercase();
        let mut q = 1.0f32;
        let mut version = None;
        for p in parts {
            if let Some(v) = p.strip_prefix("q=") {
                q = v.trim().parse().unwrap_or(0.0);
            } else if let Some(v) = p.strip_prefix("version=") {
                version = Some(v.trim().to_owned());
            }
        }
        match media.as_str() {
            "application/openmetrics-text"
                if matches!(version.as_deref(), None | Some("1.0.0" | "0.0.1")) =>
            {
                openmetrics = openmetrics.max(q);
            }
            "text/plain" => text = text.max(q),
            _ => {}
        }
    }
    openmetrics > 0.0 && openmetrics >= text
}

/// The family name and type OpenMetrics gives a family `name` of
/// Prometheus type `kind` (`counter`, `gauge`, `histogram`, `summary`,
/// `untyped`): a counter's family drops its `_total` (its samples keep
/// it); a counter without one, and an untyped family, are `unknown`.
pub(crate) fn family_of<'a>(name: &'a str, kind: &'static str) -> (&'a str, &'static str) {
    match kind {
        "counter" => match name.strip_suffix("_total") {
            Some(family) if !family.is_empty() => (family, "counter"),
            _ => (name, "unknown"),
        },
        "untyped" => (name, "unknown"),
        other => (name, other),
    }
}

/// Appends a float as OpenMetrics writes one (`+Inf`, `-Inf`, `NaN`,
/// integers without a fraction).
pub(crate) fn float(out: &mut Vec<u8>, v: f64) {
    if v.is_nan() {
        out.extend_from_slice(b"NaN");
    } else if v.is_infinite() {
        out.extend_from_slice(if v > 0.0 { b"+Inf" } else { b"-Inf" });
    } else if v == v.trunc() && v.abs() < 1e15 {
        if v < 0.0 {
            out.push(b'-');
        }
        crate::util::write_u64(out, v.abs() as u64);
    } else {
        out.extend_from_slice(v.to_string().as_bytes());
    }
}

/// Writes a family of a collector the user registered.
pub(crate) fn encode_family(f: &MetricFamily, out: &mut Vec<u8>) {
    let kind = match f.get_field_type() {
        MetricType::COUNTER => "counter",
        MetricType::GAUGE => "gauge",
        MetricType::HISTOGRAM => "histogram",
        MetricType::SUMMARY => "summary",
        MetricType::UNTYPED => "untyped",
    };
    let name = f.name();
    let (family, om_kind) = family_of(name, kind);
    super::render::header(
        out,
        name,
        f.help(),
        kind,
        super::render::Format::OpenMetrics,
    );
    for m in f.get_metric() {
        let labels = super::render::label_text(
            m.get_label().iter().map(|l| l.name()),
            m.get_label().iter().map(|l| l.value()),
        );
        let labels = labels.as_bytes();
        let timestamp = m.timestamp_ms();
        let sample = |out: &mut Vec<u8>, suffix: &str, extra: &str, v: f64| {
            super::render::line(out, family, suffix, labels, extra);
            float(out, v);
            if timestamp != 0 {
                // OpenMetrics timestamps are in seconds.
                out.push(b' ');
                float(out, timestamp as f64 / 1000.0);
            }
            out.push(b'\n');
        };
        match (kind, om_kind) {
            ("counter", "counter") => sample(out, "_total", "", m.get_counter().get_value()),
            ("counter", _) => {
                super::render::line(out, name, "", labels, "");
                float(out, m.get_counter().get_value());
                out.push(b'\n');
            }
            ("gauge", _) => sample(out, "", "", m.get_gauge().get_value()),
            ("histogram", _) => {
                let h = m.get_histogram();
                let mut saw_inf = false;
                for b in h.get_bucket() {
                    let bound = b.upper_bound();
                    saw_inf |= bound.is_infinite() && bound > 0.0;
                    let mut le = b"le=\"".to_vec();
                    float(&mut le, bound);
                    le.push(b'"');
                    let le = String::from_utf8(le).unwrap_or_default();
                    sample(out, "_bucket", &le, b.cumulative_count() as f64);
                }
                if !saw_inf {
                    sample(out, "_bucket", "le=\"+Inf\"", h.get_sample_count() as f64);
                }
                sample(out, "_sum", "", h.get_sample_sum());
                sample(out, "_count", "", h.get_sample_count() as f64);
            }
            ("summary", _) => {
                let s = m.get_summary();
                for q in s.get_quantile() {
                    let mut label = b"quantile=\"".to_vec();
                    float(&mut label, q.quantile());
                    label.push(b'"');
                    let label = String::from_utf8(label).unwrap_or_default();
                    sample(out, "", &label, q.value());
                }
                sample(out, "_sum", "", s.sample_sum());
                sample(out, "_count", "", s.sample_count() as f64);
            }
            // Untyped is protobuf's alone, on its way out of the crate.
            #[allow(deprecated)]
            _ => sample(out, "", "", m.get_untyped().get_value()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus::{Histogram, HistogramOpts, IntCounter, IntGauge, Registry};

    fn text(f: impl FnOnce(&mut Vec<u8>)) -> String {
        let mut out = Vec::new();
        f(&mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn counters_lose_their_total_in_the_family_name_only() {
        assert_eq!(family_of("a_total", "counter"), ("a", "counter"));
        assert_eq!(family_of("a_count", "counter"), ("a_count", "unknown"));
        assert_eq!(family_of("_total", "counter"), ("_total", "unknown"));
        assert_eq!(family_of("x", "untyped"), ("x", "unknown"));
    }

    #[test]
    fn floats_are_written_as_openmetrics_wants() {
        assert_eq!(text(|o| float(o, f64::INFINITY)), "+Inf");
        assert_eq!(text(|o| float(o, f64::NEG_INFINITY)), "-Inf");
        assert_eq!(text(|o| float(o, f64::NAN)), "NaN");
        assert_eq!(text(|o| float(o, -3.0)), "-3");
        assert_eq!(text(|o| float(o, 0.25)), "0.25");
    }

    #[test]
    fn a_users_collectors_are_written_in_openmetrics() {
        let r = Registry::new();
        let c = IntCounter::new("jobs_total", "Jobs \"run\".").unwrap();
        let g = IntGauge::new("queue", "Queued.").unwrap();
        let h =
            Histogram::with_opts(HistogramOpts::new("wait_seconds", "Wait.").buckets(vec![1.0]))
                .unwrap();
        r.register(Box::new(c.clone())).unwrap();
        r.register(Box::new(g.clone())).unwrap();
        r.register(Box::new(h.clone())).unwrap();
        c.inc_by(2);
        g.set(-1);
        h.observe(0.5);
        let out = text(|o| {
            for f in r.gather() {
                encode_family(&f, o);
            }
        });
        assert_eq!(
            out,
            "# HELP jobs Jobs \\\"run\\\".\n# TYPE jobs counter\njobs_total 2\n\
             # HELP queue Queued.\n# TYPE queue gauge\nqueue -1\n\
             # HELP wait_seconds Wait.\n# TYPE wait_seconds histogram\n\
             wait_seconds_bucket{le=\"1\"} 1\nwait_seconds_bucket{le=\"+Inf\"} 1\n\
             wait_seconds_sum 0.5\nwait_seconds_count 1\n"
        );
    }
}
