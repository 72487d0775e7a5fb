//! Lowercase hex for trace and span ids, as the text propagation formats and
//! the Mongo schema write them. Encoding is branch-free SWAR (all 16 digits
//! of a `u64` at once); decoding is SWAR too for 16 digits (an id's usual
//! width: eight digits checked and converted at once), one table lookup per
//! digit for other widths. Ids are
//! formatted and parsed on every request that crosses a process, so this is
//! on the path the `propagation/*` benches measure.

/// Lowercase hex of `v`: 16 digits, most significant first.
///
/// ```
/// assert_eq!(&spanrec::hex::encode_u64(0xab), b"00000000000000ab");
/// ```
#[inline]
pub fn encode_u64(v: u64) -> [u8; 16] {
    let mut out = [0u8; 16];
    out[..8].copy_from_slice(&ascii(spread((v >> 32) as u32)).to_be_bytes());
    out[8..].copy_from_slice(&ascii(spread(v as u32)).to_be_bytes());
    out
}

/// Lowercase hex of `v`: 32 digits, most significant first.
#[inline]
pub fn encode_u128(v: u128) -> [u8; 32] {
    let mut out = [0u8; 32];
    out[..16].copy_from_slice(&encode_u64((v >> 64) as u64));
    out[16..].copy_from_slice(&encode_u64(v as u64));
    out
}

/// `0x0000_0000_ABCD_EFGH` → `0x0A0B_0C0D_0E0F_0G0H`: one nibble per byte,
/// in order.
#[inline(always)]
fn spread(x: u32) -> u64 {
    let x = u64::from(x);
    let x = (x | (x << 16)) & 0x0000_FFFF_0000_FFFF;
    let x = (x | (x << 8)) & 0x00FF_00FF_00FF_00FF;
    (x | (x << 4)) & 0x0F0F_0F0F_0F0F_0F0F
}

/// Each byte `n` (0..=15) → `'0' + n`, or `'a' + n - 10` from 10 up.
#[inline(always)]
fn ascii(n: u64) -> u64 {
    // 0x01 in each byte whose nibble is 10 or more.
    let letters = ((n + 0x0606_0606_0606_0606) >> 4) & 0x0101_0101_0101_0101;
    n + 0x3030_3030_3030_3030 + letters * u64::from(b'a' - b'0' - 10)
}

/// Which digits [`decode_u64`] and [`decode_u128`] accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Digits {
    /// `0-9a-f` only (W3C Trace Context, B3).
    Lowercase,
    /// `0-9a-fA-F` (OpenTracing, Jaeger).
    AnyCase,
}

/// A digit's value, or `INVALID` (which has a bit no digit has).
const INVALID: u8 = 0x10;

const fn table(upper: bool) -> [u8; 256] {
    let mut t = [INVALID; 256];
    let mut i = 0;
    while i < 10 {
        t[b'0' as usize + i] = i as u8;
        i += 1;
    }
    let mut i = 0;
    while i < 6 {
        t[b'a' as usize + i] = 10 + i as u8;
        if upper {
            t[b'A' as usize + i] = 10 + i as u8;
        }
        i += 1;
    }
    t
}

static LOWERCASE: [u8; 256] = table(false);
static ANY_CASE: [u8; 256] = table(true);

/// Parses 1..=16 hex digits.
///
/// ```
/// use spanrec::hex::{decode_u64, Digits};
/// assert_eq!(decode_u64(b"00f067aa0ba902b7", Digits::Lowercase), Some(0x00f0_67aa_0ba9_02b7));
/// assert_eq!(decode_u64(b"00F0", Digits::Lowercase), None);
/// ```
#[inline]
pub fn decode_u64(s: &[u8], digits: Digits) -> Option<u64> {
    if let Ok(sixteen) = <&[u8; 16]>::try_from(s) {
        // The common width (ids as most tracers write them).
        return decode_16(sixteen, digits);
    }
    if s.is_empty() || s.len() > 16 {
        return None;
    }
    let table = match digits {
        Digits::Lowercase => &LOWERCASE,
        Digits::AnyCase => &ANY_CASE,
    };
    let mut v = 0u64;
    let mut seen = 0u8;
    for &b in s {
        let d = table[usize::from(b)];
        seen |= d;
        v = (v << 4) | u64::from(d);
    }
    (seen & INVALID == 0).then_some(v)
}

/// Two lowercase hex digits (a W3C version or flags field).
#[inline(always)]
pub(crate) fn decode_2_lowercase(digits: [u8; 2]) -> Option<u8> {
    let (high, low) = (
        LOWERCASE[usize::from(digits[0])],
        LOWERCASE[usize::from(digits[1])],
    );
    ((high | low) & INVALID == 0).then_some((high << 4) | low)
}

/// Exactly 16 lowercase hex digits (W3C ids are fixed-width), eight at a
/// time (SWAR): a range check and a nibble conversion on all eight bytes of
/// a `u64` at once instead of a lookup per digit.
#[inline]
pub fn decode_16_lowercase(digits: &[u8; 16]) -> Option<u64> {
    decode_16(digits, Digits::Lowercase)
}

/// Exactly 16 hex digits of `digits`' kind, all at once in one SSE2
/// register (the x86-64 baseline): a range check per byte by signed
/// compares, a nibble per byte, pairs packed into bytes. About 25
/// instructions where the SWAR form below takes ~50. Tested against the
/// SWAR form and `u64::from_str_radix` (every byte at every position).
#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
#[inline(always)]
fn decode_16(digits: &[u8; 16], kind: Digits) -> Option<u64> {
    // SAFETY: the function's only requirement is SSE2, which this build
    // enables (the cfg above; it is the x86-64 baseline).
    unsafe { decode_16_sse2(digits, kind) }
}

#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
#[target_feature(enable = "sse2")]
#[inline]
fn decode_16_sse2(digits: &[u8; 16], kind: Digits) -> Option<u64> {
    use std::arch::x86_64::{
        _mm_add_epi8, _mm_and_si128, _mm_cmpgt_epi8, _mm_cmplt_epi8, _mm_cvtsi128_si64,
        _mm_movemask_epi8, _mm_or_si128, _mm_packus_epi16, _mm_set1_epi16, _mm_set1_epi8,
        _mm_set_epi64x, _mm_slli_epi16, _mm_srli_epi16,
    };
    let (first, last) = digits.split_at(8);
    // Byte i of `x` is `digits[i]`.
    let x = _mm_set_epi64x(
        i64::from_le_bytes(last.try_into().ok()?),
        i64::from_le_bytes(first.try_into().ok()?),
    );
    // Signed compares: bytes from 0x80 up are negative and in no range.
    let digit = _mm_and_si128(
        _mm_cmpgt_epi8(x, _mm_set1_epi8((b'0' - 1) as i8)),
        _mm_cmplt_epi8(x, _mm_set1_epi8((b'9' + 1) as i8)),
    );
    // Letters are checked in lowercase: setting bit 5 maps 'A'..='F' (and
    // only those, among all bytes) onto 'a'..='f'.
    let folded = match kind {
        Digits::Lowercase => x,
        Digits::AnyCase => _mm_or_si128(x, _mm_set1_epi8(0x20)),
    };
    let letter = _mm_and_si128(
        _mm_cmpgt_epi8(folded, _mm_set1_epi8((b'a' - 1) as i8)),
        _mm_cmplt_epi8(folded, _mm_set1_epi8((b'f' + 1) as i8)),
    );
    if _mm_movemask_epi8(_mm_or_si128(digit, letter)) != 0xFFFF {
        return None;
    }
    // A digit's value is its low nibble; a letter's is its low nibble + 9.
    let nibbles = _mm_add_epi8(
        _mm_and_si128(x, _mm_set1_epi8(0x0F)),
        _mm_and_si128(letter, _mm_set1_epi8(9)),
    );
    // Each 16-bit lane holds two nibbles, the first (more significant) in
    // its low byte: into one byte per lane, then the lanes into 8 bytes.
    let pairs = _mm_and_si128(
        _mm_or_si128(_mm_slli_epi16(nibbles, 4), _mm_srli_epi16(nibbles, 8)),
        _mm_set1_epi16(0x00FF),
    );
    let packed = _mm_cvtsi128_si64(_mm_packus_epi16(pairs, pairs)) as u64;
    // The first pair is the most significant byte.
    Some(packed.swap_bytes())
}

/// Exactly 16 hex digits of `digits`' kind, eight at a time (SWAR).
#[cfg_attr(all(target_arch = "x86_64", target_feature = "sse2"), allow(dead_code))]
#[inline(always)]
fn decode_16_swar(digits: &[u8; 16], kind: Digits) -> Option<u64> {
    let (high, low) = digits.split_at(8);
    let high = decode_8(u64::from_be_bytes(high.try_into().ok()?), kind)?;
    let low = decode_8(u64::from_be_bytes(low.try_into().ok()?), kind)?;
    Some((u64::from(high) << 32) | u64::from(low))
}

/// Exactly 16 hex digits of `digits`' kind (SWAR, where SSE2 is not the
/// baseline).
#[cfg(not(all(target_arch = "x86_64", target_feature = "sse2")))]
#[inline(always)]
fn decode_16(digits: &[u8; 16], kind: Digits) -> Option<u64> {
    decode_16_swar(digits, kind)
}

#[inline(always)]
fn decode_8(x: u64, kind: Digits) -> Option<u32> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    if x & HIGH != 0 {
        return None;
    }
    // Every byte is below 0x80, so adding at most 0x7f to each cannot carry
    // into the next: bit 7 of byte i of `x + (0x80 - c) * ONES` is set
    // exactly when byte i >= c.
    let at_least_0 = x + (0x80 - u64::from(b'0')) * ONES;
    let past_9 = x + (0x80 - u64::from(b'9') - 1) * ONES;
    // Letters are checked in lowercase: setting bit 5 maps 'A'..='F' (and
    // only those, among bytes below 0x80) onto 'a'..='f'. Digits are
    // checked on `x` itself (bit 5 would map 0x10..=0x19 onto them).
    let folded = match kind {
        Digits::Lowercase => x,
        Digits::AnyCase => x | (0x20 * ONES),
    };
    let at_least_a = folded + (0x80 - u64::from(b'a')) * ONES;
    let past_f = folded + (0x80 - u64::from(b'f') - 1) * ONES;
    let valid = (at_least_0 & !past_9) | (at_least_a & !past_f);
    if valid & HIGH != HIGH {
        return None;
    }
    // '0'..='9' have bit 6 clear and their value in the low nibble;
    // 'a'..='f' and 'A'..='F' have bit 6 set and 1..=6 there.
    let n = (x & 0x0F0F_0F0F_0F0F_0F0F) + ((x >> 6) & ONES) * 9;
    // Eight nibbles, most significant first, into 32 bits.
    let n = (n | (n >> 4)) & 0x00FF_00FF_00FF_00FF;
    let n = (n | (n >> 8)) & 0x0000_FFFF_0000_FFFF;
    Some(((n | (n >> 16)) & 0xFFFF_FFFF) as u32)
}

/// Parses 1..=32 hex digits.
#[inline]
pub fn decode_u128(s: &[u8], digits: Digits) -> Option<u128> {
    if s.len() <= 16 {
        return decode_u64(s, digits).map(u128::from);
    }
    if s.len() > 32 {
        return None;
    }
    let (high, low) = s.split_at(s.len() - 16);
    Some((u128::from(decode_u64(high, digits)?) << 64) | u128::from(decode_u64(low, digits)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_matches_format() {
        for v in [0, 1, 9, 10, 15, 0x9f, 0xa0, u64::MAX, 0x0123_4567_89ab_cdef] {
            let e = encode_u64(v);
            assert_eq!(e, format!("{v:016x}").as_bytes());
            assert_eq!(decode_u64(&e, Digits::Lowercase), Some(v));
            let wide = (u128::from(v) << 64) | u128::from(v.rotate_left(17));
            let e = encode_u128(wide);
            assert_eq!(e, format!("{wide:032x}").as_bytes());
            assert_eq!(decode_u128(&e, Digits::Lowercase), Some(wide));
            let upper = format!("{wide:X}");
            assert_eq!(decode_u128(upper.as_bytes(), Digits::AnyCase), Some(wide));
        }
    }

    /// What the spec says, written without our decoder: every byte a
    /// hex digit of the allowed case, then the number.
    fn oracle(s: &[u8], digits: Digits) -> Option<u64> {
        let allowed = |b: &u8| match digits {
            Digits::Lowercase => b.is_ascii_digit() || (b'a'..=b'f').contains(b),
            Digits::AnyCase => b.is_ascii_hexdigit(),
        };
        if s.is_empty() || s.len() > 16 || !s.iter().all(allowed) {
            return None;
        }
        u64::from_str_radix(std::str::from_utf8(s).ok()?, 16).ok()
    }

    /// Both 16-digit decoders (SSE2 where it is the baseline, SWAR
    /// elsewhere) against the oracle, on random inputs: mostly hex digits
    /// of both cases, with any byte mixed in at random positions.
    #[test]
    fn both_fixed_width_decoders_agree_with_the_oracle_on_random_input() {
        const HEX: &[u8] = b"0123456789abcdefABCDEF";
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..200_000 {
            let mut s = [0u8; 16];
            let wild = next() % 4;
            for b in s.iter_mut() {
                let r = next();
                *b = if wild > 0 && r % 13 == 0 {
                    (r >> 8) as u8
                } else {
                    HEX[(r >> 16) as usize % HEX.len()]
                };
            }
            for kind in [Digits::Lowercase, Digits::AnyCase] {
                let want = oracle(&s, kind);
                assert_eq!(decode_16(&s, kind), want, "{s:?}");
                assert_eq!(decode_16_swar(&s, kind), want, "{s:?}");
            }
        }
    }

    #[test]
    fn fixed_width_swar_agrees_with_the_oracle() {
        for base in [
            *b"0123456789abcdef",
            *b"0123456789ABCDEF",
            *b"fedcba9876543210",
        ] {
            for pos in 0..16 {
                for b in 0..=255u8 {
                    let mut s = base;
                    s[pos] = b;
                    let lower = oracle(&s, Digits::Lowercase);
                    assert_eq!(decode_16_lowercase(&s), lower, "{s:?}");
                    assert_eq!(decode_16_swar(&s, Digits::Lowercase), lower, "{s:?}");
                    assert_eq!(
                        decode_16_swar(&s, Digits::AnyCase),
                        oracle(&s, Digits::AnyCase),
                        "{s:?}"
                    );
                    assert_eq!(decode_u64(&s, Digits::Lowercase), lower, "{s:?}");
                    assert_eq!(
                        decode_u64(&s, Digits::AnyCase),
                        oracle(&s, Digits::AnyCase),
                        "{s:?}"
                    );
                    // The table path (other widths) agrees too.
                    assert_eq!(
                        decode_u64(&s[1..], Digits::AnyCase),
                        oracle(&s[1..], Digits::AnyCase),
                        "{s:?}"
                    );
                    let two = [s[pos], s[(pos + 1) % 16]];
                    assert_eq!(
                        decode_2_lowercase(two).map(u64::from),
                        oracle(&two, Digits::Lowercase),
                        "{two:?}"
                    );
                }
            }
        }
        assert_eq!(decode_16_lowercase(b"ffffffffffffffff"), Some(u64::MAX));
        assert_eq!(
            decode_16_lowercase(b"00f067aa0ba902b7"),
            Some(0x00f0_67aa_0ba9_02b7)
        );
    }

    #[test]
    fn rejects_what_is_not_hex() {
        for bad in [
            &b""[..],
            b"g",
            b"0x1",
            b" 1",
            b"12345678901234567",
            b"A",
            b"\xff",
        ] {
            assert_eq!(decode_u64(bad, Digits::Lowercase), None, "{bad:?}");
        }
        assert_eq!(decode_u64(b"A", Digits::AnyCase), Some(10));
        assert_eq!(decode_u128(&[b'1'; 33], Digits::AnyCase), None);
        assert_eq!(decode_u128(b"1-345678901234567890", Digits::AnyCase), None);
    }
}
