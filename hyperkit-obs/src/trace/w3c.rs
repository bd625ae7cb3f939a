//! W3C Trace Context (<https://www.w3.org/TR/trace-context/>): reading and
//! writing the `traceparent` and `tracestate` headers.
//!
//! Reading never panics and never trusts its input: a header that is not
//! exactly what the recommendation allows is a [`TraceparentError`] (the
//! caller then starts a new trace), a `tracestate` that does not parse is
//! dropped whole, and one longer than the recommendation's 512 characters
//! is cut as it says (entries over 128 characters first, then from the end).

use std::fmt;
use std::sync::Arc;

use super::SpanContext;
use super::id::{SpanId, TraceFlags, TraceId, parse_hex_byte};

/// The header carrying the parent: `traceparent`.
pub const TRACEPARENT: &str = "traceparent";
/// The header carrying vendors' state: `tracestate`.
pub const TRACESTATE: &str = "tracestate";

/// The most `tracestate` members W3C allows.
const MAX_MEMBERS: usize = 32;
/// The `tracestate` length W3C asks to propagate at least, and the most this
/// crate keeps.
const MAX_STATE_LEN: usize = 512;

/// Why a `traceparent` header was not used.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TraceparentError {
    /// Not `version-traceid-parentid-flags` with the lengths W3C fixes.
    #[error("traceparent is not `00-<32 hex>-<16 hex>-<2 hex>`")]
    Malformed,
    /// Version `ff`, which W3C forbids.
    #[error("traceparent version ff is forbidden")]
    ForbiddenVersion,
    /// A field has characters other than lower-case hex digits.
    #[error("traceparent holds characters other than lower-case hex digits")]
    NotHex,
    /// The trace id is all zeros.
    #[error("traceparent has the invalid trace id (all zeros)")]
    ZeroTraceId,
    /// The parent id is all zeros.
    #[error("traceparent has the invalid parent id (all zeros)")]
    ZeroSpanId,
}

/// Parses a `traceparent` value into the remote parent it names.
///
/// Version `00` must be exactly 55 characters; a later version may carry
/// more after a `-`, which is ignored, as W3C asks.
///
/// ```
/// use hyperkit_obs::trace::parse_traceparent;
/// let parent = parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
/// assert_eq!(parent.trace_id().to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
/// assert!(parent.is_sampled() && parent.is_remote());
/// assert!(parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01").is_err());
/// ```
pub fn parse_traceparent(value: &str) -> Result<SpanContext, TraceparentError> {
    let v = value.trim_matches(|c| c == ' ' || c == '\t').as_bytes();
    if v.len() < 55 {
        return Err(TraceparentError::Malformed);
    }
    let version = parse_hex_byte(&v[0..2]).ok_or(TraceparentError::NotHex)?;
    if version == 0xff {
        return Err(TraceparentError::ForbiddenVersion);
    }
    if v[2] != b'-' || v[35] != b'-' || v[52] != b'-' {
        return Err(TraceparentError::Malformed);
    }
    if (version == 0 && v.len() != 55) || (v.len() > 55 && v[55] != b'-') {
        return Err(TraceparentError::Malformed);
    }
    let text = |r: std::ops::Range<usize>| std::str::from_utf8(&v[r]).unwrap_or("");
    let hex_ok = |r: std::ops::Range<usize>| {
        v[r].iter()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b))
    };
    if !hex_ok(3..35) || !hex_ok(36..52) {
        return Err(TraceparentError::NotHex);
    }
    let trace_id = TraceId::from_hex(text(3..35)).ok_or(TraceparentError::ZeroTraceId)?;
    let span_id = SpanId::from_hex(text(36..52)).ok_or(TraceparentError::ZeroSpanId)?;
    let flags = parse_hex_byte(&v[53..55]).ok_or(TraceparentError::NotHex)?;
    Ok(SpanContext::remote(
        trace_id,
        span_id,
        TraceFlags::new(flags),
    ))
}

/// The `traceparent` value of `context` (version 00).
pub(crate) fn format_traceparent(context: &SpanContext) -> String {
    let mut out = Vec::with_capacity(55);
    out.extend_from_slice(b"00-");
    context.trace_id().write_hex(&mut out);
    out.push(b'-');
    context.span_id().write_hex(&mut out);
    out.extend_from_slice(if context.is_sampled() { b"-01" } else { b"-00" });
    // Every byte written is ASCII.
    String::from_utf8(out).unwrap_or_default()
}

/// Vendors' state carried along a trace (`tracestate`): kept as the text
/// received, validated, shared by every span of the trace in this process.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct TraceState(Option<Arc<str>>);

impl TraceState {
    /// No state.
    pub const NONE: TraceState = TraceState(None);

    /// Parses `tracestate` header values (several headers are joined with
    /// `,`, as W3C says). Anything W3C does not allow drops the whole state
    /// (an empty one is returned); more than 512 characters are cut to fit.
    ///
    /// ```
    /// use hyperkit_obs::trace::TraceState;
    /// let s = TraceState::parse(["congo=t61rcWkgMzE", "rojo=00f067aa0ba902b7"]);
    /// assert_eq!(s.as_str(), "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7");
    /// assert!(TraceState::parse(["not a member"]).is_empty());
    /// ```
    pub fn parse<'a>(values: impl IntoIterator<Item = &'a str>) -> TraceState {
        let mut members: Vec<&str> = Vec::new();
        for value in values {
            for member in value.split(',') {
                let member = member.trim_matches(|c| c == ' ' || c == '\t');
                if member.is_empty() {
                    continue;
                }
                if members.len() == MAX_MEMBERS || !valid_member(member) {
                    return TraceState::NONE;
                }
                let key = member.split('=').next().unwrap_or_default();
                if members.iter().any(|m| m.split('=').next() == Some(key)) {
                    // A key twice is not allowed.
                    return TraceState::NONE;
                }
                members.push(member);
            }
        }
        let total =
            |m: &[&str]| m.iter().map(|s| s.len()).sum::<usize>() + m.len().saturating_sub(1);
        if total(&members) > MAX_STATE_LEN {
            members.retain(|m| m.len() <= 128);
            while total(&members) > MAX_STATE_LEN {
                members.pop();
            }
        }
        if members.is_empty() {
            TraceState::NONE
        } else {
            TraceState(Some(Arc::from(members.join(","))))
        }
    }

    /// The header value (empty when there is no state).
    pub fn as_str(&self) -> &str {
        self.0.as_deref().unwrap_or("")
    }

    /// Whether there is no state.
    pub fn is_empty(&self) -> bool {
        self.0.is_none()
    }
}

impl fmt::Debug for TraceState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TraceState({:?})", self.as_str())
    }
}

/// `key=value` as W3C's grammar allows: a simple key (`[a-z][a-z0-9_\-*/]*`,
/// at most 256) or a multi-tenant one (`tenant@system`), and a value of
/// printable ASCII but `,` and `=`, at most 256, not ending in a space.
fn valid_member(member: &str) -> bool {
    let Some((key, value)) = member.split_once('=') else {
        return false;
    };
    valid_key(key) && valid_value(value)
}

fn valid_key(key: &str) -> bool {
    let key_char = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_-*/".contains(b);
    match key.split_once('@') {
        None => {
            let b = key.as_bytes();
            !b.is_empty() && b.len() <= 256 && b[0].is_ascii_lowercase() && b.iter().all(key_char)
        }
        Some((tenant, system)) => {
            let (t, s) = (tenant.as_bytes(), system.as_bytes());
            !t.is_empty()
                && t.len() <= 241
                && (t[0].is_ascii_lowercase() || t[0].is_ascii_digit())
                && t.iter().all(key_char)
                && !s.is_empty()
                && s.len() <= 14
                && s[0].is_ascii_lowercase()
                && s.iter().all(key_char)
        }
    }
}

fn valid_value(value: &str) -> bool {
    let b = value.as_bytes();
    !b.is_empty()
        && b.len() <= 256
        && b.iter()
            .all(|c| (0x20..=0x7e).contains(c) && *c != b',' && *c != b'=')
        && b.last() != Some(&b' ')
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_good_traceparent_round_trips() {
        let ctx = parse_traceparent(GOOD).unwrap();
        assert_eq!(format_traceparent(&ctx), GOOD);
        let unsampled = parse_traceparent(&GOOD.replace("-01", "-00")).unwrap();
        assert!(!unsampled.is_sampled());
        assert!(
            parse_traceparent(&format!(" {GOOD}\t")).is_ok(),
            "OWS is allowed"
        );
    }

    #[test]
    fn every_kind_of_bad_traceparent_is_a_typed_error() {
        use TraceparentError::*;
        let cases = [
            ("", Malformed),
            ("00", Malformed),
            (&GOOD[..54], Malformed),
            (&format!("{GOOD}-extra"), Malformed),
            (&GOOD.replacen("00-", "ff-", 1), ForbiddenVersion),
            (&GOOD.replacen("00-", "0g-", 1), NotHex),
            (&GOOD.replace("4bf9", "4BF9"), NotHex),
            (&GOOD.replace("-01", "-zz"), NotHex),
            (&GOOD.replacen('-', "_", 1), Malformed),
            (
                "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
                ZeroTraceId,
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
                ZeroSpanId,
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01é",
                Malformed,
            ),
        ];
        for (value, want) in cases {
            assert_eq!(parse_traceparent(value).err(), Some(want), "{value:?}");
        }
    }

    #[test]
    fn a_later_version_may_carry_more_fields() {
        let later = GOOD.replacen("00-", "01-", 1) + "-what-comes-next";
        assert!(parse_traceparent(&later).is_ok());
        let glued = GOOD.replacen("00-", "01-", 1) + "x";
        assert_eq!(
            parse_traceparent(&glued).err(),
            Some(TraceparentError::Malformed)
        );
    }

    #[test]
    fn no_byte_sequence_makes_parsing_panic() {
        let mut seed = 7u64;
        for len in 0..120 {
            for _ in 0..50 {
                let bytes: Vec<u8> = (0..len)
                    .map(|_| {
                        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
                        b"0123456789abcdefABCDEF-ff \xc3\xa9"[(seed >> 33) as usize % 27]
                    })
                    .collect();
                let text = String::from_utf8_lossy(&bytes);
                let _ = parse_traceparent(&text);
                let _ = TraceState::parse([&*text]);
            }
        }
    }

    #[test]
    fn tracestate_keeps_valid_members_and_drops_invalid_state_whole() {
        assert_eq!(
            TraceState::parse(["a=1 , b@sys=x y", "", "c=3"]).as_str(),
            "a=1,b@sys=x y,c=3"
        );
        for bad in ["A=1", "a=", "a=1,a=2", "1a=2", "a=b=c"] {
            let parsed = TraceState::parse([bad]);
            assert!(parsed.is_empty(), "{bad:?} gave {parsed:?}");
        }
        assert_eq!(
            TraceState::parse(["a=x,"]).as_str(),
            "a=x",
            "empty members are skipped"
        );
        let many: Vec<String> = (0..33).map(|i| format!("k{i}=v")).collect();
        assert!(TraceState::parse(many.iter().map(String::as_str)).is_empty());
    }

    #[test]
    fn a_long_tracestate_is_cut_to_512_characters_as_w3c_says() {
        let big = format!("big={}", "x".repeat(200));
        let small: Vec<String> = (0..30)
            .map(|i| format!("k{i:02}={}", "v".repeat(20)))
            .collect();
        let mut all = vec![big.as_str()];
        all.extend(small.iter().map(String::as_str));
        let s = TraceState::parse(all);
        assert!(s.as_str().len() <= 512, "{}", s.as_str().len());
        assert!(
            !s.as_str().contains("big="),
            "the entry over 128 goes first"
        );
        assert!(s.as_str().starts_with("k00="));
    }
}
