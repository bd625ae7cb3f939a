//! A log-batch split into request bodies within MLflow's limits
//! ([`limits`](super::limits)), every key checked first so that nothing
//! is sent when one is invalid, and values cut to what MLflow accepts
//! (with a warning, not an error).

use serde::Serialize;

use super::limits;
use crate::mlflow::error::MlflowError;
use crate::mlflow::types::{
    KeyValue, MAX_PARAM_VALUE_LENGTH, MAX_TAG_VALUE_LENGTH, Metric, truncate_value, validate_key,
};

/// Tags checked and cut to MLflow's limits.
pub(super) fn checked_tags(tags: &[KeyValue]) -> Result<Vec<KeyValue>, MlflowError> {
    checked(tags, MAX_TAG_VALUE_LENGTH, "tag")
}

fn checked(list: &[KeyValue], max: usize, what: &str) -> Result<Vec<KeyValue>, MlflowError> {
    list.iter()
        .map(|kv| {
            validate_key(&kv.key)?;
            let mut kv = kv.clone();
            if truncate_value(&mut kv.value, max) {
                tracing::warn!(target: "hyperkit_obs::mlflow", key = %kv.key, limit = max, "the value of MLflow {what} `{}` is longer than MLflow accepts; it was cut to {max} characters", kv.key);
            }
            Ok(kv)
        })
        .collect()
}

#[derive(Serialize)]
struct BatchBody<'a> {
    run_id: &'a str,
    metrics: Vec<&'a Metric>,
    params: Vec<KeyValue>,
    tags: Vec<KeyValue>,
}

/// Splits a log-batch into request bodies within MLflow's limits, checking
/// every key first so that nothing is sent when one is invalid.
pub(crate) fn batches(
    run_id: &str,
    metrics: &[Metric],
    params: &[KeyValue],
    tags: &[KeyValue],
) -> Result<Vec<serde_json::Value>, MlflowError> {
    for m in metrics {
        validate_key(&m.key)?;
    }
    let params = checked(params, MAX_PARAM_VALUE_LENGTH, "param")?;
    let tags = checked_tags(tags)?;
    let envelope = serde_json::to_string(&BatchBody {
        run_id,
        metrics: vec![],
        params: vec![],
        tags: vec![],
    })
    .map_or(100, |s| s.len());
    let mut out = Vec::new();
    let mut cur = BatchBody {
        run_id,
        metrics: Vec::new(),
        params: Vec::new(),
        tags: Vec::new(),
    };
    let mut bytes = envelope;
    let flush = |cur: &mut BatchBody<'_>, bytes: &mut usize, out: &mut Vec<serde_json::Value>| {
        if !(cur.metrics.is_empty() && cur.params.is_empty() && cur.tags.is_empty()) {
            let body = BatchBody {
                run_id,
                metrics: std::mem::take(&mut cur.metrics),
                params: std::mem::take(&mut cur.params),
                tags: std::mem::take(&mut cur.tags),
            };
            out.push(serde_json::to_value(&body).unwrap_or_default());
        }
        *bytes = envelope;
    };
    let count = |cur: &BatchBody<'_>| cur.metrics.len() + cur.params.len() + cur.tags.len();
    for p in params {
        let s = json_len(&p);
        if cur.params.len() == limits::PARAMS_OR_TAGS
            || count(&cur) == limits::ENTITIES
            || bytes + s > limits::BYTES
        {
            flush(&mut cur, &mut bytes, &mut out);
        }
        bytes += s;
        cur.params.push(p);
    }
    for t in tags {
        let s = json_len(&t);
        if cur.tags.len() == limits::PARAMS_OR_TAGS
            || count(&cur) == limits::ENTITIES
            || bytes + s > limits::BYTES
        {
            flush(&mut cur, &mut bytes, &mut out);
        }
        bytes += s;
        cur.tags.push(t);
    }
    for m in metrics {
        let s = json_len(m);
        if cur.metrics.len() == limits::METRICS
            || count(&cur) == limits::ENTITIES
            || bytes + s > limits::BYTES
        {
            flush(&mut cur, &mut bytes, &mut out);
        }
        bytes += s;
        cur.metrics.push(m);
    }
    flush(&mut cur, &mut bytes, &mut out);
    Ok(out)
}

/// An entity's size in a request body: its JSON and a comma.
fn json_len<T: Serialize>(v: &T) -> usize {
    serde_json::to_string(v).map_or(0, |s| s.len()) + 1
}
