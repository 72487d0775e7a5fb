//! W3C Baggage (`baggage: key1=value1;property,key2=value2`).
//!
//! One set of limits both ways: a member is admitted on extract only if
//! this service can send it on. Its size is measured as injection writes
//! it (`key=` and the value percent-encoded by [`percent_encode`], commas
//! between members), against the W3C minimums every platform must carry
//! (64 members, 8192 bytes), so a round trip keeps everything it accepted.

use super::{
    encoded_len, is_token, percent_decode, percent_encode, trim_ows, BaggageLimits, Carrier,
};

pub(crate) const HEADER: &str = "baggage";
/// The W3C limits on what is sent and kept: 8192 bytes and 64 list-members.
pub(crate) const MAX_BYTES: usize = 8192;
pub(crate) const MAX_MEMBERS: usize = 64;

/// `baggage-octet`: US-ASCII except CTLs, whitespace, `"`, `,`, `;`, `\`.
fn is_baggage_octet(b: u8) -> bool {
    matches!(b, 0x21 | 0x23..=0x2b | 0x2d..=0x3a | 0x3c..=0x5b | 0x5d..=0x7e)
}

fn valid_value(v: &str) -> bool {
    v.bytes().all(is_baggage_octet)
}

/// `property = key OWS "=" OWS value / key OWS`.
fn valid_property(p: &str) -> bool {
    match p.split_once('=') {
        Some((k, v)) => is_token(trim_ows(k)) && valid_value(trim_ows(v)),
        None => is_token(trim_ows(p)),
    }
}

/// Reads the lines of a `baggage` header (repeated lines are one list,
/// RFC 7230 § 3.2.2) into a context's baggage, within the tracer's limits
/// and the W3C ones.
pub(crate) struct Reader {
    limits: BaggageLimits,
    /// Decoded bytes admitted (keys and values), for `limits.max_bytes`.
    bytes: usize,
    /// The admitted members' size as injection writes them.
    header_bytes: usize,
    refused: usize,
}

impl Reader {
    pub(crate) fn new(limits: BaggageLimits) -> Self {
        Reader {
            limits: BaggageLimits {
                max_items: limits.max_items.min(MAX_MEMBERS),
                max_bytes: limits.max_bytes,
            },
            bytes: 0,
            header_bytes: 0,
            refused: 0,
        }
    }

    /// Members refused so far (outside the grammar, duplicated, or over
    /// the limits).
    pub(crate) fn refused(&self) -> usize {
        self.refused
    }

    /// One line of the header. Members that are malformed or do not fit
    /// are left out and counted.
    pub(crate) fn add_line(&mut self, value: &str, out: &mut Vec<(String, String)>) {
        let mut rest = value;
        while !rest.is_empty() {
            if out.len() >= self.limits.max_items {
                // Full: the rest is refused without parsing or decoding,
                // one byte scan (nothing allocated for input that is
                // rejected).
                self.refused += count_members(rest);
                return;
            }
            let (member, tail) = rest.split_once(',').unwrap_or((rest, ""));
            rest = tail;
            let member = trim_ows(member);
            if member.is_empty() {
                continue;
            }
            if !self.add_member(member, out) {
                self.refused += 1;
            }
        }
    }

    fn add_member(&mut self, member: &str, out: &mut Vec<(String, String)>) -> bool {
        // Properties after `;` are metadata: checked, not kept.
        let mut parts = member.split(';');
        let pair = parts.next().unwrap_or("");
        if !parts.all(valid_property) {
            return false;
        }
        let Some((k, v)) = pair.split_once('=') else {
            return false;
        };
        let (k, v) = (trim_ows(k), trim_ows(v));
        if !is_token(k) || !valid_value(v) {
            return false;
        }
        // A value re-encodes to at least a third of its encoded length:
        // one that cannot fit is refused before it is decoded.
        let comma = usize::from(!out.is_empty());
        let floor = comma + k.len() + 1 + v.len().div_ceil(3);
        if self.header_bytes + floor > MAX_BYTES {
            return false;
        }
        let decoded = percent_decode(v, false);
        let size = comma + k.len() + 1 + encoded_len(&decoded);
        if self.header_bytes + size > MAX_BYTES {
            return false;
        }
        if !self.limits.admit(out, &mut self.bytes, k, decoded) {
            return false;
        }
        self.header_bytes += size;
        true
    }
}

/// Parses one `baggage` value into `out`; returns how many members were
/// left out.
#[cfg(test)]
pub(crate) fn parse(value: &str, limits: BaggageLimits, out: &mut Vec<(String, String)>) -> usize {
    let mut reader = Reader::new(limits);
    reader.add_line(value, out);
    reader.refused()
}

/// The non-empty list members of `list` (members with something besides
/// spaces and tabs between commas): how many members a full list refuses,
/// counted without parsing them, 64 bytes at a time. A megabyte of hostile
/// list, optional whitespace or not, costs a fraction of a millisecond.
///
/// Per 64-byte block, one bit per byte: `commas`, `ows` (space, tab) and
/// `content` (anything else). A member starts at a content byte whose last
/// non-OWS byte before it is a comma (or the list's start, or nothing but
/// OWS since the previous block's last comma): that "last event was a
/// comma" flag is carried forward through runs of OWS with a Kogge–Stone
/// prefix scan (six shift steps), as a carry through propagate bits.
fn count_members(list: &str) -> usize {
    let bytes = list.as_bytes();
    let (mut n, mut in_member) = (0usize, false);
    let mut blocks = bytes.chunks_exact(64);
    for block in &mut blocks {
        let (commas, ows) = masks(block);
        let content = !(commas | ows);
        // `after_comma` bit p: the last non-OWS byte before p is a comma.
        let mut after_comma = (commas << 1) | u64::from(!in_member);
        let mut through = ows << 1;
        for shift in [1, 2, 4, 8, 16, 32] {
            after_comma |= through & (after_comma << shift);
            through &= through << shift;
        }
        n += (content & after_comma).count_ones() as usize;
        let last = |mask: u64| mask >> 63 == 1;
        in_member = last(content) || (last(ows) && !last(after_comma));
    }
    for &b in blocks.remainder() {
        let comma = b == b',';
        let starts = !comma && b != b' ' && b != b'\t' && !in_member;
        n += usize::from(starts);
        in_member = (in_member || starts) && !comma;
    }
    n
}

/// Bit i of the result: byte i of the 64-byte `block` is a comma, or
/// optional whitespace (space, tab).
#[cfg(target_arch = "x86_64")]
fn masks(block: &[u8]) -> (u64, u64) {
    use std::arch::x86_64::{
        _mm_cmpeq_epi8, _mm_loadu_si128, _mm_movemask_epi8, _mm_or_si128, _mm_set1_epi8,
    };
    debug_assert_eq!(block.len(), 64);
    let (mut commas, mut ows) = (0u64, 0u64);
    for (i, lane) in block.chunks_exact(16).enumerate() {
        // SAFETY: SSE2 is part of every x86_64 target; `lane` is 16 bytes,
        // read unaligned (`loadu`) and only within the slice.
        let (c, w) = unsafe {
            let v = _mm_loadu_si128(lane.as_ptr().cast());
            let c = _mm_cmpeq_epi8(v, _mm_set1_epi8(b',' as i8));
            let w = _mm_or_si128(
                _mm_cmpeq_epi8(v, _mm_set1_epi8(b' ' as i8)),
                _mm_cmpeq_epi8(v, _mm_set1_epi8(b'\t' as i8)),
            );
            (_mm_movemask_epi8(c), _mm_movemask_epi8(w))
        };
        // `movemask` sets the low 16 bits only.
        commas |= u64::from(c as u16) << (16 * i);
        ows |= u64::from(w as u16) << (16 * i);
    }
    (commas, ows)
}

/// Bit i of the result: byte i of the 64-byte `block` is a comma, or
/// optional whitespace (space, tab).
#[cfg(not(target_arch = "x86_64"))]
fn masks(block: &[u8]) -> (u64, u64) {
    let (mut commas, mut ows) = (0u64, 0u64);
    for (i, &b) in block.iter().enumerate() {
        commas |= u64::from(b == b',') << i;
        ows |= u64::from(b == b' ' || b == b'\t') << i;
    }
    (commas, ows)
}

/// Writes the `baggage` header; returns how many items were left out (keys
/// that are not tokens, or beyond the W3C limits).
pub(crate) fn inject(baggage: &[(String, String)], carrier: &mut dyn Carrier) -> usize {
    let mut value = String::new();
    let (mut members, mut skipped) = (0, 0);
    for (k, v) in baggage {
        if !is_token(k) {
            skipped += 1;
            continue;
        }
        let member = format!("{k}={}", percent_encode(v));
        let extra = member.len() + usize::from(!value.is_empty());
        if members >= MAX_MEMBERS || value.len() + extra > MAX_BYTES {
            skipped += 1;
            continue;
        }
        if !value.is_empty() {
            value.push(',');
        }
        value.push_str(&member);
        members += 1;
    }
    if !value.is_empty() {
        carrier.set(HEADER, &value);
    }
    skipped
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The oracle: the spec's list grammar, members split on commas and
    /// trimmed of optional whitespace, empty ones ignored.
    fn naive_members(list: &str) -> usize {
        list.split(',')
            .filter(|m| !m.trim_matches([' ', '\t']).is_empty())
            .count()
    }

    #[test]
    fn counting_the_refused_rest_matches_the_list_grammar() {
        let alphabet = [
            ",",
            " ",
            "\t",
            "a",
            "=",
            "b",
            ";",
            "%20",
            "é",
            "abcdefgh,",
            ",,,,,,,,",
        ];
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..50_000 {
            let mut list = String::new();
            for _ in 0..(seed % 100) {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                list.push_str(alphabet[(seed % alphabet.len() as u64) as usize]);
            }
            assert_eq!(count_members(&list), naive_members(&list), "{list:?}");
        }
    }

    #[test]
    fn a_huge_list_is_refused_in_bulk_with_the_same_count() {
        let list: String = (0..10_000).map(|i| format!("k{i}=v{i}, ,")).collect();
        let mut out = Vec::new();
        let refused = parse(&list, LIMITS, &mut out);
        assert_eq!(out.len(), 64);
        assert_eq!(refused, naive_members(&list) - 64);
    }

    const LIMITS: BaggageLimits = BaggageLimits {
        max_items: 64,
        max_bytes: 8192,
    };

    #[test]
    fn spec_examples_and_limits() {
        let mut out = Vec::new();
        let refused = parse("key1=value1;property1;property2, key2 = value2, key3=value3; propertyKey=propertyValue", LIMITS, &mut out);
        assert_eq!(refused, 0);
        assert_eq!(
            out,
            vec![
                ("key1".into(), "value1".into()),
                ("key2".into(), "value2".into()),
                ("key3".into(), "value3".into())
            ]
        );
        let mut out = Vec::new();
        parse(
            "userId=alice%20smith,serverNode=DF%2028,isProduction=false",
            LIMITS,
            &mut out,
        );
        assert_eq!(out[0].1, "alice smith");
        assert_eq!(out[1].1, "DF 28");
        let mut out = Vec::new();
        assert_eq!(
            parse(
                "bad key=v,=v,novalue,ok=1,sp=a b,q=\"x\",bs=a\\b,bad=p;=x",
                LIMITS,
                &mut out
            ),
            7
        );
        assert_eq!(out, vec![("ok".into(), "1".into())]);
        // Decoded CR/LF is data (it is percent-encoded again on the way
        // out); bytes that are not UTF-8 become U+FFFD.
        let mut out = Vec::new();
        assert_eq!(
            parse("crlf=a%0D%0Ab,bin=%ff%41,empty=", LIMITS, &mut out),
            0
        );
        assert_eq!(
            out,
            vec![
                ("crlf".into(), "a\r\nb".into()),
                ("bin".into(), "\u{fffd}A".into()),
                ("empty".into(), "".into())
            ]
        );
        let many: Vec<String> = (0..70).map(|i| format!("k{i}=v")).collect();
        let mut out = Vec::new();
        assert_eq!(parse(&many.join(","), LIMITS, &mut out), 6);
        assert_eq!(out.len(), 64);
    }

    #[test]
    fn inject_encodes_values_and_skips_bad_keys() {
        let mut h = std::collections::HashMap::new();
        let items = vec![
            ("user".to_string(), "a b,c\r\n".to_string()),
            ("bad key".to_string(), "x".to_string()),
        ];
        assert_eq!(inject(&items, &mut h), 1);
        assert_eq!(h["baggage"], "user=a%20b%2Cc%0D%0A");
        let mut back = Vec::new();
        // CR/LF travel only inside the encoding, and come back as data.
        assert_eq!(parse(&h["baggage"], LIMITS, &mut back), 0);
        assert_eq!(back, vec![items[0].clone()]);
    }
}
