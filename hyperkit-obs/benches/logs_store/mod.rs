//! The store's tables: ingest (direct, through the writer thread, and
//! through the writer thread while searches run) and search over 1,000,000
//! and 3,000,000 generated events, each store built from the same
//! generator, so that every figure of a table comes from one run.
//!
//! The run that chose tantivy over SQLite FTS5 measured both here on the
//! same events; its figures are in the README (Logs, "The store").

mod cli;
mod events;

use std::hint::black_box;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use hyperkit_obs::logs::store::{self, WriterOptions};
use hyperkit_obs::logs::{LogStore, Query, SearchOptions};

pub(crate) use cli::cli_table;
pub(crate) use events::{event, mix};

pub(crate) fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("hyperkit-bench-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

pub(crate) fn percentile(xs: &[f64], p: f64) -> f64 {
    let mut xs = xs.to_vec();
    xs.sort_by(f64::total_cmp);
    xs[((xs.len() as f64 - 1.0) * p).round() as usize]
}

/// CPU time of every thread of this process so far (the store's writer,
/// tantivy's indexing and merging threads, the caller), in seconds: on a
/// machine shared with other work, the wall-clock rate depends on the
/// neighbours, this does not.
fn process_cpu() -> f64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
    t.tv_sec as f64 + t.tv_nsec as f64 * 1e-9
}

pub(crate) fn pass(ok: bool) -> &'static str {
    if ok { "PASS" } else { "MISS" }
}

/// Sends every event through the writer thread, waiting (not dropping)
/// when the queue is full; returns events/s.
fn through_writer(dir: &std::path::Path, n: u64, start_ts: i64) -> (f64, f64, u64) {
    let options = WriterOptions::default();
    let (sink, guard) = store::start(dir, options).unwrap();
    let events: Vec<_> = (0..n).map(|i| event(i, start_ts + i as i64 / 10)).collect();
    let start = Instant::now();
    let cpu = process_cpu();
    // Every 1,024 events, room for the next 1,024 is awaited (a sleep, not
    // a spin: the writer needs the core); the queue never overflows.
    for (i, entry) in events.into_iter().enumerate() {
        if i % 1024 == 0 {
            while guard.status().queued + 2048 >= options.queue_capacity {
                std::thread::sleep(Duration::from_micros(200));
            }
        }
        sink.send(entry);
    }
    assert!(guard.flush(Duration::from_secs(300)));
    let rate = n as f64 / start.elapsed().as_secs_f64();
    let cpu_us = (process_cpu() - cpu) * 1e6 / n as f64;
    let dropped = guard.status().dropped;
    drop(guard);
    (rate, cpu_us, dropped)
}

pub(crate) fn ingest_table() {
    const N: u64 = 400_000;
    let batch = WriterOptions::default().batch_size;
    let start_ts = now_ms() - 3_600_000;
    let events: Vec<_> = (0..N).map(|i| event(i, start_ts + i as i64 / 10)).collect();

    let dir = temp_dir("ingest");
    let mut store = LogStore::open(&dir).unwrap();
    let start = Instant::now();
    let cpu = process_cpu();
    for chunk in events.chunks(batch) {
        store.insert(chunk).unwrap();
    }
    let direct = N as f64 / start.elapsed().as_secs_f64();
    let direct_cpu = (process_cpu() - cpu) * 1e6 / N as f64;
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);

    let dir = temp_dir("ingest-writer");
    let (piped, piped_cpu, dropped) = through_writer(&dir, N, start_ts);
    let _ = std::fs::remove_dir_all(&dir);

    // The same, while another thread searches the store as it grows.
    let dir = temp_dir("ingest-searched");
    std::fs::create_dir_all(&dir).unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let searcher = std::thread::spawn({
        let (dir, stop) = (dir.clone(), stop.clone());
        move || {
            let store = LogStore::open(&dir).unwrap();
            let queries: Vec<Query> = [
                "level:error AND \"out of gas\"",
                "chain:ethereum AND timeout",
                "request_id:req-00000001",
            ]
            .iter()
            .map(|q| Query::parse(q).unwrap())
            .collect();
            let mut searches = 0u64;
            // Twenty searches a second: a few people and a dashboard.
            let started = Instant::now();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let q = &queries[searches as usize % queries.len()];
                black_box(store.search(q, &SearchOptions::default()).unwrap());
                searches += 1;
                let due = started + Duration::from_millis(50) * searches as u32;
                std::thread::sleep(due.saturating_duration_since(Instant::now()));
            }
            searches
        }
    });
    let started = Instant::now();
    let (searched_rate, searched_cpu, _) = through_writer(&dir, N, start_ts);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let searches = searcher.join().unwrap();
    let search_rate = searches as f64 / started.elapsed().as_secs_f64();
    let _ = std::fs::remove_dir_all(&dir);

    println!("\nlogs_ingest: {N} events into the store");
    println!(
        "{:<52} {:>12} {:>10} {:>6} {:>14}",
        "path", "events/s", "target", "", "CPU µs/event"
    );
    for (name, rate, target, cpu) in [
        (
            "LogStore::insert, a writer batch per commit",
            direct,
            200_000.0,
            direct_cpu,
        ),
        (
            "queue + writer thread (send, then flush)",
            piped,
            200_000.0,
            piped_cpu,
        ),
        (
            "queue + writer thread, searches running",
            searched_rate,
            100_000.0,
            searched_cpu,
        ),
    ] {
        println!(
            "{name:<52} {rate:>12.0} {:>10} {:>6} {cpu:>14.2}",
            format!(">= {}", target as u64),
            pass(rate >= target)
        );
    }
    println!(
        "  writer path: {dropped} dropped; {search_rate:.0} searches/s ran beside the last one"
    );
}

/// The bench's queries: (kind, query, since the newest event in ms).
pub(crate) fn queries(n: u64) -> Vec<(&'static str, String, Option<i64>)> {
    let rare_id = format!("req-{:08x}", n / 3);
    let rare_block = (n / 2..n)
        .map(mix)
        .find(|x| x % 100 < 5)
        .map_or(0, |x| x % 1_000_000);
    vec![
        (
            "field + text",
            r#"level:error AND "out of gas""#.into(),
            None,
        ),
        ("field + text", "chain:ethereum AND timeout".into(), None),
        (
            "field + field + text",
            "level:error AND chain:solana AND gas".into(),
            None,
        ),
        ("phrase", r#""out of gas""#.into(), None),
        ("field", "level:warn".into(), None),
        (
            "field AND NOT field",
            "model:claude AND NOT status:success".into(),
            None,
        ),
        ("OR of texts", "gas OR timeout OR miss".into(), None),
        ("NOT field", "NOT level:info".into(), None),
        ("rare number", format!("block AND {rare_block}"), None),
        (
            "exact non-text field",
            "attempt:3 AND chain:base".into(),
            None,
        ),
        ("exact, one match", format!("request_id:{rare_id}"), None),
        ("exact, no match", "request_id:req-ffffffff".into(), None),
        ("exact, every event", "service.name:bench".into(), None),
        (
            "exact, no match (was a scan)",
            "service.name:other".into(),
            None,
        ),
        (
            "time range (last hour)",
            r#""out of gas""#.into(),
            Some(3_600_000),
        ),
        (
            "time range, 1 h a day ago",
            "level:error".into(),
            Some(-86_400_000),
        ),
        ("wildcard", "chain:eth*".into(), None),
        ("range", "attempt:[3 TO 4] AND level:error".into(), None),
        ("comparison", "event.duration:>9990000".into(), None),
    ]
}

/// Bytes of every file under `dir`.
fn bytes(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => bytes(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum()
        })
        .unwrap_or(0)
}

/// Writes `n` generated events spread evenly over the `days` days before
/// `now` into a new store in `dir`, `per_commit` events a commit, and waits
/// for the merges; returns the store and the time it took.
pub(crate) fn build_store(
    dir: &std::path::Path,
    n: u64,
    now: i64,
    days: i64,
    per_commit: usize,
) -> (LogStore, Duration) {
    let span_ms = days * 86_400_000;
    let mut store = LogStore::open(dir).unwrap();
    let start = Instant::now();
    let mut batch = Vec::with_capacity(per_commit);
    for i in 0..n {
        batch.push(event(i, now - span_ms + (i as i64 * span_ms / n as i64)));
        if batch.len() == per_commit {
            store.insert(&batch).unwrap();
            batch.clear();
        }
    }
    store.insert(&batch).unwrap();
    let build = start.elapsed();
    // Merges finish, as they do in a store left alone a while.
    store.close_writers();
    (store, build)
}

pub(crate) fn search_table() {
    // Both stores are built first and searched in the same rounds, each
    // query on one store then the other: on a machine shared with other
    // work, whatever preempts a search falls on both sizes alike, so the
    // 3M/1M ratio measures the store, not the neighbours.
    let now = now_ms();
    let per_commit = WriterOptions::default().batch_size;
    let sizes = [1_000_000u64, 3_000_000];
    let mut stores = Vec::new();
    for n in sizes {
        let dir = temp_dir(&format!("search-{n}"));
        let (store, build) = build_store(&dir, n, now, 2, per_commit);
        let count = store.count().unwrap();
        let bytes = bytes(&dir);
        println!(
            "\nlogs_search: {count} events over 2 days, built in {:.1} s ({:.0} events/s, {per_commit} per commit); {:.1} MiB on disk = {:.0} bytes per event (the ECS line alone: about 450)",
            build.as_secs_f64(),
            count as f64 / build.as_secs_f64(),
            bytes as f64 / 1048576.0,
            bytes as f64 / count as f64
        );
        stores.push((n, dir, store));
    }
    let kinds: Vec<Vec<(&str, String, Query, SearchOptions)>> = sizes
        .iter()
        .map(|&n| {
            queries(n)
                .into_iter()
                .map(|(kind, q, since)| {
                    let options = SearchOptions {
                        since_ms: since.map(|s| if s > 0 { now - s } else { now + s - 3_600_000 }),
                        until_ms: since.filter(|s| *s < 0).map(|s| now + s),
                        ..SearchOptions::default()
                    };
                    let shown = if since.is_some() {
                        format!("{q} (time range)")
                    } else {
                        q.clone()
                    };
                    (kind, shown, Query::parse(&q).unwrap(), options)
                })
                .collect()
        })
        .collect();
    // times[store][query]: one per round.
    let mut times = vec![vec![Vec::with_capacity(RUNS); kinds[0].len()]; sizes.len()];
    let mut hits = vec![vec![0; kinds[0].len()]; sizes.len()];
    for _ in 0..RUNS {
        for q in 0..kinds[0].len() {
            for (s, (_, _, store)) in stores.iter().enumerate() {
                let (_, _, query, options) = &kinds[s][q];
                let start = Instant::now();
                hits[s][q] = black_box(store.search(query, options).unwrap()).len();
                times[s][q].push(start.elapsed().as_secs_f64() * 1000.0);
            }
        }
    }
    let mut p95s = vec![Vec::new(); sizes.len()];
    for (s, &n) in sizes.iter().enumerate() {
        println!(
            "\nlogs_search: {n} events, limit 100, newest first, {RUNS} rounds interleaved with the other store's"
        );
        println!(
            "{:<30} {:<46} {:>6} {:>9} {:>9} {:>9}",
            "kind", "query", "hits", "p50 ms", "p95 ms", "max ms"
        );
        for (q, (kind, shown, _, _)) in kinds[s].iter().enumerate() {
            let p95 = percentile(&times[s][q], 0.95);
            println!(
                "{kind:<30} {shown:<46} {:>6} {:>9.2} {p95:>9.2} {:>9.2}",
                hits[s][q],
                percentile(&times[s][q], 0.5),
                percentile(&times[s][q], 1.0)
            );
            p95s[s].push(p95);
        }
    }
    for (_, dir, store) in stores {
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }
    let (one, three) = (&p95s[0], &p95s[1]);
    let worst1 = one.iter().copied().fold(0.0, f64::max);
    let worst3 = three.iter().copied().fold(0.0, f64::max);
    let ratio = one
        .iter()
        .zip(three)
        .map(|(a, b)| b / a.max(0.05))
        .fold(0.0, f64::max);
    println!(
        "worst p95 at 1M: {worst1:.2} ms (target <= 20 ms): {}; at 3M: {worst3:.2} ms (<= 1.5x 1M: {}); worst 3M/1M ratio of one query's p95 (p95s under 0.05 ms counted as 0.05): {ratio:.2} (target <= 1.5): {}",
        pass(worst1 <= 20.0),
        pass(worst3 <= 1.5 * worst1),
        pass(ratio <= 1.5)
    );
}

/// Rounds of the search table: a p95 of 100 is not moved by the odd
/// preemption of a loaded machine, as one of 20 is.
const RUNS: usize = 100;
