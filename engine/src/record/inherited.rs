//! What a span inherits from a remote caller: its baggage and W3C
//! `tracestate`, built once and shared by every descendant.
//!
//! A caller may send 8 KB of baggage and a 16 KB `tracestate`; copied into
//! every child span, that was ~24 KB per live child (128 MB for 2,000 of
//! them) and stayed in the recycled span buffers after the spans were
//! flushed. Instead the first span that inherits a remote context copies
//! it once into an `Inherited` block, and every descendant — a child of
//! that span, a child of the thread's entered span — holds a reference to
//! the same block. A span whose baggage is exactly the block's reads it
//! from the block (no per-span list at all); one that changes its baggage
//! lists its items, still pointing into the block for the inherited
//! strings. Strings a span sets itself are copied into its own arena.

use crate::config::SpanLimits;
use crate::sync::Arc;

/// Baggage items and a `tracestate`, concatenated; immutable once built,
/// shared by reference count.
pub(crate) struct Inherited {
    /// Every key and value, then the `tracestate`.
    ///
    /// Invariant: never changes after `build`, so `&str`s into it stay
    /// valid for as long as a reference to the block is held.
    text: Box<str>,
    /// Where each item's key and value end in `text`; an item starts where
    /// the one before it ends. Invariant: increasing, within `text`, on
    /// char boundaries.
    ends: Box<[(usize, usize)]>,
    /// The keys' and values' bytes, added up.
    bytes: usize,
}

impl Inherited {
    /// A block of the items of `baggage` that `limits` admit (the first of
    /// a repeated key wins) and `trace_state`; `None` when there is nothing
    /// to hold. Also returns how many items the limits refused.
    pub(crate) fn build<'a>(
        baggage: impl Iterator<Item = (&'a str, &'a str)>,
        trace_state: &str,
        limits: &SpanLimits,
    ) -> (Option<Arc<Inherited>>, u32) {
        let mut text = String::new();
        let mut ends: Vec<(usize, usize)> = Vec::new();
        let (mut bytes, mut refused) = (0usize, 0u32);
        for (k, v) in baggage {
            let mut start = 0;
            let repeated = ends.iter().any(|&(key_end, value_end)| {
                let key = text.get(start..key_end) == Some(k);
                start = value_end;
                key
            });
            if repeated {
                continue;
            }
            if ends.len() >= limits.max_baggage_items
                || bytes + k.len() + v.len() > limits.max_baggage_bytes
            {
                refused += 1;
                continue;
            }
            text.push_str(k);
            let key_end = text.len();
            text.push_str(v);
            ends.push((key_end, text.len()));
            bytes += k.len() + v.len();
        }
        if text.is_empty() && trace_state.is_empty() && ends.is_empty() {
            return (None, refused);
        }
        text.push_str(trace_state);
        let block = Inherited {
            text: text.into_boxed_str(),
            ends: ends.into_boxed_slice(),
            bytes,
        };
        (Some(Arc::new(block)), refused)
    }

    /// The items, in order.
    pub(crate) fn items(&self) -> Items<'_> {
        Items {
            block: self,
            next: 0,
            start: 0,
        }
    }

    /// The keys' and values' bytes, added up.
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    /// The `tracestate` (empty if none).
    pub(crate) fn trace_state(&self) -> &str {
        let at = self.ends.last().map_or(0, |&(_, value_end)| value_end);
        self.text.get(at..).unwrap_or_default()
    }

    /// The block's whole text.
    pub(crate) fn text(&self) -> &str {
        &self.text
    }

    /// Where `s` starts in this block, if it lies entirely within it (by
    /// address: `s` is a string read from this very block).
    pub(crate) fn offset_of(&self, s: &str) -> Option<usize> {
        let base = self.text.as_ptr() as usize;
        let at = s.as_ptr() as usize;
        (at >= base && at + s.len() <= base + self.text.len()).then(|| at - base)
    }
}

/// The items of a block, in order.
pub(crate) struct Items<'a> {
    block: &'a Inherited,
    next: usize,
    start: usize,
}

impl<'a> Iterator for Items<'a> {
    type Item = (&'a str, &'a str);

    fn next(&mut self) -> Option<Self::Item> {
        let &(key_end, value_end) = self.block.ends.get(self.next)?;
        let text = &self.block.text;
        let item = (
            text.get(self.start..key_end).unwrap_or_default(),
            text.get(key_end..value_end).unwrap_or_default(),
        );
        self.next += 1;
        self.start = value_end;
        Some(item)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.block.ends.len() - self.next;
        (n, Some(n))
    }
}

impl ExactSizeIterator for Items<'_> {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_block_holds_what_the_limits_admit_and_knows_its_strings() {
        let limits = SpanLimits {
            max_baggage_items: 2,
            ..SpanLimits::default()
        };
        let baggage = [
            ("user", "alice"),
            ("user", "mallory"),
            ("tenant", "acme"),
            ("x", "y"),
        ];
        let (b, refused) = Inherited::build(baggage.iter().copied(), "rojo=1", &limits);
        let b = b.unwrap();
        assert_eq!(refused, 1, "the third distinct key");
        assert_eq!(
            b.items().collect::<Vec<_>>(),
            vec![("user", "alice"), ("tenant", "acme")]
        );
        assert_eq!(b.items().len(), 2);
        assert_eq!(b.bytes(), 19);
        assert_eq!(b.trace_state(), "rojo=1");
        let (k, v) = b.items().next().unwrap();
        assert_eq!(b.offset_of(k), Some(0));
        assert_eq!(b.offset_of(v), Some(4));
        assert_eq!(b.offset_of(b.trace_state()), Some(19));
        // Equal bytes elsewhere are not in the block.
        assert_eq!(b.offset_of("alice"), None);
        let (none, _) = Inherited::build(std::iter::empty(), "", &limits);
        assert!(none.is_none());
        let (only_state, _) = Inherited::build(std::iter::empty(), "k=v", &limits);
        assert_eq!(only_state.unwrap().items().len(), 0);
    }
}
