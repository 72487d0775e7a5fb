//! Checking a chained audit log (`spanrec verify`): given the chain records
//! and the span documents as stored, recompute every record hash, MAC,
//! link and Merkle root, and say what is intact, what is a declared gap,
//! and what is a violation — naming the chain, batch and document.
//! No database access here: the caller reads the documents.
//! The rules are those of `docs/audit-integrity.md`.

use crate::chain::{
    from_hex, record_hash, record_parts, stored_leaf_hash, to_hex, ChainHead, ChainKey, Hash,
    GAP_REASONS,
};
use bson::raw::{RawDocument, RawDocumentBuf};
use std::borrow::Borrow;
use std::collections::{BTreeMap, HashMap};

mod completeness;
use completeness::{check_batch, walk_hole};

/// What to check beyond the records themselves.
#[derive(Debug, Default, Clone)]
pub struct VerifyOptions {
    /// Check every record's `mac` with this key (and require one).
    pub key: Option<ChainKey>,
    /// Chain heads an operator kept outside the database: each must be on
    /// record with the same hash. `chain` may be empty (any chain).
    pub heads: Vec<ChainHead>,
    /// Only part of the log was read (`--since`, `--chain`): a chain may
    /// start after seq 0 and link to chains not read.
    pub partial: bool,
}

/// One finding that makes the log not intact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The chain concerned (empty when none).
    pub chain: String,
    /// The record (batch) concerned.
    pub seq: Option<u64>,
    /// The span document concerned: its `_id` in hex.
    pub document: Option<String>,
    /// What is wrong.
    pub problem: String,
}

/// Spans the log itself declares missing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gap {
    /// The chain whose record declares it.
    pub chain: String,
    /// The declaring record.
    pub seq: u64,
    /// For a gap record: the batch whose spans were lost.
    pub of_seq: Option<u64>,
    /// Why (`ring_full`, `rejected`, ...).
    pub reason: String,
    /// How many spans.
    pub n: u64,
}

/// A chain as found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainSummary {
    /// Its id.
    pub chain: String,
    /// Lowest and highest sequence numbers on record.
    pub first_seq: u64,
    /// See `first_seq`.
    pub last_seq: u64,
    /// Its last record's hash.
    pub head: String,
    /// The previous chain it names (`chain seq hash`), if any.
    pub prev_chain: Option<String>,
}

/// The verdict.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Chains found.
    pub chains: Vec<ChainSummary>,
    /// Chain records checked.
    pub records: u64,
    /// Span documents whose leaf went into a matching Merkle root.
    pub verified_spans: u64,
    /// Declared gaps.
    pub gaps: Vec<Gap>,
    /// Everything that is wrong; empty means intact.
    pub violations: Vec<Violation>,
    /// Records carry MACs that were not checked (no key given).
    pub macs_unchecked: bool,
}

impl Report {
    /// No violation.
    pub fn intact(&self) -> bool {
        self.violations.is_empty()
    }
}

struct Record {
    kind: String,
    hash: Hash,
    prev: Option<Hash>,
    n: u64,
    root: Option<Hash>,
    dropped: Vec<(String, u64)>,
    of_chain: String,
    of_seq: Option<u64>,
    reason: String,
    lost: Vec<(u64, Hash)>,
    lost_record: Option<Hash>,
    prev_chain: Option<ChainHead>,
}

/// A stored document's position, leaf hash and `_id`: what is kept of it
/// once read, so that the documents themselves can stream through
/// `verify` (a log's documents need not fit in memory; these ~64 bytes
/// each do).
type StoredLeaf = (u64, Hash, DocId);
const _: () = assert!(std::mem::size_of::<StoredLeaf>() <= 64);

/// A document's `_id`, kept compactly and formatted only for a violation.
enum DocId {
    /// A binary `_id` (the recorder's): its bytes, shown in hex.
    Binary(Box<[u8]>),
    /// Any other `_id`, as shown.
    Other(Box<str>),
}

impl DocId {
    fn of(doc: &RawDocument) -> DocId {
        match doc.get_binary("_id") {
            Ok(b) => DocId::Binary(b.bytes.into()),
            Err(_) => DocId::Other(
                doc.get("_id")
                    .ok()
                    .flatten()
                    .map(|v| format!("{v:?}"))
                    .unwrap_or_default()
                    .into(),
            ),
        }
    }

    fn text(&self) -> String {
        match self {
            DocId::Binary(bytes) => to_hex(bytes),
            DocId::Other(shown) => shown.to_string(),
        }
    }
}

fn hash_of(doc: &RawDocument, key: &str) -> Option<Hash> {
    doc.get_binary(key).ok()?.bytes.try_into().ok()
}

fn id_hex(doc: &RawDocument) -> String {
    DocId::of(doc).text()
}

/// Checks `records` (from `<collection>.chain`) against `spans` (the span
/// documents: chained ones and, to be reported, unchained ones; borrowed
/// or owned). The documents are read once, in any order, and not kept:
/// memory grows with the chain records and ~64 bytes per document, so a
/// caller can stream them from a cursor.
pub fn verify<D: Borrow<RawDocument>>(
    records: &[RawDocumentBuf],
    spans: impl IntoIterator<Item = D>,
    options: &VerifyOptions,
) -> Report {
    let mut report = Report::default();
    let v = |chain: &str, seq: Option<u64>, document: Option<String>, problem: String| Violation {
        chain: chain.to_owned(),
        seq,
        document,
        problem,
    };
    let mut violations = Vec::new();
    // chain → seq → record
    let mut chains: BTreeMap<String, BTreeMap<u64, Record>> = BTreeMap::new();
    for raw in records {
        report.records += 1;
        let (Ok(chain), Ok(seq)) = (raw.get_str("chain"), raw.get_i64("seq")) else {
            violations.push(v(
                "",
                None,
                None,
                format!("a chain record without chain/seq: {}", id_hex(raw)),
            ));
            continue;
        };
        let seq = seq as u64;
        let Some((elements, hash)) = record_parts(raw) else {
            violations.push(v(chain, Some(seq), None, "record without a hash".into()));
            continue;
        };
        if record_hash(elements) != hash {
            violations.push(v(
                chain,
                Some(seq),
                None,
                "record altered: its hash does not match its fields".into(),
            ));
        }
        match (&options.key, hash_of(raw, "mac")) {
            (Some(key), Some(mac)) if key.mac(&hash) != mac => violations.push(v(
                chain,
                Some(seq),
                None,
                "record MAC does not verify (not written by the key holder)".into(),
            )),
            (Some(_), None) => {
                violations.push(v(chain, Some(seq), None, "record has no MAC".into()))
            }
            (None, Some(_)) => report.macs_unchecked = true,
            _ => {}
        }
        let lost = raw
            .get_array("positions")
            .ok()
            .map(|a| {
                a.into_iter()
                    .filter_map(|p| {
                        let p = p.ok()?.as_document()?;
                        Some((p.get_i64("pos").ok()? as u64, hash_of(p, "leaf")?))
                    })
                    .collect()
            })
            .unwrap_or_default();
        let dropped = raw
            .get_document("dropped")
            .ok()
            .map(|d| {
                d.into_iter()
                    .filter_map(|e| {
                        let (k, val) = e.ok()?;
                        Some((k.to_owned(), val.as_i64()? as u64))
                    })
                    .collect()
            })
            .unwrap_or_default();
        let prev_chain = raw.get_document("prev_chain").ok().and_then(|p| {
            Some(ChainHead {
                chain: p.get_str("chain").ok()?.to_owned(),
                seq: p.get_i64("seq").ok()? as u64,
                hash: hash_of(p, "hash")?,
            })
        });
        let record = Record {
            kind: raw.get_str("kind").unwrap_or("").to_owned(),
            hash,
            prev: hash_of(raw, "prev"),
            n: raw.get_i64("n").unwrap_or(0) as u64,
            root: hash_of(raw, "root"),
            dropped,
            of_chain: raw.get_str("of_chain").unwrap_or(chain).to_owned(),
            of_seq: raw.get_i64("of_seq").ok().map(|s| s as u64),
            reason: raw.get_str("reason").unwrap_or("").to_owned(),
            lost,
            lost_record: hash_of(raw, "lost_record"),
            prev_chain,
        };
        if chains
            .entry(chain.to_owned())
            .or_default()
            .insert(seq, record)
            .is_some()
        {
            violations.push(v(
                chain,
                Some(seq),
                None,
                "two records with this sequence number".into(),
            ));
        }
    }
    // Declared losses: (chain, seq) → lost positions' leaves, lost record.
    let mut lost_leaves: HashMap<(String, u64), HashMap<u64, Hash>> = HashMap::new();
    let mut lost_records: HashMap<(String, u64), Hash> = HashMap::new();
    for (chain, recs) in &chains {
        for (&seq, r) in recs {
            for (reason, n) in &r.dropped {
                if !GAP_REASONS.contains(&reason.as_str()) {
                    violations.push(v(
                        chain,
                        Some(seq),
                        None,
                        format!("unknown drop reason {reason:?}"),
                    ));
                }
                report.gaps.push(Gap {
                    chain: chain.clone(),
                    seq,
                    of_seq: None,
                    reason: reason.clone(),
                    n: *n,
                });
            }
            if r.kind == "gap" {
                let Some(of_seq) = r.of_seq else {
                    violations.push(v(
                        chain,
                        Some(seq),
                        None,
                        "gap record without of_seq".into(),
                    ));
                    continue;
                };
                report.gaps.push(Gap {
                    chain: chain.clone(),
                    seq,
                    of_seq: Some(of_seq),
                    reason: r.reason.clone(),
                    n: r.lost.len() as u64,
                });
                let key = (r.of_chain.clone(), of_seq);
                lost_leaves
                    .entry(key.clone())
                    .or_default()
                    .extend(r.lost.iter().copied());
                if let Some(h) = r.lost_record {
                    lost_records.insert(key, h);
                }
            }
        }
    }
    let mut lost_by_chain: HashMap<&str, BTreeMap<u64, Hash>> = HashMap::new();
    for ((chain, seq), h) in &lost_records {
        lost_by_chain
            .entry(chain.as_str())
            .or_default()
            .insert(*seq, *h);
    }
    // Span documents by (chain, seq).
    let mut batches: HashMap<(String, u64), Vec<StoredLeaf>> = HashMap::new();
    for doc in spans {
        let doc: &RawDocument = doc.borrow();
        let (Ok(chain), Ok(seq), Ok(pos)) =
            (doc.get_str("chain"), doc.get_i64("seq"), doc.get_i32("pos"))
        else {
            violations.push(v(
                "",
                None,
                Some(id_hex(doc)),
                "a span document outside every chain".into(),
            ));
            continue;
        };
        if crate::encode::content_hash(doc).is_some_and(|h| !content_hash_matches(doc, h)) {
            violations.push(v(
                chain,
                Some(seq as u64),
                Some(id_hex(doc)),
                "document altered: its content hash does not match its fields".into(),
            ));
        }
        batches
            .entry((chain.to_owned(), seq as u64))
            .or_default()
            .push((pos as u64, stored_leaf_hash(doc), DocId::of(doc)));
    }
    for (chain, recs) in &chains {
        let (&first, &last) = (
            recs.keys().next().unwrap_or(&0),
            recs.keys().last().unwrap_or(&0),
        );
        if first != 0 && !options.partial {
            violations.push(v(
                chain,
                Some(first),
                None,
                format!("records 0..{first} are missing (the chain starts at {first})"),
            ));
        }
        let mut prev_hash: Option<Hash> =
            recs.get(&first)
                .and_then(|r| if first == 0 { Some([0; 32]) } else { r.prev });
        // The records in order; the holes between them walked by what
        // names them lost, never one number at a time (a forged record may
        // claim any sequence number).
        let lost_here = lost_by_chain.get(chain.as_str());
        let mut next = first;
        for (&seq, r) in recs {
            prev_hash = walk_hole(chain, next..seq, lost_here, prev_hash, &mut violations);
            next = seq.saturating_add(1);
            if let (Some(expected), Some(prev)) = (prev_hash, r.prev) {
                if expected != prev {
                    violations.push(v(
                        chain,
                        Some(seq),
                        None,
                        "link broken: prev is not the hash of the record before".into(),
                    ));
                }
            }
            prev_hash = Some(r.hash);
            if seq == 0 && r.kind != "start" {
                violations.push(v(
                    chain,
                    Some(0),
                    None,
                    format!("record 0 is a {:?}, not the start", r.kind),
                ));
            }
            if r.kind == "batch" {
                check_batch(
                    chain,
                    seq,
                    r,
                    batches.remove(&(chain.clone(), seq)).unwrap_or_default(),
                    lost_leaves.get(&(chain.clone(), seq)),
                    &mut violations,
                    &mut report.verified_spans,
                );
            }
        }
        let head = recs.get(&last).map(|r| r.hash).unwrap_or([0; 32]);
        report.chains.push(ChainSummary {
            chain: chain.clone(),
            first_seq: first,
            last_seq: last,
            head: to_hex(&head),
            prev_chain: recs
                .get(&0)
                .and_then(|r| r.prev_chain.as_ref())
                .map(|h| h.to_string()),
        });
        // The previous chain named at start: its head then must be on record,
        // and be its last record.
        if let Some(p) = recs.get(&0).and_then(|r| r.prev_chain.as_ref()) {
            match chains.get(&p.chain) {
                Some(prev) => match prev.get(&p.seq) {
                    Some(r) if r.hash == p.hash => {
                        if prev.keys().last().is_some_and(|&l| l < p.seq) {
                            violations.push(v(
                                &p.chain,
                                Some(p.seq),
                                None,
                                format!("chain truncated: its successor {chain} saw seq {}", p.seq),
                            ));
                        }
                    }
                    Some(_) => violations.push(v(
                        &p.chain,
                        Some(p.seq),
                        None,
                        format!("record differs from the head its successor {chain} saw"),
                    )),
                    None if lost_records.contains_key(&(p.chain.clone(), p.seq)) => {}
                    None => violations.push(v(
                        &p.chain,
                        Some(p.seq),
                        None,
                        format!(
                            "chain truncated: its successor {chain} saw seq {}, not on record",
                            p.seq
                        ),
                    )),
                },
                None if options.partial => {}
                None => violations.push(v(
                    &p.chain,
                    None,
                    None,
                    format!("chain missing: {chain} follows it"),
                )),
            }
        }
    }
    let mut leftover: Vec<_> = batches.into_iter().collect();
    leftover.sort_by(|a, b| a.0.cmp(&b.0));
    for ((chain, seq), docs) in leftover {
        for (_, _, id) in docs {
            violations.push(v(
                &chain,
                Some(seq),
                Some(id.text()),
                "a document of a batch that has no record".into(),
            ));
        }
    }
    for head in &options.heads {
        let matched = chains.iter().any(|(c, recs)| {
            (head.chain.is_empty() || *c == head.chain)
                && recs.get(&head.seq).is_some_and(|r| r.hash == head.hash)
        });
        if !matched {
            violations.push(v(
                &head.chain,
                Some(head.seq),
                None,
                format!(
                    "checkpoint {} not on record: the log was truncated or rewritten after it",
                    to_hex(&head.hash)
                ),
            ));
        }
    }
    report.violations = violations;
    report
}

fn content_hash_matches(doc: &RawDocument, stored: i64) -> bool {
    // `hash` is the last element: type, "hash\0", 8 bytes, then the NUL.
    let bytes = crate::duplicates::as_written(doc);
    let end = bytes.len().saturating_sub(1 + 14);
    let elements = &bytes[4.min(end)..end];
    crate::encode::content_hash_of(elements) == stored
}

/// Parses `--head`: `SEQ:HASH` or `CHAIN:SEQ:HASH`.
pub fn parse_head(s: &str) -> Option<ChainHead> {
    let parts: Vec<&str> = s.split(':').collect();
    let (chain, seq, hash) = match parts[..] {
        [seq, hash] => ("", seq, hash),
        [chain, seq, hash] => (chain, seq, hash),
        _ => return None,
    };
    Some(ChainHead {
        chain: chain.to_owned(),
        seq: seq.parse().ok()?,
        hash: from_hex(hash)?,
    })
}
