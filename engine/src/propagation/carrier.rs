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
/// and tabs only), checked eight bytes at a time (SWAR; `to_str` tests
/// byte by byte, ~4 instructions per byte, 220 for a `traceparent`).
#[cfg(feature = "http")]
fn header_text(value: &http::HeaderValue) -> Option<&str> {
    let bytes = value.as_bytes();
    let (chunks, tail) = bytes.as_chunks::<8>();
    let wide_ok = chunks.iter().all(|c| visible_8(u64::from_le_bytes(*c)));
    let ok = if wide_ok {
        tail.iter().all(|&b| is_visible(b))
    } else {
        // A tab (allowed) or a byte that is not text somewhere: decide
        // byte by byte.
        bytes.iter().all(|&b| is_visible(b))
    };
    if !ok {
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

    /// `header_text` answers what `HeaderValue::to_str` answers, for every
    /// byte a header value can hold, alone, at every position of a
    /// 40-byte value (each lane and the tail of the wide check).
    #[test]
    fn header_text_is_to_str() {
        for b in 0..=255u8 {
            for at in 0..40 {
                let mut bytes = vec![b'a'; 40];
                bytes[at] = b;
                let Ok(v) = http::HeaderValue::from_bytes(&bytes) else {
                    continue;
                };
                assert_eq!(header_text(&v), v.to_str().ok(), "byte {b:#04x} at {at}");
            }
        }
    }
}
