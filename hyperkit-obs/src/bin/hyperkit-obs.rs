//! `hyperkit-obs`: the command line of hyperkit-obs.
//!
//! `hyperkit-obs check` prints the effective configuration (secrets
//! redacted) and, for each sink, whether it is configured and reachable.
//! `hyperkit-obs mlflow acceptance` reads a model's acceptance rate from
//! MLflow; `hyperkit-obs mlflow push` replays a local file store into a
//! tracking server.
//! `hyperkit-obs logs search|tail` query the local log store.

use std::collections::HashMap;
use std::future::Future;
use std::io::Write;
use std::net::TcpStream;
#[cfg(feature = "sentry")]
use std::net::ToSocketAddrs;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use hyperkit_obs::MonitoringConfig;
use hyperkit_obs::logs::{LogStore, Query, SearchOptions, StoredLog};
use hyperkit_obs::mlflow::{
    ExperimentPush, ExperimentTracker, FileStore, MlflowClient, PushError, TrackingTarget,
    push_store_with,
};

const USAGE: &str = "\
usage: hyperkit-obs <command>

commands:
  check                   print the effective configuration and the state of each sink
  logs search QUERY [--since T] [--until T] [--limit N] [--json]
                          print the stored log lines matching QUERY, newest first
  logs tail [QUERY] [--json]
                          print matching lines as they are stored, until Ctrl-C
  mlflow acceptance --model M [--task T] [--experiment E] [--json]
                          print the acceptance rate of model M (of task T only, if
                          given) in experiment E (default: MLFLOW_EXPERIMENT_NAME) on
                          the server or file store MLFLOW_TRACKING_URI names
  mlflow push [DIR] --to URL [--experiment E]
                          copy the runs of the local file store DIR (default: ./mlruns),
                          of every experiment or of E only, to the tracking server at
                          URL; runs pushed before are skipped (tag
                          hyperkit.source_run_id), so it is safe to run again, and so
                          are those deleted on the server since
  help                    print this help

QUERY uses Kibana's Lucene syntax: level:error AND chain:ethereum AND \"out of gas\",
message:\"out of gas\", -status:cancelled, (model:a OR model:b), NOT task:codegen.
T is a duration before now (30m, 1h, 2d) or an RFC 3339 time (2026-11-27T10:00:00Z).
The store is HYPERKIT_DATA_DIR/logs (default ./hyperkit-data/logs).

The configuration comes from the environment (HYPERKIT_*, SENTRY_*, MLFLOW_*, RUST_LOG)
and the TOML file named by HYPERKIT_CONFIG; for `mlflow push`, --to replaces
MLFLOW_TRACKING_URI and MLFLOW_TRACKING_TOKEN etc. still apply.";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("check") if args.len() == 1 => check(),
        Some("mlflow") => match mlflow(&args[1..]) {
            Ok(()) => ExitCode::SUCCESS,
            Err(Failure::Usage(message)) => {
                eprintln!("hyperkit-obs: {message}\n\n{USAGE}");
                ExitCode::from(2)
            }
            Err(Failure::Error(message)) => {
                eprintln!("hyperkit-obs: {message}");
                ExitCode::from(1)
            }
        },
        Some("logs") => logs(&args[1..]),
        Some("help" | "--help" | "-h") => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        Some("--version" | "-V") => {
            println!("hyperkit-obs {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Some(other) => {
            eprintln!("hyperkit-obs: unknown command or argument `{other}`\n\n{USAGE}");
            ExitCode::from(2)
        }
        None => {
            eprintln!("{USAGE}");
            ExitCode::from(2)
        }
    }
}

fn check() -> ExitCode {
    let config = match MonitoringConfig::from_env() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("configuration error: {e}");
            return ExitCode::from(1);
        }
    };
    println!("configuration:");
    for (name, value) in config.describe() {
        println!("  {name:<28} {value}");
    }
    println!("\nsinks:");
    let reachable =
        TcpStream::connect_timeout(&config.metrics_addr, Duration::from_secs(1)).is_ok();
    println!(
        "  {:<10} each instrumented process's registry, served at http://{}/metrics: {}",
        "metrics",
        config.metrics_addr,
        if reachable {
            "a server is listening"
        } else {
            "nothing listening (is the service running?)"
        }
    );
    println!(
        "  {:<10} stdout ({}), filter `{}`; local store {}",
        "logs",
        match config.logs.format {
            hyperkit_obs::logs::LogFormat::Json => "JSON lines",
            hyperkit_obs::logs::LogFormat::Text => "text",
            _ => "JSON lines, text on a terminal",
        },
        config.log_filter,
        if config.logs.store {
            hyperkit_obs::logs::store_dir(&config.data_dir)
                .display()
                .to_string()
        } else {
            "off".to_owned()
        }
    );
    println!("  {:<10} {}", "sentry", sentry_state(&config));
    ExitCode::SUCCESS
}

/// Whether errors go to Sentry, where (keys redacted), and whether its host
/// answers.
#[cfg(not(feature = "sentry"))]
fn sentry_state(_: &MonitoringConfig) -> String {
    "not built in (the \"sentry\" feature is off); errors are logged only".to_owned()
}

/// Whether errors go to Sentry, where (keys redacted), and whether its host
/// answers.
#[cfg(feature = "sentry")]
fn sentry_state(config: &MonitoringConfig) -> String {
    let Some(dsn) = &config.sentry.dsn else {
        return "not configured (set SENTRY_DSN to report errors and panics); errors are logged only"
            .to_owned();
    };
    let reachable = hyperkit_obs::sentry::dsn_address(dsn.expose())
        .and_then(|(host, port)| (host, port).to_socket_addrs().ok()?.next())
        .is_some_and(|addr| TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok());
    format!(
        "errors and panics to {} (sample rate {}, prompts {}): {}",
        config.sentry.redacted_dsn(),
        config.sentry.sample_rate,
        if config.sentry.send_prompts {
            "sent"
        } else {
            "never sent"
        },
        if reachable {
            "the host answers"
        } else {
            "the host does not answer"
        }
    )
}

/// Why a command did not succeed.
enum Failure {
    /// The command line is wrong (exit code 2, with the usage).
    Usage(String),
    /// The command failed (exit code 1).
    Error(String),
}

/// `--name value` and `--name=value` options, switches and positional
/// arguments, as a subcommand declares them.
struct Parsed {
    options: HashMap<&'static str, String>,
    switches: Vec<&'static str>,
    positional: Vec<String>,
}

impl Parsed {
    fn read(
        args: &[String],
        options: &[&'static str],
        switches: &[&'static str],
    ) -> Result<Parsed, Failure> {
        let mut parsed = Parsed {
            options: HashMap::new(),
            switches: Vec::new(),
            positional: Vec::new(),
        };
        let mut rest = args.iter();
        while let Some(arg) = rest.next() {
            if arg == "--" {
                parsed.positional.extend(rest.by_ref().cloned());
                break;
            }
            if !arg.starts_with("--") || arg == "-" {
                if arg.starts_with('-') && arg != "-" {
                    return Err(Failure::Usage(format!("unknown option `{arg}`")));
                }
                parsed.positional.push(arg.clone());
                continue;
            }
            let (name, inline) = match arg.split_once('=') {
                Some((name, value)) => (name, Some(value.to_owned())),
                None => (arg.as_str(), None),
            };
            if let Some(&switch) = switches.iter().find(|s| **s == name) {
                if inline.is_some() {
                    return Err(Failure::Usage(format!("`{switch}` takes no value")));
                }
                parsed.switches.push(switch);
            } else if let Some(&option) = options.iter().find(|o| **o == name) {
                let value = match inline {
                    Some(v) => v,
                    None => rest
                        .next()
                        .cloned()
                        .ok_or_else(|| Failure::Usage(format!("`{option}` needs a value")))?,
                };
                if parsed.options.insert(option, value).is_some() {
                    return Err(Failure::Usage(format!("`{option}` is given twice")));
                }
            } else {
                return Err(Failure::Usage(format!("unknown option `{name}`")));
            }
        }
        Ok(parsed)
    }

    fn option(&self, name: &str) -> Option<&str> {
        self.options.get(name).map(String::as_str)
    }

    fn required(&self, name: &'static str) -> Result<&str, Failure> {
        match self.option(name) {
            Some(v) if !v.trim().is_empty() => Ok(v),
            _ => Err(Failure::Usage(format!("`{name}` is required"))),
        }
    }
}

fn mlflow(args: &[String]) -> Result<(), Failure> {
    match args.first().map(String::as_str) {
        Some("acceptance") => {
            let parsed = Parsed::read(
                &args[1..],
                &["--model", "--task", "--experiment"],
                &["--json"],
            )?;
            if let Some(extra) = parsed.positional.first() {
                return Err(Failure::Usage(format!("unexpected argument `{extra}`")));
            }
            run_async(acceptance(&parsed))
        }
        Some("push") => {
            let parsed = Parsed::read(&args[1..], &["--to", "--experiment"], &[])?;
            if let Some(extra) = parsed.positional.get(1) {
                return Err(Failure::Usage(format!("unexpected argument `{extra}`")));
            }
            run_async(push(&parsed))
        }
        Some("help" | "--help" | "-h") => {
            println!("{USAGE}");
            Ok(())
        }
        Some(other) => Err(Failure::Usage(format!(
            "unknown mlflow command `{other}` (acceptance, push)"
        ))),
        None => Err(Failure::Usage(
            "`mlflow` needs a command (acceptance, push)".to_owned(),
        )),
    }
}

/// Runs `future` to completion on a current-thread runtime.
fn run_async(future: impl Future<Output = Result<(), Failure>>) -> Result<(), Failure> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::Error(format!("cannot start the async runtime: {e}")))?
        .block_on(future)
}

fn config_error(e: impl std::fmt::Display) -> Failure {
    Failure::Error(format!("configuration error: {e}"))
}

/// `hyperkit-obs mlflow acceptance`.
async fn acceptance(parsed: &Parsed) -> Result<(), Failure> {
    let model = parsed.required("--model")?;
    let task = parsed.option("--task");
    let config = MonitoringConfig::from_env().map_err(config_error)?.mlflow;
    let experiment = parsed
        .option("--experiment")
        .unwrap_or(&config.experiment_name)
        .to_owned();
    let target = &config.target;
    let tracker = ExperimentTracker::open(&experiment, &config)
        .await
        .map_err(|e| {
            Failure::Error(format!(
                "cannot look up experiment {experiment:?} at {target}: {e}"
            ))
        })?
        .ok_or_else(|| Failure::Error(format!("no experiment named {experiment:?} at {target}")))?;
    let rate = tracker
        .acceptance_rate_for(model, task)
        .await
        .map_err(|e| {
            Failure::Error(format!(
                "cannot read the runs of experiment {experiment:?} at {target}: {e}"
            ))
        })?;
    if parsed.switches.contains(&"--json") {
        let json = serde_json::json!({
            "model": model,
            "task": task,
            "experiment": experiment,
            "accepted": rate.accepted,
            "rejected": rate.rejected,
            "undecided": rate.undecided,
            "rate": rate.rate(),
        });
        println!("{json}");
        return Ok(());
    }
    let task = task.map(|t| format!(" (task {t:?})")).unwrap_or_default();
    let head =
        format!("acceptance of model {model:?}{task} in experiment {experiment:?} at {target}");
    match rate.rate() {
        Some(r) => println!(
            "{head}: {:.1}% ({} accepted, {} rejected, {} undecided; {} runs)",
            r * 100.0,
            rate.accepted,
            rate.rejected,
            rate.undecided,
            rate.accepted + rate.rejected + rate.undecided
        ),
        None => println!(
            "{head}: no decisions yet ({} runs undecided)",
            rate.undecided
        ),
    }
    Ok(())
}

/// `hyperkit-obs mlflow push`.
async fn push(parsed: &Parsed) -> Result<(), Failure> {
    let to = parsed.required("--to")?.to_owned();
    let dir = PathBuf::from(parsed.positional.first().map_or("mlruns", String::as_str));
    let only = parsed.option("--experiment");
    // The environment as it is, with --to as the tracking URI.
    let config = MonitoringConfig::from_lookup(|name| {
        if name == "MLFLOW_TRACKING_URI" {
            Some(to.clone())
        } else {
            std::env::var(name).ok()
        }
    })
    .map_err(|e| Failure::Error(format!("--to: {e}")))?
    .mlflow;
    if !matches!(config.target, TrackingTarget::Server(_)) {
        return Err(Failure::Usage(format!(
            "--to must be a tracking server's http(s):// URL, not `{to}`"
        )));
    }
    if !dir.is_dir() {
        return Err(Failure::Error(format!(
            "no MLflow file store at {}: it is not a directory",
            dir.display()
        )));
    }
    let store = FileStore::open(&dir)
        .map_err(|e| Failure::Error(format!("reading {}: {e}", dir.display())))?;
    let client = MlflowClient::new(&config).map_err(config_error)?;
    let print = |e: &ExperimentPush| {
        let deleted = match e.deleted {
            0 => String::new(),
            n => format!(", {n} deleted on the server (not pushed again)"),
        };
        println!(
            "experiment {:?}: pushed {} runs, {} already there{deleted}",
            e.name, e.pushed, e.already
        );
    };
    let report = push_store_with(&store, &client, only, print)
        .await
        .map_err(|e| match e {
            PushError::Experiment { .. } => Failure::Error(format!(
                "{e}\nWhat was pushed stays; run the same command again to push the rest."
            )),
            other => Failure::Error(other.to_string()),
        })?;
    if report.is_empty() {
        println!(
            "nothing to push: no experiment in {} has runs",
            store.root().display()
        );
    }
    Ok(())
}

fn usage_error(message: &str) -> ExitCode {
    eprintln!("hyperkit-obs: {message}\n\n{USAGE}");
    ExitCode::from(2)
}

/// The parsed arguments of `logs search` and `logs tail`.
struct LogsArgs {
    /// The query as written, for Elasticsearch's `query_string`.
    text: String,
    query: Query,
    options: SearchOptions,
    json: bool,
}

fn parse_logs_args(args: &[String], tail: bool) -> Result<LogsArgs, String> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    let mut words = Vec::new();
    let mut options = SearchOptions {
        limit: if tail { 10 } else { 100 },
        ..SearchOptions::default()
    };
    let mut json = false;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut value = |flag: &str| {
            it.next()
                .cloned()
                .ok_or_else(|| format!("`{flag}` needs a value"))
        };
        match arg.as_str() {
            "--json" => json = true,
            "--since" if !tail => {
                options.since_ms = Some(hyperkit_obs::logs::parse_time(&value("--since")?, now)?);
            }
            "--until" if !tail => {
                options.until_ms = Some(hyperkit_obs::logs::parse_time(&value("--until")?, now)?);
            }
            "--limit" if !tail => {
                let v = value("--limit")?;
                options.limit = v
                    .parse()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| format!("`--limit {v}`: write a positive whole number"))?;
            }
            flag if flag.starts_with("--") => return Err(format!("unknown option `{flag}`")),
            word => words.push(word.to_owned()),
        }
    }
    if words.is_empty() && !tail {
        return Err("`logs search` needs a QUERY (use '*' for every line)".to_owned());
    }
    let text = words.join(" ");
    let query = if text.trim() == "*" {
        Query::All
    } else {
        Query::parse(&text).map_err(|e| format!("invalid query `{text}`: {e}"))?
    };
    Ok(LogsArgs {
        text,
        query,
        options,
        json,
    })
}

fn logs(args: &[String]) -> ExitCode {
    let tail = match args.first().map(String::as_str) {
        Some("search") => false,
        Some("tail") => true,
        Some(other) => return usage_error(&format!("unknown logs command `{other}`")),
        None => return usage_error("`logs` needs `search` or `tail`"),
    };
    let parsed = match parse_logs_args(&args[1..], tail) {
        Ok(p) => p,
        Err(e) => return usage_error(&e),
    };
    let config = match MonitoringConfig::from_env() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("configuration error: {e}");
            return ExitCode::from(1);
        }
    };
    if let (Some(es), false) = (&config.elasticsearch, tail) {
        return search_elasticsearch(es, &parsed);
    }
    let dir = hyperkit_obs::logs::store_dir(&config.data_dir);
    if !dir.join(hyperkit_obs::logs::store::DB_FILE).exists() {
        eprintln!(
            "hyperkit-obs: no log store at {} (set HYPERKIT_DATA_DIR to the program's data directory)",
            dir.display()
        );
        return ExitCode::from(1);
    }
    let store = match LogStore::open(&dir) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("hyperkit-obs: {e}");
            return ExitCode::from(1);
        }
    };
    let result = if tail {
        follow(&store, &parsed)
    } else {
        store
            .search(&parsed.query, &parsed.options)
            .map(|found| print_logs(&found, parsed.json))
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hyperkit-obs: {e}");
            ExitCode::from(1)
        }
    }
}

/// `logs search` when `ELASTICSEARCH_URL` is set: the same query, sent as
/// a `query_string` query (Lucene syntax, as the local store reads it).
fn search_elasticsearch(
    config: &hyperkit_obs::logs::elastic::ElasticsearchConfig,
    args: &LogsArgs,
) -> ExitCode {
    let client = match hyperkit_obs::logs::elastic::ElasticsearchClient::new(config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("hyperkit-obs: {e}");
            return ExitCode::from(1);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("hyperkit-obs: cannot start a runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let query = if args.text.trim() == "*" {
        ""
    } else {
        args.text.as_str()
    };
    let found = runtime.block_on(client.search(
        query,
        args.options.since_ms,
        args.options.until_ms,
        args.options.limit,
    ));
    match found {
        Ok(docs) => {
            let mut out = std::io::stdout().lock();
            for doc in docs {
                let line = if args.json {
                    doc.to_string()
                } else {
                    let map = doc.as_object().cloned().unwrap_or_default();
                    human_doc_line(&map)
                };
                if writeln!(out, "{line}").is_err() {
                    std::process::exit(0);
                }
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("hyperkit-obs: Elasticsearch search failed: {e}");
            ExitCode::from(1)
        }
    }
}

/// Prints the last lines, then polls the store for new ones until killed
/// (Ctrl-C ends the process).
fn follow(store: &LogStore, args: &LogsArgs) -> Result<(), hyperkit_obs::logs::store::StoreError> {
    let mut last = store.search(&args.query, &args.options)?;
    last.reverse();
    print_logs(&last, args.json);
    let mut cursor = last.last().map(|l| l.cursor);
    loop {
        std::thread::sleep(Duration::from_millis(250));
        let options = SearchOptions {
            limit: 1000,
            after: cursor,
            ..SearchOptions::default()
        };
        let mut found = store.search(&args.query, &options)?;
        if cursor.is_none() {
            found.reverse();
        }
        if let Some(l) = found.last() {
            cursor = Some(l.cursor);
        }
        print_logs(&found, args.json);
    }
}

/// Keys every line has, left out of the human-readable line's key fields.
const COMMON_KEYS: &[&str] = &[
    "@timestamp",
    "log.level",
    "message",
    "ecs.version",
    "log.logger",
    "service.name",
    "trace.id",
    "span.id",
];

fn print_logs(logs: &[StoredLog], json: bool) {
    let mut out = std::io::stdout().lock();
    for log in logs {
        let line = if json {
            log.document.clone()
        } else {
            human_line(log)
        };
        // A closed pipe (`| head`) ends the output quietly.
        if writeln!(out, "{line}").is_err() {
            std::process::exit(0);
        }
    }
    let _ = out.flush();
}

fn human_line(log: &StoredLog) -> String {
    let doc: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&log.document).unwrap_or_default();
    human_doc_line(&doc)
}

fn human_doc_line(doc: &serde_json::Map<String, serde_json::Value>) -> String {
    let text = |key: &str| doc.get(key).and_then(|m| m.as_str()).unwrap_or("");
    let mut line = format!(
        "{} {:<5} {}",
        text("@timestamp"),
        text("log.level").to_uppercase(),
        text("message")
    );
    for (key, value) in doc {
        if COMMON_KEYS.contains(&key.as_str()) {
            continue;
        }
        match value {
            serde_json::Value::String(s) => line.push_str(&format!("  {key}={s}")),
            other => line.push_str(&format!("  {key}={other}")),
        }
    }
    line
}
