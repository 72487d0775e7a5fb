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

fn find_ignore_case<'a>(
    mut entries: impl Iterator<Item = (&'a String, &'a String)>,
    name: &str,
) -> Option<&'a str> {
    entries
        .find(|(k, _)| k.as_str() == name || k.eq_ignore_ascii_case(name))
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
                    if k.len() == name.len() && (k == name || k.eq_ignore_ascii_case(name)) {
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
                        if k.len() == name.len() && (k == name || k.eq_ignore_ascii_case(name)) {
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

#[cfg(feature = "http")]
impl Carrier for http::HeaderMap {
    fn get(&self, name: &str) -> Option<&str> {
        // Header names are case-insensitive in `HeaderMap` already.
        http::HeaderMap::get(self, name).and_then(|v| v.to_str().ok())
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
        for v in self.get_all(name) {
            f(v.to_str().ok());
        }
    }
    fn for_each_entry<'a>(&'a self, f: &mut dyn FnMut(&'a str, Option<&'a str>)) {
        for (k, v) in self.iter() {
            f(k.as_str(), v.to_str().ok());
        }
    }
}
