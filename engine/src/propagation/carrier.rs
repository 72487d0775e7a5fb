//! [`Carrier`]: the text map formats read and write (request headers, or
//! any string map), and its implementations for `HashMap`, `BTreeMap` and
//! (feature `http`) `http::HeaderMap`.

use std::collections::{BTreeMap, HashMap};

/// A text map of request headers (or any string map): what formats read
/// and write. Header names are matched case-insensitively.
///
/// A header may arrive more than once (HTTP allows repeated fields):
/// formats read every value through [`for_each_value`](Carrier::for_each_value)
/// and [`for_each_entry`](Carrier::for_each_entry), combining the lines of
/// a list header (`tracestate`, `baggage`) in order and refusing a
/// repeated single-valued one (`traceparent`, ids). A value the carrier
/// holds but cannot show as text (a non-ASCII `http::HeaderValue`) is
/// reported as `None`, and counted as a parse error, never read as absent.
pub trait Carrier {
    /// The value of header `name` (any case): the first, when repeated.
    fn get(&self, name: &str) -> Option<&str>;
    /// Sets header `name` (lowercase) to `value`, replacing it. The value is
    /// borrowed so a carrier can reuse its storage (the map carriers copy it
    /// into the existing `String` when the header is already there).
    fn set(&mut self, name: &str, value: &str);
    /// Calls `f` with every header name (for prefixed headers such as
    /// `ot-baggage-*`).
    fn for_each_name<'a>(&'a self, f: &mut dyn FnMut(&'a str));
    /// Calls `f` with every value of header `name` (any case), in the
    /// order received; `None` for a value that is not text. The default
    /// reports `get(name)`, once.
    fn for_each_value<'a>(&'a self, name: &str, f: &mut dyn FnMut(Option<&'a str>)) {
        if let Some(v) = self.get(name) {
            f(Some(v));
        }
    }
    /// Calls `f(i, value)` for every value of every header `names[i]`,
    /// each header's values in the order received. Formats read two or
    /// three headers per extract; a carrier that finds headers by scanning
    /// overrides this to scan once.
    fn for_each_value_of<'a>(&'a self, names: &[&str], f: &mut dyn FnMut(usize, Option<&'a str>)) {
        for (i, name) in names.iter().enumerate() {
            self.for_each_value(name, &mut |v| f(i, v));
        }
    }
    /// Calls `f` with every header's name and value (`None`: not text),
    /// repeated headers once per value. Formats that read prefixed headers
    /// use it to read everything in one pass; carriers that can iterate
    /// their entries override it.
    fn for_each_entry<'a>(&'a self, f: &mut dyn FnMut(&'a str, Option<&'a str>)) {
        self.for_each_name(&mut |name| {
            self.for_each_value(name, &mut |value| f(name, value));
        });
    }
}

/// Up to this many entries, a map carrier is searched by scanning its keys
/// (length first, then bytes) rather than by hashing the name: hashing a
/// header name with `HashMap`'s SipHash costs more than comparing a dozen
/// keys, and request header maps are that small.
const SCAN_ENTRIES: usize = 16;

/// Whether header name `key` is `name` in any case (the length first: it
/// settles nearly every comparison).
#[inline(always)]
fn is_name(key: &str, name: &str) -> bool {
    key.len() == name.len() && (key == name || key.eq_ignore_ascii_case(name))
}

fn find_ignore_case<'a>(
    mut entries: impl Iterator<Item = (&'a String, &'a String)>,
    name: &str,
) -> Option<&'a str> {
    entries
        .find(|(k, _)| is_name(k, name))
        .map(|(_, v)| v.as_str())
}

/// `Carrier` for a string map type; both maps behave the same. A map
/// holds one value per key; keys that differ only in case are the values
/// of one repeated header, in the map's order.
macro_rules! map_carrier {
    ($map:ident) => {
        impl Carrier for $map<String, String> {
            fn get(&self, name: &str) -> Option<&str> {
                if self.len() > SCAN_ENTRIES {
                    if let Some(v) = $map::get(self, name) {
                        return Some(v);
                    }
                }
                find_ignore_case(self.iter(), name)
            }
            fn set(&mut self, name: &str, value: &str) {
                let existing = if self.len() > SCAN_ENTRIES {
                    self.get_mut(name)
                } else {
                    self.iter_mut()
                        .find(|(k, _)| k.as_str() == name)
                        .map(|(_, v)| v)
                };
                match existing {
                    Some(v) => {
                        v.clear();
                        v.push_str(value);
                    }
                    None => {
                        self.insert(name.to_string(), value.to_string());
                    }
                }
            }
            fn for_each_name<'a>(&'a self, f: &mut dyn FnMut(&'a str)) {
                self.keys().for_each(|k| f(k));
            }
            fn for_each_value<'a>(&'a self, name: &str, f: &mut dyn FnMut(Option<&'a str>)) {
                for (k, v) in self.iter() {
                    if is_name(k, name) {
                        f(Some(v.as_str()));
                    }
                }
            }
            fn for_each_entry<'a>(&'a self, f: &mut dyn FnMut(&'a str, Option<&'a str>)) {
                self.iter().for_each(|(k, v)| f(k, Some(v)));
            }
            fn for_each_value_of<'a>(
                &'a self,
                names: &[&str],
                f: &mut dyn FnMut(usize, Option<&'a str>),
            ) {
                for (k, v) in self.iter() {
                    for (i, name) in names.iter().enumerate() {
                        if is_name(k, name) {
                            f(i, Some(v.as_str()));
                        }
                    }
                }
            }
        }
    };
}

map_carrier!(HashMap);
map_carrier!(BTreeMap);

/// Whether `key`, a header name as `http::HeaderName` stores it (always
/// lowercase), is `name` in any case. Equal ignoring ASCII case to a valid
/// name means `name` is valid too: the same answer as `HeaderMap::get(name)`,
/// which parses `name` first.
#[cfg(feature = "http")]
#[inline(always)]
fn is_header(key: &http::HeaderName, name: &str) -> bool {
    is_name(key.as_str(), name)
}

/// A header value as text: `HeaderValue::to_str`'s answer (visible ASCII
/// and tabs only), checked sixteen bytes at a time (`to_str` tests byte by
/// byte, ~4 instructions per byte, 220 for a `traceparent`).
#[cfg(feature = "http")]
fn header_text(value: &http::HeaderValue) -> Option<&str> {
    let bytes = value.as_bytes();
    // A tab (allowed) or a byte that is not text somewhere: decide byte by
    // byte.
    if !all_printable(bytes) && !bytes.iter().all(|&b| is_visible(b)) {
        return None;
    }
    // SAFETY: every byte is ASCII (`is_visible` admits 0x09 and
    // 0x20..=0x7e only, and `visible_8` admits a subset), and ASCII is
    // valid UTF-8.
    Some(unsafe { std::str::from_utf8_unchecked(bytes) })
}

/// `HeaderValue::to_str`'s byte test.
#[cfg(feature = "http")]
#[inline(always)]
fn is_visible(b: u8) -> bool {
    (0x20..0x7f).contains(&b) || b == b'\t'
}

/// Whether every byte of `bytes` is within 0x20..=0x7e (no tab): sixteen
/// at a time in an SSE2 register (the x86-64 baseline), the last sixteen
/// overlapping the ones before; eight at a time (SWAR) elsewhere and for
/// values shorter than sixteen bytes.
#[cfg(feature = "http")]
#[inline]
fn all_printable(bytes: &[u8]) -> bool {
    #[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
    if bytes.len() >= 16 {
        // SAFETY: the function's only requirement is SSE2, which this
        // build enables (the cfg above; it is the x86-64 baseline).
        return unsafe { all_printable_sse2(bytes) };
    }
    let (chunks, tail) = bytes.as_chunks::<8>();
    chunks.iter().all(|c| visible_8(u64::from_le_bytes(*c)))
        && tail.iter().all(|&b| (0x20..0x7f).contains(&b))
}

/// `all_printable` for at least sixteen bytes, in SSE2.
#[cfg(all(feature = "http", target_arch = "x86_64", target_feature = "sse2"))]
#[target_feature(enable = "sse2")]
fn all_printable_sse2(bytes: &[u8]) -> bool {
    use std::arch::x86_64::{
        _mm_and_si128, _mm_cmpgt_epi8, _mm_cmplt_epi8, _mm_movemask_epi8, _mm_set1_epi8,
        _mm_set_epi64x,
    };
    let printable = |c: &[u8; 16]| {
        let (first, last) = c.split_at(8);
        let (Ok(first), Ok(last)) = (<[u8; 8]>::try_from(first), <[u8; 8]>::try_from(last)) else {
            return false;
        };
        let x = _mm_set_epi64x(i64::from_le_bytes(last), i64::from_le_bytes(first));
        // Signed compares: bytes from 0x80 up are negative, below 0x20.
        let ok = _mm_and_si128(
            _mm_cmpgt_epi8(x, _mm_set1_epi8(0x1f)),
            _mm_cmplt_epi8(x, _mm_set1_epi8(0x7f)),
        );
        _mm_movemask_epi8(ok) == 0xFFFF
    };
    let (chunks, tail) = bytes.as_chunks::<16>();
    chunks.iter().all(printable)
        && (tail.is_empty()
            || bytes
                .get(bytes.len().saturating_sub(16)..)
                .and_then(|last| <&[u8; 16]>::try_from(last).ok())
                .is_some_and(printable))
}

/// Whether all eight bytes of `x` are within 0x20..=0x7e (no tab). Exact
/// "any byte" tests from Bit Twiddling Hacks ("Determine if a word has a
/// byte less than n" / "greater than n"): with no byte >= 0x80, the
/// borrow of `x - 0x20…` reaches bit 7 of a byte only through a byte
/// below 0x20, and `x + 0x01…` carries into bit 7 only from 0x7f.
#[cfg(feature = "http")]
#[inline(always)]
fn visible_8(x: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let below_space = x.wrapping_sub(ONES * 0x20) & !x & HIGH;
    let above_tilde = (x.wrapping_add(ONES) | x) & HIGH;
    below_space | above_tilde == 0
}

/// Small maps (a request's dozen headers) are scanned: `HeaderMap::get`
/// with a `&str` parses and lowercases the name and hashes it, ~430
/// instructions per lookup, where comparing a dozen stored names costs a
/// tenth of that; a W3C extract reads three headers in one scan.
#[cfg(feature = "http")]
impl Carrier for http::HeaderMap {
    fn get(&self, name: &str) -> Option<&str> {
        let value = if self.len() > SCAN_ENTRIES {
            http::HeaderMap::get(self, name)
        } else {
            self.iter()
                .find(|(k, _)| is_header(k, name))
                .map(|(_, v)| v)
        };
        value.and_then(header_text)
    }
    fn set(&mut self, name: &str, value: &str) {
        // Values we produce are always visible ASCII; a name or value the
        // `http` crate refuses is left out rather than panicking.
        if let (Ok(n), Ok(v)) = (
            http::HeaderName::from_bytes(name.as_bytes()),
            http::HeaderValue::from_str(value),
        ) {
            self.insert(n, v);
        }
    }
    fn for_each_name<'a>(&'a self, f: &mut dyn FnMut(&'a str)) {
        self.keys().for_each(|k| f(k.as_str()));
    }
    fn for_each_value<'a>(&'a self, name: &str, f: &mut dyn FnMut(Option<&'a str>)) {
        if self.len() > SCAN_ENTRIES {
            self.get_all(name).iter().for_each(|v| f(header_text(v)));
        } else {
            // `iter` yields a repeated header's values in order.
            self.iter()
                .filter(|(k, _)| is_header(k, name))
                .for_each(|(_, v)| f(header_text(v)));
        }
    }
    fn for_each_value_of<'a>(&'a self, names: &[&str], f: &mut dyn FnMut(usize, Option<&'a str>)) {
        if self.len() > SCAN_ENTRIES {
            for (i, name) in names.iter().enumerate() {
                self.get_all(*name)
                    .iter()
                    .for_each(|v| f(i, header_text(v)));
            }
            return;
        }
        for (k, v) in self.iter() {
            // A standard name's `as_str` is a table lookup: once per entry.
            let k = k.as_str();
            for (i, name) in names.iter().enumerate() {
                if is_name(k, name) {
                    f(i, header_text(v));
                }
            }
        }
    }
    fn for_each_entry<'a>(&'a self, f: &mut dyn FnMut(&'a str, Option<&'a str>)) {
        for (k, v) in self.iter() {
            f(k.as_str(), header_text(v));
        }
    }
}

#[cfg(all(test, feature = "http"))]
mod tests {
    use super::header_text;

    /// The wide check alone, against its definition, for every byte
    /// (control bytes included, which no valid `HeaderValue` holds) at
    /// every position of values of 0 to 70 bytes.
    #[test]
    fn all_printable_is_its_definition() {
        for len in 0..=70 {
            for b in 0..=255u8 {
                for at in 0..len {
                    let mut bytes = vec![b'~'; len];
                    bytes[at] = b;
                    assert_eq!(
                        super::all_printable(&bytes),
                        bytes.iter().all(|b| (0x20..0x7f).contains(b)),
                        "byte {b:#04x} at {at} of {len}"
                    );
                }
            }
        }
    }

    /// `header_text` answers what `HeaderValue::to_str` answers, for every
    /// byte a header value can hold, alone, at every position of values of
    /// 1 to 70 bytes (each lane, the tails, the overlapping last window).
    #[test]
    fn header_text_is_to_str() {
        // Lengths around the eight- and sixteen-byte steps and the
        // overlapping last window; a `traceparent` is 55.
        for len in [1, 7, 8, 9, 15, 16, 17, 24, 31, 32, 33, 40, 55, 64, 70] {
            for b in 0..=255u8 {
                for at in 0..len {
                    let mut bytes = vec![b'a'; len];
                    bytes[at] = b;
                    let Ok(v) = http::HeaderValue::from_bytes(&bytes) else {
                        continue;
                    };
                    assert_eq!(
                        header_text(&v),
                        v.to_str().ok(),
                        "byte {b:#04x} at {at} of {len}"
                    );
                }
            }
        }
    }
}
