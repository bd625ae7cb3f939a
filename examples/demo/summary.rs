//! The demo's summary, read from the process's metrics registry (the
//! numbers `/metrics` serves, never counters of its own): per chain builds
//! and their p95 duration, per model calls, acceptance, p95 latency and
//! tokens, queries per operation, and drops per sink.
//!
//! It renders the summary as a block of lines for the terminal and as one
//! line for a log file; it never writes anything itself.

use std::collections::BTreeMap;
use std::time::Duration;

use hyperkit_obs::logs::HumanDuration;
use hyperkit_obs::prometheus::proto::{Metric, MetricFamily};

/// The label values shown even before their first call, in this order;
/// values seen in the registry that are not listed follow, sorted.
pub(crate) struct Rows<'a> {
    pub(crate) chains: &'a [&'a str],
    pub(crate) models: &'a [&'a str],
    pub(crate) operations: &'a [&'a str],
    /// The sinks running in this process: their drops are shown, at zero.
    pub(crate) sinks: &'a [&'a str],
}

/// Cumulative bucket counts of a histogram merged over series, with
/// `+Inf` last.
#[derive(Clone, Default)]
struct Buckets(Vec<(f64, u64)>);

impl Buckets {
    fn add(&mut self, m: &Metric) {
        let h = m.get_histogram();
        if self.0.is_empty() {
            self.0 = h
                .get_bucket()
                .iter()
                .map(|b| (b.upper_bound(), 0))
                .collect();
            self.0.push((f64::INFINITY, 0));
        }
        let counts = h
            .get_bucket()
            .iter()
            .map(|b| b.cumulative_count())
            .chain([h.get_sample_count()]);
        for (slot, count) in self.0.iter_mut().zip(counts) {
            slot.1 += count;
        }
    }

    fn merge(&mut self, other: &Buckets) {
        if self.0.is_empty() {
            self.0 = other.0.clone();
        } else {
            for (slot, (_, count)) in self.0.iter_mut().zip(&other.0) {
                slot.1 += count;
            }
        }
    }

    /// The `q` quantile in seconds, interpolated linearly inside its bucket
    /// as PromQL's `histogram_quantile` does (the lower bound of the first
    /// bucket is 0; a rank in `+Inf` is the highest finite bound); `None`
    /// before the first observation.
    fn quantile(&self, q: f64) -> Option<f64> {
        let total = self.0.last()?.1;
        if total == 0 {
            return None;
        }
        let rank = q * total as f64;
        let (mut lower_bound, mut lower_count) = (0.0, 0u64);
        for &(bound, count) in &self.0 {
            if count as f64 >= rank {
                if bound.is_infinite() {
                    return Some(lower_bound);
                }
                let inside = (count - lower_count) as f64;
                let share = if inside > 0.0 {
                    (rank - lower_count as f64) / inside
                } else {
                    1.0
                };
                return Some(lower_bound + (bound - lower_bound) * share);
            }
            (lower_bound, lower_count) = (bound, count);
        }
        Some(lower_bound)
    }

    fn p95(&self) -> Option<Duration> {
        self.quantile(0.95).map(Duration::from_secs_f64)
    }
}

#[derive(Clone, Default)]
struct Builds {
    ok: f64,
    failed: f64,
    running: f64,
    durations: Buckets,
}

#[derive(Clone, Default)]
struct Calls {
    calls: f64,
    failed: f64,
    accepted: f64,
    judged: f64,
    tokens: f64,
    latency: Buckets,
}

#[derive(Clone, Default)]
struct Queries {
    count: f64,
    failed: f64,
    durations: Buckets,
}

/// The numbers of one moment.
pub(crate) struct Summary {
    chains: Vec<(String, Builds)>,
    models: Vec<(String, Calls)>,
    operations: Vec<(String, Queries)>,
    dropped: Vec<(String, f64)>,
}

fn label<'a>(m: &'a Metric, name: &str) -> &'a str {
    m.get_label()
        .iter()
        .find(|l| l.name() == name)
        .map_or("", |l| l.value())
}

fn value(m: &Metric) -> f64 {
    m.get_counter().get_value() + m.get_gauge().get_value()
}

/// The row of `m`'s value of `label_name`.
fn row<'a, T: Default>(
    rows: &'a mut BTreeMap<String, T>,
    m: &Metric,
    label_name: &str,
) -> &'a mut T {
    rows.entry(label(m, label_name).to_owned()).or_default()
}

/// The rows of `known` first, in that order, then the others sorted.
fn ordered<T>(known: &[&str], mut seen: BTreeMap<String, T>) -> Vec<(String, T)>
where
    T: Default,
{
    let mut rows: Vec<(String, T)> = known
        .iter()
        .map(|k| (k.to_string(), seen.remove(*k).unwrap_or_default()))
        .collect();
    rows.extend(seen);
    rows
}

impl Summary {
    /// Reads the families `hyperkit_obs::registry().gather()` returned.
    pub(crate) fn from_families(families: &[MetricFamily], rows: &Rows<'_>) -> Summary {
        let mut chains: BTreeMap<String, Builds> = BTreeMap::new();
        let mut models: BTreeMap<String, Calls> = BTreeMap::new();
        let mut operations: BTreeMap<String, Queries> = BTreeMap::new();
        let mut dropped: BTreeMap<String, f64> = BTreeMap::new();
        for family in families {
            for m in family.get_metric() {
                let failed = matches!(label(m, "status"), "failure" | "panic");
                match family.name() {
                    "hyperkit_builds_total" => {
                        let builds = row(&mut chains, m, "chain");
                        match label(m, "status") {
                            "success" => builds.ok += value(m),
                            _ if failed => builds.failed += value(m),
                            _ => {}
                        }
                    }
                    "hyperkit_active_builds" => row(&mut chains, m, "chain").running += value(m),
                    "hyperkit_build_duration_seconds" => {
                        row(&mut chains, m, "chain").durations.add(m)
                    }
                    "hyperkit_model_calls_total" => {
                        let calls = row(&mut models, m, "model");
                        calls.calls += value(m);
                        if failed {
                            calls.failed += value(m);
                        }
                    }
                    "hyperkit_model_acceptance_total" => {
                        let calls = row(&mut models, m, "model");
                        calls.judged += value(m);
                        if label(m, "accepted") == "true" {
                            calls.accepted += value(m);
                        }
                    }
                    "hyperkit_model_tokens_total" => {
                        row(&mut models, m, "model").tokens += value(m)
                    }
                    "hyperkit_model_latency_seconds" => row(&mut models, m, "model").latency.add(m),
                    "hyperkit_db_queries_total" => {
                        let queries = row(&mut operations, m, "operation");
                        queries.count += value(m);
                        if failed {
                            queries.failed += value(m);
                        }
                    }
                    "hyperkit_db_query_duration_seconds" => {
                        row(&mut operations, m, "operation").durations.add(m)
                    }
                    "hyperkit_obs_dropped_total" => *row(&mut dropped, m, "sink") += value(m),
                    _ => {}
                }
            }
        }
        Summary {
            chains: ordered(rows.chains, chains),
            models: ordered(rows.models, models),
            operations: ordered(rows.operations, operations),
            dropped: ordered(rows.sinks, dropped),
        }
    }

    fn all_builds(&self) -> Builds {
        self.chains
            .iter()
            .fold(Builds::default(), |mut all, (_, b)| {
                all.ok += b.ok;
                all.failed += b.failed;
                all.running += b.running;
                all.durations.merge(&b.durations);
                all
            })
    }

    fn all_calls(&self) -> Calls {
        self.models
            .iter()
            .fold(Calls::default(), |mut all, (_, c)| {
                all.calls += c.calls;
                all.failed += c.failed;
                all.accepted += c.accepted;
                all.judged += c.judged;
                all.tokens += c.tokens;
                all.latency.merge(&c.latency);
                all
            })
    }

    fn all_queries(&self) -> Queries {
        self.operations
            .iter()
            .fold(Queries::default(), |mut all, (_, q)| {
                all.count += q.count;
                all.failed += q.failed;
                all.durations.merge(&q.durations);
                all
            })
    }

    /// One line for a log file, e.g.
    /// `[   35s] builds: 12 ok, 1 failed, 4 running, p95 9.6s | model calls: 220, …`.
    pub(crate) fn line(&self, elapsed: Duration) -> String {
        let (b, c, q) = (self.all_builds(), self.all_calls(), self.all_queries());
        format!(
            "[{:>5}s] builds: {} ok, {} failed, {} running, p95 {} | model calls: {}, {} failed, accepted {}, p95 {}, {} tokens | queries: {}, {} failed, p95 {} | dropped: {}",
            elapsed.as_secs(),
            count(b.ok),
            count(b.failed),
            count(b.running),
            p95(&b.durations),
            count(c.calls),
            count(c.failed),
            percent(c.accepted, c.judged),
            p95(&c.latency),
            short(c.tokens),
            count(q.count),
            count(q.failed),
            p95(&q.durations),
            self.dropped_text(", "),
        )
    }

    fn dropped_text(&self, separator: &str) -> String {
        if self.dropped.is_empty() {
            return "no sink running".to_owned();
        }
        self.dropped
            .iter()
            .map(|(sink, n)| format!("{sink} {}", count(*n)))
            .collect::<Vec<_>>()
            .join(separator)
    }

    /// The three tables (builds per chain, model calls per model, queries
    /// per operation), side by side when `width` allows, one under the
    /// other otherwise.
    pub(crate) fn tables(&self, width: usize, style: Style) -> Vec<String> {
        let tables = [
            self.builds_table(),
            self.calls_table(),
            self.queries_table(),
        ];
        bands(&tables, width)
            .iter()
            .flat_map(|band| side_by_side(band, style))
            .collect()
    }

    /// The columns [`tables`](Self::tables) takes for `width`.
    pub(crate) fn width(&self, width: usize) -> usize {
        let tables = [
            self.builds_table(),
            self.calls_table(),
            self.queries_table(),
        ];
        bands(&tables, width)
            .iter()
            .map(|band| band_width(band))
            .max()
            .unwrap_or(0)
    }

    /// The drops of each running sink: `logstore 0 · mlflow 3`.
    pub(crate) fn dropped(&self, style: Style) -> String {
        let drops = self
            .dropped
            .iter()
            .map(|(sink, n)| {
                let text = format!("{sink} {}", count(*n));
                if *n > 0.0 { style.bad(&text) } else { text }
            })
            .collect::<Vec<_>>();
        if drops.is_empty() {
            "no sink running".to_owned()
        } else {
            drops.join(&style.dim(" · "))
        }
    }

    fn builds_table(&self) -> Table {
        let row = |name: &str, b: &Builds| {
            vec![
                Cell::plain(name),
                Cell::plain(count(b.ok)),
                Cell::failures(b.failed),
                Cell::plain(count(b.running)),
                Cell::plain(p95(&b.durations)),
            ]
        };
        let mut rows: Vec<Vec<Cell>> = self.chains.iter().map(|(n, b)| row(n, b)).collect();
        rows.push(row("all", &self.all_builds()));
        Table {
            header: &["builds", "ok", "failed", "running", "p95"],
            rows,
        }
    }

    fn calls_table(&self) -> Table {
        let row = |name: &str, c: &Calls| {
            vec![
                Cell::plain(name),
                Cell::plain(count(c.calls)),
                Cell::failures(c.failed),
                Cell::plain(percent(c.accepted, c.judged)),
                Cell::plain(p95(&c.latency)),
                Cell::plain(short(c.tokens)),
            ]
        };
        let mut rows: Vec<Vec<Cell>> = self.models.iter().map(|(n, c)| row(n, c)).collect();
        rows.push(row("all", &self.all_calls()));
        Table {
            header: &[
                "model calls",
                "calls",
                "failed",
                "accepted",
                "p95",
                "tokens",
            ],
            rows,
        }
    }

    fn queries_table(&self) -> Table {
        let row = |name: &str, q: &Queries| {
            vec![
                Cell::plain(name),
                Cell::plain(count(q.count)),
                Cell::failures(q.failed),
                Cell::plain(p95(&q.durations)),
            ]
        };
        let mut rows: Vec<Vec<Cell>> = self.operations.iter().map(|(n, q)| row(n, q)).collect();
        rows.push(row("all", &self.all_queries()));
        Table {
            header: &["queries", "count", "failed", "p95"],
            rows,
        }
    }
}

/// A whole number with thousands separators: `1,204`.
fn count(n: f64) -> String {
    let digits = format!("{:.0}", n.max(0.0));
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A large count in three significant figures: `987`, `142k`, `1.2M`.
fn short(n: f64) -> String {
    match n {
        n if n < 1_000.0 => format!("{n:.0}"),
        n if n < 999_500.0 => scaled(n / 1e3, "k"),
        n if n < 999_500_000.0 => scaled(n / 1e6, "M"),
        n => scaled(n / 1e9, "G"),
    }
}

fn scaled(v: f64, suffix: &str) -> String {
    if v < 9.995 {
        format!("{v:.2}{suffix}")
    } else if v < 99.95 {
        format!("{v:.1}{suffix}")
    } else {
        format!("{v:.0}{suffix}")
    }
}

fn percent(part: f64, all: f64) -> String {
    if all > 0.0 {
        format!("{:.0}%", 100.0 * part / all)
    } else {
        "-".to_owned()
    }
}

fn p95(buckets: &Buckets) -> String {
    buckets
        .p95()
        .map_or_else(|| "-".to_owned(), |d| HumanDuration(d).to_string())
}

/// `parts` joined by ` · ` into lines of at most `width` visible columns
/// (a part wider than that has a line of its own), each line starting with
/// a space.
pub(crate) fn pack(parts: &[String], width: usize, style: Style) -> Vec<String> {
    const SEPARATOR: &str = "  ·  ";
    let mut lines: Vec<(usize, String)> = Vec::new();
    for part in parts {
        let w = visible_width(part);
        match lines.last_mut() {
            Some((used, line)) if *used + SEPARATOR.chars().count() + w <= width => {
                line.push_str(&style.dim(SEPARATOR));
                line.push_str(part);
                *used += SEPARATOR.chars().count() + w;
            }
            _ => lines.push((1 + w, format!(" {part}"))),
        }
    }
    lines.into_iter().map(|(_, line)| line).collect()
}

/// The columns `text` takes on a terminal: its characters but those of its
/// escape sequences (`ESC [` … final byte).
pub(crate) fn visible_width(text: &str) -> usize {
    let mut width = 0;
    let mut in_escape = false;
    for c in text.chars() {
        match c {
            '\x1b' => in_escape = true,
            c if in_escape => in_escape = c == '[' || !('\x40'..='\x7e').contains(&c),
            _ => width += 1,
        }
    }
    width
}

/// SGR escape codes, or none.
#[derive(Clone, Copy)]
pub(crate) struct Style {
    pub(crate) colour: bool,
}

impl Style {
    fn paint(self, code: &str, text: &str) -> String {
        if self.colour {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_owned()
        }
    }
    pub(crate) fn dim(self, text: &str) -> String {
        self.paint("2", text)
    }
    pub(crate) fn head(self, text: &str) -> String {
        self.paint("1", text)
    }
    pub(crate) fn bad(self, text: &str) -> String {
        self.paint("31", text)
    }
    pub(crate) fn link(self, text: &str) -> String {
        self.paint("36", text)
    }
}

struct Cell {
    text: String,
    bad: bool,
}

impl Cell {
    fn plain(text: impl Into<String>) -> Cell {
        Cell {
            text: text.into(),
            bad: false,
        }
    }
    fn failures(n: f64) -> Cell {
        Cell {
            text: count(n),
            bad: n > 0.0,
        }
    }
}

/// A table: the first column left-aligned (row names, and the table's
/// title as its header), the others right-aligned; the last row is the
/// total.
struct Table {
    header: &'static [&'static str],
    rows: Vec<Vec<Cell>>,
}

impl Table {
    fn widths(&self) -> Vec<usize> {
        let mut widths: Vec<usize> = self.header.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.text.chars().count());
            }
        }
        widths
    }

    fn width(&self) -> usize {
        let widths = self.widths();
        widths.iter().sum::<usize>() + 2 * widths.len().saturating_sub(1)
    }

    /// The header and the rows, each exactly [`width`](Self::width) columns.
    fn lines(&self, style: Style) -> Vec<String> {
        let widths = self.widths();
        let pad = |text: &str, i: usize| {
            if i == 0 {
                format!("{text:<w$}", w = widths[0])
            } else {
                format!("{text:>w$}", w = widths[i])
            }
        };
        let header = self
            .header
            .iter()
            .enumerate()
            .map(|(i, h)| match i {
                0 => style.head(&pad(h, i)),
                _ => style.dim(&pad(h, i)),
            })
            .collect::<Vec<_>>()
            .join("  ");
        let total = self.rows.len().saturating_sub(1);
        let rows = self.rows.iter().enumerate().map(|(r, row)| {
            row.iter()
                .enumerate()
                .map(|(i, cell)| {
                    let text = pad(&cell.text, i);
                    match (cell.bad, r == total) {
                        (true, _) => style.bad(&text),
                        (false, true) => style.head(&text),
                        (false, false) => text,
                    }
                })
                .collect::<Vec<_>>()
                .join("  ")
        });
        std::iter::once(header).chain(rows).collect()
    }
}

const GAP: &str = "  │  ";
const GAP_WIDTH: usize = 5;

/// The tables in bands: as many side by side as fit in `width` (at least
/// one a band).
fn bands(tables: &[Table], width: usize) -> Vec<Vec<&Table>> {
    let mut bands: Vec<Vec<&Table>> = Vec::new();
    for table in tables {
        match bands.last_mut() {
            Some(band) if band_width(band) + GAP_WIDTH + table.width() <= width => band.push(table),
            _ => bands.push(vec![table]),
        }
    }
    bands
}

/// The columns a band takes, its leading space included.
fn band_width(band: &[&Table]) -> usize {
    1 + band.iter().map(|t| t.width()).sum::<usize>() + GAP_WIDTH * band.len().saturating_sub(1)
}

/// The lines of a band, each starting with a space.
fn side_by_side(band: &[&Table], style: Style) -> Vec<String> {
    let columns: Vec<(usize, Vec<String>)> =
        band.iter().map(|t| (t.width(), t.lines(style))).collect();
    let height = columns.iter().map(|(_, l)| l.len()).max().unwrap_or(0);
    (0..height)
        .map(|row| {
            let cells = columns
                .iter()
                .map(|(w, lines)| match lines.get(row) {
                    Some(line) => line.clone(),
                    None => " ".repeat(*w),
                })
                .collect::<Vec<_>>();
            // An empty cell last pads nothing.
            format!(" {}", cells.join(&style.dim(GAP)))
                .trim_end()
                .to_owned()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn buckets(bounds: &[(f64, u64)]) -> Buckets {
        Buckets(bounds.to_vec())
    }

    #[test]
    fn a_quantile_is_interpolated_inside_its_bucket() {
        // 100 observations: 50 up to 10 s, 50 more up to 30 s.
        let b = buckets(&[(10.0, 50), (30.0, 100), (f64::INFINITY, 100)]);
        assert_eq!(b.quantile(0.5), Some(10.0));
        assert_eq!(b.quantile(0.95), Some(28.0));
        assert_eq!(b.quantile(0.25), Some(5.0));
    }

    #[test]
    fn a_quantile_in_the_infinite_bucket_is_the_highest_finite_bound() {
        let b = buckets(&[(10.0, 1), (30.0, 2), (f64::INFINITY, 100)]);
        assert_eq!(b.quantile(0.95), Some(30.0));
    }

    #[test]
    fn there_is_no_quantile_before_the_first_observation() {
        assert_eq!(
            buckets(&[(10.0, 0), (f64::INFINITY, 0)]).quantile(0.95),
            None
        );
        assert_eq!(Buckets::default().quantile(0.95), None);
    }

    #[test]
    fn parts_are_packed_into_lines_that_fit() {
        let parts = [
            "status page http://a/",
            "metrics http://a/metrics",
            "dropped none",
        ]
        .map(String::from);
        let plain = Style { colour: false };
        assert_eq!(
            pack(&parts, 200, plain),
            [" status page http://a/  ·  metrics http://a/metrics  ·  dropped none"]
        );
        assert_eq!(
            pack(&parts, 60, plain),
            [
                " status page http://a/  ·  metrics http://a/metrics",
                " dropped none"
            ]
        );
        assert_eq!(pack(&parts, 10, plain).len(), 3);
        let coloured = Style { colour: true };
        assert_eq!(
            pack(&parts, 60, coloured).len(),
            2,
            "escape codes take no room"
        );
    }

    #[test]
    fn counts_have_thousands_separators_and_tokens_three_figures() {
        assert_eq!(
            [0.0, 999.0, 1_204.0, 1_234_567.0].map(count),
            ["0", "999", "1,204", "1,234,567"]
        );
        assert_eq!(
            [987.0, 1_000.0, 142_149.0, 999_499.0, 999_500.0, 1_250_000.0].map(short),
            ["987", "1.00k", "142k", "999k", "1.00M", "1.25M"]
        );
    }
}
