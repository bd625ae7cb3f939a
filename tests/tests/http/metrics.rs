//! `/metrics`: the text format, checked by a strict parser, plain and
//! gzipped.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read as _;

use axum::http::StatusCode;
use hyperkit_obs::http::{HttpOptions, METRICS_CONTENT_TYPE, router_with};
use reqwest::header::{ACCEPT_ENCODING, CONTENT_ENCODING, CONTENT_TYPE, HeaderMap, HeaderValue};

use crate::{build, client, header, start};

/// One sample of the Prometheus text format.
#[derive(Clone, Debug, PartialEq)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// A parsed exposition: the families declared by `# TYPE` and every sample.
#[derive(Debug)]
struct Exposition {
    families: BTreeSet<String>,
    samples: Vec<Sample>,
}

impl Exposition {
    /// The value of the sample named `name` whose labels are exactly `labels`.
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let want: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        self.samples
            .iter()
            .find(|s| s.name == name && s.labels == want)
            .map(|s| s.value)
    }
}

/// Parses the text format 0.0.4 strictly enough that a malformed line, a
/// sample of an undeclared family or an unescaped label value is an error.
fn parse_exposition(text: &str) -> Result<Exposition, String> {
    let mut families = BTreeSet::new();
    let mut samples = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let n = n + 1;
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest
                .split_once(' ')
                .ok_or(format!("line {n}: TYPE without a type: {line:?}"))?;
            if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind) {
                return Err(format!("line {n}: unknown type {kind:?}"));
            }
            families.insert(name.to_owned());
            continue;
        }
        if line.starts_with("# HELP ") {
            continue;
        }
        if line.starts_with('#') {
            return Err(format!("line {n}: unknown comment {line:?}"));
        }
        let sample = parse_sample(line).map_err(|e| format!("line {n}: {e}: {line:?}"))?;
        let declared = families.iter().any(|f| {
            sample.name == *f
                || sample
                    .name
                    .strip_prefix(f.as_str())
                    .is_some_and(|s| ["_bucket", "_sum", "_count"].contains(&s))
        });
        if !declared {
            return Err(format!("line {n}: sample of an undeclared family"));
        }
        samples.push(sample);
    }
    Ok(Exposition { families, samples })
}

fn parse_sample(line: &str) -> Result<Sample, String> {
    let name_end = line.find(['{', ' ']).ok_or("no value")?;
    let name = &line[..name_end];
    let valid_name = name.chars().enumerate().all(|(i, c)| {
        c.is_ascii_alphabetic() || c == '_' || c == ':' || (i > 0 && c.is_ascii_digit())
    });
    if name.is_empty() || !valid_name {
        return Err(format!("invalid metric name {name:?}"));
    }
    let mut labels = BTreeMap::new();
    let mut rest = &line[name_end..];
    if let Some(after_brace) = rest.strip_prefix('{') {
        let mut chars = after_brace.char_indices();
        loop {
            // label name up to '='
            let mut key = String::new();
            let mut closed = false;
            for (_, c) in chars.by_ref() {
                match c {
                    '=' => break,
                    '}' if key.is_empty() => {
                        closed = true;
                        break;
                    }
                    c if c.is_ascii_alphanumeric() || c == '_' => key.push(c),
                    c => return Err(format!("bad character {c:?} in a label name")),
                }
            }
            if closed {
                break;
            }
            if chars.next().map(|(_, c)| c) != Some('"') {
                return Err(format!("label {key} has no quoted value"));
            }
            let mut value = String::new();
            loop {
                match chars.next().map(|(_, c)| c) {
                    Some('"') => break,
                    Some('\\') => match chars.next().map(|(_, c)| c) {
                        Some('\\') => value.push('\\'),
                        Some('"') => value.push('"'),
                        Some('n') => value.push('\n'),
                        other => return Err(format!("bad escape {other:?}")),
                    },
                    Some('\n') | None => return Err(format!("unterminated value of {key}")),
                    Some(c) => value.push(c),
                }
            }
            if labels.insert(key.clone(), value).is_some() {
                return Err(format!("label {key} given twice"));
            }
            match chars.next() {
                Some((_, ',')) => continue,
                Some((i, '}')) => {
                    rest = &after_brace[i + 1..];
                    break;
                }
                other => return Err(format!("expected , or }} after a label, got {other:?}")),
            }
        }
        if rest.starts_with('{') {
            return Err("unterminated label set".to_owned());
        }
    }
    let value = rest.strip_prefix(' ').ok_or("no space before the value")?;
    let value = value.split(' ').next().unwrap_or_default();
    let value: f64 = value
        .parse()
        .map_err(|_| format!("value {value:?} is not a number"))?;
    Ok(Sample {
        name: name.to_owned(),
        labels,
        value,
    })
}

/// GETs `/metrics` (with `headers`) and returns the response's headers and
/// body as sent.
async fn scrape(base: &str, headers: HeaderMap) -> (StatusCode, HeaderMap, Vec<u8>) {
    let resp = client()
        .get(format!("{base}/metrics"))
        .headers(headers)
        .send()
        .await
        .expect("GET /metrics");
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp.bytes().await.expect("the /metrics body").to_vec();
    (status, headers, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_answers_200_in_the_text_format_with_the_exposition_content_type() {
    build("http-scrape-plain");
    let (_server, base) = start(router_with(HttpOptions::default())).await;

    let (status, headers, body) = scrape(&base, HeaderMap::new()).await;

    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        header(&headers, CONTENT_TYPE),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    assert_eq!(
        METRICS_CONTENT_TYPE,
        "text/plain; version=0.0.4; charset=utf-8"
    );
    assert_eq!(
        header(&headers, CONTENT_ENCODING),
        None,
        "not compressed unless asked"
    );
    let text = String::from_utf8(body).expect("the exposition is UTF-8");
    let exposition = parse_exposition(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    for family in [
        "hyperkit_builds_total",
        "hyperkit_build_duration_seconds",
        "hyperkit_active_builds",
    ] {
        assert!(
            exposition.families.contains(family),
            "{family} is served:\n{text}"
        );
    }
    assert_eq!(
        exposition.value(
            "hyperkit_builds_total",
            &[("chain", "http-scrape-plain"), ("status", "success")]
        ),
        Some(1.0),
        "the tracked call is in the scrape"
    );
    assert_eq!(
        exposition.value(
            "hyperkit_build_duration_seconds_count",
            &[("chain", "http-scrape-plain")]
        ),
        Some(1.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_gzipped_when_accepted_and_decompress_to_the_same_exposition() {
    build("http-scrape-gzip");
    build("http-scrape-gzip");
    let (_server, base) = start(router_with(HttpOptions::default())).await;
    let (_, _, plain) = scrape(&base, HeaderMap::new()).await;
    let mut accept_gzip = HeaderMap::new();
    accept_gzip.insert(ACCEPT_ENCODING, HeaderValue::from_static("gzip"));

    let (status, headers, gz) = scrape(&base, accept_gzip).await;

    assert_eq!(status, StatusCode::OK);
    assert_eq!(header(&headers, CONTENT_ENCODING), Some("gzip"));
    assert_eq!(header(&headers, CONTENT_TYPE), Some(METRICS_CONTENT_TYPE));
    assert!(
        header(&headers, reqwest::header::VARY)
            .is_some_and(|v| v.to_ascii_lowercase().contains("accept-encoding")),
        "Vary names Accept-Encoding so caches keep both forms apart: {headers:?}"
    );
    assert!(gz.starts_with(&[0x1f, 0x8b]), "a gzip member");
    let mut text = String::new();
    flate2::read::GzDecoder::new(gz.as_slice())
        .read_to_string(&mut text)
        .expect("the body decompresses to UTF-8 text");
    let unzipped = parse_exposition(&text).unwrap_or_else(|e| panic!("gzip: {e}\n{text}"));
    let plain = String::from_utf8(plain).unwrap();
    let plain = parse_exposition(&plain).unwrap_or_else(|e| panic!("plain: {e}\n{plain}"));
    // Other tests add series meanwhile, so families only ever grow between
    // the two scrapes; this test's own series must be identical.
    assert!(
        plain.families.is_subset(&unzipped.families),
        "families missing from the gzip scrape: {:?}",
        plain
            .families
            .difference(&unzipped.families)
            .collect::<Vec<_>>()
    );
    let own = |e: &Exposition| -> Vec<Sample> {
        e.samples
            .iter()
            .filter(|s| s.labels.get("chain").map(String::as_str) == Some("http-scrape-gzip"))
            .cloned()
            .collect()
    };
    assert!(!own(&plain).is_empty());
    assert_eq!(own(&unzipped), own(&plain));
    assert_eq!(
        unzipped.value(
            "hyperkit_builds_total",
            &[("chain", "http-scrape-gzip"), ("status", "success")]
        ),
        Some(2.0)
    );
}
