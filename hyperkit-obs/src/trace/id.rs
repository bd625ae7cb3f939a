//! Trace and span ids as OpenTelemetry and W3C Trace Context define them
//! (128 and 64 bits, lower-case hex), the flags byte, and the per-thread
//! generator that makes new ids without a lock or a system call.
//!
//! Nothing here allocates or panics; parsing an id from text returns `None`
//! for anything that is not exactly the right number of lower-case hex
//! digits, or is all zeros (the invalid id).

use std::cell::Cell;
use std::fmt;

/// A 128-bit trace id: 32 lower-case hex digits, never all zeros.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TraceId(u128);

/// A 64-bit span id: 16 lower-case hex digits, never all zeros.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpanId(u64);

impl TraceId {
    /// The id of these 16 bytes (big-endian, as they are written), or
    /// `None` for all zeros.
    pub const fn from_bytes(bytes: [u8; 16]) -> Option<Self> {
        Self::from_u128(u128::from_be_bytes(bytes))
    }

    /// The id with this value, or `None` for zero.
    pub const fn from_u128(value: u128) -> Option<Self> {
        if value == 0 {
            None
        } else {
            Some(TraceId(value))
        }
    }

    /// The 16 bytes, big-endian (as OTLP carries them).
    pub const fn to_bytes(self) -> [u8; 16] {
        self.0.to_be_bytes()
    }

    /// The value.
    pub const fn to_u128(self) -> u128 {
        self.0
    }

    /// Parses 32 lower-case hex digits.
    ///
    /// ```
    /// use hyperkit_obs::trace::TraceId;
    /// let id = TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap();
    /// assert_eq!(id.to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
    /// assert!(TraceId::from_hex("00000000000000000000000000000000").is_none());
    /// assert!(TraceId::from_hex("4BF92F3577B34DA6A3CE929D0E0E4736").is_none());
    /// ```
    pub fn from_hex(hex: &str) -> Option<Self> {
        if hex.len() != 32 {
            return None;
        }
        Self::from_u128(parse_hex(hex.as_bytes())?)
    }

    /// Appends the 32 hex digits to `out`.
    pub(crate) fn write_hex(self, out: &mut Vec<u8>) {
        crate::util::write_hex16(out, (self.0 >> 64) as u64);
        crate::util::write_hex16(out, self.0 as u64);
    }

    /// The 32 hex digits, on the stack.
    pub(crate) fn hex(self) -> [u8; 32] {
        let mut out = [0u8; 32];
        hex_into(&mut out[..16], (self.0 >> 64) as u64);
        hex_into(&mut out[16..], self.0 as u64);
        out
    }
}

impl SpanId {
    /// The id of these 8 bytes (big-endian), or `None` for all zeros.
    pub const fn from_bytes(bytes: [u8; 8]) -> Option<Self> {
        Self::from_u64(u64::from_be_bytes(bytes))
    }

    /// The id with this value, or `None` for zero.
    pub const fn from_u64(value: u64) -> Option<Self> {
        if value == 0 {
            None
        } else {
            Some(SpanId(value))
        }
    }

    /// The 8 bytes, big-endian (as OTLP carries them).
    pub const fn to_bytes(self) -> [u8; 8] {
        self.0.to_be_bytes()
    }

    /// The value.
    pub const fn to_u64(self) -> u64 {
        self.0
    }

    /// Parses 16 lower-case hex digits.
    ///
    /// ```
    /// use hyperkit_obs::trace::SpanId;
    /// assert_eq!(SpanId::from_hex("00f067aa0ba902b7").unwrap().to_string(), "00f067aa0ba902b7");
    /// assert!(SpanId::from_hex("0000000000000000").is_none());
    /// ```
    pub fn from_hex(hex: &str) -> Option<Self> {
        if hex.len() != 16 {
            return None;
        }
        let v = parse_hex(hex.as_bytes())?;
        Self::from_u64(u64::try_from(v).ok()?)
    }

    /// Appends the 16 hex digits to `out`.
    pub(crate) fn write_hex(self, out: &mut Vec<u8>) {
        crate::util::write_hex16(out, self.0);
    }

    /// The 16 hex digits, on the stack.
    pub(crate) fn hex(self) -> [u8; 16] {
        let mut out = [0u8; 16];
        hex_into(&mut out, self.0);
        out
    }
}

fn hex_into(out: &mut [u8], n: u64) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for (i, d) in out.iter_mut().enumerate().take(16) {
        *d = HEX[((n >> (60 - 4 * i)) & 0xf) as usize];
    }
}

/// Lower-case hex digits only (W3C `HEXDIGLC`), at most 32.
fn parse_hex(digits: &[u8]) -> Option<u128> {
    if digits.len() > 32 {
        return None;
    }
    let mut v = 0u128;
    for d in digits {
        let n = match d {
            b'0'..=b'9' => d - b'0',
            b'a'..=b'f' => d - b'a' + 10,
            _ => return None,
        };
        v = (v << 4) | u128::from(n);
    }
    Some(v)
}

/// Parses exactly two lower-case hex digits.
pub(crate) fn parse_hex_byte(digits: &[u8]) -> Option<u8> {
    if digits.len() != 2 {
        return None;
    }
    u8::try_from(parse_hex(digits)?).ok()
}

impl fmt::Display for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Hex digits are ASCII.
        f.write_str(std::str::from_utf8(&self.hex()).unwrap_or_default())
    }
}

impl fmt::Debug for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TraceId({self})")
    }
}

impl fmt::Display for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(std::str::from_utf8(&self.hex()).unwrap_or_default())
    }
}

impl fmt::Debug for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SpanId({self})")
    }
}

/// The trace-flags byte of W3C Trace Context: bit 0 is *sampled*.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct TraceFlags(u8);

impl TraceFlags {
    /// Not sampled.
    pub const NOT_SAMPLED: TraceFlags = TraceFlags(0);
    /// Sampled: the span is recorded and exported, and its callees should
    /// be too.
    pub const SAMPLED: TraceFlags = TraceFlags(1);

    /// The flags of this byte, as received (bits this version does not
    /// define are dropped, as W3C Trace Context asks).
    pub const fn new(byte: u8) -> Self {
        TraceFlags(byte & 1)
    }

    /// Whether the sampled bit is set.
    pub const fn is_sampled(self) -> bool {
        self.0 & 1 == 1
    }

    /// The byte.
    pub const fn to_u8(self) -> u8 {
        self.0
    }
}

impl fmt::Debug for TraceFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TraceFlags({:02x})", self.0)
    }
}

// ---------------------------------------------------------------------------
// Generating ids
// ---------------------------------------------------------------------------

thread_local! {
    /// This thread's generator state (wyrand), seeded on first use.
    static STATE: Cell<u64> = const { Cell::new(0) };
}

#[cold]
#[inline(never)]
fn seed() -> u64 {
    // Never zero: zero marks an unseeded thread.
    crate::util::random_u64() | 1
}

/// The next random number of this thread (wyrand: one multiply, no lock,
/// no system call; seeded from the process's random source, different on
/// every thread).
#[inline]
fn next() -> u64 {
    let step = |state: &Cell<u64>| {
        let mut s = state.get();
        if s == 0 {
            s = seed();
        }
        s = s.wrapping_add(0xa076_1d64_78bd_642f);
        state.set(s);
        let t = u128::from(s).wrapping_mul(u128::from(s ^ 0xe703_7ed1_a0b4_28db));
        ((t >> 64) as u64) ^ (t as u64)
    };
    // A thread whose locals are being destroyed draws from the process's
    // source.
    STATE
        .try_with(step)
        .unwrap_or_else(|_| crate::util::random_u64())
}

/// A new random span id.
#[inline]
pub(crate) fn new_span_id() -> SpanId {
    loop {
        if let Some(id) = SpanId::from_u64(next()) {
            return id;
        }
    }
}

/// A new random trace id (every bit random, so W3C's "random" trace ids
/// and ratio sampling on the low bits both hold).
#[inline]
pub(crate) fn new_trace_id() -> TraceId {
    loop {
        let v = (u128::from(next()) << 64) | u128::from(next());
        if let Some(id) = TraceId::from_u128(v) {
            return id;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_print_as_lower_case_hex_of_fixed_width_and_parse_back() {
        let t = TraceId::from_u128(0xab).unwrap();
        assert_eq!(t.to_string(), format!("{:032x}", 0xab));
        assert_eq!(TraceId::from_hex(&t.to_string()), Some(t));
        let s = SpanId::from_u64(0x1_0000_0000).unwrap();
        assert_eq!(s.to_string(), "0000000100000000");
        assert_eq!(SpanId::from_hex(&s.to_string()), Some(s));
        let mut out = Vec::new();
        t.write_hex(&mut out);
        s.write_hex(&mut out);
        assert_eq!(out.len(), 48);
        assert_eq!(
            TraceId::from_bytes(t.to_bytes()).unwrap(),
            t,
            "bytes are big-endian both ways"
        );
    }

    #[test]
    fn text_that_is_not_exactly_lower_case_hex_is_no_id() {
        for bad in [
            "",
            "4bf92f3577b34da6a3ce929d0e0e473",
            "4bf92f3577b34da6a3ce929d0e0e47366",
            "4bf92f3577b34da6a3ce929d0e0e473g",
            "4bf92f3577b34da6a3ce929d0e0e473G",
            "-bf92f3577b34da6a3ce929d0e0e4736",
            "+bf92f3577b34da6a3ce929d0e0e4736",
        ] {
            assert!(TraceId::from_hex(bad).is_none(), "{bad}");
        }
        assert!(SpanId::from_hex("00f067aa0ba902b").is_none());
        assert!(SpanId::from_hex("00f067aa0ba902b77").is_none());
        assert!(SpanId::from_hex("é0f067aa0ba902b").is_none());
    }

    #[test]
    fn new_ids_differ_across_calls_and_threads() {
        let mut seen: Vec<u64> = (0..1000).map(|_| new_span_id().to_u64()).collect();
        let other = std::thread::spawn(|| {
            (0..1000)
                .map(|_| new_span_id().to_u64())
                .collect::<Vec<u64>>()
        })
        .join()
        .unwrap();
        seen.extend(other);
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen.len(), 2000);
        let a = new_trace_id();
        assert_ne!(a, new_trace_id());
    }

    #[test]
    fn only_the_sampled_bit_of_the_flags_is_kept() {
        assert!(TraceFlags::new(0xff).is_sampled());
        assert_eq!(TraceFlags::new(0xfe).to_u8(), 0);
        assert_eq!(TraceFlags::new(0x01), TraceFlags::SAMPLED);
    }
}
