//! What model calls cost, to the pico-dollar: a workload of known token
//! counts and prices, read back from the registry (the exact decimal
//! `/metrics` serves) and from MLflow (metric `cost_usd` of each call's run,
//! read by MLflow 3's own Python client from the local file store and from
//! a real tracking server); calls of a model without a price are counted
//! apart and their runs carry no cost.
//!
//! Costs are computed here in whole pico-dollars (10^-12 USD) from integer
//! prices, independently of the crate's arithmetic, and compared exactly
//! in the exposition and within 10^-12 USD per run (an f64 of a few cents
//! holds 15 significant digits) and 10^-9 USD per sum in MLflow.

use std::collections::BTreeMap;
use std::time::Duration;

use hyperkit_obs::mlflow::{self, CALL_ID_TAG, MlflowConfig, TrackingTarget};
use hyperkit_obs::model::{CallId, ModelPrice, PriceTable, current_call_id};
use hyperkit_obs::{Builder, ModelOutput, MonitoringConfig, track_model};
use serde_json::Value;
use test_support::TempDir;
use test_support::mlflow::{Backend, MlflowServer, Version, read_runs, serial};

/// The prices, in micro-dollars per million tokens (= pico-dollars per
/// token): (model, input, output, cached input).
const PRICES: [(&str, u64, u64, Option<u64>); 2] = [
    ("cost-large", 2_500_000, 10_000_000, Some(1_250_000)),
    ("cost-small", 150_000, 600_000, None),
];
/// A model the table does not price.
const UNPRICED: &str = "cost-unpriced";

fn table() -> PriceTable {
    PRICES
        .iter()
        .fold(PriceTable::new(), |t, (model, input, output, cached)| {
            let per_million = |picos: u64| picos as f64 / 1e6;
            let mut price =
                ModelPrice::usd_per_million(per_million(*input), per_million(*output)).unwrap();
            if let Some(c) = cached {
                price = price.with_cached_input(per_million(*c)).unwrap();
            }
            t.with(*model, price)
        })
}

struct Answer {
    input: u64,
    cached: u64,
    output: u64,
    call: CallId,
}

impl ModelOutput for Answer {
    fn input_tokens(&self) -> Option<u64> {
        Some(self.input)
    }
    fn cached_input_tokens(&self) -> Option<u64> {
        Some(self.cached)
    }
    fn output_tokens(&self) -> Option<u64> {
        Some(self.output)
    }
}

#[track_model(model, task)]
fn answer(model: &str, task: &str, input: u64, cached: u64, output: u64) -> Answer {
    Answer {
        input,
        cached,
        output,
        call: current_call_id().expect("a tracked model call has an id"),
    }
}

/// Call `i`'s tokens: (input, of which cached, output).
fn tokens(i: u64) -> (u64, u64, u64) {
    let input = 1_000 + 37 * i;
    (
        input,
        if i.is_multiple_of(3) { input / 4 } else { 0 },
        200 + 11 * i,
    )
}

/// Call `i`'s model: large, small and unpriced in turn.
fn model_of(i: u64) -> &'static str {
    match i % 3 {
        0 => "cost-large",
        1 => "cost-small",
        _ => UNPRICED,
    }
}

/// The cost of a call in pico-dollars, from the integer prices.
fn expected_picos(model: &str, (input, cached, output): (u64, u64, u64)) -> Option<u64> {
    let (_, pi, po, pc) = PRICES.iter().find(|p| p.0 == model)?;
    Some((input - cached) * pi + cached * pc.unwrap_or(*pi) + output * po)
}

/// Makes `n` calls under `task`; the expected cost (pico-dollars, `None`
/// when unpriced) by call id.
fn workload(task: &str, n: u64) -> BTreeMap<String, (&'static str, Option<u64>)> {
    (0..n)
        .map(|i| {
            let model = model_of(i);
            let t = tokens(i);
            let a = answer(model, task, t.0, t.1, t.2);
            (a.call.to_string(), (model, expected_picos(model, t)))
        })
        .collect()
}

/// The value of `hyperkit_model_cost_usd_total{model,task}` as `/metrics`
/// writes it, read back into pico-dollars without floating point.
fn exposed_picos(model: &str, task: &str) -> Option<u64> {
    let text = String::from_utf8(hyperkit_obs::metrics::render(hyperkit_obs::registry())).unwrap();
    let series = format!("hyperkit_model_cost_usd_total{{model=\"{model}\",task=\"{task}\"}} ");
    let value = text.lines().find_map(|l| l.strip_prefix(&series))?;
    let (whole, frac) = value.split_once('.').unwrap_or((value, ""));
    assert!(frac.len() <= 12, "{value}: finer than a pico-dollar");
    let frac = format!("{frac:0<12}");
    Some(whole.parse::<u64>().unwrap() * 1_000_000_000_000 + frac.parse::<u64>().unwrap())
}

/// Checks the registry and MLflow's runs against the expectations.
fn check(task: &str, expected: &BTreeMap<String, (&'static str, Option<u64>)>, runs: &[Value]) {
    // Prometheus: the exact sum per model, and the unpriced calls.
    for (model, ..) in PRICES {
        let want: u64 = expected
            .values()
            .filter(|(m, _)| *m == model)
            .filter_map(|(_, c)| *c)
            .sum();
        assert_eq!(exposed_picos(model, task), Some(want), "{model} {task}");
        let total = test_support::metrics::total(
            "hyperkit_model_cost_usd_total",
            &[("model", model), ("task", task)],
        );
        assert!(
            (total - want as f64 / 1e12).abs() < 1e-9,
            "{model}: gather() says {total}, want {want} pico-dollars"
        );
    }
    assert_eq!(exposed_picos(UNPRICED, task), None, "no cost series");

    // MLflow: each run's cost_usd, and their sums per model.
    assert_eq!(runs.len(), expected.len(), "one run per call");
    let mut sums: BTreeMap<&str, f64> = BTreeMap::new();
    for run in runs {
        let id = run["tags"][CALL_ID_TAG].as_str().expect("call id tag");
        let (model, cost) = expected[id];
        let logged = run["metrics"].get("cost_usd").and_then(Value::as_f64);
        match cost {
            Some(picos) => {
                let logged = logged.unwrap_or_else(|| panic!("no cost_usd: {run}"));
                assert!(
                    (logged - picos as f64 / 1e12).abs() < 1e-12,
                    "{model}: run says {logged}, want {picos} pico-dollars"
                );
                *sums.entry(model).or_default() += logged;
            }
            None => assert_eq!(logged, None, "an unpriced call has no cost: {run}"),
        }
    }
    // The workload's sums, to the cent and beyond: 100 calls in thirds.
    let cents = |model| (sums[model] * 100.0).round() as u64;
    assert!((sums["cost-large"] - 0.463_738_75).abs() < 1e-9, "{sums:?}");
    assert!((sums["cost-small"] - 0.028_556_55).abs() < 1e-9, "{sums:?}");
    assert_eq!((cents("cost-large"), cents("cost-small")), (46, 3));
}

fn exporter_config(target: TrackingTarget, experiment: &str) -> MlflowConfig {
    let mut c = MlflowConfig::default();
    c.target = target;
    c.experiment_name = experiment.to_owned();
    c.retry.timeout = Duration::from_secs(20);
    c
}

/// Installs the price table the way a program does: through `init()`.
fn init_with_prices() -> hyperkit_obs::ObsGuard {
    let mut config = MonitoringConfig::default();
    config.mlflow.enabled = false;
    Builder::from_config(config)
        .model_prices(table())
        .install_subscriber(false)
        .init()
        .expect("init with a price table")
}

#[test]
fn the_workloads_sums_are_exact() {
    // The figures `check` asserts, from the integer prices alone.
    let sum = |model| -> u64 {
        (0..100)
            .filter(|i| model_of(*i) == model)
            .filter_map(|i| expected_picos(model, tokens(i)))
            .sum()
    };
    assert_eq!(sum("cost-large"), 463_738_750_000);
    assert_eq!(sum("cost-small"), 28_556_550_000);
}

#[test]
fn cost_is_exact_in_the_registry_and_the_file_store_and_unpriced_calls_are_counted() {
    let _serial = serial();
    let _obs = init_with_prices();
    let dir = TempDir::new("mlflow-cost");
    let root = dir.path().join("mlruns");
    let experiment = "hyperkit cost file store";
    let guard = mlflow::start(&exporter_config(
        TrackingTarget::FileStore(root.clone()),
        experiment,
    ))
    .expect("exporter starts");
    let unpriced = || {
        test_support::metrics::counter(
            "hyperkit_model_unpriced_calls_total",
            &[("model", UNPRICED)],
        )
    };
    let before = unpriced();

    let expected = workload("cost-file", 100);
    assert!(
        mlflow::flush(Duration::from_secs(60)),
        "{:?}",
        mlflow::status()
    );
    guard.shutdown(Duration::from_secs(10));

    assert_eq!(unpriced() - before, 33, "every unpriced call is counted");
    let runs = read_runs(
        Version::V3,
        &format!("file://{}", root.display()),
        experiment,
    );
    check("cost-file", &expected, &runs);
}

#[test]
fn cost_is_exact_in_runs_read_back_from_an_mlflow_3_server() {
    let _serial = serial();
    let _obs = init_with_prices();
    let server = MlflowServer::start(Version::V3, Backend::Sqlite);
    let experiment = "hyperkit cost server";
    let guard = mlflow::start(&exporter_config(
        TrackingTarget::Server(server.url()),
        experiment,
    ))
    .expect("exporter starts");

    let expected = workload("cost-server", 100);
    assert!(
        mlflow::flush(Duration::from_secs(120)),
        "{:?}",
        mlflow::status()
    );
    guard.shutdown(Duration::from_secs(10));

    let runs = read_runs(Version::V3, &server.url(), experiment);
    check("cost-server", &expected, &runs);
}
