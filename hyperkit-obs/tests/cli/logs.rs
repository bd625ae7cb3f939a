//! `hyperkit-obs logs search` and `logs tail` against a store written by the
//! library.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use hyperkit_obs::logs::store::StoreEntry;
use hyperkit_obs::logs::{FieldValue, LogRecord, LogStore, ecs_document};

use crate::support::BIN;
fn data_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("hyperkit-logs-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn write(data: &Path, events: &[(i64, &'static str, &str, &str)]) {
    let mut store = LogStore::open(hyperkit_obs::logs::store_dir(data)).unwrap();
    let entries: Vec<StoreEntry> = events
        .iter()
        .map(|(ts, level, message, chain)| {
            let mut record = LogRecord::new(*ts, level, "agent::build", *message);
            record
                .span_fields
                .push(("chain", FieldValue::Str((*chain).to_owned())));
            StoreEntry::new(&record, "agent")
        })
        .collect();
    store.insert(&entries).unwrap();
}

fn cli(data: &Path) -> Command {
    let mut c = Command::new(BIN);
    c.env_clear().env("HYPERKIT_DATA_DIR", data);
    c
}

fn run(data: &Path, args: &[&str]) -> Output {
    cli(data).args(args).output().unwrap()
}

#[test]
fn search_prints_matching_lines_newest_first_in_text_or_json() {
    let data = data_dir("search");
    let now = now_ms();
    write(
        &data,
        &[
            (
                now - 3 * 3_600_000,
                "error",
                "build failed: out of gas",
                "ethereum",
            ),
            (now - 2000, "error", "build failed: out of gas", "ethereum"),
            (now - 1000, "error", "build failed: out of gas", "solana"),
            (now, "info", "build succeeded", "ethereum"),
        ],
    );
    let out = run(
        &data,
        &[
            "logs",
            "search",
            "level:error",
            "AND",
            "chain:ethereum",
            "\"out of gas\"",
            "--since",
            "1h",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 1, "{text}");
    assert!(
        lines[0].contains("ERROR build failed: out of gas  chain=ethereum"),
        "{text}"
    );

    let out = run(
        &data,
        &["logs", "search", "build", "--json", "--limit", "2"],
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let docs: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(docs.len(), 2);
    assert_eq!(docs[0]["message"], "build succeeded");
    assert_eq!(docs[1]["chain"], "solana");
    std::fs::remove_dir_all(&data).unwrap();
}

#[test]
fn a_long_search_prints_every_line_once_and_ends_quietly_into_a_closed_pipe() {
    let data = data_dir("long");
    let now = now_ms();
    // About 200 KB of human lines: several blocks of the buffered output.
    let messages: Vec<String> = (0..2000)
        .map(|i| format!("build {i:04} failed: out of gas"))
        .collect();
    let events: Vec<_> = messages
        .iter()
        .enumerate()
        .map(|(i, m)| (now - 2000 + i as i64, "error", m.as_str(), "ethereum"))
        .collect();
    write(&data, &events);

    let out = run(&data, &["logs", "search", "gas", "--limit", "5000"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let numbers: Vec<usize> = text
        .lines()
        .map(|l| {
            let rest = l.split_once("ERROR build ").expect(l).1;
            rest[..4].parse().expect(l)
        })
        .collect();
    let newest_first: Vec<usize> = (0..2000).rev().collect();
    assert_eq!(numbers, newest_first);

    // `| head` that has already gone: every write fails (EPIPE).
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = cli(&data)
        .args(["logs", "search", "gas", "--limit", "5000"])
        .stdout(writer)
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(String::from_utf8_lossy(&out.stderr), "");
    std::fs::remove_dir_all(&data).unwrap();
}

#[test]
fn bad_usage_exits_2_and_a_missing_store_exits_1() {
    let data = data_dir("usage");
    let out = run(&data, &["logs", "search", "level:error AND (chain:x"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("unclosed `(`: add a `)` at position 16"),
        "{err}"
    );
    assert_eq!(
        run(&data, &["logs", "search", "x", "--since", "soon"])
            .status
            .code(),
        Some(2)
    );
    assert_eq!(run(&data, &["logs", "find", "x"]).status.code(), Some(2));
    let out = run(&data, &["logs", "search", "x"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no log store"));
}

#[test]
fn tail_prints_new_matching_lines_as_they_are_stored() {
    let data = data_dir("tail");
    write(&data, &[(now_ms(), "info", "before", "ethereum")]);
    let mut child = cli(&data)
        .args(["logs", "tail", "chain:ethereum"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            if tx.send(line.unwrap()).is_err() {
                break;
            }
        }
    });
    let first = rx.recv_timeout(Duration::from_secs(30)).unwrap();
    assert!(first.contains("before"), "{first}");
    write(
        &data,
        &[
            (now_ms(), "info", "skipped", "solana"),
            (now_ms(), "warn", "after", "ethereum"),
        ],
    );
    let next = rx.recv_timeout(Duration::from_secs(30)).unwrap();
    assert!(next.contains("WARN  after"), "{next}");
    child.kill().unwrap();
    child.wait().unwrap();
    std::fs::remove_dir_all(&data).unwrap();
}

/// Queries of the shapes that used to overflow the parser's stack (issue 18).
#[cfg(unix)]
#[test]
fn a_query_past_the_parser_limits_is_refused_naming_the_limit_instead_of_aborting() {
    use std::os::unix::process::ExitStatusExt;

    let data = data_dir("limits");
    // An empty store, so that only the query can fail.
    LogStore::open(hyperkit_obs::logs::store_dir(&data)).unwrap();
    let nested = format!("{}a{}", "(".repeat(20_000), ")".repeat(20_000));
    let chain = vec!["a"; 20_000].join(" OR ");
    for (query, limit) in [
        (nested, "query nests deeper than 64 levels"),
        (chain, "query has more than 1024 terms"),
    ] {
        let out = run(&data, &["logs", "search", &query]);
        assert_eq!(out.status.signal(), None, "killed: {}", out.status);
        assert!(
            matches!(out.status.code(), Some(c) if c != 0),
            "{}",
            out.status
        );
        let err = String::from_utf8_lossy(&out.stderr);
        let start: String = err.chars().take(300).collect();
        assert!(err.contains(limit), "{limit}: {start}…");
    }
    std::fs::remove_dir_all(&data).unwrap();
}

#[test]
fn search_moves_a_store_of_the_earlier_version_into_the_index_and_says_so() {
    use hyperkit_obs::logs::store::LEGACY_FILE;
    let data = data_dir("legacy");
    let dir = hyperkit_obs::logs::store_dir(&data);
    std::fs::create_dir_all(&dir).unwrap();
    // The SQLite version's layout, as it wrote it.
    let conn = rusqlite::Connection::open(dir.join(LEGACY_FILE)).unwrap();
    let now = now_ms();
    let day = hyperkit_obs::logs::format_timestamp(now)[..10].replace('-', "");
    conn.execute_batch(&format!(
        "CREATE TABLE logs_{day} (id INTEGER PRIMARY KEY, ts INTEGER NOT NULL,
             level TEXT NOT NULL, doc TEXT NOT NULL);"
    ))
    .unwrap();
    for (i, chain) in ["ethereum", "solana"].iter().enumerate() {
        let mut record = LogRecord::new(now - i as i64, "error", "agent::build", "out of gas");
        record
            .span_fields
            .push(("chain", FieldValue::Str((*chain).to_owned())));
        let mut document = Vec::new();
        ecs_document(&record, "agent", &mut document);
        conn.execute(
            &format!("INSERT INTO logs_{day} (ts, level, doc) VALUES (?, 'error', ?)"),
            rusqlite::params![record.timestamp_ms, String::from_utf8(document).unwrap()],
        )
        .unwrap();
    }
    drop(conn);
    let out = run(&data, &["logs", "search", "chain:eth*", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("written by an earlier version"), "{err}");
    assert!(err.contains("moved 2 events"), "{err}");
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(text.contains("\"chain\":\"ethereum\""), "{text}");
    assert!(!dir.join(LEGACY_FILE).exists());
    // Once moved, searching says nothing more.
    let again = run(&data, &["logs", "search", "level:error"]);
    assert!(
        again.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    assert_eq!(String::from_utf8(again.stdout).unwrap().lines().count(), 2);
    std::fs::remove_dir_all(&data).unwrap();
}
