//! The generator of realistic events shared by every store table: the
//! level mix of a service (70 % info), messages with varying numbers,
//! labels of the tracking macros, a unique request id.

use hyperkit_obs::logs::store::StoreEntry;
use hyperkit_obs::logs::{FieldValue, LogRecord};

const CHAINS: [&str; 5] = ["ethereum", "solana", "polygon", "arbitrum", "base"];
const MODELS: [&str; 4] = ["gpt-4o", "claude-3", "llama-3", "mistral"];
const TASKS: [&str; 3] = ["codegen", "review", "summarize"];

/// A well-spread pseudo-random number for event `i`.
pub(crate) fn mix(i: u64) -> u64 {
    i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 11
}

/// Event `i`, at `ts`.
pub(crate) fn event(i: u64, ts: i64) -> StoreEntry {
    let x = mix(i);
    let (level, message, status) = match x % 100 {
        0..5 => (
            "error",
            format!("build failed: out of gas at block {}", x % 1_000_000),
            "failure",
        ),
        5..15 => (
            "warn",
            format!("request timeout after {} retries", x % 7),
            "failure",
        ),
        15..30 => (
            "debug",
            format!("cache miss for key {:x}", x % 65_536),
            "success",
        ),
        _ => (
            "info",
            format!("model call finished in {} ms", x % 5_000),
            "success",
        ),
    };
    let mut r = LogRecord::new(ts, level, "agent::pipeline", message);
    r.fields = vec![
        ("status", FieldValue::Str(status.into())),
        ("event.duration", FieldValue::U64(x % 10_000_000)),
        ("attempt", FieldValue::U64(x % 5)),
        ("request_id", FieldValue::Str(format!("req-{i:08x}"))),
    ];
    if level == "error" {
        r.fields
            .push(("error.message", FieldValue::Str("out of gas".into())));
    }
    r.span_fields = vec![
        (
            "chain",
            FieldValue::Str(CHAINS[(x / 100 % 5) as usize].into()),
        ),
        (
            "model",
            FieldValue::Str(MODELS[(x / 500 % 4) as usize].into()),
        ),
        (
            "task",
            FieldValue::Str(TASKS[(x / 2000 % 3) as usize].into()),
        ),
    ];
    r.span_name = Some("complete");
    r.trace_id = hyperkit_obs::trace::TraceId::from_u128(u128::from(x % 4096 + 1));
    r.span_id = hyperkit_obs::trace::SpanId::from_u64(x % 4096 + 2);
    StoreEntry::new(&r, "bench")
}
