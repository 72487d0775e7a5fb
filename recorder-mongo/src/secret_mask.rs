//! Masks every occurrence of any of a set of secrets in a text, in time
//! linear in the text and the secrets: what `RedactedUri::scrub` runs on
//! every message it lets out.
//!
//! The matcher is Aho and Corasick's automaton ("Efficient string
//! matching: an aid to bibliographic search", CACM 18(6), 1975): a trie of
//! the secrets with failure links, scanned once over the text. Each node
//! keeps the length of the longest secret that is a suffix of its string;
//! every other secret ending at the same position is a suffix of that one,
//! so the union of "the longest secret ending here" over all positions is
//! the union of all occurrences, overlapping ones included. That union is
//! masked: masking secrets one after another (as `str::replace` in a loop
//! did) left the tail of a second secret visible when two overlapped, and
//! cost time in the product of the secrets' count and the text's length.
//!
//! Bytes, not chars: a secret is UTF-8, and an occurrence of valid UTF-8
//! in valid UTF-8 starts and ends on char boundaries, so the masked text
//! stays valid UTF-8.

/// What replaces each masked run.
pub(crate) const MASK: &str = "****";

/// The automaton of a set of secrets.
#[derive(Clone, Debug)]
pub(crate) struct SecretMask {
    /// Node 0 is the root (the empty string).
    ///
    /// Invariant: built in breadth-first order of depth by `new`, so a
    /// node's failure link points at a node of smaller depth.
    nodes: Vec<Node>,
}

#[derive(Clone, Debug, Default)]
struct Node {
    /// Trie edges, sorted by byte.
    children: Vec<(u8, u32)>,
    /// The node of the longest proper suffix of this node's string that is
    /// in the trie.
    fail: u32,
    /// The length of the longest secret that is a suffix of this node's
    /// string (0: none).
    longest: u32,
}

impl Node {
    fn child(&self, byte: u8) -> Option<u32> {
        self.children
            .binary_search_by_key(&byte, |&(b, _)| b)
            .ok()
            .map(|i| self.children[i].1)
    }
}

impl SecretMask {
    /// The automaton of `secrets` (empty ones are ignored).
    pub(crate) fn new<'a>(secrets: impl IntoIterator<Item = &'a str>) -> Self {
        let mut nodes = vec![Node::default()];
        for secret in secrets {
            let mut at = 0usize;
            for &byte in secret.as_bytes() {
                at = match nodes[at].child(byte) {
                    Some(next) => next as usize,
                    None => {
                        let next = nodes.len() as u32;
                        nodes.push(Node::default());
                        let children = &mut nodes[at].children;
                        let i = children.partition_point(|&(b, _)| b < byte);
                        children.insert(i, (byte, next));
                        next as usize
                    }
                };
            }
            if at != 0 {
                nodes[at].longest = secret.len() as u32;
            }
        }
        // Failure links, breadth first: a node's link is found from its
        // parent's, which is done by then.
        let mut queue = std::collections::VecDeque::new();
        for &(_, child) in &nodes[0].children {
            queue.push_back(child);
        }
        while let Some(node) = queue.pop_front() {
            for k in 0..nodes[node as usize].children.len() {
                let (byte, child) = nodes[node as usize].children[k];
                let mut f = nodes[node as usize].fail;
                let fail = loop {
                    if let Some(next) = nodes[f as usize].child(byte) {
                        break next;
                    }
                    if f == 0 {
                        break 0;
                    }
                    f = nodes[f as usize].fail;
                };
                let inherited = nodes[fail as usize].longest;
                let c = &mut nodes[child as usize];
                c.fail = fail;
                c.longest = c.longest.max(inherited);
                queue.push_back(child);
            }
        }
        SecretMask { nodes }
    }

    /// The next state from `state` on `byte`.
    fn step(&self, mut state: u32, byte: u8) -> u32 {
        loop {
            if let Some(next) = self.nodes[state as usize].child(byte) {
                return next;
            }
            if state == 0 {
                return 0;
            }
            state = self.nodes[state as usize].fail;
        }
    }

    /// `text` with each maximal run covered by occurrences of secrets
    /// replaced by [`MASK`].
    pub(crate) fn apply(&self, text: &str) -> String {
        // Covered runs, merged as found: a run ending at a later position
        // may start before earlier ones (a longer secret), swallowing them.
        let mut runs: Vec<(usize, usize)> = Vec::new();
        let mut state = 0u32;
        for (i, &byte) in text.as_bytes().iter().enumerate() {
            state = self.step(state, byte);
            let longest = self.nodes[state as usize].longest as usize;
            if longest == 0 {
                continue;
            }
            let (mut start, end) = (i + 1 - longest, i + 1);
            while let Some(&(s, e)) = runs.last() {
                if e < start {
                    break;
                }
                start = start.min(s);
                runs.pop();
            }
            runs.push((start, end));
        }
        if runs.is_empty() {
            return text.to_string();
        }
        let mut out = String::with_capacity(text.len());
        let mut from = 0;
        for (start, end) in runs {
            out.push_str(&text[from..start]);
            out.push_str(MASK);
            from = end;
        }
        out.push_str(&text[from..]);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The oracle, from the definition: a byte is hidden iff some
    /// occurrence of some secret covers it; each maximal run of hidden
    /// bytes becomes one mask.
    fn naive(secrets: &[&str], text: &str) -> String {
        let t = text.as_bytes();
        let mut hidden = vec![false; t.len()];
        for s in secrets.iter().filter(|s| !s.is_empty()) {
            for start in 0..t.len() {
                if t[start..].starts_with(s.as_bytes()) {
                    hidden[start..start + s.len()].fill(true);
                }
            }
        }
        let mut out = String::new();
        let mut i = 0;
        while i < t.len() {
            if hidden[i] {
                while i < t.len() && hidden[i] {
                    i += 1;
                }
                out.push_str(MASK);
            } else {
                let j = (i..t.len()).find(|&j| hidden[j]).unwrap_or(t.len());
                out.push_str(&text[i..j]);
                i = j;
            }
        }
        out
    }

    #[test]
    fn overlapping_secrets_are_masked_whole() {
        let m = SecretMask::new(["abcX", "Xdef"]);
        assert_eq!(m.apply("<abcXdef>"), "<****>");
        // One inside another, a repeat overlapping itself, none.
        assert_eq!(SecretMask::new(["b", "abc"]).apply("zabcz"), "z****z");
        assert_eq!(SecretMask::new(["aa"]).apply("aaa"), "****");
        assert_eq!(SecretMask::new(["q", ""]).apply("plain"), "plain");
    }

    /// Random secrets over a small alphabet (so they overlap often) and
    /// random texts, multi-byte chars included, against the oracle.
    #[test]
    fn agrees_with_the_definition_on_random_input() {
        let alphabet = ['a', 'b', 'c', 'é', '*'];
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = move |n: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % n as u64) as usize
        };
        let mut word = move |max: usize| -> String {
            let len = next(max + 1);
            (0..len).map(|_| alphabet[next(alphabet.len())]).collect()
        };
        for _ in 0..3000 {
            let count = word(4).chars().count();
            let secrets: Vec<String> = (0..count).map(|_| word(4)).collect();
            let text = word(24);
            let refs: Vec<&str> = secrets.iter().map(String::as_str).collect();
            let got = SecretMask::new(refs.iter().copied()).apply(&text);
            assert_eq!(
                got,
                naive(&refs, &text),
                "secrets {secrets:?} text {text:?}"
            );
        }
    }
}
