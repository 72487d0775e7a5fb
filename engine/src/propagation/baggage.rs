//! W3C Baggage (`baggage: key1=value1;property,key2=value2`).

use super::{is_token, percent_decode, percent_encode, BaggageLimits, Carrier};

pub(crate) const HEADER: &str = "baggage";
/// The W3C limits on what is sent: 8192 bytes and 64 list-members.
pub(crate) const MAX_BYTES: usize = 8192;
pub(crate) const MAX_MEMBERS: usize = 64;

/// Parses a `baggage` value into `out`. Members that are malformed, or do
/// not fit `limits` (or the W3C limits), are left out; returns how many.
pub(crate) fn parse(value: &str, limits: BaggageLimits, out: &mut Vec<(String, String)>) -> usize {
    let limits = BaggageLimits {
        max_items: limits.max_items.min(MAX_MEMBERS),
        max_bytes: limits.max_bytes.min(MAX_BYTES),
    };
    let mut bytes: usize = out.iter().map(|(k, v)| k.len() + v.len()).sum();
    let mut refused = 0;
    let mut rest = value;
    while !rest.is_empty() {
        if out.len() >= limits.max_items {
            // Full: the rest is refused without parsing or decoding, one
            // byte scan (nothing allocated for input that is rejected).
            refused += count_members(rest);
            break;
        }
        let (member, tail) = rest.split_once(',').unwrap_or((rest, ""));
        rest = tail;
        let member = member.trim_matches(|c| c == ' ' || c == '\t');
        if member.is_empty() {
            continue;
        }
        // Properties after `;` are metadata: accepted, not kept.
        let pair = member.split(';').next().unwrap_or("");
        let Some((k, v)) = pair.split_once('=') else {
            refused += 1;
            continue;
        };
        let (k, v) = (k.trim_matches([' ', '\t']), v.trim_matches([' ', '\t']));
        // A value decodes to at least a third of its encoded length: one
        // that cannot fit is refused before it is decoded.
        if !is_token(k) || bytes + k.len() + v.len().div_ceil(3) > limits.max_bytes {
            refused += 1;
            continue;
        }
        let decoded = percent_decode(v, false);
        match decoded {
            Some(v) if is_token(k) && !v.contains(['\r', '\n']) => {
                if out.iter().any(|(ok, _)| ok == k) {
                    continue;
                }
                if !limits.admit(out, &mut bytes, k.to_string(), v) {
                    refused += 1;
                }
            }
            _ => refused += 1,
        }
    }
    refused
}

/// The non-empty list members of `list` (members with something besides
/// spaces and tabs between commas).
/// Branch-free, so a megabyte of hostile list costs well under a
/// millisecond.
fn count_members(list: &str) -> usize {
    let (mut n, mut in_member) = (0usize, false);
    for &b in list.as_bytes() {
        let comma = b == b',';
        let starts = !comma && b != b' ' && b != b'\t' && !in_member;
        n += usize::from(starts);
        in_member = (in_member || starts) && !comma;
    }
    n
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
        let alphabet = [",", " ", "\t", "a", "=", "b", ";", "%20", "é"];
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..20_000 {
            let mut list = String::new();
            for _ in 0..(seed % 24) {
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
            parse("bad key=v,=v,novalue,ok=1,crlf=a%0D%0Ab", LIMITS, &mut out),
            4
        );
        assert_eq!(out, vec![("ok".into(), "1".into())]);
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
        // CR/LF survive as data only inside our own encoding; a decoded CR/LF
        // from outside is refused.
        assert_eq!(parse(&h["baggage"], LIMITS, &mut back), 1);
    }
}
