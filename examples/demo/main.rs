//! The main job: a simulated build farm that also calls AI models and a
//! database, instrumented only by hyperkit-obs attributes.
//!
//! Runs until Ctrl-C or SIGTERM (or `HYPERKIT_DEMO_DURATION` seconds), then
//! cancels what is in flight, flushes every sink and exits 0.
//!
//! Environment (all optional):
//! - `HYPERKIT_DEMO_SPEED`: time compression, e.g. `10` runs ten times
//!   faster than real latencies (default 1).
//! - `HYPERKIT_DEMO_FAILURE_RATE`: share of builds that fail, 0 to 1
//!   (default 0.1).
//! - `HYPERKIT_DEMO_DURATION`: stop after this many seconds.
//! - everything `hyperkit_obs::init()` reads (`HYPERKIT_*`, `RUST_LOG`);
//!   the models are priced from `prices.toml` unless `HYPERKIT_MODEL_PRICES`
//!   names another table,
//!   `HYPERKIT_METRICS_ADDR` (default 127.0.0.1:9464) among them.
//!
//! - `HYPERKIT_DEMO_AGENT_ADDR`: where the agent listens (default
//!   127.0.0.1:0, a free port, printed at start).
//!
//! It runs as two services calling each other over HTTP (see `services`):
//! an API, which receives builds, and an agent, which runs them and calls
//! the models; one trace follows each build through both. The API's port
//! serves the status page at `/`, `/metrics`, `/health/live`,
//! `/health/ready` and the API (`POST /api/chains/{chain}/builds`,
//! `/api/builds/{id}`, `/api/status`); the agent's port takes
//! `POST /builds/{chain}/{id}`. Both are measured by the RED layer.
//!
//! On a terminal it keeps a live summary at the bottom of the screen (see
//! `screen`), read from the metrics registry (see `summary`), and prints
//! only WARN and ERROR log lines above it unless `RUST_LOG` is set; every
//! event still goes to the local log store. Anywhere else (piped, or
//! `TERM=dumb`) it prints a summary line every 5 s.

mod screen;
mod services;
mod summary;

use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use axum::Router;
use axum::routing::get;
use futures_util::StreamExt as _;
use futures_util::stream::BoxStream;
use hyperkit_obs::logs::HumanDuration;
use hyperkit_obs::model::{Usage, current_call_id, record_score};
use hyperkit_obs::{
    Domain, LabelValue, ModelChunk, ModelOutput, track, track_build, track_model, track_query,
};
use summary::Style;
use tokio::task::JoinSet;
use tracing::Instrument as _;

#[derive(Clone, Copy, Debug, LabelValue)]
enum Chain {
    Ethereum,
    Solana,
    Polygon,
    Arbitrum,
    #[label = "bsc"]
    BnbSmart,
}

const CHAINS: [Chain; 5] = [
    Chain::Ethereum,
    Chain::Solana,
    Chain::Polygon,
    Chain::Arbitrum,
    Chain::BnbSmart,
];

/// Where a built artifact is deployed.
#[derive(Clone, Copy, Debug, LabelValue)]
enum Env {
    Staging,
    Production,
}

/// Deployments of built artifacts: the demo's own tracked domain, beside
/// the built-in builds, model calls and queries.
#[derive(Domain)]
#[domain(prefix = "demo_deploy", buckets = [1.0, 2.5, 5.0, 10.0, 20.0, 40.0])]
struct Deploy {
    env: Env,
    region: String,
}

const REGIONS: [&str; 3] = ["eu-west-1", "us-east-2", "ap-south-1"];

/// (model, mean latency s, acceptance rate, failure rate)
const MODELS: [(&str, f64, f64, f64); 3] = [
    ("gpt-4o", 2.5, 0.78, 0.03),
    ("claude-sonnet", 3.0, 0.84, 0.02),
    ("llama-3-70b", 1.2, 0.61, 0.06),
];

#[derive(Debug)]
struct BuildError(String);

impl std::fmt::Display for BuildError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BuildError {}

struct Settings {
    speed: f64,
    failure_rate: f64,
}

/// A small xorshift generator: the demo needs variety, not cryptography.
struct Rng(u64);

impl Rng {
    fn new(salt: u64) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64);
        Rng((nanos ^ salt.wrapping_mul(0x9E37_79B9_7F4A_7C15)) | 1)
    }
    fn next(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[(self.next() * items.len() as f64) as usize % items.len()]
    }
    /// Log-normal-ish around `mean`, bounded to [mean/4, mean*4].
    fn around(&mut self, mean: f64) -> f64 {
        let spread = (self.next() + self.next() + self.next()) / 3.0 * 2.0 - 1.0;
        mean * (spread * 1.4).exp()
    }
}

async fn pause(settings: &Settings, seconds: f64) {
    tokio::time::sleep(Duration::from_secs_f64((seconds / settings.speed).max(0.0))).await;
}

#[track_build(chain)]
async fn build(chain: Chain, settings: Arc<Settings>, seed: u64) -> Result<u64, BuildError> {
    let mut rng = Rng::new(seed);
    let fail = rng.next() < settings.failure_rate;
    let seconds = rng.around(45.0).clamp(8.0, 200.0);
    // A build reads its queue entry, compiles, and records its artifact.
    select_queue_entry(&settings, &mut rng).await?;
    // The agent asks a model for the build's code; when the call fails the
    // build goes on with the code it had.
    let (model, ..) = rng.pick(&MODELS);
    let _ = complete(model, "codegen", settings.clone(), seed ^ 0x5eed).await;
    pause(&settings, if fail { seconds * 0.4 } else { seconds }).await;
    if fail {
        let reason = rng.pick(&[
            "out of gas during deployment",
            "linker error",
            "test suite failed",
        ]);
        return Err(BuildError(format!("{chain:?}: {reason}")));
    }
    insert_artifact(&settings, &mut rng).await?;
    // Every artifact goes to staging; one in three goes on to production.
    let region = rng.pick(&REGIONS);
    deploy(Env::Staging, region, &settings, &mut rng).await?;
    if rng.next() < 0.33 {
        deploy(Env::Production, region, &settings, &mut rng).await?;
    }
    Ok((rng.next() * 4_000_000.0) as u64)
}

#[track(Deploy, env, region)]
async fn deploy(
    env: Env,
    region: &str,
    settings: &Settings,
    rng: &mut Rng,
) -> Result<(), BuildError> {
    pause(settings, rng.around(6.0).clamp(1.0, 60.0)).await;
    if rng.next() < settings.failure_rate / 4.0 {
        return Err(BuildError(format!("{env:?} {region}: health check failed")));
    }
    Ok(())
}

#[track_query(operation = "select_queue_entry", db = "postgres", level = "debug")]
async fn select_queue_entry(settings: &Settings, rng: &mut Rng) -> Result<(), BuildError> {
    let seconds = rng.around(0.004);
    pause(settings, seconds).await;
    if rng.next() < 0.005 {
        return Err(BuildError("deadlock detected".to_owned()));
    }
    Ok(())
}

#[track_query(operation = "insert_artifact", db = "postgres", level = "debug")]
async fn insert_artifact(settings: &Settings, rng: &mut Rng) -> Result<(), BuildError> {
    let seconds = rng.around(0.012);
    pause(settings, seconds).await;
    Ok(())
}

struct Completion {
    prompt_tokens: u64,
    /// The part of the prompt the provider had cached.
    cached_tokens: u64,
    completion_tokens: u64,
    accepted: bool,
}

impl ModelOutput for Completion {
    fn input_tokens(&self) -> Option<u64> {
        Some(self.prompt_tokens)
    }
    fn output_tokens(&self) -> Option<u64> {
        Some(self.completion_tokens)
    }
    fn cached_input_tokens(&self) -> Option<u64> {
        Some(self.cached_tokens)
    }
    fn accepted(&self) -> Option<bool> {
        Some(self.accepted)
    }
}

/// Who serves each model (the `provider` of its calls: spans, MLflow runs,
/// `hyperkit-obs mlflow compare`).
fn provider_of(model: &str) -> &'static str {
    match model {
        "gpt-4o" => "openai",
        "claude-sonnet" => "anthropic",
        _ => "self-hosted",
    }
}

#[track_model(model, task, provider = provider_of(model))]
async fn complete(
    model: &'static str,
    task: &'static str,
    settings: Arc<Settings>,
    seed: u64,
) -> Result<Completion, BuildError> {
    let mut rng = Rng::new(seed);
    let (_, latency, acceptance, failure) = MODELS
        .iter()
        .find(|m| m.0 == model)
        .copied()
        .unwrap_or(MODELS[0]);
    pause(&settings, rng.around(latency).clamp(0.1, 60.0)).await;
    if rng.next() < failure {
        return Err(BuildError(format!("{model}: 429 rate limited")));
    }
    let prompt_tokens = (rng.around(900.0)) as u64;
    let accepted = rng.next() < acceptance;
    // A judge's grade of the answer, in [0, 1]: higher for accepted ones.
    let judge = (if accepted { 0.75 } else { 0.4 } + (rng.next() - 0.5) * 0.4).clamp(0.0, 1.0);
    if let Some(id) = current_call_id() {
        let _ = record_score(id, "judge", judge);
    }
    Ok(Completion {
        prompt_tokens,
        cached_tokens: prompt_tokens / 3,
        completion_tokens: (rng.around(250.0)) as u64,
        accepted,
    })
}

/// A piece of a streamed answer: its tokens, and on the last piece the
/// provider's own usage (as OpenAI's `include_usage` chunk carries it).
struct Chunk {
    tokens: u64,
    usage: Option<Usage>,
}

impl ModelChunk for Chunk {
    fn output_tokens(&self) -> Option<u64> {
        Some(self.tokens)
    }
    fn final_usage(&self) -> Option<Usage> {
        self.usage
    }
}

/// A chat answer streamed by a simulated provider: the first piece after
/// a fifth of the model's latency (the time to first token), the others
/// about 40 ms apart; some streams break midway.
#[track_model(model, task = "chat", provider = provider_of(model))]
fn chat(
    model: &'static str,
    settings: Arc<Settings>,
    seed: u64,
) -> BoxStream<'static, Result<Chunk, BuildError>> {
    let mut rng = Rng::new(seed);
    let (_, latency, _, failure) = MODELS
        .iter()
        .find(|m| m.0 == model)
        .copied()
        .unwrap_or(MODELS[0]);
    let first = rng.around(latency / 5.0).clamp(0.05, 20.0);
    let pieces = 4 + (rng.next() * 12.0) as u64;
    let breaks_at = (rng.next() < failure).then(|| (rng.next() * pieces as f64) as u64);
    let prompt_tokens = rng.around(600.0) as u64;
    let stream = futures_util::stream::unfold((0, rng), move |(i, mut rng)| {
        let settings = settings.clone();
        async move {
            if i > pieces {
                return None;
            }
            let wait = if i == 0 { first } else { rng.around(0.04) };
            pause(&settings, wait).await;
            if breaks_at == Some(i) {
                let reset = BuildError(format!("{model}: stream reset by peer"));
                return Some((Err(reset), (pieces + 1, rng)));
            }
            let last = i == pieces;
            let chunk = Chunk {
                tokens: if last { 0 } else { rng.around(20.0) as u64 },
                usage: last.then_some(Usage {
                    input_tokens: Some(prompt_tokens),
                    cached_input_tokens: Some(prompt_tokens / 4),
                    ..Usage::default()
                }),
            };
            Some((Ok(chunk), (i + 1, rng)))
        }
    });
    Box::pin(stream)
}

fn env_addr(name: &str, default: &str) -> anyhow::Result<std::net::SocketAddr> {
    let value = std::env::var(name)
        .ok()
        .filter(|v| !v.trim().is_empty())
        .unwrap_or_else(|| default.to_owned());
    value
        .trim()
        .parse()
        .with_context(|| format!("{name}={value:?} is not an address (host:port)"))
}

fn env_f64(name: &str, default: f64, valid: impl Fn(f64) -> bool) -> anyhow::Result<f64> {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => {
            let x: f64 = v
                .trim()
                .parse()
                .with_context(|| format!("{name}={v:?} is not a number"))?;
            anyhow::ensure!(valid(x), "{name}={v:?} is out of range");
            Ok(x)
        }
        _ => Ok(default),
    }
}

/// The operations of the tracked queries above, shown in the summary
/// before their first call.
const OPERATIONS: [&str; 2] = ["select_queue_entry", "insert_artifact"];

/// How often the live area is redrawn.
const FRAME_EVERY: Duration = Duration::from_millis(500);

/// How often a summary line is printed when there is no live area.
const LINE_EVERY: Duration = Duration::from_secs(5);

/// The sinks this process runs, whose drops the summary shows.
fn running_sinks(obs: &hyperkit_obs::ObsGuard) -> Vec<&'static str> {
    let mut sinks = Vec::new();
    if obs.log_store_enabled() {
        sinks.push("logstore");
    }
    sinks.extend(obs.log_shippers().iter().map(|s| s.sink));
    if obs.mlflow_enabled() {
        sinks.push("mlflow");
    }
    if obs.sentry_enabled() {
        sinks.push("sentry");
    }
    sinks
}

/// The command that follows every event as it is stored.
fn follow_command(obs: &hyperkit_obs::ObsGuard) -> String {
    if !obs.log_store_enabled() {
        return "the local log store is off (HYPERKIT_LOG_STORE=false)".to_owned();
    }
    let data_dir = &obs.config().data_dir;
    let env = if *data_dir == hyperkit_obs::MonitoringConfig::default().data_dir {
        String::new()
    } else {
        format!("HYPERKIT_DATA_DIR={} ", data_dir.display())
    };
    format!(
        "{env}hyperkit-obs logs tail  (in a checkout: {env}cargo run -p hyperkit-obs -- logs tail)"
    )
}

/// What the summary shows and says around its numbers.
struct Report {
    chains: Vec<&'static str>,
    models: Vec<&'static str>,
    sinks: Vec<&'static str>,
    started: Instant,
    speed: f64,
    /// How to follow every event, or why it cannot be done.
    follow: String,
    /// Whether log lines below WARN are kept off the terminal.
    quiet: bool,
}

impl Report {
    fn summary(&self) -> summary::Summary {
        let rows = summary::Rows {
            chains: &self.chains,
            models: &self.models,
            operations: &OPERATIONS,
            sinks: &self.sinks,
        };
        summary::Summary::from_families(&hyperkit_obs::registry().gather(), &rows)
    }

    fn elapsed(&self) -> String {
        let whole = Duration::from_secs(self.started.elapsed().as_secs());
        HumanDuration(whole).to_string()
    }

    /// The one-line summary of a log file.
    fn line(&self) -> String {
        self.summary().line(self.started.elapsed())
    }

    /// The live area: a title, the tables, then the lines that must stay
    /// visible (the addresses and drops, and how to see every event), and
    /// how many these last are.
    fn live(&self, base: &str, width: usize, style: Style) -> (Vec<String>, usize) {
        let summary = self.summary();
        let title = format!(
            "hyperkit-obs demo · {} · speed {}x · Ctrl-C stops",
            self.elapsed(),
            self.speed
        );
        let mut lines = vec![rule(&title, width, style)];
        lines.extend(summary.tables(width, style));
        let mut footer = summary::pack(
            &[
                format!(
                    "{} {}",
                    style.head("status page"),
                    style.link(&format!("{base}/"))
                ),
                format!(
                    "{} {}",
                    style.head("metrics"),
                    style.link(&format!("{base}/metrics"))
                ),
                format!("{} {}", style.head("dropped"), summary.dropped(style)),
            ],
            width,
            style,
        );
        let mut follow = vec![format!("{} {}", style.head("every event"), self.follow)];
        if self.quiet {
            follow.push(style.dim("above: WARN and ERROR only (RUST_LOG=info prints all)"));
        }
        footer.extend(summary::pack(&follow, width, style));
        let keep = footer.len();
        lines.extend(footer);
        (lines, keep)
    }

    /// The summary printed once the demo stops.
    fn last(&self, width: usize, style: Style) -> Vec<String> {
        let summary = self.summary();
        let title = format!("hyperkit-obs demo: final summary after {}", self.elapsed());
        let mut lines = vec![rule(&title, width.min(summary.width(width)), style)];
        lines.extend(summary.tables(width, style));
        lines.push(format!(
            " {} {}",
            style.head("dropped"),
            summary.dropped(style)
        ));
        lines
    }
}

/// `── title ──────` across `width` columns.
fn rule(title: &str, width: usize, style: Style) -> String {
    let fill = width.saturating_sub(title.chars().count() + 4).max(2);
    format!(
        "{} {} {}",
        style.dim("──"),
        style.head(title),
        style.dim(&"─".repeat(fill))
    )
}

/// Ctrl-C or SIGTERM. The handlers are installed when this is called, not
/// when the future is first polled: `main` calls it first thing, so a signal
/// that comes while the demo starts up ends it cleanly once it is up,
/// instead of killing it on the spot.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let term = signal(SignalKind::terminate()).ok();
        let interrupt = signal(SignalKind::interrupt()).ok();
        async move {
            match (term, interrupt) {
                (Some(mut term), Some(mut interrupt)) => {
                    tokio::select! {
                        _ = term.recv() => {}
                        _ = interrupt.recv() => {}
                    }
                }
                (Some(mut term), None) => {
                    term.recv().await;
                }
                (None, Some(mut interrupt)) => {
                    interrupt.recv().await;
                }
                (None, None) => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        async {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let stop = shutdown_signal();
    let terminal = std::io::stdout().is_terminal();
    let rust_log_set = std::env::var("RUST_LOG").is_ok_and(|v| !v.trim().is_empty());
    let mut builder = hyperkit_obs::Builder::from_env()?;
    // On a terminal the live summary is the news, and INFO lines, several a
    // second, would bury it: only WARN and ERROR print unless RUST_LOG says
    // otherwise. The local store still gets every event.
    let quiet = terminal && !rust_log_set && !builder.config().logs.format.is_json(terminal);
    if quiet {
        builder = builder.text_filter("warn");
    }
    // The demo prices its models unless the environment names a table.
    if builder.config().model_prices.is_none() {
        builder = builder.model_prices(
            hyperkit_obs::model::PriceTable::from_toml(include_str!("prices.toml"))
                .context("examples/demo/prices.toml")?,
        );
    }
    let obs = builder.init()?;
    let settings = Arc::new(Settings {
        speed: env_f64("HYPERKIT_DEMO_SPEED", 1.0, |x| x > 0.0 && x <= 10_000.0)?,
        failure_rate: env_f64("HYPERKIT_DEMO_FAILURE_RATE", 0.1, |x| {
            (0.0..=1.0).contains(&x)
        })?,
    });
    let duration = env_f64("HYPERKIT_DEMO_DURATION", 0.0, |x| x >= 0.0)?;

    let started = Instant::now();
    hyperkit_obs::health::register_fn("build-queue", move || {
        Ok(format!(
            "accepting builds for {:.0} s",
            started.elapsed().as_secs_f64()
        ))
    });
    let report = Arc::new(Report {
        chains: <Chain as LabelValue>::VALUES.unwrap_or_default().to_vec(),
        models: MODELS.iter().map(|m| m.0).collect(),
        sinks: running_sinks(&obs),
        started,
        speed: settings.speed,
        follow: follow_command(&obs),
        quiet,
    });
    // The agent first: the API hands it builds; it reports to the API once
    // the API listens.
    let jobs: services::Jobs = Arc::new(Mutex::new(JoinSet::new()));
    let client = reqwest::Client::new();
    let agent = services::Agent::new(settings.clone(), jobs.clone(), client.clone());
    let agent_addr = env_addr("HYPERKIT_DEMO_AGENT_ADDR", "127.0.0.1:0")?;
    let agent_server = hyperkit_obs::http::serve_router(agent_addr, agent.clone().routes())
        .await
        .with_context(|| format!("cannot listen on HYPERKIT_DEMO_AGENT_ADDR={agent_addr}"))?;
    let agent_base = format!("http://{}", agent_server.local_addr());

    let status = report.clone();
    let app = Router::new()
        .merge(services::Api::new(agent_base.clone(), client.clone()).routes())
        .route("/api/status", get(move || async move { status.line() }))
        // The demo routes no `/` of its own: the status page takes it.
        .merge(hyperkit_obs::http::router_with(
            hyperkit_obs::http::HttpOptions::from_config(obs.config()).status_page("/"),
        ))
        .layer(hyperkit_obs::http::HttpMetricsLayer::new());
    let addr = obs.config().metrics_addr;
    let server = hyperkit_obs::http::serve_router(addr, app)
        .await
        .with_context(|| format!("cannot listen on HYPERKIT_METRICS_ADDR={addr}"))?;
    let base = format!("http://{}", server.local_addr());
    agent.report_to(base.clone());

    println!("status page: {base}/  (open it in a browser)");
    println!(
        "hyperkit-obs demo: simulated builds on {} chains, model calls and queries",
        CHAINS.len()
    );
    println!("  metrics:  {base}/metrics  (point a Prometheus scrape job here)");
    println!("  health:   {base}/health/ready");
    println!(
        "  api:      {base}/api/status, {base}/api/builds/1 (receives builds: POST {base}/api/chains/{{chain}}/builds)"
    );
    println!(
        "  agent:    {agent_base}/builds/{{chain}}/{{id}} (runs the builds the API hands it, calls the models)"
    );
    match hyperkit_obs::mlflow::status() {
        Some(s) => println!(
            "  mlflow:   model call runs go to {} (experiment {:?})",
            s.target,
            obs.config().mlflow.experiment_name
        ),
        None => println!("  mlflow:   off (HYPERKIT_MLFLOW_ENABLED=false)"),
    }
    println!("  logs:     every event: {}", report.follow);
    if quiet {
        println!("            here only WARN and ERROR print (RUST_LOG=info prints every event)");
    }
    println!(
        "  service {}; speed {}x; build failure rate {:.0}%; stop with Ctrl-C",
        obs.config().service_name,
        settings.speed,
        settings.failure_rate * 100.0
    );
    let style = Style {
        colour: hyperkit_obs::logs::colour_allowed(terminal),
    };
    // The live area on a terminal that can redraw; a line every 5 s elsewhere.
    let mut live = screen::Live::start();

    let seeds = AtomicU64::new(1);
    let mut rng = Rng::new(0);
    let mut next_build = Instant::now();
    let mut next_model = Instant::now();
    let mut next_report = match live {
        Some(_) => Instant::now(),
        None => Instant::now() + LINE_EVERY,
    };
    let deadline = (duration > 0.0).then(|| started + Duration::from_secs_f64(duration));
    tokio::pin!(stop);

    loop {
        let now = Instant::now();
        if deadline.is_some_and(|d| now >= d) {
            break;
        }
        if now >= next_build {
            let submit = services::submit_build(client.clone(), base.clone(), rng.pick(&CHAINS));
            services::lock(&jobs).spawn(submit);
            next_build = now + Duration::from_secs_f64(rng.around(6.0) / settings.speed);
        }
        if now >= next_model {
            let seed = seeds.fetch_add(1, Ordering::Relaxed);
            let (model, ..) = rng.pick(&MODELS);
            // One call in four is a streamed chat answer, read to its end.
            if rng.next() < 0.25 {
                let mut answer = chat(model, settings.clone(), seed);
                let call = async move { while answer.next().await.is_some() {} };
                services::lock(&jobs).spawn(call.instrument(services::agent_span()));
            } else {
                let task = rng.pick(&["codegen", "review", "summarize"]);
                let call = complete(model, task, settings.clone(), seed);
                let call = async move {
                    let _ = call.await;
                };
                services::lock(&jobs).spawn(call.instrument(services::agent_span()));
            }
            // With the builds' own model call (one every 6 s), model calls
            // come one every 1.5 s, as before the builds made them.
            next_model = now + Duration::from_secs_f64(rng.around(2.0) / settings.speed);
        }
        if now >= next_report {
            match &mut live {
                Some(live) => {
                    let width = live.width();
                    let (lines, keep) = report.live(&base, width, style);
                    live.draw(&lines, keep);
                    next_report = now + FRAME_EVERY;
                }
                None => {
                    println!("{}", report.line());
                    next_report = now + LINE_EVERY;
                }
            }
        }
        {
            let mut jobs = services::lock(&jobs);
            while jobs.try_join_next().is_some() {}
        }
        let wake = [next_build, next_model, next_report]
            .into_iter()
            .min()
            .unwrap_or(now);
        tokio::select! {
            _ = &mut stop => break,
            _ = tokio::time::sleep_until(wake.into()) => {}
        }
    }

    let width = match &mut live {
        Some(live) => live.width(),
        None => usize::MAX,
    };
    if let Some(mut live) = live.take() {
        live.finish();
    }
    // Whatever still arrives at the agent is dropped with its jobs.
    let mut tasks = std::mem::take(&mut *services::lock(&jobs));
    println!("stopping: cancelling {} calls in flight", tasks.len());
    tasks.shutdown().await;
    agent_server.shutdown().await;
    for line in report.last(width, style) {
        println!("{line}");
    }
    server.shutdown().await;
    drop(obs);
    println!("flushed; bye");
    Ok(())
}
