//! UTC timestamps without a date library: RFC 3339 formatting with
//! milliseconds for `@timestamp`, parsing for the CLI's `--since`/`--until`,
//! and the UTC day that names a store partition.

use std::cell::Cell;

use crate::util::{civil_from_days, days_from_civil};

thread_local! {
    /// The second last written on this thread and its text up to the
    /// milliseconds (`YYYY-MM-DDTHH:MM:SS.`): the lines of one thread mostly
    /// fall in the same second, which then costs a copy.
    static LAST_SECOND: Cell<(i64, [u8; 20])> = const { Cell::new((i64::MIN, [0; 20])) };
}

/// Writes `ms` (milliseconds since the Unix epoch) as
/// `YYYY-MM-DDTHH:MM:SS.mmmZ`.
pub(crate) fn write_rfc3339_millis(ms: i64, out: &mut Vec<u8>) {
    let second = ms.div_euclid(1000);
    let milli = ms.rem_euclid(1000) as u32;
    let prefix = LAST_SECOND
        .try_with(|last| {
            let (at, text) = last.get();
            if at == second {
                return text;
            }
            let text = second_text(second);
            last.set((second, text));
            text
        })
        // A thread's last lines, after its locals are gone.
        .unwrap_or_else(|_| second_text(second));
    out.extend_from_slice(&prefix);
    out.extend_from_slice(&[
        b'0' + (milli / 100) as u8,
        b'0' + (milli / 10 % 10) as u8,
        b'0' + (milli % 10) as u8,
        b'Z',
    ]);
}

/// `second` (since the Unix epoch) as `YYYY-MM-DDTHH:MM:SS.`
fn second_text(second: i64) -> [u8; 20] {
    let days = second.div_euclid(86_400);
    let in_day = second.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    let (h, rest) = (in_day / 3_600, in_day % 3_600);
    let (min, s) = (rest / 60, rest % 60);
    // Digit by digit: `write!` costs more than the rest of a document.
    use crate::util::write_padded as pad;
    let mut out = Vec::with_capacity(20);
    // Years outside 0..=9999 are not RFC 3339; they are clamped.
    pad(&mut out, y.clamp(0, 9999) as u64, 4);
    out.push(b'-');
    pad(&mut out, u64::from(m), 2);
    out.push(b'-');
    pad(&mut out, u64::from(d), 2);
    out.push(b'T');
    pad(&mut out, h as u64, 2);
    out.push(b':');
    pad(&mut out, min as u64, 2);
    out.push(b':');
    pad(&mut out, s as u64, 2);
    out.push(b'.');
    let mut text = [b'0'; 20];
    text.copy_from_slice(&out);
    text
}

/// `ms` as an RFC 3339 string with milliseconds, UTC.
///
/// ```
/// assert_eq!(hyperkit_obs::logs::format_timestamp(0), "1970-01-01T00:00:00.000Z");
/// ```
pub fn format_timestamp(ms: i64) -> String {
    let mut out = Vec::with_capacity(24);
    write_rfc3339_millis(ms, &mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// The UTC day of `ms` as the number `YYYYMMDD`, which names the store's
/// partition for that day.
#[cfg(feature = "log-store")]
pub(crate) fn day_of(ms: i64) -> u32 {
    let (y, m, d) = civil_from_days(ms.div_euclid(86_400_000));
    (y.clamp(0, 9999) as u32) * 10_000 + m * 100 + d
}

/// Milliseconds at the start of the UTC day `YYYYMMDD`.
#[cfg(feature = "log-store")]
pub(crate) fn day_start(day: u32) -> i64 {
    days_from_civil(i64::from(day / 10_000), day / 100 % 100, day % 100) * 86_400_000
}

/// Parses a point in time for `--since`/`--until`: a duration before `now`
/// (`90s`, `30m`, `1h`, `2d`, `1w`) or an RFC 3339 timestamp
/// (`2026-11-27T10:00:00Z`, `2026-11-27T10:00:00.5+01:00`, or a bare date
/// `2026-11-27`, meaning its start in UTC). Returns milliseconds since the
/// epoch.
///
/// ```
/// use hyperkit_obs::logs::parse_time;
/// assert_eq!(parse_time("1970-01-01T00:00:01Z", 0), Ok(1000));
/// assert_eq!(parse_time("1h", 7_200_000), Ok(3_600_000));
/// assert!(parse_time("yesterday", 0).is_err());
/// ```
pub fn parse_time(text: &str, now_ms: i64) -> Result<i64, String> {
    let t = text.trim();
    let bad = || {
        format!(
            "`{text}` is not a time: write a duration before now (30m, 1h, 2d) or an RFC 3339 timestamp (2026-11-27T10:00:00Z)"
        )
    };
    if let Some(unit) = t.chars().last().filter(char::is_ascii_alphabetic)
        && t.len() > 1
        && t[..t.len() - 1].bytes().all(|b| b.is_ascii_digit())
    {
        let n: i64 = t[..t.len() - 1].parse().map_err(|_| bad())?;
        let unit_ms = match unit {
            's' => 1000,
            'm' => 60_000,
            'h' => 3_600_000,
            'd' => 86_400_000,
            'w' => 7 * 86_400_000,
            _ => return Err(bad()),
        };
        return Ok(now_ms.saturating_sub(n.saturating_mul(unit_ms)));
    }
    parse_rfc3339(t).ok_or_else(bad)
}

fn parse_rfc3339(t: &str) -> Option<i64> {
    let b = t.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let s = t.get(r)?;
        s.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| s.parse().ok())?
    };
    if b.len() < 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) {
        return None;
    }
    let mut ms = days_from_civil(y, mo as u32, d as u32) * 86_400_000;
    if b.len() == 10 {
        return Some(ms);
    }
    if !matches!(b[10], b'T' | b't' | b' ') || b.len() < 19 || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (h, mi, s) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if h > 23 || mi > 59 || s > 60 {
        return None;
    }
    ms += (h * 3600 + mi * 60 + s) * 1000;
    let mut i = 19;
    if b.get(i) == Some(&b'.') {
        let start = i + 1;
        i = start;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        if i == start {
            return None;
        }
        let frac = &t[start..i.min(start + 3)];
        let scale = 10i64.pow(3 - frac.len() as u32);
        ms += frac.parse::<i64>().ok()? * scale;
    }
    match b.get(i)? {
        b'Z' | b'z' if i + 1 == b.len() => Some(ms),
        sign @ (b'+' | b'-') if b.len() == i + 6 && b[i + 3] == b':' => {
            let off = (num(i + 1..i + 3)? * 60 + num(i + 4..i + 6)?) * 60_000;
            Some(if *sign == b'+' { ms - off } else { ms + off })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_format_as_rfc3339_utc_with_millis() {
        assert_eq!(format_timestamp(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            format_timestamp(1_795_757_293_123),
            "2026-11-27T05:28:13.123Z"
        );
        assert_eq!(
            format_timestamp(951_782_400_000),
            "2000-02-29T00:00:00.000Z"
        );
    }

    #[test]
    fn the_second_kept_for_the_next_line_never_shows_in_another() {
        // Forwards and backwards over a second, a day and a year, on one
        // thread: each text parses back to its own millisecond.
        let new_year = 1_798_761_600_000; // 2027-01-01T00:00:00.000Z
        let around = (new_year - 1_002..new_year + 1_002).chain((new_year - 3..new_year + 3).rev());
        for ms in around.chain([0, 999, 1_000, -1, 4_102_444_799_999, 1]) {
            let text = format_timestamp(ms);
            assert_eq!(text.len(), 24, "{text}");
            assert_eq!(parse_time(&text, 0), Ok(ms), "{text}");
        }
        assert_eq!(format_timestamp(new_year - 1), "2026-12-31T23:59:59.999Z");
        assert_eq!(format_timestamp(new_year), "2027-01-01T00:00:00.000Z");
    }

    #[test]
    fn rfc3339_and_relative_times_parse() {
        let ms = 1_795_757_293_123;
        assert_eq!(parse_time("2026-11-27T05:28:13.123Z", 0), Ok(ms));
        assert_eq!(parse_time("2026-11-27T06:28:13.123+01:00", 0), Ok(ms));
        assert_eq!(parse_time("2026-11-27", 0), Ok(ms - 19_693_123));
        assert_eq!(parse_time("30m", ms), Ok(ms - 1_800_000));
        assert_eq!(parse_time("2d", ms), Ok(ms - 172_800_000));
        assert!(parse_time("5x", ms).is_err());
        assert!(parse_time("2026-13-01", ms).is_err());
    }

    #[test]
    #[cfg(feature = "log-store")]
    fn days_name_partitions_and_round_trip() {
        let ms = 1_795_757_293_123;
        assert_eq!(day_of(ms), 20261127);
        assert_eq!(day_start(20261127), ms - 19_693_123);
        assert_eq!(day_of(day_start(20000229)), 20000229);
    }
}
