//! `hyperkit-obs`: the command line of hyperkit-obs.
//!
//! `hyperkit-obs check` prints the effective configuration (secrets
//! redacted) and, for each sink, whether it is configured and reachable.
//! `hyperkit-obs logs search|tail` query the local log store.

use std::io::Write;
use std::net::{TcpStream, ToSocketAddrs};
use std::process::ExitCode;
use std::time::Duration;

use hyperkit_obs::MonitoringConfig;
use hyperkit_obs::logs::{LogStore, Query, SearchOptions, StoredLog};

const USAGE: &str = "\
usage: hyperkit-obs <command>

commands:
  check                   print the effective configuration and the state of each sink
  logs search QUERY [--since T] [--until T] [--limit N] [--json]
                          print the stored log lines matching QUERY, newest first
  logs tail [QUERY] [--json]
                          print matching lines as they are stored, until Ctrl-C
  help                    print this help

QUERY uses Kibana's Lucene syntax: level:error AND chain:ethereum AND \"out of gas\",
message:\"out of gas\", -status:cancelled, (model:a OR model:b), NOT task:codegen.
T is a duration before now (30m, 1h, 2d) or an RFC 3339 time (2026-11-27T10:00:00Z).
The store is HYPERKIT_DATA_DIR/logs (default ./hyperkit-data/logs).

The configuration comes from the environment (HYPERKIT_*, SENTRY_*, RUST_LOG) and the
TOML file named by HYPERKIT_CONFIG.";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("check") if args.len() == 1 => check(),
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
fn sentry_state(config: &MonitoringConfig) -> String {
    let Some(dsn) = &config.sentry.dsn else {
        return "not configured (set SENTRY_DSN to report errors and panics); errors are logged only"
            .to_owned();
    };
    let reachable = dsn
        .expose()
        .parse::<sentry::types::Dsn>()
        .ok()
        .and_then(|d| (d.host(), d.port()).to_socket_addrs().ok()?.next())
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

fn usage_error(message: &str) -> ExitCode {
    eprintln!("hyperkit-obs: {message}\n\n{USAGE}");
    ExitCode::from(2)
}

/// The parsed arguments of `logs search` and `logs tail`.
struct LogsArgs {
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
    let mut line = format!(
        "{} {:<5} {}",
        hyperkit_obs::logs::format_timestamp(log.timestamp_ms),
        log.level.to_uppercase(),
        doc.get("message").and_then(|m| m.as_str()).unwrap_or("")
    );
    for (key, value) in &doc {
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
