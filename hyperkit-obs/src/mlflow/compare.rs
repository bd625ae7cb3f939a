//! Which model is best for a task: [`compare`] reads the runs
//! `#[track_model]` logs (params `model`, `task`; tag `status`, optional tag
//! `provider`; metrics `latency_seconds`, `input_tokens`, `output_tokens`,
//! `accepted`, `cost_usd`, `time_to_first_token_seconds` and each score
//! [`record_score`](crate::model::record_score) logs) and sums them up per
//! model and task, cheapest accepted output first, with a verdict per task.
//!
//! Runs come from anywhere (another program, a hand-edited store), so
//! nothing here trusts them: a run without `model` or `task` is skipped and
//! counted, a metric value that is not a finite number (or a negative
//! latency, token count or cost) is left out of its figure and counted, and
//! no input makes this panic.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::Serialize;

use super::types::{Run, RunStatus};
use crate::model::RESERVED_SCORE_NAMES as CALL_METRICS;

/// Ratios computed from fewer runs than this are marked as such.
pub const FEW_RUNS: u64 = 30;

/// Which runs to compare.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CompareFilter {
    /// Only the runs of this task (param `task`).
    pub task: Option<String>,
    /// Only the runs started at or after this time, in milliseconds since
    /// the Unix epoch.
    pub since_ms: Option<i64>,
}

impl CompareFilter {
    /// Whether `run` passes the filter.
    pub fn admits(&self, run: &Run) -> bool {
        self.task
            .as_deref()
            .is_none_or(|t| run.data.param("task") == Some(t))
            && self.since_ms.is_none_or(|s| run.info.start_time >= s)
    }

    /// The same filter in MLflow's search syntax, for `runs/search`.
    pub fn search_filter(&self) -> String {
        let mut clauses = Vec::new();
        if let Some(task) = &self.task {
            let quoted = task.replace('\\', "\\\\").replace('\'', "\\'");
            clauses.push(format!("params.task = '{quoted}'"));
        }
        if let Some(since) = self.since_ms {
            clauses.push(format!("attributes.start_time >= {since}"));
        }
        clauses.join(" and ")
    }
}

/// One model's figures for one task. Rates are fractions (0 to 1); a figure
/// with nothing to compute it from is `None` (`null` in JSON).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ModelRow {
    /// Param `model`.
    pub model: String,
    /// Param `task`.
    pub task: String,
    /// The distinct `provider` tags of its runs, sorted.
    pub providers: Vec<String>,
    /// Runs.
    pub calls: u64,
    /// Runs that failed (tag `status` `failure` or `panic`; without the tag,
    /// run status `FAILED`).
    pub failures: u64,
    /// `failures / calls`.
    pub failure_rate: f64,
    /// Runs whose metric `accepted` is 1 (at least 0.5).
    pub accepted: u64,
    /// Runs whose metric `accepted` is 0 (below 0.5).
    pub rejected: u64,
    /// `accepted / (accepted + rejected)`.
    pub acceptance_rate: Option<f64>,
    /// The median of metric `latency_seconds`.
    pub latency_p50_seconds: Option<f64>,
    /// The 95th percentile of metric `latency_seconds`.
    pub latency_p95_seconds: Option<f64>,
    /// The median of metric `time_to_first_token_seconds` (streamed calls).
    pub ttft_p50_seconds: Option<f64>,
    /// The mean of metric `input_tokens` over the runs that have it.
    pub mean_input_tokens: Option<f64>,
    /// The mean of metric `output_tokens` over the runs that have it.
    pub mean_output_tokens: Option<f64>,
    /// The sum of metric `cost_usd`.
    pub cost_usd: Option<f64>,
    /// `cost_usd / accepted`.
    pub cost_per_accepted_usd: Option<f64>,
    /// The mean of each score (every metric not in
    /// [`RESERVED_SCORE_NAMES`](crate::model::RESERVED_SCORE_NAMES)), by name.
    pub scores: BTreeMap<String, f64>,
    /// The ratios above computed from fewer than [`FEW_RUNS`] runs:
    /// `failure_rate` (calls), `acceptance_rate` (decided runs),
    /// `cost_per_accepted_usd` (accepted runs).
    pub few_runs: Vec<&'static str>,
}

/// The one-line verdict on a task.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Verdict {
    /// The task.
    pub task: String,
    /// The model with the cheapest accepted output, if any has one.
    pub best: Option<String>,
    /// The model it is held against: of the others with a cost per accepted
    /// output, the one with the highest acceptance rate.
    pub against: Option<String>,
    /// How many times cheaper an accepted output of `best` is.
    pub cost_ratio: Option<f64>,
    /// `best`'s acceptance rate minus `against`'s, in percentage points.
    pub acceptance_difference_pp: Option<f64>,
    /// Whether one of the ratios it rests on comes from fewer than
    /// [`FEW_RUNS`] runs.
    pub few_runs: bool,
    /// The sentence.
    pub text: String,
}

/// The comparison of every model and task of an experiment's runs.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Comparison {
    /// Runs read that passed the filter.
    pub runs: u64,
    /// Of those, runs skipped for want of param `model` or `task`.
    pub skipped_runs: u64,
    /// Metric values left out of a figure: not a finite number, or a
    /// negative latency, token count or cost.
    pub ignored_values: u64,
    /// One row per model and task: by task, then cheapest accepted output
    /// first (rows without one last, by model).
    pub rows: Vec<ModelRow>,
    /// One verdict per task, in the rows' order.
    pub verdicts: Vec<Verdict>,
}

#[derive(Default)]
struct Group {
    providers: BTreeSet<String>,
    calls: u64,
    failures: u64,
    accepted: u64,
    rejected: u64,
    latency: Vec<f64>,
    ttft: Vec<f64>,
    input: Vec<f64>,
    output: Vec<f64>,
    cost: Vec<f64>,
    scores: BTreeMap<String, Vec<f64>>,
}

/// Compares the runs `filter` admits.
pub fn compare<'a>(runs: impl IntoIterator<Item = &'a Run>, filter: &CompareFilter) -> Comparison {
    let mut out = Comparison::default();
    let mut groups: HashMap<(String, String), Group> = HashMap::new();
    for run in runs {
        if !filter.admits(run) {
            continue;
        }
        out.runs += 1;
        let (Some(model), Some(task)) = (run.data.param("model"), run.data.param("task")) else {
            out.skipped_runs += 1;
            continue;
        };
        let g = groups
            .entry((model.to_owned(), task.to_owned()))
            .or_default();
        g.calls += 1;
        if let Some(p) = run.data.tag("provider") {
            g.providers.insert(p.to_owned());
        }
        let failed = match run.data.tag("status") {
            Some(s) => s == "failure" || s == "panic",
            None => run.info.status == RunStatus::Failed,
        };
        g.failures += u64::from(failed);
        for m in &run.data.metrics {
            let v = m.value;
            let non_negative = v.is_finite() && v >= 0.0;
            let into = match m.key.as_str() {
                "accepted" if v.is_finite() => {
                    if v >= 0.5 {
                        g.accepted += 1;
                    } else {
                        g.rejected += 1;
                    }
                    continue;
                }
                "latency_seconds" if non_negative => &mut g.latency,
                "time_to_first_token_seconds" if non_negative => &mut g.ttft,
                "input_tokens" if non_negative => &mut g.input,
                "output_tokens" if non_negative => &mut g.output,
                "cost_usd" if non_negative => &mut g.cost,
                "output_tokens_per_second" => continue,
                key if !CALL_METRICS.contains(&key) && v.is_finite() => {
                    g.scores.entry(key.to_owned()).or_default()
                }
                _ => {
                    out.ignored_values += 1;
                    continue;
                }
            };
            into.push(v);
        }
    }
    let mut rows: Vec<ModelRow> = groups
        .into_iter()
        .map(|((model, task), g)| row(model, task, g))
        .collect();
    rows.sort_by(|a, b| {
        a.task
            .cmp(&b.task)
            .then_with(
                || match (a.cost_per_accepted_usd, b.cost_per_accepted_usd) {
                    (Some(x), Some(y)) => x.total_cmp(&y),
                    (Some(_), None) => std::cmp::Ordering::Less,
                    (None, Some(_)) => std::cmp::Ordering::Greater,
                    (None, None) => std::cmp::Ordering::Equal,
                },
            )
            .then_with(|| a.model.cmp(&b.model))
    });
    let mut start = 0;
    while start < rows.len() {
        let end = start
            + rows[start..]
                .iter()
                .take_while(|r| r.task == rows[start].task)
                .count();
        out.verdicts.push(verdict(&rows[start..end]));
        start = end;
    }
    out.rows = rows;
    out
}

#[allow(clippy::cast_precision_loss)] // run counts are far below 2^53
fn row(model: String, task: String, mut g: Group) -> ModelRow {
    let ratio = |n: u64, d: u64| (d > 0).then(|| n as f64 / d as f64);
    let decided = g.accepted + g.rejected;
    let cost = (!g.cost.is_empty()).then(|| g.cost.iter().sum::<f64>());
    let cost_per_accepted = cost
        .filter(|_| g.accepted > 0)
        .map(|c| c / g.accepted as f64);
    let mut few_runs = Vec::new();
    if g.calls < FEW_RUNS {
        few_runs.push("failure_rate");
    }
    if decided > 0 && decided < FEW_RUNS {
        few_runs.push("acceptance_rate");
    }
    if cost_per_accepted.is_some() && g.accepted < FEW_RUNS {
        few_runs.push("cost_per_accepted_usd");
    }
    ModelRow {
        providers: g.providers.into_iter().collect(),
        calls: g.calls,
        failures: g.failures,
        failure_rate: ratio(g.failures, g.calls).unwrap_or(0.0),
        accepted: g.accepted,
        rejected: g.rejected,
        acceptance_rate: ratio(g.accepted, decided),
        latency_p50_seconds: percentile(&mut g.latency, 0.5),
        latency_p95_seconds: percentile(&mut g.latency, 0.95),
        ttft_p50_seconds: percentile(&mut g.ttft, 0.5),
        mean_input_tokens: mean(&g.input),
        mean_output_tokens: mean(&g.output),
        cost_usd: cost,
        cost_per_accepted_usd: cost_per_accepted,
        scores: g
            .scores
            .iter()
            .filter_map(|(k, v)| Some((k.clone(), mean(v)?)))
            .collect(),
        few_runs,
        model,
        task,
    }
}

/// The `p` quantile of `values` (all finite) by linear interpolation
/// between the closest ranks: NumPy's default, so `p = 0.5` is the median.
#[allow(
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss
)]
pub fn percentile(values: &mut [f64], p: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let rank = p.clamp(0.0, 1.0) * (values.len() - 1) as f64;
    let lo = rank.floor() as usize;
    let hi = rank.ceil() as usize;
    let (a, b) = (values[lo], values[hi]);
    Some(a + (b - a) * (rank - lo as f64))
}

#[allow(clippy::cast_precision_loss)]
fn mean(values: &[f64]) -> Option<f64> {
    (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
}

/// The verdict on one task's rows (sorted cheapest accepted output first).
fn verdict(rows: &[ModelRow]) -> Verdict {
    let task = rows[0].task.clone();
    let priced: Vec<&ModelRow> = rows
        .iter()
        .filter(|r| r.cost_per_accepted_usd.is_some())
        .collect();
    let few = |r: &ModelRow| {
        r.few_runs
            .iter()
            .any(|f| *f == "acceptance_rate" || *f == "cost_per_accepted_usd")
    };
    let mut v = Verdict {
        task: task.clone(),
        best: None,
        against: None,
        cost_ratio: None,
        acceptance_difference_pp: None,
        few_runs: false,
        text: format!(
            "for {task}, no model has a cost per accepted output (no priced calls with accepted outputs)"
        ),
    };
    let Some((best, others)) = priced.split_first() else {
        return v;
    };
    let best_cost = best.cost_per_accepted_usd.unwrap_or_default();
    v.best = Some(best.model.clone());
    v.few_runs = few(best);
    // The alternative worth paying for: the best-accepted of the others.
    let against = others.iter().copied().reduce(|a, b| {
        if b.acceptance_rate.unwrap_or(0.0) > a.acceptance_rate.unwrap_or(0.0) {
            b
        } else {
            a
        }
    });
    let mark = |few: bool| if few { " (fewer than 30 runs)" } else { "" };
    let Some(other) = against else {
        v.text = format!(
            "for {task}, {} costs {} per accepted output; no other model to compare{}",
            best.model,
            usd(best_cost),
            mark(v.few_runs)
        );
        return v;
    };
    let other_cost = other.cost_per_accepted_usd.unwrap_or_default();
    let pp = (best.acceptance_rate.unwrap_or(0.0) - other.acceptance_rate.unwrap_or(0.0)) * 100.0;
    v.few_runs |= few(other);
    v.against = Some(other.model.clone());
    v.acceptance_difference_pp = Some(pp);
    let acceptance = if pp.abs() < 0.5 {
        "the same acceptance".to_owned()
    } else if pp < 0.0 {
        format!("{:.0} pp lower acceptance", -pp)
    } else {
        format!("{pp:.0} pp higher acceptance")
    };
    let cheaper = if best_cost > 0.0 {
        let ratio = other_cost / best_cost;
        v.cost_ratio = Some(ratio);
        format!("{ratio:.1}× less than")
    } else {
        "less than".to_owned()
    };
    v.text = format!(
        "for {task}, {} costs {} per accepted output, {cheaper} {} at {acceptance}{}",
        best.model,
        usd(best_cost),
        other.model,
        mark(v.few_runs)
    );
    v
}

/// `$0.004`, `$0.0123`, `$1.50`, `$120`: three significant digits below a
/// dollar, cents above, whole dollars from 100.
#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
pub fn usd(x: f64) -> String {
    if !x.is_finite() {
        return format!("${x}");
    }
    if x == 0.0 {
        return "$0".to_owned();
    }
    if x.abs() >= 100.0 {
        return format!("${x:.0}");
    }
    if x.abs() >= 1.0 {
        return format!("${x:.2}");
    }
    let decimals = (2 - x.abs().log10().floor() as i32).clamp(0, 15) as usize;
    let text = format!("{x:.decimals$}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    format!("${text}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mlflow::{KeyValue, Metric, RunData, RunInfo};

    fn run(model: &str, task: &str, metrics: &[(&str, f64)], status: &str) -> Run {
        Run {
            info: RunInfo {
                run_id: String::new(),
                experiment_id: "0".into(),
                run_name: String::new(),
                status: RunStatus::Finished,
                start_time: 1000,
                end_time: None,
                lifecycle_stage: "active".into(),
            },
            data: RunData {
                metrics: metrics
                    .iter()
                    .map(|(k, v)| Metric::new(*k, *v, 0))
                    .collect(),
                params: vec![KeyValue::new("model", model), KeyValue::new("task", task)],
                tags: vec![KeyValue::new("status", status)],
            },
        }
    }

    #[test]
    fn percentiles_interpolate_as_numpy_does() {
        assert_eq!(percentile(&mut [3.0, 1.0, 2.0, 4.0], 0.5), Some(2.5));
        assert_eq!(percentile(&mut [1.0, 2.0, 3.0, 4.0, 5.0], 0.95), Some(4.8));
        assert_eq!(percentile(&mut [7.0], 0.95), Some(7.0));
        assert_eq!(percentile(&mut [], 0.5), None);
    }

    #[test]
    fn the_cheapest_accepted_output_wins_and_the_verdict_says_by_how_much() {
        let mut runs = Vec::new();
        for i in 0..40 {
            let ok = i % 10 != 0; // small: 90% accepted
            runs.push(run(
                "small-1",
                "codegen",
                &[
                    ("cost_usd", 0.0036),
                    ("accepted", f64::from(u8::from(ok))),
                    ("latency_seconds", 1.0),
                ],
                "success",
            ));
            let ok = i % 20 != 0; // large: 95% accepted
            runs.push(run(
                "large-2",
                "codegen",
                &[
                    ("cost_usd", 0.0114),
                    ("accepted", f64::from(u8::from(ok))),
                    ("latency_seconds", 2.0),
                ],
                "success",
            ));
        }
        let c = compare(&runs, &CompareFilter::default());
        assert_eq!(c.rows[0].model, "small-1");
        assert_eq!(c.rows[0].accepted, 36);
        assert!((c.rows[0].cost_per_accepted_usd.unwrap() - 0.004).abs() < 1e-12);
        assert_eq!(
            c.verdicts[0].text,
            "for codegen, small-1 costs $0.004 per accepted output, 3.0× less than large-2 at 5 pp lower acceptance"
        );
    }

    #[test]
    fn hostile_values_are_left_out_and_counted_never_a_panic() {
        let runs = [
            run(
                "m",
                "t",
                &[
                    ("latency_seconds", f64::NAN),
                    ("cost_usd", -1.0),
                    ("judge", f64::INFINITY),
                ],
                "success",
            ),
            run(
                "m",
                "t",
                &[
                    ("latency_seconds", f64::MAX),
                    ("judge", 0.5),
                    ("accepted", f64::NAN),
                ],
                "failure",
            ),
            Run {
                data: RunData::default(),
                ..run("", "", &[], "")
            },
        ];
        let c = compare(&runs, &CompareFilter::default());
        assert_eq!((c.runs, c.skipped_runs, c.ignored_values), (3, 1, 4));
        let r = &c.rows[0];
        assert_eq!(r.latency_p50_seconds, Some(f64::MAX));
        assert_eq!(r.scores["judge"], 0.5);
        assert_eq!((r.failures, r.cost_usd, r.acceptance_rate), (1, None, None));
        assert_eq!(r.few_runs, ["failure_rate"]);
        assert!(
            c.verdicts[0]
                .text
                .contains("no model has a cost per accepted output")
        );
    }

    #[test]
    fn dollars_read_as_people_write_them() {
        assert_eq!(usd(0.004), "$0.004");
        assert_eq!(usd(0.012_34), "$0.0123");
        assert_eq!(usd(1.5), "$1.50");
        assert_eq!(usd(123.4), "$123");
        assert_eq!(usd(0.0), "$0");
    }
}
