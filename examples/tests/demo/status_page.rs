//! The status page in a real browser: headless Debian `chromium` loads `/`,
//! runs the page's own script against the server, and the DOM it leaves is
//! checked: every chart has data, the totals agree with `/metrics`, an empty
//! history says "no data yet", a failing check says its sink is down.
//!
//! Needs `chromium` (fails with the install command when it is missing).
//! Screenshots go to `CARGO_TARGET_TMPDIR` (`status-page.png` at 1280×800,
//! `status-page-full.png` at 1280×1900, `status-page-phone.png` at 390×844).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use test_support::TempDir;
use test_support::process::{self, Process};
use test_support::prometheus as prom;
use test_support::wait::eventually;

const INSTALL_CHROMIUM: &str = "apt-get install -y --no-install-recommends chromium";

/// Virtual time the page gets to load, fetch and draw (ms): enough for its
/// first fetch and one refresh (every 5 s).
const VIRTUAL_TIME_BUDGET: &str = "8000";

/// Wall-clock bound on one chromium run; it normally exits in a few seconds.
const BROWSER_WITHIN: Duration = Duration::from_secs(90);

/// How long the demo may take to fill every chart.
const DATA_WITHIN: Duration = Duration::from_secs(60);

/// One browser at a time: two cores, and chromium is heavy.
static BROWSER: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Runs headless chromium on `url` with `extra` flags in a fresh profile;
/// returns its stdout (the DOM with `--dump-dom`).
fn chromium(url: &str, extra: &[String]) -> String {
    let program = process::require_installed("chromium", INSTALL_CHROMIUM);
    let _one = BROWSER
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let dir = TempDir::new("chromium");
    let mut cmd = Command::new(program);
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
    ])
    .arg(format!(
        "--user-data-dir={}",
        dir.path().join("profile").display()
    ))
    .arg(format!("--virtual-time-budget={VIRTUAL_TIME_BUDGET}"))
    .args(extra)
    .arg(url);
    let finished = process::run("chromium", &mut cmd, BROWSER_WITHIN);
    assert!(
        finished.status.success(),
        "chromium {}: {}",
        finished.status,
        finished.stderr
    );
    finished.stdout
}

async fn dump_dom(url: String) -> String {
    tokio::task::spawn_blocking(move || chromium(&url, &["--dump-dom".to_owned()]))
        .await
        .expect("chromium run")
}

async fn screenshot(url: String, name: &str, size: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_file(&path);
    let flags = vec![
        format!("--screenshot={}", path.display()),
        format!("--window-size={size}"),
        "--hide-scrollbars".to_owned(),
    ];
    tokio::task::spawn_blocking(move || chromium(&url, &flags))
        .await
        .expect("chromium run");
    let png = std::fs::read(&path).unwrap_or_default();
    assert!(
        png.starts_with(b"\x89PNG"),
        "no screenshot at {}",
        path.display()
    );
    path
}

/// The attributes of every element that has `attr`, in document order.
fn elements_with(dom: &str, attr: &str) -> Vec<BTreeMap<String, String>> {
    let needle = format!(" {attr}=\"");
    let mut found = Vec::new();
    let mut from = 0;
    while let Some(at) = dom[from..].find(&needle).map(|i| i + from) {
        let start = dom[..at].rfind('<').unwrap_or(0);
        let end = dom[at..].find('>').map_or(dom.len(), |i| i + at);
        found.push(attributes(&dom[start..end]));
        from = end;
    }
    found
}

/// `name="value"` pairs of one start tag (`<tag a="1" b`), unescaped.
fn attributes(tag: &str) -> BTreeMap<String, String> {
    let mut attrs = BTreeMap::new();
    let mut rest = tag.trim_start_matches('<');
    rest = rest.split_once(' ').map_or("", |(_, r)| r);
    while !rest.trim().is_empty() {
        rest = rest.trim_start();
        let name_end = rest.find(['=', ' ']).unwrap_or(rest.len());
        let name = rest[..name_end].to_owned();
        rest = &rest[name_end..];
        let value = if let Some(r) = rest.strip_prefix("=\"") {
            let close = r.find('"').unwrap_or(r.len());
            let v = &r[..close];
            rest = r.get(close + 1..).unwrap_or("");
            v.replace("&quot;", "\"")
                .replace("&lt;", "<")
                .replace("&gt;", ">")
                .replace("&amp;", "&")
        } else {
            String::new()
        };
        attrs.insert(name, value);
    }
    attrs
}

fn number(attrs: &BTreeMap<String, String>, name: &str) -> f64 {
    attrs
        .get(name)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{name} is not a number in {attrs:?}"))
}

/// The sum of every sample of `family` in a text exposition.
fn sum(exposition: &str, family: &str) -> f64 {
    exposition
        .lines()
        .filter(|l| {
            l.strip_prefix(family)
                .is_some_and(|rest| rest.starts_with(['{', ' ']))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

async fn history(
    get: impl AsyncFnOnce() -> Result<(u16, String), String>,
) -> Result<serde_json::Value, String> {
    let (status, body) = get().await?;
    if status != 200 {
        return Err(format!("/api/status/history answered {status}: {body}"));
    }
    serde_json::from_str(&body).map_err(|e| format!("not JSON ({e}): {body}"))
}

/// The demo at 100x speed on a free port, ready to serve.
async fn demo() -> Process {
    process::start(prom::demo(
        env!("CARGO_BIN_EXE_demo"),
        &[("HYPERKIT_DEMO_SPEED", "100")],
    ))
    .await
}

/// Page totals and the `/metrics` family each one counts.
const TOTALS: [(&str, &str); 5] = [
    ("builds", "hyperkit_builds_total"),
    ("model_calls", "hyperkit_model_calls_total"),
    ("tokens", "hyperkit_model_tokens_total"),
    ("cost_usd", "hyperkit_model_cost_usd_total"),
    ("http_requests", "hyperkit_http_requests_total"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_chart_has_data_and_the_totals_agree_with_metrics() {
    let demo = demo().await;
    eventually(
        "every chart of the demo's history has a value",
        DATA_WITHIN,
        async || {
            let h = history(async || demo.get("/api/status/history").await).await?;
            let empty: Vec<String> = h["charts"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|c| {
                    !c["series"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .any(|s| s["latest"].is_number())
                })
                .map(|c| c["id"].to_string())
                .collect();
            if empty.is_empty() {
                Ok(())
            } else {
                Err(format!("no data yet in {empty:?}"))
            }
        },
    )
    .await;

    // Counters only grow: a sample taken after `before` and shown before
    // `after` was fetched lies between the two. That is the exact tolerance
    // for "the same moment", with no allowance to tune.
    let (_, before) = demo.get("/metrics").await.expect("GET /metrics");
    let before_ms = unix_ms();
    eventually(
        "the history has a sample taken after /metrics was read",
        Duration::from_secs(10),
        async || {
            let h = history(async || demo.get("/api/status/history").await).await?;
            match h["totals"]["at"].as_u64() {
                Some(at) if at > before_ms => Ok(()),
                at => Err(format!(
                    "last sample at {at:?}, /metrics read at {before_ms}"
                )),
            }
        },
    )
    .await;
    let dom = dump_dom(demo.url("/")).await;
    let (_, after) = demo.get("/metrics").await.expect("GET /metrics");

    let charts = elements_with(&dom, "data-chart");
    // The ten charts of the built-in domains and the HTTP layer, and the
    // three of the demo's own domain once a deployment has finished.
    let ids: Vec<&str> = charts.iter().map(|c| c["data-chart"].as_str()).collect();
    let built_in = ids.iter().filter(|id| !id.starts_with("domain_")).count();
    assert_eq!(built_in, 10, "charts in the DOM: {charts:?}\n{dom}");
    assert!(
        matches!(ids.len() - built_in, 0 | 3),
        "the demo's domain has its three charts or none yet: {ids:?}"
    );
    for chart in &charts {
        assert!(
            number(chart, "data-series-count") > 0.0 && number(chart, "data-points") > 0.0,
            "a chart without data: {chart:?}"
        );
        let unit_is_percent = chart["data-chart"].contains("success")
            || chart["data-chart"].contains("acceptance")
            || chart["data-chart"].contains("errors");
        for latest in chart["data-latest"].split(';') {
            let (name, value) = latest.split_once('=').expect("name=value");
            if value.is_empty() {
                continue;
            }
            let v: f64 = value.parse().expect("a number");
            assert!(v >= 0.0, "{name} in {chart:?} is negative");
            if unit_is_percent {
                assert!(v <= 100.0, "{name} in {chart:?} is above 100 %");
            }
        }
    }
    for (total, family) in TOTALS {
        let shown = elements_with(&dom, "data-total")
            .into_iter()
            .find(|e| e["data-total"] == total)
            .unwrap_or_else(|| panic!("no total {total} on the page"));
        let shown = number(&shown, "data-value");
        let (low, high) = (sum(&before, family), sum(&after, family));
        // Dollars are summed over models in another order here than on
        // the page: allow a nano-dollar.
        let slack = if total == "cost_usd" { 1e-9 } else { 0.0 };
        assert!(
            low - slack <= shown && shown <= high + slack,
            "{total} shows {shown}, /metrics had {family} = {low} before and {high} after"
        );
    }
    let banner = elements_with(&dom, "id")
        .into_iter()
        .find(|e| e["id"] == "nodata")
        .expect("the no-data banner");
    assert!(
        banner.contains_key("hidden"),
        "the no-data banner shows while every chart has data: {banner:?}"
    );

    let wide = screenshot(demo.url("/"), "status-page.png", "1280,800").await;
    let full = screenshot(demo.url("/"), "status-page-full.png", "1280,1900").await;
    let phone = screenshot(demo.url("/"), "status-page-phone.png", "390,844").await;
    eprintln!(
        "screenshots: {} {} {}",
        wide.display(),
        full.display(),
        phone.display()
    );
}

/// The stand-alone observability server of this test process (the status
/// page at `/`), on a free port.
async fn in_process() -> hyperkit_obs::http::Server {
    let addr = "127.0.0.1:0".parse().expect("an address");
    hyperkit_obs::http::serve(addr)
        .await
        .expect("serve on 127.0.0.1")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_history_says_no_data_yet() {
    // Nothing is tracked in this process, so every derived series is empty,
    // however many samples the history holds: wait for two, the first point
    // at which a rate could be derived.
    let server = in_process().await;
    let base = format!("http://{}", server.local_addr());
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("HTTP client");
    eventually(
        "the history holds two samples",
        Duration::from_secs(10),
        async || {
            let url = format!("{base}/api/status/history");
            let h = history(async || {
                let r = http.get(&url).send().await.map_err(|e| e.to_string())?;
                let status = r.status().as_u16();
                Ok((status, r.text().await.map_err(|e| e.to_string())?))
            })
            .await?;
            if h["samples"].as_f64().unwrap_or(0.0) >= 2.0 {
                Ok(())
            } else {
                Err(format!("samples: {}", h["samples"]))
            }
        },
    )
    .await;
    let dom = dump_dom(format!("{base}/")).await;

    let banner = elements_with(&dom, "id")
        .into_iter()
        .find(|e| e["id"] == "nodata")
        .expect("the no-data banner");
    assert!(
        !banner.contains_key("hidden"),
        "the no-data banner is hidden: {banner:?}\n{dom}"
    );
    let charts = elements_with(&dom, "data-chart");
    assert_eq!(charts.len(), 10, "{dom}");
    assert!(
        charts.iter().all(|c| c["data-series-count"] == "0"),
        "{charts:?}"
    );
    assert_eq!(
        dom.matches("<p class=\"empty\">No data yet</p>").count(),
        charts.len(),
        "every chart says no data yet:\n{dom}"
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_readiness_check_shows_its_sink_down() {
    hyperkit_obs::health::register_fn("sentry", || Err("connection refused".to_owned()));
    hyperkit_obs::metrics::record_dropped("sentry", 3);
    let server = in_process().await;
    let base = format!("http://{}", server.local_addr());
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("HTTP client");
    eventually(
        "the history has sampled the dropped items",
        Duration::from_secs(10),
        async || {
            let url = format!("{base}/api/status/history");
            let h = history(async || {
                let r = http.get(&url).send().await.map_err(|e| e.to_string())?;
                let status = r.status().as_u16();
                Ok((status, r.text().await.map_err(|e| e.to_string())?))
            })
            .await?;
            if h["totals"]["dropped"]["sentry"] == 3.0 {
                Ok(())
            } else {
                Err(format!("totals: {}", h["totals"]))
            }
        },
    )
    .await;
    let dom = dump_dom(format!("{base}/")).await;

    let check = elements_with(&dom, "data-check")
        .into_iter()
        .find(|e| e["data-check"] == "sentry")
        .unwrap_or_else(|| panic!("no sentry check on the page:\n{dom}"));
    assert_eq!(check["data-status"], "fail", "{check:?}");
    let sink = elements_with(&dom, "data-sink")
        .into_iter()
        .find(|e| e["data-sink"] == "sentry")
        .unwrap_or_else(|| panic!("no sentry exporter on the page:\n{dom}"));
    assert_eq!(
        (sink["data-state"].as_str(), number(&sink, "data-dropped")),
        ("DOWN", 3.0),
        "{sink:?}"
    );
    assert!(
        dom.contains("sentry is down: connection refused"),
        "no banner says the sink is down:\n{dom}"
    );
    hyperkit_obs::health::deregister("sentry");
    server.shutdown().await;
}
