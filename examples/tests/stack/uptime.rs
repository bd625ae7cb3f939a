//! Uptime: the recording rule's uptime over a window with a known outage
//! matches the uptime the test measured on its own clock.

use std::time::{Duration, Instant};

use test_support::prometheus as prom;

use crate::{Demo, JOB, infra, wait_up};

/// Scrape interval of the uptime test. An uptime computed from `up` can be
/// off by one scrape at each edge of an outage, so the interval must be
/// small beside the window: 0.25 s in a ~90 s window is at most ~0.3
/// percentage points, under the 0.5 the issue allows. (At the deployed 10 s
/// the same window would have ~9 samples.)
const UPTIME_SCRAPE: &str = "250ms";
/// The demo serves this long before and after its outage.
const UP_SPAN: Duration = Duration::from_secs(35);
/// The known outage.
const DOWN_SPAN: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uptime_from_the_recording_rule_matches_the_true_uptime() {
    let calm = Demo {
        speed: "1",
        failure_rate: "0.1",
        max_label_values: None,
    };
    let demo = calm.start().await;
    let port = demo.addr().port();
    let config = format!(
        "global:\n  scrape_interval: {UPTIME_SCRAPE}\n  scrape_timeout: {UPTIME_SCRAPE}\n  evaluation_interval: 1s\n\
         rule_files: [recording.yml]\n\
         scrape_configs:\n  - job_name: {JOB}\n    static_configs:\n      - targets: [\"{}\"]\n",
        demo.addr()
    );
    let prometheus =
        prom::prometheus_with(&config, &[infra().join("prometheus/recording.yml")]).await;
    wait_up(&prometheus, 1.0, Duration::from_secs(30)).await;

    // Up, down for a known span, up again. These sleeps are the experiment
    // (spans of service and outage), not waits for a condition.
    tokio::time::sleep(UP_SPAN).await;
    drop(demo); // SIGKILL, reaped: no longer serving
    let down_from = Instant::now();
    tokio::time::sleep(DOWN_SPAN).await;
    let demo = calm.start_on(port).await; // serving again once ready
    // From the reaping to the first 200 of /health/ready, polled every
    // 100 ms: at most that much longer than the demo really was down.
    let down = down_from.elapsed().as_secs_f64();
    tokio::time::sleep(UP_SPAN).await;

    // The window ends at the recording rule's latest evaluation and starts
    // at Prometheus's first scrape of the demo (the series began in this
    // test, so the rule's [1h] covers exactly this window).
    let rule = format!("hyperkit:up:avg1h{{job=\"{JOB}\"}}");
    let end = match prom::query(&prometheus, &format!("timestamp({rule})"))
        .await
        .expect("timestamp of the rule")
        .as_slice()
    {
        [(_, t)] => *t,
        other => panic!("timestamp({rule}): {other:?}"),
    };
    let series = prom::query_samples(&prometheus, &format!("up{{job=\"{JOB}\"}}[1h]"))
        .await
        .expect("the up samples");
    let [(_, samples)] = series.as_slice() else {
        panic!("up{{job=\"{JOB}\"}}: {series:?}")
    };
    let start = samples
        .first()
        .map(|s| s.0)
        .expect("at least one up sample");
    let in_window: Vec<f64> = samples
        .iter()
        .filter(|(t, _)| *t <= end)
        .map(|(_, v)| *v)
        .collect();
    let failed = in_window.iter().filter(|v| **v == 0.0).count();
    let window = end - start;
    assert!(
        window > down + UP_SPAN.as_secs_f64(),
        "the window ({window:.1} s) must hold the outage and the spans around it"
    );

    let value = |samples: Vec<(prom::Labels, f64)>, what: &str| match samples.as_slice() {
        [(_, v)] => *v,
        other => panic!("{what}: {other:?}"),
    };
    let recorded = value(
        prom::query_at(&prometheus, &rule, end)
            .await
            .expect("the rule"),
        &rule,
    );
    // The same expression shape over exactly the window (a millisecond
    // wider, so the first sample is in whichever way the bounds fall).
    let millis = (window * 1000.0).ceil() as u64 + 1;
    let raw_expr = format!("avg_over_time(up{{job=\"{JOB}\"}}[{millis}ms])");
    let raw = value(
        prom::query_at(&prometheus, &raw_expr, end)
            .await
            .expect("avg_over_time"),
        &raw_expr,
    );
    let truth = (window - down) / window;
    eprintln!(
        "uptime over a {window:.1} s window (demo down {down:.2} s by the test's clock): \
         true {:.3} %, hyperkit:up:avg1h {:.3} %, {raw_expr} {:.3} % \
         ({failed} of {} scrapes failed)",
        truth * 100.0,
        recorded * 100.0,
        raw * 100.0,
        in_window.len(),
    );
    // Equal, but for one scrape at most: a scrape stamped before the rule's
    // evaluation can land in the TSDB just after it.
    let one_scrape = 1.0 / in_window.len() as f64;
    assert!(
        (recorded - raw).abs() <= one_scrape + 1e-12,
        "the recording rule ({recorded}) is not avg_over_time over the window ({raw})"
    );
    for (what, computed) in [("hyperkit:up:avg1h", recorded), ("avg_over_time", raw)] {
        let points = (computed - truth).abs() * 100.0;
        assert!(
            points <= 0.5,
            "{what} says {:.3} %, the true uptime is {:.3} %: {points:.3} points apart",
            computed * 100.0,
            truth * 100.0
        );
    }
    drop(demo);
}
