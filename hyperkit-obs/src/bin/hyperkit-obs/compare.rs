//! `hyperkit-obs mlflow compare`: one row per model and task from an
//! experiment's runs, cheapest accepted output first, and a verdict per
//! task. The figures are the library's ([`ExperimentTracker::compare`]);
//! this module reads the options and prints a table or JSON.

use hyperkit_obs::MonitoringConfig;
use hyperkit_obs::mlflow::compare::usd;
use hyperkit_obs::mlflow::{CompareFilter, Comparison, ModelRow};

use crate::args::{Operands, Opt, Spec};
use crate::mlflow::{experiment, read_experiment};
use crate::{Args, Failure, config_error, shown};

/// `mlflow compare`.
pub(crate) const COMPARE: Spec = Spec {
    words: "mlflow compare",
    about: "compare models per task from their MLflow runs: cost per accepted output, acceptance, latency, scores",
    operands: Operands::None,
    options: &[
        Opt {
            name: "task",
            value: Some("T"),
            example: "codegen",
            required: false,
            help: "only the runs of task T (param `task`)",
        },
        Opt {
            name: "since",
            value: Some("T"),
            example: "7d",
            required: false,
            help: "only the runs started since T (7d, 12h, or 2026-11-27T10:00:00Z)",
        },
        experiment("the experiment (default: MLFLOW_EXPERIMENT_NAME, or hyperkit-model-calls)"),
        Opt {
            name: "tracking-uri",
            value: Some("URI"),
            example: "http://127.0.0.1:5000",
            required: false,
            help: "the server or file store (replaces MLFLOW_TRACKING_URI; default ./mlruns)",
        },
        Opt {
            name: "json",
            value: None,
            example: "",
            required: false,
            help: "print one JSON object (schema in the README)",
        },
    ],
    notes: "\
Every run of the experiment is read, every page of it. A row per model and
task: calls, failure rate, acceptance rate (metric `accepted`), p50/p95 latency,
p50 time to first token (streamed calls; `-` without), mean input/output tokens,
total cost (metric `cost_usd`), cost per accepted output, and the mean of each
score (any other metric). Rows are sorted by cost per accepted output; each
task gets a one-line verdict. A ratio from fewer than 30 runs is marked `*`.
Runs without a `model` or `task` param are skipped and counted, as are metric
values that are not finite numbers.",
};

/// `hyperkit-obs mlflow compare`.
pub(crate) fn compare(args: &Args) -> Result<(), Failure> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    let since_ms = args
        .value("--since")
        .map(|t| {
            hyperkit_obs::logs::parse_time(t, now)
                .map_err(|e| Failure::Usage(format!("--since: {e}")))
        })
        .transpose()?;
    let filter = CompareFilter {
        task: args.value("--task").map(str::to_owned),
        since_ms,
    };
    let uri = args.value("--tracking-uri");
    let config = MonitoringConfig::from_lookup(|name| match (name, uri) {
        ("MLFLOW_TRACKING_URI", Some(uri)) => Some(uri.to_owned()),
        _ => std::env::var(name).ok(),
    })
    .map_err(|e| match uri {
        Some(_) => Failure::Failed(format!("--tracking-uri: {e}")),
        None => config_error(e),
    })?
    .mlflow;
    let experiment = args
        .value("--experiment")
        .unwrap_or(&config.experiment_name);
    let comparison = read_experiment(experiment, &config, async |tracker| {
        tracker.compare(&filter).await
    })?;
    if args.switch("--json") {
        let json = serde_json::json!({
            "experiment": experiment,
            "tracking_uri": config.target.to_string(),
            "task": filter.task,
            "since_ms": filter.since_ms,
            "few_runs_below": hyperkit_obs::mlflow::compare::FEW_RUNS,
            "comparison": comparison,
        });
        println!("{json}");
        return Ok(());
    }
    print!(
        "{}",
        render(&comparison, experiment, &config.target.to_string())
    );
    Ok(())
}

/// The text report: a head line, the table, the verdicts, the footnote.
fn render(c: &Comparison, experiment: &str, target: &str) -> String {
    let mut out = format!(
        "{} runs of experiment {experiment:?} at {target}: {} rows",
        c.runs,
        c.rows.len()
    );
    if c.skipped_runs > 0 {
        out.push_str(&format!(
            "; {} runs skipped (no `model` or `task` param)",
            c.skipped_runs
        ));
    }
    if c.ignored_values > 0 {
        out.push_str(&format!(
            "; {} metric values ignored (not finite, or negative)",
            c.ignored_values
        ));
    }
    out.push('\n');
    if c.rows.is_empty() {
        out.push_str("no model calls to compare\n");
        return out;
    }
    let scores: std::collections::BTreeSet<&str> = c
        .rows
        .iter()
        .flat_map(|r| r.scores.keys().map(String::as_str))
        .collect();
    let mut head: Vec<String> = [
        "task",
        "model",
        "provider",
        "calls",
        "fail",
        "accept",
        "p50",
        "p95",
        "ttft p50",
        "in tok",
        "out tok",
        "cost",
        "per accepted",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    head.extend(scores.iter().map(|s| shown(s)));
    let mut table = vec![head];
    let mut any_few = false;
    for r in &c.rows {
        any_few |= !r.few_runs.is_empty();
        table.push(cells(r, &scores));
    }
    let widths: Vec<usize> = (0..table[0].len())
        .map(|i| {
            table
                .iter()
                .map(|row| row[i].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for row in &table {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .enumerate()
            .map(|(i, (cell, w))| {
                if i < 3 {
                    format!("{cell:<w$}")
                } else {
                    format!("{cell:>w$}")
                }
            })
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out.push('\n');
    for v in &c.verdicts {
        out.push_str(&shown_long(&v.text));
        out.push('\n');
    }
    if any_few {
        out.push_str("* from fewer than 30 runs\n");
    }
    out
}

/// A row's cells, in the head's order.
fn cells(r: &ModelRow, scores: &std::collections::BTreeSet<&str>) -> Vec<String> {
    let few = |name: &str| if r.few_runs.contains(&name) { "*" } else { "" };
    let dash = || "-".to_owned();
    let pct = |v: f64| format!("{:.1}%", v * 100.0);
    let mut cells = vec![
        shown(&r.task),
        shown(&r.model),
        if r.providers.is_empty() {
            dash()
        } else {
            shown(&r.providers.join(","))
        },
        r.calls.to_string(),
        format!("{}{}", pct(r.failure_rate), few("failure_rate")),
        r.acceptance_rate
            .map_or_else(dash, |a| format!("{}{}", pct(a), few("acceptance_rate"))),
        r.latency_p50_seconds.map_or_else(dash, seconds),
        r.latency_p95_seconds.map_or_else(dash, seconds),
        r.ttft_p50_seconds.map_or_else(dash, seconds),
        r.mean_input_tokens.map_or_else(dash, |t| format!("{t:.0}")),
        r.mean_output_tokens
            .map_or_else(dash, |t| format!("{t:.0}")),
        r.cost_usd.map_or_else(dash, usd),
        r.cost_per_accepted_usd.map_or_else(dash, |c| {
            format!("{}{}", usd(c), few("cost_per_accepted_usd"))
        }),
    ];
    cells.extend(
        scores
            .iter()
            .map(|s| r.scores.get(*s).map_or_else(dash, |v| format!("{v:.3}"))),
    );
    cells
}

/// `1.23s`, `12.3s`, `250ms`.
fn seconds(s: f64) -> String {
    if s < 1.0 {
        format!("{:.0}ms", s * 1000.0)
    } else if s < 10.0 {
        format!("{s:.2}s")
    } else {
        format!("{s:.1}s")
    }
}

/// `text` with control characters escaped, at any length (a verdict names
/// models, which may hold anything).
fn shown_long(text: &str) -> String {
    text.chars()
        .flat_map(|c| {
            let escape = c.is_control();
            let mut v: Vec<char> = Vec::new();
            if escape {
                v.extend(c.escape_default());
            } else {
                v.push(c);
            }
            v
        })
        .collect()
}
