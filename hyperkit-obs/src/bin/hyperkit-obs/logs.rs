//! `hyperkit-obs logs search` and `logs tail`: the local log store (or
//! Elasticsearch, when `ELASTICSEARCH_URL` is set, for `search`) queried
//! with Kibana's Lucene syntax. They only read the store.

use std::io::Write;
use std::time::Duration;

use hyperkit_obs::MonitoringConfig;
use hyperkit_obs::logs::elastic::{ElasticsearchClient, ElasticsearchConfig};
use hyperkit_obs::logs::{LogStore, Query, SearchOptions, StoredLog};

use clap::{Arg, ArgAction, Command};

use crate::{Args, Failure, config_error};

/// How often `tail` asks the store for new lines.
const TAIL_POLL: Duration = Duration::from_millis(250);

/// How QUERY and the store are described in both commands' help (a macro,
/// for `concat!`).
macro_rules! query_help {
    () => {
        "\
QUERY uses Kibana's Lucene syntax: level:error AND chain:ethereum AND \"out of gas\",
message:\"out of gas\", -status:cancelled, (model:a OR model:b), NOT task:codegen;
'*' matches every line. Its words may be one argument or several; after `--` a
word starting with `-` is part of it too.

The store is HYPERKIT_DATA_DIR/logs (default ./hyperkit-data/logs)."
    };
}

/// `logs search`.
pub(crate) fn search_command() -> Command {
    Command::new("search")
        .about("print the stored log lines matching QUERY, newest first")
        .arg(query().required(true))
        .arg(time("since", "only lines at or after T"))
        .arg(time("until", "only lines before T"))
        .arg(
            Arg::new("limit")
                .long("limit")
                .value_name("N")
                .value_parser(clap::value_parser!(u64).range(1..))
                .help("print at most N lines (default 100)"),
        )
        .arg(json())
        .after_help(concat!(
            "\
T is a duration before now (90s, 30m, 1h, 2d, 1w) or an RFC 3339 time
(2026-11-27T10:00:00Z, or a date: 2026-11-27).
With ELASTICSEARCH_URL set, the query goes to Elasticsearch (query_string).

",
            query_help!()
        ))
}

/// `logs tail`.
pub(crate) fn tail_command() -> Command {
    Command::new("tail")
        .about("print matching lines as they are stored, until Ctrl-C")
        .arg(query())
        .arg(json())
        .after_help(concat!(
            "\
It prints the last 10 matching lines first; without QUERY, every line.

",
            query_help!()
        ))
}

fn query() -> Arg {
    Arg::new("QUERY").num_args(1..).trailing_var_arg(true)
}

fn time(name: &'static str, help: &'static str) -> Arg {
    Arg::new(name).long(name).value_name("T").help(help)
}

fn json() -> Arg {
    Arg::new("json")
        .long("json")
        .action(ArgAction::SetTrue)
        .help("print the stored ECS JSON lines")
}

/// `hyperkit-obs logs search`.
pub(crate) fn search(args: &Args) -> Result<(), Failure> {
    let request = Request::read(args, false)?;
    let config = MonitoringConfig::from_env().map_err(config_error)?;
    if let Some(es) = &config.elasticsearch {
        return search_elasticsearch(es, &request);
    }
    let store = open_store(&config)?;
    let found = store
        .search(&request.query, &request.options)
        .map_err(|e| Failure::Failed(e.to_string()))?;
    print_logs(&found, request.json);
    Ok(())
}

/// `hyperkit-obs logs tail`: prints the last lines, then polls the store
/// for new ones until killed (Ctrl-C ends the process).
pub(crate) fn tail(args: &Args) -> Result<(), Failure> {
    let request = Request::read(args, true)?;
    let config = MonitoringConfig::from_env().map_err(config_error)?;
    let store = open_store(&config)?;
    let failed = |e: hyperkit_obs::logs::store::StoreError| Failure::Failed(e.to_string());
    let mut last = store
        .search(&request.query, &request.options)
        .map_err(failed)?;
    last.reverse();
    print_logs(&last, request.json);
    let mut cursor = last.last().map(|l| l.cursor);
    loop {
        std::thread::sleep(TAIL_POLL);
        let options = SearchOptions {
            limit: 1000,
            after: cursor,
            ..SearchOptions::default()
        };
        let mut found = store.search(&request.query, &options).map_err(failed)?;
        if cursor.is_none() {
            found.reverse();
        }
        if let Some(l) = found.last() {
            cursor = Some(l.cursor);
        }
        print_logs(&found, request.json);
    }
}

/// What `logs search` and `logs tail` were asked.
struct Request {
    /// The query as written, for Elasticsearch's `query_string`.
    text: String,
    query: Query,
    options: SearchOptions,
    json: bool,
}

impl Request {
    fn read(args: &Args, tail: bool) -> Result<Request, Failure> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        let time = |name: &str| {
            args.value(name)
                .map(|t| {
                    hyperkit_obs::logs::parse_time(t, now)
                        .map_err(|e| Failure::Usage(format!("{name}: {e}")))
                })
                .transpose()
        };
        let limit = match args.0.try_get_one::<u64>("limit").ok().flatten() {
            None if tail => 10,
            None => 100,
            Some(n) => usize::try_from(*n).unwrap_or(usize::MAX),
        };
        let options = SearchOptions {
            since_ms: time("--since")?,
            until_ms: time("--until")?,
            limit,
            ..SearchOptions::default()
        };
        if args.operands().is_empty() && !tail {
            return Err(Failure::Usage(
                "`logs search` needs a QUERY, as in `logs search level:error` ('*' for every line)"
                    .to_owned(),
            ));
        }
        let text = args.operands().join(" ");
        let query = if text.trim() == "*" {
            Query::All
        } else {
            // The error names the position, not the query: it may be long.
            Query::parse(&text).map_err(|e| Failure::Usage(format!("invalid query: {e}")))?
        };
        Ok(Request {
            text,
            query,
            options,
            json: args.switch("--json"),
        })
    }
}

/// The local store the configuration names, if there is one (opening it
/// would create it).
fn open_store(config: &MonitoringConfig) -> Result<LogStore, Failure> {
    let dir = hyperkit_obs::logs::store_dir(&config.data_dir);
    if !dir.join(hyperkit_obs::logs::store::DB_FILE).exists() {
        return Err(Failure::Failed(format!(
            "no log store at {} (set HYPERKIT_DATA_DIR to the program's data directory)",
            dir.display()
        )));
    }
    LogStore::open(&dir).map_err(|e| Failure::Failed(e.to_string()))
}

/// `logs search` when `ELASTICSEARCH_URL` is set: the same query, sent as
/// a `query_string` query (Lucene syntax, as the local store reads it).
fn search_elasticsearch(config: &ElasticsearchConfig, request: &Request) -> Result<(), Failure> {
    let client = ElasticsearchClient::new(config).map_err(|e| Failure::Failed(e.to_string()))?;
    let query = if request.text.trim() == "*" {
        ""
    } else {
        request.text.as_str()
    };
    let docs = crate::block_on(async {
        client
            .search(
                query,
                request.options.since_ms,
                request.options.until_ms,
                request.options.limit,
            )
            .await
            .map_err(|e| Failure::Failed(format!("Elasticsearch search failed: {e}")))
    })?;
    let mut out = std::io::stdout().lock();
    for doc in docs {
        let line = if request.json {
            doc.to_string()
        } else {
            human_line(&doc.as_object().cloned().unwrap_or_default())
        };
        print_line(&mut out, &line);
    }
    Ok(())
}

fn print_logs(logs: &[StoredLog], json: bool) {
    let mut out = std::io::stdout().lock();
    for log in logs {
        if json {
            print_line(&mut out, &log.document);
        } else {
            let doc = serde_json::from_str(&log.document).unwrap_or_default();
            print_line(&mut out, &human_line(&doc));
        }
    }
    let _ = out.flush();
}

/// Prints `line`; a closed pipe (`| head`) ends the output quietly.
fn print_line(out: &mut impl Write, line: &str) {
    if writeln!(out, "{line}").is_err() {
        std::process::exit(0);
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

/// `2026-11-27T10:00:00.000Z ERROR build failed  chain=ethereum`.
fn human_line(doc: &serde_json::Map<String, serde_json::Value>) -> String {
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
