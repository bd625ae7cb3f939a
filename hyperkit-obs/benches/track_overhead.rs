//! Per-call overhead of `#[track_build]` against hand-written Prometheus
//! instrumentation, `#[autometrics]`, and the crates a Rust user would reach
//! for instead (`metrics`, `prometheus-client`, the OpenTelemetry SDK), on a
//! trivial function.
//!
//! Every variant wraps the same body, `Ok(black_box(x).wrapping_mul(3))`, in
//! its own `#[inline(never)]` function:
//!
//! | variant | instrumentation |
//! |---|---|
//! | `baseline` | none |
//! | `hand_best` | prometheus handles resolved once, before the loop, timed with `std::time::Instant` |
//! | `hand_tsc` | the same handles, timed with the TSC (`quanta`'s raw counter), the clock the runtime uses |
//! | `hand_seed_style` | `with_label_values` on every call, as the original Python design does |
//! | `track_build_literal` | `#[track_build(chain = "ethereum")]` |
//! | `track_build_enum` | `#[track_build(chain)]`, `chain: Chain` (a `LabelValue` enum) |
//! | `track_build_str` | `#[track_build(chain)]`, `chain: &str` |
//! | `track_domain_literal` | `#[track(Deploy, env = Env::Staging, region = "eu-west-1")]`, a domain of the bench's own |
//! | `track_domain_enum` | `#[track(Deploy, env, region = "eu-west-1")]`, `env: Env` |
//! | `autometrics` | `#[autometrics]`, prometheus 0.14 backend |
//! | `metrics_per_call` | `metrics` 0.24 macros on every call (`counter!(…).increment(1)`, `histogram!(…).record(…)`, `gauge!(…).increment/decrement`), `metrics-exporter-prometheus` as the global recorder |
//! | `metrics_handles` | the same recorder, handles registered once before the loop |
//! | `prom_client_per_call` | `prometheus-client` (the official client): `Family::get_or_create(&labels)` on every call, derived `EncodeLabelSet` structs |
//! | `prom_client_handles` | the same families, handles resolved once (`get_or_create_owned`) |
//! | `otel_sdk` | OpenTelemetry SDK metrics (counter, histogram, up-down counter as the gauge), attribute sets built once, read through `opentelemetry-prometheus` |
//! | `traced_unsampled` | `track_build_literal` with trace context on (`trace::enable`), sampler `always_off`: ids drawn and made current, nothing recorded |
//! | `traced_sampled` | the same, sampler `always_on`: the exemplars recorded too, no span sink |
//! | `traced_exported` | the same, with the OTLP exporter running (batches sent over HTTP to a local receiver on its own thread); `CALLS / 10` calls a round, the queue sized to hold them |
//! | `otel_sdk_span` | an OpenTelemetry SDK span around the body (`tracer.start`, one attribute, `end`), always sampled, batch span processor over an exporter that discards: the cost that decided against the SDK on the caller's path |
//!
//! The `traced_*` rows are the same function as `track_build_literal` in the
//! same run; their targets (issue 15): an unsampled call at most 10 ns more,
//! a sampled and exported one at most 1 µs more.
//!
//! Every peer records the same three metrics as `track_build` (calls by
//! status, a duration histogram with the build buckets, an in-flight gauge,
//! `chain="ethereum"`), written as its own docs show and timed with
//! `std::time::Instant`, as `hand_best` is: none of them offers a timing
//! helper of its own. Each is given its fastest documented path: the
//! `metrics` macros get literal labels only (one macro per status), so they
//! build their keys as statics; the `prometheus-client` label sets hold
//! `&'static str`, so a lookup allocates nothing. `otel_sdk` has one form,
//! the cheapest the SDK documents (bound instruments are experimental), and
//! is held to the pre-resolved target.
//!
//! Tracing is disabled by level: this binary installs no subscriber at all,
//! so tracing's global max level stays `OFF` and every span and event the
//! generated code would emit is skipped by its level check. What is measured
//! is the metrics path plus the cost of that check.
//!
//! Criterion measures each variant in one group. After the group, when run by
//! `cargo bench`, the bench times every variant again in-process (`ROUNDS`
//! rounds of `CALLS` calls, interleaved across variants) and prints a ratio
//! table with PASS/MISS for the overhead targets. Its figure is the least
//! per-call time of the rounds: a round is about a millisecond, and on a
//! machine busy with other work, preemption, another thread's cache traffic
//! or frequency changes only ever add time to a round, so the least round is
//! the call's own cost, the same on a quiet and a loaded machine (the
//! median, printed beside it, is not).
//!
//! For an experiment on the call path, `TRACK_OVERHEAD_ONLY` names the
//! variants to time (the first is the baseline of the ratios) and skips
//! criterion and the table: a stable figure in seconds.
//!
//! ```text
//! TRACK_OVERHEAD_ONLY=hand_tsc,track_build_literal,track_domain_literal \
//!     cargo bench -p hyperkit-obs --bench track_overhead
//! ```

use std::hint::black_box;
use std::time::{Duration, Instant, SystemTime};

use criterion::Criterion;
use hyperkit_obs::prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry,
};
use hyperkit_obs::{Domain, LabelValue, track, track_build};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use opentelemetry::KeyValue;
use opentelemetry::metrics::MeterProvider;
use opentelemetry::trace::{Span as _, Tracer as _, TracerProvider as _};
use opentelemetry_sdk::metrics::SdkMeterProvider;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use test_support::bench::{criterion_median, median};

/// The error every variant could return (none does).
#[derive(Debug)]
struct Error;

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("build failed")
    }
}

/// The chain label as a fixed-set enum.
#[derive(LabelValue, Clone, Copy)]
enum Chain {
    Ethereum,
    Solana,
}

/// A deployment environment: a fixed-set label of the bench's domain.
#[derive(LabelValue, Clone, Copy)]
enum Env {
    Staging,
    Production,
}

/// Deployments, the bench's own domain (with the build buckets, so its
/// histogram scan is the same length as `track_build`'s).
#[derive(Domain)]
#[domain(prefix = "bench_deploy", buckets = [10.0, 30.0, 60.0, 90.0, 120.0, 180.0])]
struct Deploy {
    env: Env,
    region: String,
}

/// Buckets of `hyperkit_build_duration_seconds`.
const BUCKETS: [f64; 6] = [10.0, 30.0, 60.0, 90.0, 120.0, 180.0];

// ---------------------------------------------------------------------------
// The variants. Every body is the same expression.
// ---------------------------------------------------------------------------

#[inline(never)]
fn baseline(x: u64) -> Result<u64, Error> {
    Ok(black_box(x).wrapping_mul(3))
}

/// Hand-written best case: handles resolved once, outside the call.
struct BestHandles {
    success: IntCounter,
    failure: IntCounter,
    duration: Histogram,
    active: IntGauge,
    _registry: Registry,
}

impl BestHandles {
    fn new() -> Self {
        let (calls, duration, active, registry) = hand_metrics("hand");
        BestHandles {
            success: calls.with_label_values(&["success", "ethereum"]),
            failure: calls.with_label_values(&["failure", "ethereum"]),
            duration: duration.with_label_values(&["ethereum"]),
            active: active.with_label_values(&["ethereum"]),
            _registry: registry,
        }
    }
}

/// The three metric vecs of the hand-written variants, named
/// `<prefix>_builds_total`, `<prefix>_build_duration_seconds` and
/// `<prefix>_active_builds`, registered in a registry of their own.
fn hand_metrics(prefix: &str) -> (IntCounterVec, HistogramVec, IntGaugeVec, Registry) {
    let registry = Registry::new();
    let calls = IntCounterVec::new(
        Opts::new(
            format!("{prefix}_builds_total"),
            "Builds by status and chain.",
        ),
        &["status", "chain"],
    )
    .expect("valid counter");
    let duration = HistogramVec::new(
        HistogramOpts::new(
            format!("{prefix}_build_duration_seconds"),
            "Build duration.",
        )
        .buckets(BUCKETS.to_vec()),
        &["chain"],
    )
    .expect("valid histogram");
    let active = IntGaugeVec::new(
        Opts::new(format!("{prefix}_active_builds"), "Builds in flight."),
        &["chain"],
    )
    .expect("valid gauge");
    registry
        .register(Box::new(calls.clone()))
        .expect("register");
    registry
        .register(Box::new(duration.clone()))
        .expect("register");
    registry
        .register(Box::new(active.clone()))
        .expect("register");
    (calls, duration, active, registry)
}

#[inline(never)]
fn hand_best(h: &BestHandles, x: u64) -> Result<u64, Error> {
    let start = Instant::now();
    h.active.inc();
    let out: Result<u64, Error> = Ok(black_box(x).wrapping_mul(3));
    match out {
        Ok(_) => h.success.inc(),
        Err(_) => h.failure.inc(),
    }
    h.duration.observe(start.elapsed().as_secs_f64());
    h.active.dec();
    out
}

#[inline(never)]
fn hand_tsc(h: &BestHandles, clock: &quanta::Clock, x: u64) -> Result<u64, Error> {
    let start = clock.raw();
    h.active.inc();
    let out: Result<u64, Error> = Ok(black_box(x).wrapping_mul(3));
    match out {
        Ok(_) => h.success.inc(),
        Err(_) => h.failure.inc(),
    }
    let ns = clock.delta_as_nanos(start, clock.raw());
    h.duration.observe(ns as f64 / 1e9);
    h.active.dec();
    out
}

/// Hand-written the way the original Python design does it: the metric vecs,
/// with every label looked up on every call.
struct SeedMetrics {
    calls: IntCounterVec,
    duration: HistogramVec,
    active: IntGaugeVec,
    _registry: Registry,
}

impl SeedMetrics {
    fn new() -> Self {
        let (calls, duration, active, registry) = hand_metrics("seed");
        SeedMetrics {
            calls,
            duration,
            active,
            _registry: registry,
        }
    }
}

#[inline(never)]
fn hand_seed_style(m: &SeedMetrics, chain: &str, x: u64) -> Result<u64, Error> {
    let start = Instant::now();
    m.active.with_label_values(&[chain]).inc();
    let out: Result<u64, Error> = Ok(black_box(x).wrapping_mul(3));
    let status = if out.is_ok() { "success" } else { "failure" };
    m.calls.with_label_values(&[status, chain]).inc();
    m.duration
        .with_label_values(&[chain])
        .observe(start.elapsed().as_secs_f64());
    m.active.with_label_values(&[chain]).dec();
    out
}

#[inline(never)]
#[track_build(chain = "ethereum")]
fn track_build_literal(x: u64) -> Result<u64, Error> {
    Ok(black_box(x).wrapping_mul(3))
}

#[inline(never)]
#[track_build(chain)]
fn track_build_enum(chain: Chain, x: u64) -> Result<u64, Error> {
    Ok(black_box(x).wrapping_mul(3))
}

#[inline(never)]
#[track_build(chain)]
fn track_build_str(chain: &str, x: u64) -> Result<u64, Error> {
    Ok(black_box(x).wrapping_mul(3))
}

#[inline(never)]
#[track(Deploy, env = Env::Staging, region = "eu-west-1")]
fn track_domain_literal(x: u64) -> Result<u64, Error> {
    Ok(black_box(x).wrapping_mul(3))
}

#[inline(never)]
#[track(Deploy, env, region = "eu-west-1")]
fn track_domain_enum(env: Env, x: u64) -> Result<u64, Error> {
    Ok(black_box(x).wrapping_mul(3))
}

#[inline(never)]
#[autometrics::autometrics]
fn autometrics_fn(x: u64) -> Result<u64, Error> {
    Ok(black_box(x).wrapping_mul(3))
}

// ---------------------------------------------------------------------------
// The peers: what a Rust user would write instead of the attributes.
// ---------------------------------------------------------------------------

/// Installs `metrics-exporter-prometheus` as the process's recorder, with the
/// build buckets for every histogram (without them it would export
/// summaries), and starts the upkeep its docs make the caller's job when
/// there is no HTTP listener: without it, histogram samples pile up in
/// memory until a scrape.
fn install_metrics_recorder() -> PrometheusHandle {
    let handle = PrometheusBuilder::new()
        .set_buckets(&BUCKETS)
        .expect("non-empty buckets")
        .install_recorder()
        .expect("the first recorder of this process");
    let upkeep = handle.clone();
    std::thread::spawn(move || {
        loop {
            std::thread::sleep(Duration::from_secs(5));
            upkeep.run_upkeep();
        }
    });
    handle
}

#[inline(never)]
fn metrics_per_call(x: u64) -> Result<u64, Error> {
    let start = Instant::now();
    metrics::gauge!("metrics_call_active_builds", "chain" => "ethereum").increment(1.0);
    let out: Result<u64, Error> = Ok(black_box(x).wrapping_mul(3));
    match out {
        Ok(_) => metrics::counter!(
            "metrics_call_builds_total", "status" => "success", "chain" => "ethereum"
        )
        .increment(1),
        Err(_) => metrics::counter!(
            "metrics_call_builds_total", "status" => "failure", "chain" => "ethereum"
        )
        .increment(1),
    }
    metrics::histogram!("metrics_call_build_duration_seconds", "chain" => "ethereum")
        .record(start.elapsed());
    metrics::gauge!("metrics_call_active_builds", "chain" => "ethereum").decrement(1.0);
    out
}

/// `metrics` handles, registered once with the global recorder.
struct MetricsHandles {
    success: metrics::Counter,
    failure: metrics::Counter,
    duration: metrics::Histogram,
    active: metrics::Gauge,
}

impl MetricsHandles {
    fn new() -> Self {
        MetricsHandles {
            success: metrics::counter!(
                "metrics_handle_builds_total", "status" => "success", "chain" => "ethereum"
            ),
            failure: metrics::counter!(
                "metrics_handle_builds_total", "status" => "failure", "chain" => "ethereum"
            ),
            duration: metrics::histogram!(
                "metrics_handle_build_duration_seconds", "chain" => "ethereum"
            ),
            active: metrics::gauge!("metrics_handle_active_builds", "chain" => "ethereum"),
        }
    }
}

#[inline(never)]
fn metrics_handles(h: &MetricsHandles, x: u64) -> Result<u64, Error> {
    let start = Instant::now();
    h.active.increment(1.0);
    let out: Result<u64, Error> = Ok(black_box(x).wrapping_mul(3));
    match out {
        Ok(_) => h.success.increment(1),
        Err(_) => h.failure.increment(1),
    }
    h.duration.record(start.elapsed());
    h.active.decrement(1.0);
    out
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    status: &'static str,
    chain: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ChainLabels {
    chain: &'static str,
}

type BucketsFn = fn() -> prometheus_client::metrics::histogram::Histogram;

/// The three families of `prometheus-client`, in a registry of their own.
struct ClientFamilies {
    calls: Family<CallLabels, prometheus_client::metrics::counter::Counter>,
    duration: Family<ChainLabels, prometheus_client::metrics::histogram::Histogram, BucketsFn>,
    active: Family<ChainLabels, prometheus_client::metrics::gauge::Gauge>,
    registry: prometheus_client::registry::Registry,
}

impl ClientFamilies {
    /// Families named `<prefix>_builds` (exported with `_total`),
    /// `<prefix>_build_duration_seconds` and `<prefix>_active_builds`.
    fn new(prefix: &str) -> Self {
        let calls = Family::default();
        let duration = Family::new_with_constructor(
            (|| prometheus_client::metrics::histogram::Histogram::new(BUCKETS)) as BucketsFn,
        );
        let active = Family::default();
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register(
            format!("{prefix}_builds"),
            "Builds by status and chain.",
            calls.clone(),
        );
        registry.register(
            format!("{prefix}_build_duration_seconds"),
            "Build duration.",
            duration.clone(),
        );
        registry.register(
            format!("{prefix}_active_builds"),
            "Builds in flight.",
            active.clone(),
        );
        ClientFamilies {
            calls,
            duration,
            active,
            registry,
        }
    }

    /// The registry in the text format, as its `/metrics` would serve it.
    fn exposition(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("encode prometheus-client registry");
        text
    }
}

const CHAIN: ChainLabels = ChainLabels { chain: "ethereum" };

#[inline(never)]
fn prom_client_per_call(m: &ClientFamilies, x: u64) -> Result<u64, Error> {
    let start = Instant::now();
    m.active.get_or_create(&CHAIN).inc();
    let out: Result<u64, Error> = Ok(black_box(x).wrapping_mul(3));
    let status = if out.is_ok() { "success" } else { "failure" };
    m.calls
        .get_or_create(&CallLabels {
            status,
            chain: "ethereum",
        })
        .inc();
    m.duration
        .get_or_create(&CHAIN)
        .observe(start.elapsed().as_secs_f64());
    m.active.get_or_create(&CHAIN).dec();
    out
}

/// `prometheus-client` handles, resolved once from their families.
struct ClientHandles {
    success: prometheus_client::metrics::counter::Counter,
    failure: prometheus_client::metrics::counter::Counter,
    duration: prometheus_client::metrics::histogram::Histogram,
    active: prometheus_client::metrics::gauge::Gauge,
    families: ClientFamilies,
}

impl ClientHandles {
    fn new() -> Self {
        let families = ClientFamilies::new("client_handle");
        let call = |status| CallLabels {
            status,
            chain: "ethereum",
        };
        ClientHandles {
            success: families.calls.get_or_create_owned(&call("success")),
            failure: families.calls.get_or_create_owned(&call("failure")),
            duration: families.duration.get_or_create_owned(&CHAIN),
            active: families.active.get_or_create_owned(&CHAIN),
            families,
        }
    }
}

#[inline(never)]
fn prom_client_handles(h: &ClientHandles, x: u64) -> Result<u64, Error> {
    let start = Instant::now();
    h.active.inc();
    let out: Result<u64, Error> = Ok(black_box(x).wrapping_mul(3));
    match out {
        Ok(_) => h.success.inc(),
        Err(_) => h.failure.inc(),
    };
    h.duration.observe(start.elapsed().as_secs_f64());
    h.active.dec();
    out
}

/// OpenTelemetry instruments of an `SdkMeterProvider` whose reader is the
/// Prometheus pull exporter, with their attribute sets built once.
struct OtelInstruments {
    calls: opentelemetry::metrics::Counter<u64>,
    duration: opentelemetry::metrics::Histogram<f64>,
    active: opentelemetry::metrics::UpDownCounter<i64>,
    success: [KeyValue; 2],
    failure: [KeyValue; 2],
    chain: [KeyValue; 1],
    registry: Registry,
    _provider: SdkMeterProvider,
}

impl OtelInstruments {
    fn new() -> Self {
        let registry = Registry::new();
        let exporter = opentelemetry_prometheus::exporter()
            .with_registry(registry.clone())
            .build()
            .expect("OpenTelemetry Prometheus exporter");
        let provider = SdkMeterProvider::builder().with_reader(exporter).build();
        let meter = provider.meter("track_overhead");
        OtelInstruments {
            calls: meter
                .u64_counter("otel_builds")
                .with_description("Builds by status and chain.")
                .build(),
            duration: meter
                .f64_histogram("otel_build_duration")
                .with_description("Build duration.")
                .with_unit("s")
                .with_boundaries(BUCKETS.to_vec())
                .build(),
            active: meter
                .i64_up_down_counter("otel_active_builds")
                .with_description("Builds in flight.")
                .build(),
            success: [
                KeyValue::new("status", "success"),
                KeyValue::new("chain", "ethereum"),
            ],
            failure: [
                KeyValue::new("status", "failure"),
                KeyValue::new("chain", "ethereum"),
            ],
            chain: [KeyValue::new("chain", "ethereum")],
            registry,
            _provider: provider,
        }
    }
}

#[inline(never)]
fn otel_sdk(o: &OtelInstruments, x: u64) -> Result<u64, Error> {
    let start = Instant::now();
    o.active.add(1, &o.chain);
    let out: Result<u64, Error> = Ok(black_box(x).wrapping_mul(3));
    match out {
        Ok(_) => o.calls.add(1, &o.success),
        Err(_) => o.calls.add(1, &o.failure),
    }
    o.duration.record(start.elapsed().as_secs_f64(), &o.chain);
    o.active.add(-1, &o.chain);
    out
}

/// The value of the sample `series` (name and labels exactly as exported)
/// in a text exposition, if there is one.
fn sample(exposition: &str, series: &str) -> Option<f64> {
    exposition
        .lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|value| value.split(' ').next()?.parse().ok())
}

// ---------------------------------------------------------------------------
// Set-up and the criterion group.
// ---------------------------------------------------------------------------

/// An SDK span exporter that drops what it is given.
#[derive(Debug)]
struct Discard;

impl opentelemetry_sdk::trace::SpanExporter for Discard {
    async fn export(
        &self,
        batch: Vec<opentelemetry_sdk::trace::SpanData>,
    ) -> opentelemetry_sdk::error::OTelSdkResult {
        black_box(batch);
        Ok(())
    }
}

#[inline(never)]
fn otel_sdk_span(tracer: &SdkTracer, x: u64) -> Result<u64, Error> {
    let mut span = tracer.start("build");
    span.set_attribute(KeyValue::new("chain", "ethereum"));
    let out: Result<u64, Error> = Ok(black_box(x).wrapping_mul(3));
    span.end();
    out
}

/// A local OTLP receiver that answers 200 to everything, on a runtime of
/// its own, and the exporter's configuration for it.
struct Receiver {
    _runtime: tokio::runtime::Runtime,
    config: hyperkit_obs::trace::OtlpConfig,
}

impl Receiver {
    fn new() -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a runtime");
        let addr = runtime.block_on(async {
            let app = axum::Router::new().route(
                "/v1/traces",
                axum::routing::post(|body: axum::body::Bytes| async move {
                    black_box(body.len());
                    ""
                }),
            );
            let server = hyperkit_obs::http::serve_router("127.0.0.1:0".parse().unwrap(), app)
                .await
                .expect("the receiver binds");
            let addr = server.local_addr();
            std::mem::forget(server);
            addr
        });
        let mut config = hyperkit_obs::trace::OtlpConfig::new(format!("http://{addr}/v1/traces"));
        config.max_queue = (CALLS / 10 * 2) as usize;
        Receiver {
            _runtime: runtime,
            config,
        }
    }
}

struct Fixture {
    best: BestHandles,
    tsc: quanta::Clock,
    seed: SeedMetrics,
    metrics: PrometheusHandle,
    metrics_handles: MetricsHandles,
    client: ClientFamilies,
    client_handles: ClientHandles,
    otel: OtelInstruments,
    tracer: SdkTracer,
    _tracer_provider: SdkTracerProvider,
    receiver: Receiver,
}

impl Fixture {
    fn new() -> Self {
        // autometrics records into a private registry of its own.
        autometrics::settings::AutometricsSettings::builder()
            .prometheus_registry(Registry::new())
            .init();
        let metrics = install_metrics_recorder();
        let tracer_provider = SdkTracerProvider::builder()
            .with_batch_exporter(Discard)
            .build();
        Fixture {
            tracer: tracer_provider.tracer("bench"),
            _tracer_provider: tracer_provider,
            receiver: Receiver::new(),
            best: BestHandles::new(),
            tsc: quanta::Clock::new(),
            seed: SeedMetrics::new(),
            metrics,
            metrics_handles: MetricsHandles::new(),
            client: ClientFamilies::new("client_call"),
            client_handles: ClientHandles::new(),
            otel: OtelInstruments::new(),
        }
    }

    /// Calls every variant once and checks that each instrumented one
    /// recorded, so the bench cannot silently measure a no-op.
    fn check(&self) {
        let chain = "ethereum";
        assert_eq!(baseline(2).ok(), Some(6));
        assert_eq!(hand_best(&self.best, 2).ok(), Some(6));
        assert_eq!(hand_tsc(&self.best, &self.tsc, 2).ok(), Some(6));
        assert_eq!(hand_seed_style(&self.seed, chain, 2).ok(), Some(6));
        assert_eq!(track_build_literal(2).ok(), Some(6));
        assert_eq!(track_build_enum(Chain::Ethereum, 2).ok(), Some(6));
        assert_eq!(track_build_enum(Chain::Solana, 2).ok(), Some(6));
        assert_eq!(track_build_str(chain, 2).ok(), Some(6));
        assert_eq!(track_domain_literal(2).ok(), Some(6));
        assert_eq!(track_domain_enum(Env::Production, 2).ok(), Some(6));
        assert_eq!(autometrics_fn(2).ok(), Some(6));
        assert_eq!(metrics_per_call(2).ok(), Some(6));
        assert_eq!(metrics_handles(&self.metrics_handles, 2).ok(), Some(6));
        assert_eq!(prom_client_per_call(&self.client, 2).ok(), Some(6));
        assert_eq!(prom_client_handles(&self.client_handles, 2).ok(), Some(6));
        assert_eq!(otel_sdk(&self.otel, 2).ok(), Some(6));
        assert_eq!(otel_sdk_span(&self.tracer, 2).ok(), Some(6));
        // With trace context on, the same function's calls carry ids and
        // reach the exporter.
        let exported = {
            use hyperkit_obs::trace;
            trace::enable();
            trace::set_sampler(trace::Sampler::AlwaysOn);
            let sink = trace::otlp_start(&self.receiver.config, "bench", &[]).expect("a sink");
            assert_eq!(track_build_literal(2).ok(), Some(6));
            assert!(sink.flush(Duration::from_secs(10)));
            let status = sink.status().expect("a status");
            trace::disable();
            status
        };
        assert!(exported.delivered >= 1, "{exported:?}");

        assert!(self.best.success.get() >= 1);
        assert!(self.seed.calls.with_label_values(&["success", chain]).get() >= 1);
        let families = hyperkit_obs::registry().gather();
        let builds = families
            .iter()
            .find(|f| f.name() == "hyperkit_builds_total")
            .expect("track_build registered hyperkit_builds_total");
        let successes: f64 = builds
            .get_metric()
            .iter()
            .filter(|m| m.get_label().iter().any(|l| l.value() == "success"))
            .map(|m| m.get_counter().get_value())
            .sum();
        assert!(successes >= 4.0, "track_build recorded {successes} calls");
        let deploys = families
            .iter()
            .find(|f| f.name() == "bench_deploy_calls_total")
            .expect("track(Deploy) registered bench_deploy_calls_total");
        let deployed: f64 = deploys
            .get_metric()
            .iter()
            .map(|m| m.get_counter().get_value())
            .sum();
        assert!(deployed >= 2.0, "track(Deploy) recorded {deployed} calls");

        // Each peer read back through its own exporter, as a scrape would.
        let rendered = self.metrics.render();
        for prefix in ["metrics_call", "metrics_handle"] {
            let series = format!("{prefix}_builds_total{{status=\"success\",chain=\"ethereum\"}}");
            let calls = sample(&rendered, &series);
            assert!(calls >= Some(1.0), "{series}: {calls:?} in\n{rendered}");
            let series = format!("{prefix}_build_duration_seconds_count{{chain=\"ethereum\"}}");
            let timed = sample(&rendered, &series);
            assert!(timed >= Some(1.0), "{series}: {timed:?} in\n{rendered}");
        }
        for client in [&self.client, &self.client_handles.families] {
            let text = client.exposition();
            let calls = text.lines().find(|l| {
                l.contains("_builds_total{status=\"success\",chain=\"ethereum\"}")
                    && l.ends_with(" 1")
            });
            assert!(calls.is_some(), "one success recorded in\n{text}");
        }
        let otel = self.otel.registry.gather();
        let builds = otel
            .iter()
            .find(|f| f.name() == "otel_builds_total")
            .unwrap_or_else(|| panic!("otel_builds_total exported, not {otel:?}"));
        let successes: f64 = builds
            .get_metric()
            .iter()
            .filter(|m| m.get_label().iter().any(|l| l.value() == "success"))
            .map(|m| m.get_counter().get_value())
            .sum();
        assert!(
            successes >= 1.0,
            "the OpenTelemetry SDK recorded {successes} calls"
        );
    }
}

fn bench_group(c: &mut Criterion, fx: &Fixture) {
    let mut group = c.benchmark_group("track_overhead");
    group
        .warm_up_time(Duration::from_millis(800))
        .measurement_time(Duration::from_secs(3))
        .sample_size(50);
    group.bench_function("baseline", |b| b.iter(|| baseline(black_box(7))));
    group.bench_function("hand_best", |b| {
        b.iter(|| hand_best(&fx.best, black_box(7)))
    });
    group.bench_function("hand_tsc", |b| {
        b.iter(|| hand_tsc(&fx.best, &fx.tsc, black_box(7)))
    });
    group.bench_function("hand_seed_style", |b| {
        b.iter(|| hand_seed_style(&fx.seed, black_box("ethereum"), black_box(7)))
    });
    group.bench_function("track_build_literal", |b| {
        b.iter(|| track_build_literal(black_box(7)))
    });
    group.bench_function("track_build_enum", |b| {
        b.iter(|| track_build_enum(black_box(Chain::Ethereum), black_box(7)))
    });
    group.bench_function("track_build_str", |b| {
        b.iter(|| track_build_str(black_box("ethereum"), black_box(7)))
    });
    group.bench_function("track_domain_literal", |b| {
        b.iter(|| track_domain_literal(black_box(7)))
    });
    group.bench_function("track_domain_enum", |b| {
        b.iter(|| track_domain_enum(black_box(Env::Staging), black_box(7)))
    });
    group.bench_function("autometrics", |b| b.iter(|| autometrics_fn(black_box(7))));
    group.bench_function("metrics_per_call", |b| {
        b.iter(|| metrics_per_call(black_box(7)))
    });
    group.bench_function("metrics_handles", |b| {
        b.iter(|| metrics_handles(&fx.metrics_handles, black_box(7)))
    });
    group.bench_function("prom_client_per_call", |b| {
        b.iter(|| prom_client_per_call(&fx.client, black_box(7)))
    });
    group.bench_function("prom_client_handles", |b| {
        b.iter(|| prom_client_handles(&fx.client_handles, black_box(7)))
    });
    group.bench_function("otel_sdk", |b| b.iter(|| otel_sdk(&fx.otel, black_box(7))));
    group.bench_function("otel_sdk_span", |b| {
        b.iter(|| otel_sdk_span(&fx.tracer, black_box(7)))
    });
    {
        use hyperkit_obs::trace;
        trace::enable();
        trace::set_sampler(trace::Sampler::AlwaysOff);
        group.bench_function("traced_unsampled", |b| {
            b.iter(|| track_build_literal(black_box(7)))
        });
        trace::set_sampler(trace::Sampler::AlwaysOn);
        group.bench_function("traced_sampled", |b| {
            b.iter(|| track_build_literal(black_box(7)))
        });
        trace::disable();
    }
    group.finish();
}

// ---------------------------------------------------------------------------
// In-process timing and the ratio table.
// ---------------------------------------------------------------------------

const VARIANTS: [&str; 19] = [
    "baseline",
    "hand_best",
    "hand_tsc",
    "hand_seed_style",
    "track_build_literal",
    "track_build_enum",
    "track_build_str",
    "track_domain_literal",
    "track_domain_enum",
    "autometrics",
    "metrics_per_call",
    "metrics_handles",
    "prom_client_per_call",
    "prom_client_handles",
    "otel_sdk",
    "traced_unsampled",
    "traced_sampled",
    "traced_exported",
    "otel_sdk_span",
];
const BASELINE: usize = 0;
const HAND_BEST: usize = 1;
const HAND_TSC: usize = 2;
const HAND_SEED: usize = 3;
const LITERAL: usize = 4;
const ENUM: usize = 5;
const STR: usize = 6;
const DOMAIN_LITERAL: usize = 7;
const DOMAIN_ENUM: usize = 8;
const AUTOMETRICS: usize = 9;
const METRICS_PER_CALL: usize = 10;
const METRICS_HANDLES: usize = 11;
const CLIENT_PER_CALL: usize = 12;
const CLIENT_HANDLES: usize = 13;
const OTEL: usize = 14;
const TRACED_UNSAMPLED: usize = 15;
const TRACED_SAMPLED: usize = 16;
const TRACED_EXPORTED: usize = 17;
const OTEL_SPAN: usize = 18;

/// Calls per timed round: short enough that many rounds run without being
/// preempted on a loaded machine, long enough to time with `Instant`.
const CALLS: u64 = 20_000;
/// Timed rounds per variant; the table reports the least round (and the
/// median).
const ROUNDS: usize = 300;

/// Mean ns per call of `f` over `n` calls.
#[inline(never)]
fn per_call_ns(mut f: impl FnMut(u64) -> Result<u64, Error>, n: u64) -> f64 {
    let start = Instant::now();
    for i in 0..n {
        let _ = black_box(f(black_box(i)));
    }
    start.elapsed().as_nanos() as f64 / n as f64
}

/// Mean ns per call of variant `v` (an index of `VARIANTS`) over `n` calls
/// (a tenth of them for the two variants that export spans).
fn run(fx: &Fixture, v: usize, n: u64) -> f64 {
    use hyperkit_obs::trace;
    let chain = black_box("ethereum");
    let enum_chain = black_box(Chain::Ethereum);
    let env = black_box(Env::Staging);
    let traced = |sampler| {
        trace::enable();
        trace::set_sampler(sampler);
        let ns = per_call_ns(track_build_literal, n);
        trace::disable();
        ns
    };
    match v {
        BASELINE => per_call_ns(baseline, n),
        HAND_BEST => per_call_ns(|x| hand_best(&fx.best, x), n),
        HAND_TSC => per_call_ns(|x| hand_tsc(&fx.best, &fx.tsc, x), n),
        HAND_SEED => per_call_ns(|x| hand_seed_style(&fx.seed, chain, x), n),
        LITERAL => per_call_ns(track_build_literal, n),
        ENUM => per_call_ns(|x| track_build_enum(enum_chain, x), n),
        STR => per_call_ns(|x| track_build_str(chain, x), n),
        DOMAIN_LITERAL => per_call_ns(track_domain_literal, n),
        DOMAIN_ENUM => per_call_ns(|x| track_domain_enum(env, x), n),
        AUTOMETRICS => per_call_ns(autometrics_fn, n),
        METRICS_PER_CALL => per_call_ns(metrics_per_call, n),
        METRICS_HANDLES => per_call_ns(|x| metrics_handles(&fx.metrics_handles, x), n),
        CLIENT_PER_CALL => per_call_ns(|x| prom_client_per_call(&fx.client, x), n),
        CLIENT_HANDLES => per_call_ns(|x| prom_client_handles(&fx.client_handles, x), n),
        OTEL => per_call_ns(|x| otel_sdk(&fx.otel, x), n),
        TRACED_UNSAMPLED => traced(trace::Sampler::AlwaysOff),
        TRACED_SAMPLED => traced(trace::Sampler::AlwaysOn),
        TRACED_EXPORTED => {
            trace::enable();
            trace::set_sampler(trace::Sampler::AlwaysOn);
            let sink = trace::otlp_start(&fx.receiver.config, "bench", &[]).expect("a sink");
            let ns = per_call_ns(track_build_literal, n / 10);
            trace::disable();
            // What the round queued is sent before the next round starts.
            assert!(sink.flush(Duration::from_secs(60)), "{:?}", sink.status());
            let status = sink.status().expect("a status");
            assert_eq!(status.dropped, 0, "{status:?}");
            ns
        }
        OTEL_SPAN => per_call_ns(|x| otel_sdk_span(&fx.tracer, x), n / 10),
        _ => unreachable!("{v} is not a variant"),
    }
}

/// One round of every variant, `n` calls each, in table order.
fn round(fx: &Fixture, n: u64) -> [f64; 19] {
    std::array::from_fn(|v| run(fx, v, n))
}

/// `TRACK_OVERHEAD_ONLY=hand_tsc,track_build_literal,…`: times only the
/// variants named (interleaved, `TRACK_OVERHEAD_ROUNDS` rounds of `CALLS`
/// calls, 400 unless set) and prints each one's least and median round and
/// its ratio to the first one named, without criterion or the full table.
/// A quick, stable figure for an experiment on the call path (about a
/// minute for a few variants).
fn quick(fx: &Fixture, only: &str) {
    let chosen: Vec<usize> = only
        .split(',')
        .map(str::trim)
        .filter(|name| !name.is_empty())
        .map(|name| {
            VARIANTS
                .iter()
                .position(|v| *v == name)
                .unwrap_or_else(|| panic!("{name} is not a variant: {VARIANTS:?}"))
        })
        .collect();
    assert!(!chosen.is_empty(), "TRACK_OVERHEAD_ONLY names no variant");
    let rounds: usize = std::env::var("TRACK_OVERHEAD_ROUNDS")
        .ok()
        .map_or(400, |r| {
            r.parse().expect("TRACK_OVERHEAD_ROUNDS is a number")
        });
    for &v in &chosen {
        run(fx, v, CALLS / 10);
    }
    let mut samples: Vec<Vec<f64>> = vec![Vec::with_capacity(rounds); chosen.len()];
    for _ in 0..rounds {
        for (s, &v) in samples.iter_mut().zip(&chosen) {
            s.push(run(fx, v, CALLS));
        }
    }
    let least: Vec<f64> = samples
        .iter()
        .map(|s| s.iter().copied().fold(f64::INFINITY, f64::min))
        .collect();
    println!("least and median ns/call of {rounds} rounds x {CALLS} calls");
    for (i, &v) in chosen.iter().enumerate() {
        println!(
            "{:<21} {:>9.2} {:>9.2} {:>8.3}x",
            VARIANTS[v],
            least[i],
            median(samples[i].clone()),
            least[i] / least[0],
        );
    }
}

fn ratio_table(fx: &Fixture, started: SystemTime) {
    eprintln!("\nin-process timing: {ROUNDS} interleaved rounds of {CALLS} calls per variant ...");
    // Warm-up: fills every call site's handle cache and the caches.
    round(fx, CALLS / 10);
    let mut samples: Vec<Vec<f64>> = vec![Vec::with_capacity(ROUNDS); VARIANTS.len()];
    for _ in 0..ROUNDS {
        for (s, ns) in samples.iter_mut().zip(round(fx, CALLS)) {
            s.push(ns);
        }
    }
    let medians: Vec<f64> = samples.iter().cloned().map(median).collect();
    let least: Vec<f64> = samples
        .iter()
        .map(|s| s.iter().copied().fold(f64::INFINITY, f64::min))
        .collect();

    println!();
    println!(
        "track_overhead: least ns/call of {ROUNDS} rounds x {CALLS} calls (no tracing subscriber installed)"
    );
    println!(
        "{:<21} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>10} {:>10}",
        "variant",
        "ns/call",
        "median",
        "/base",
        "/best",
        "/seed",
        "/autom",
        "overhead",
        "criterion"
    );
    for (i, name) in VARIANTS.iter().enumerate() {
        let crit = criterion_median("track_overhead", name, started)
            .map_or_else(|| "-".to_owned(), |ns| format!("{ns:.2}"));
        println!(
            "{:<21} {:>9.2} {:>9.2} {:>8.2}x {:>8.2}x {:>8.2}x {:>8.2}x {:>10.2} {:>10}",
            name,
            least[i],
            medians[i],
            least[i] / least[BASELINE],
            least[i] / least[HAND_BEST],
            least[i] / least[HAND_SEED],
            least[i] / least[AUTOMETRICS],
            least[i] - least[BASELINE],
            crit,
        );
    }
    println!(
        "(ns/call = the least round; median = the median round; ratios and overhead from the least; criterion = criterion's median estimate, ns)"
    );

    println!();
    println!("targets:");
    let target = |what: &str, variant: usize, against: usize, max: f64| {
        let ratio = least[variant] / least[against];
        println!(
            "  {:<4} {:<60} {:>5.2}x  (target <= {max}x)",
            if ratio <= max { "PASS" } else { "MISS" },
            format!("{what}: {} / {}", VARIANTS[variant], VARIANTS[against]),
            ratio,
        );
    };
    let tracked = [
        ("literal", LITERAL),
        ("enum", ENUM),
        ("&str", STR),
        ("domain literal", DOMAIN_LITERAL),
        ("domain enum", DOMAIN_ENUM),
    ];
    for (what, v) in tracked {
        target(what, v, HAND_BEST, 0.5);
    }
    for (what, v) in tracked {
        target(what, v, HAND_TSC, 1.0);
    }
    for (what, v) in tracked {
        target(what, v, AUTOMETRICS, 0.5);
    }
    target("domain literal", DOMAIN_LITERAL, LITERAL, 1.05);
    target("domain enum", DOMAIN_ENUM, ENUM, 1.05);
    // The peers: half the cost of each one's per-call form, no more than the
    // cost of its handles resolved once (the SDK's only form counts as that).
    for peer in [METRICS_PER_CALL, CLIENT_PER_CALL] {
        for (what, v) in tracked {
            target(what, v, peer, 0.5);
        }
    }
    for peer in [METRICS_HANDLES, CLIENT_HANDLES, OTEL] {
        for (what, v) in tracked {
            target(what, v, peer, 1.0);
        }
    }
    // Trace context (issue 15): the same function, in the same run.
    let more = |what: &str, variant: usize, max_ns: f64| {
        let extra = least[variant] - least[LITERAL];
        println!(
            "  {:<4} {:<60} {:>+6.1} ns  (target <= +{max_ns} ns)",
            if extra <= max_ns { "PASS" } else { "MISS" },
            format!("{what}: {} - {}", VARIANTS[variant], VARIANTS[LITERAL]),
            extra,
        );
    };
    more("unsampled", TRACED_UNSAMPLED, 10.0);
    more("sampled, no sink", TRACED_SAMPLED, 1000.0);
    more("sampled, exported over OTLP", TRACED_EXPORTED, 1000.0);
    println!(
        "  the SDK's span for comparison: {} - {} = {:+.1} ns",
        VARIANTS[OTEL_SPAN],
        VARIANTS[BASELINE],
        least[OTEL_SPAN] - least[BASELINE]
    );
}

fn main() {
    // No tracing subscriber is installed anywhere in this binary, on purpose:
    // with none, tracing's max level is OFF and every span and event of the
    // tracked functions is disabled by level, as in a service that logs at a
    // level above the tracked calls' events.
    let started = SystemTime::now();
    let fx = Fixture::new();
    fx.check();
    if let Ok(only) = std::env::var("TRACK_OVERHEAD_ONLY") {
        quick(&fx, &only);
        return;
    }

    let mut criterion = Criterion::default().configure_from_args();
    bench_group(&mut criterion, &fx);
    criterion.final_summary();

    // `cargo bench` passes `--bench`; `cargo test --benches` does not, and
    // only wants to know the benchmarks run. Profiling (`--profile-time`) and
    // listing want the criterion part alone.
    let args: Vec<String> = std::env::args().collect();
    let has = |flag: &str| {
        args.iter()
            .any(|a| a == flag || a.starts_with(&format!("{flag}=")))
    };
    if has("--bench") && !has("--profile-time") && !has("--list") {
        ratio_table(&fx, started);
    }
}
