//! `hyperkit-obs logs search` and `logs tail`: the local log store (or
//! Elasticsearch, when `ELASTICSEARCH_URL` is set, for `search`) queried
//! with Kibana's Lucene syntax. They only read the store.

use std::io::{BufWriter, StdoutLock, Write};
use std::time::Duration;

use hyperkit_obs::MonitoringConfig;
use hyperkit_obs::logs::elastic::{ElasticsearchClient, ElasticsearchConfig};
use hyperkit_obs::logs::{LogStore, Query, SearchOptions, StoredLog};

use crate::args::{Operands, Opt, Spec};
use crate::{Args, Failure, config_error, shown};

/// How often `tail` asks the store for new lines.
const TAIL_POLL: Duration = Duration::from_millis(250);

/// How QUERY and the store are described in both commands' help (a macro,
/// for `concat!`).
macro_rules! query_help {
    () => {
        "\
QUERY uses Kibana's Lucene syntax: level:error AND chain:ethereum AND \"out of gas\",
message:\"out of gas\", -status:cancelled, (model:a OR model:b), NOT task:codegen;
'*' matches every line. Its words may be one argument or several, with the
options before, among or after them; after `--` every word is part of it.

The store is HYPERKIT_DATA_DIR/logs (default ./hyperkit-data/logs)."
    };
}

const JSON: Opt = Opt {
    name: "json",
    value: None,
    example: "",
    required: false,
    help: "print the stored ECS JSON lines",
};

/// `logs search`.
pub(crate) const SEARCH: Spec = Spec {
    words: "logs search",
    about: "print the stored log lines matching QUERY, newest first",
    operands: Operands::Query { required: true },
    options: &[
        Opt {
            name: "since",
            value: Some("T"),
            example: "1h",
            required: false,
            help: "only lines at or after T",
        },
        Opt {
            name: "until",
            value: Some("T"),
            example: "2026-11-27T10:00:00Z",
            required: false,
            help: "only lines before T",
        },
        Opt {
            name: "limit",
            value: Some("N"),
            example: "20",
            required: false,
            help: "print at most N lines (default 100)",
        },
        JSON,
    ],
    notes: concat!(
        "\
T is a duration before now (90s, 30m, 1h, 2d, 1w) or an RFC 3339 time
(2026-11-27T10:00:00Z, or a date: 2026-11-27).
With ELASTICSEARCH_URL set, the query goes to Elasticsearch (query_string).

",
        query_help!()
    ),
};

/// `logs tail`.
pub(crate) const TAIL: Spec = Spec {
    words: "logs tail",
    about: "print matching lines as they are stored, until Ctrl-C",
    operands: Operands::Query { required: false },
    options: &[JSON],
    notes: concat!(
        "\
It prints the last 10 matching lines first; without QUERY, every line.

",
        query_help!()
    ),
};

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
    warn_damaged(&store);
    // The process ends here: the kernel drops the store's hundreds of
    // mapped index files at exit at once, where dropping the store unmaps
    // and closes them one system call each (a tenth of a search over a
    // week of days). It only reads, so dropping it has nothing to save.
    std::mem::forget(store);
    Ok(())
}

/// Names on stderr the days a search had to skip.
fn warn_damaged(store: &LogStore) {
    for (day, why) in store.damaged_days() {
        eprintln!(
            "hyperkit-obs: warning: skipped {day} of the log store, which cannot be read ({why}); retention removes it in time, or delete {}",
            store.path().join(day.to_string()).display()
        );
    }
}

/// `hyperkit-obs logs tail`: prints the last lines, then polls the store
/// for new ones until killed (Ctrl-C ends the process).
pub(crate) fn tail(args: &Args) -> Result<(), Failure> {
    let request = Request::read(args, true)?;
    let config = MonitoringConfig::from_env().map_err(config_error)?;
    let store = open_store(&config)?;
    let failed = |e: hyperkit_obs::logs::store::StoreError| Failure::Failed(e.to_string());
    // Everything stored up to `cursor` is history; what comes after is new,
    // printed in the order it is stored, each line once.
    let mut cursor = store.cursor().map_err(failed)?;
    let mut last = store
        .search(&request.query, &request.options)
        .map_err(failed)?;
    last.retain(|l| l.cursor <= cursor);
    last.reverse();
    print_logs(&last, request.json);
    warn_damaged(&store);
    loop {
        std::thread::sleep(TAIL_POLL);
        let options = SearchOptions {
            limit: 1000,
            after: Some(cursor),
            ..SearchOptions::default()
        };
        let found = store.search(&request.query, &options).map_err(failed)?;
        if let Some(l) = found.last() {
            cursor = l.cursor;
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
        let limit = match args.value("--limit") {
            None if tail => 10,
            None => 100,
            Some(n) => match n.parse::<usize>() {
                Ok(n) if n > 0 => n,
                _ => {
                    return Err(Failure::Usage(format!(
                        "`--limit {}`: write a positive whole number, as in `--limit 20`",
                        shown(n)
                    )));
                }
            },
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
/// would create it). A store of the previous version is moved into the
/// index first, saying so.
fn open_store(config: &MonitoringConfig) -> Result<LogStore, Failure> {
    use hyperkit_obs::logs::store::{DB_FILE, LEGACY_FILE};
    let dir = hyperkit_obs::logs::store_dir(&config.data_dir);
    if !dir.join(DB_FILE).exists() && !dir.join(LEGACY_FILE).exists() {
        return Err(Failure::Failed(format!(
            "no log store at {} (set HYPERKIT_DATA_DIR to the program's data directory)",
            dir.display()
        )));
    }
    let mut store = LogStore::open(&dir).map_err(|e| Failure::Failed(e.to_string()))?;
    if store.has_legacy() {
        eprintln!(
            "hyperkit-obs: the log store at {} was written by an earlier version (SQLite, {LEGACY_FILE}); moving its events into the index once…",
            dir.display()
        );
        let moved = store.migrate_legacy().map_err(|e| {
            Failure::Failed(format!(
                "cannot move the earlier version's log store into the index: {e} (a program writing the store moves it when it starts; try again then)"
            ))
        })?;
        eprintln!("hyperkit-obs: moved {moved} events; {LEGACY_FILE} is removed");
    }
    Ok(store)
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
    let mut out = lines_out();
    for doc in docs {
        let line = if request.json {
            doc.to_string()
        } else {
            human_line(&doc.as_object().cloned().unwrap_or_default())
        };
        print_line(&mut out, &line);
    }
    end_lines(out);
    Ok(())
}

fn print_logs(logs: &[StoredLog], json: bool) {
    let mut out = lines_out();
    for log in logs {
        if json {
            print_line(&mut out, &log.document);
        } else {
            let doc = serde_json::from_str(&log.document).unwrap_or_default();
            print_line(&mut out, &human_line(&doc));
        }
    }
    end_lines(out);
}

/// Standard output for a batch of lines, written in blocks: stdout alone
/// writes at every line break, a system call per line (a hundred for a
/// search with the default limit).
fn lines_out() -> BufWriter<StdoutLock<'static>> {
    BufWriter::with_capacity(64 * 1024, std::io::stdout().lock())
}

/// Prints `line`; a closed pipe (`| head`) ends the output quietly.
fn print_line(out: &mut impl Write, line: &str) {
    if writeln!(out, "{line}").is_err() {
        std::process::exit(0);
    }
}

/// Writes out what `out` holds (each batch of `tail` at once, as it is
/// found); a closed pipe ends the output quietly, as in [`print_line`].
fn end_lines(mut out: impl Write) {
    if out.flush().is_err() {
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
