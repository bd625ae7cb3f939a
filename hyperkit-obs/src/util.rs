//! Small pieces every exporter needs, written once: wall-clock time and the
//! civil calendar, random numbers for ids and jitter, exponential backoff,
//! failure logs limited to one line every ten seconds, and text quoted in
//! error messages.

use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch, now.
pub(crate) fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Milliseconds since the Unix epoch of `t`.
#[cfg(feature = "mlflow")]
pub(crate) fn system_ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// `days_from_civil`).
pub(crate) fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `(year, month, day)` of a day count since 1970-01-01 (the inverse of
/// [`days_from_civil`]).
pub(crate) fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// 64 random bits: the standard library's randomly keyed hasher over the
/// time, the process and a counter, so every call differs. Enough for ids
/// and jitter; not for secrets.
/// Appends `n` in decimal (no allocation, no formatting machinery: this is
/// on the path of every log line and every scraped sample).
#[inline]
pub(crate) fn write_u64(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// Appends `n` in decimal, with its sign.
#[inline]
pub(crate) fn write_i64(out: &mut Vec<u8>, n: i64) {
    if n < 0 {
        out.push(b'-');
    }
    write_u64(out, n.unsigned_abs());
}

/// Appends the low `width` digits of `n`, zero-padded.
#[inline]
pub(crate) fn write_padded(out: &mut Vec<u8>, mut n: u64, width: usize) {
    let mut digits = [b'0'; 20];
    let width = width.min(digits.len());
    for i in (0..width).rev() {
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
    }
    out.extend_from_slice(&digits[..width]);
}

/// Appends `n` as 16 lower-case hex digits.
#[inline]
pub(crate) fn write_hex16(out: &mut Vec<u8>, n: u64) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut digits = [0u8; 16];
    for (i, d) in digits.iter_mut().enumerate() {
        *d = HEX[((n >> (60 - 4 * i)) & 0xf) as usize];
    }
    out.extend_from_slice(&digits);
}

pub(crate) fn random_u64() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.write_u32(std::process::id());
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.finish()
}

/// `my_crate::errors::ModelError<T>` → `ModelError`.
#[cfg_attr(not(any(feature = "mlflow", feature = "otlp")), allow(dead_code))]
pub(crate) fn short_type_name(name: &str) -> &str {
    let base = name.split('<').next().unwrap_or(name);
    base.rsplit("::").next().unwrap_or(base)
}

/// A number in `[0, 1)`, for jitter.
pub(crate) fn random_unit() -> f64 {
    (random_u64() >> 11) as f64 / (1u64 << 53) as f64
}

/// The next wait of an exponential backoff: `initial` first, then doubling
/// up to `max`, plus up to 25% jitter.
pub(crate) fn next_backoff(current: Duration, initial: Duration, max: Duration) -> Duration {
    let next = if current.is_zero() {
        initial
    } else {
        (current * 2).min(max)
    };
    next + next.mul_f64(0.25 * random_unit())
}

/// Lets a failure through to the log at most once every ten seconds and
/// counts the ones it held back.
#[derive(Debug, Default)]
pub(crate) struct LogLimiter {
    last: Option<Instant>,
    suppressed: u64,
}

impl LogLimiter {
    /// `Some(n)` when a line may be written now, `n` being how many were
    /// held back since the last one; `None` (and one more held back)
    /// otherwise.
    pub(crate) fn admit(&mut self) -> Option<u64> {
        let now = Instant::now();
        if self
            .last
            .is_some_and(|t| now.duration_since(t) < Duration::from_secs(10))
        {
            self.suppressed += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.suppressed))
    }
}

/// `text` as an error message quotes it: control characters and line breaks
/// escaped, so the message stays one line, and cut after 40 characters, so
/// it stays short.
pub fn shown(text: &str) -> String {
    const LONGEST: usize = 40;
    let mut out = String::new();
    for (i, c) in text.chars().enumerate() {
        if i == LONGEST {
            out.push('…');
            break;
        }
        if c.is_control() || (c.is_whitespace() && c != ' ') {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// What is wrong with `key` as an MLflow param, metric or tag key, the way
/// MLflow's server checks it (`_validate_param_name` and friends): not
/// empty, at most 250 characters, only alphanumerics, `_ - . /` and spaces
/// (MLflow 2's rule, which MLflow 3 also accepts), and no path that would
/// name another key (`a//b`, `./a`, `../a`, `/a`, `a/`). `None` when it is
/// fine. Compiled without the `mlflow` feature too: score names are checked
/// whatever sinks are built in.
pub(crate) fn mlflow_key_problem(key: &str) -> Option<&'static str> {
    if key.is_empty() {
        Some("a key cannot be empty")
    } else if key.chars().count() > 250 {
        Some("a key has at most 250 characters (MLflow's MAX_ENTITY_KEY_LENGTH)")
    } else if !key
        .chars()
        .all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.' | ' ' | '/'))
    {
        Some("a key may hold only alphanumerics, underscores, dashes, periods, spaces and slashes")
    } else if key.starts_with('/')
        || key
            .split('/')
            .any(|s| s.is_empty() || s == ".." || s == ".")
    {
        Some("a key must not be a path naming another key (`/a`, `a/`, `a//b`, `./a`, `../a`)")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(f: impl FnOnce(&mut Vec<u8>)) -> String {
        let mut out = Vec::new();
        f(&mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn numbers_are_written_as_std_formats_them() {
        for n in [0u64, 9, 10, 99, 12_345, u64::MAX] {
            assert_eq!(text(|o| write_u64(o, n)), n.to_string());
            assert_eq!(text(|o| write_hex16(o, n)), format!("{n:016x}"));
        }
        for n in [0i64, -1, 42, i64::MIN, i64::MAX] {
            assert_eq!(text(|o| write_i64(o, n)), n.to_string());
        }
        assert_eq!(text(|o| write_padded(o, 7, 3)), "007");
        assert_eq!(text(|o| write_padded(o, 2026, 4)), "2026");
        assert_eq!(text(|o| write_padded(o, 12_345, 2)), "45");
    }
}
