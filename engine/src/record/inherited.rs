//! What a span inherits from a remote caller: its baggage and W3C
//! `tracestate`, built once and shared by every descendant.
//!
//! A caller may send 8 KB of baggage and a 16 KB `tracestate`; copied into
//! every child span, that was ~24 KB per live child (128 MB for 2,000 of
//! them) and stayed in the recycled span buffers after the spans were
//! flushed. Instead the first span that inherits a remote context copies
//! it once into an `Inherited` block, and every descendant — a child of
//! that span, a child of the thread's entered span — holds a reference to
//! the same block and points its baggage and `tracestate` strings into it.
//! Strings a span sets itself are still copied into its own arena.

use crate::sync::Arc;

/// Baggage keys and values and a `tracestate`, concatenated; immutable
/// once built, shared by reference count.
pub(crate) struct Inherited {
    /// Invariant: never changes after `build`, so `&str`s into it stay
    /// valid for as long as a reference to the block is held.
    text: Box<str>,
}

impl Inherited {
    /// One block holding `baggage` and `trace_state`; `None` when both are
    /// empty (nothing to share).
    pub(crate) fn build<'a>(
        baggage: impl Iterator<Item = (&'a str, &'a str)> + Clone,
        trace_state: &str,
    ) -> Option<Arc<Inherited>> {
        let len: usize = baggage
            .clone()
            .map(|(k, v)| k.len() + v.len())
            .sum::<usize>()
            + trace_state.len();
        if len == 0 {
            return None;
        }
        let mut text = String::with_capacity(len);
        for (k, v) in baggage {
            text.push_str(k);
            text.push_str(v);
        }
        text.push_str(trace_state);
        Some(Arc::new(Inherited {
            text: text.into_boxed_str(),
        }))
    }

    /// The block's text.
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

    /// The baggage items and `tracestate` as they were built: the
    /// `baggage` and `trace_state` given to `build`, re-read.
    #[cfg(test)]
    fn parts(&self) -> &str {
        &self.text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_block_knows_its_own_strings_only() {
        let baggage = [("user", "alice"), ("tenant", "acme")];
        let b = Inherited::build(baggage.iter().copied(), "rojo=1").unwrap();
        assert_eq!(b.parts(), "useralicetenantacmerojo=1");
        let text = b.text();
        assert_eq!(b.offset_of(&text[4..9]), Some(4));
        assert_eq!(b.offset_of(&text[19..]), Some(19));
        assert_eq!(b.offset_of(text), Some(0));
        // Equal bytes elsewhere are not in the block.
        assert_eq!(b.offset_of("alice"), None);
        assert!(Inherited::build(std::iter::empty(), "").is_none());
    }
}
