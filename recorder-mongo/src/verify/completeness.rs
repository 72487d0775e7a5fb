//! Whether everything a chain's records account for is there: the records
//! between the ones stored (`walk_hole`) and the documents of one batch
//! (`check_batch`). Work and memory follow what is stored and what gap
//! records name lost, never the counts and sequence numbers records claim:
//! a forged record may claim any.

use super::{Record, StoredLeaf, Violation};
use crate::chain::Hash;
use std::collections::{BTreeMap, HashMap};

/// The sequence numbers `hole` of `chain` that have no record: one a gap
/// record names lost links on with its hash, every run of others is one
/// violation. Returns the `prev` the record after the hole must carry.
/// Work follows the losses named, not the width of the hole.
pub(super) fn walk_hole(
    chain: &str,
    hole: std::ops::Range<u64>,
    lost: Option<&BTreeMap<u64, Hash>>,
    mut prev: Option<Hash>,
    violations: &mut Vec<Violation>,
) -> Option<Hash> {
    let missing = |from: u64, to: u64, violations: &mut Vec<Violation>| {
        let problem = if from == to {
            "record missing (deleted, or never written without a gap record naming it)".into()
        } else {
            format!(
                "records {from}..={to} missing (deleted, or never written without a gap record naming them)"
            )
        };
        violations.push(Violation {
            chain: chain.to_owned(),
            seq: Some(from),
            document: None,
            problem,
        });
    };
    let mut run = hole.start;
    if hole.is_empty() {
        return prev;
    }
    for (&seq, h) in lost.into_iter().flat_map(|l| l.range(hole.clone())) {
        if seq > run {
            missing(run, seq - 1, violations);
        }
        prev = Some(*h);
        run = seq + 1;
    }
    if run < hole.end {
        missing(run, hole.end - 1, violations);
        prev = None;
    }
    prev
}

/// Checks one batch against its record: every position `0..r.n` holds one
/// document or is named lost, and the leaves give the record's Merkle root.
/// Work and memory follow the documents stored and the losses named, not
/// `r.n` (a forged record may claim any count).
#[allow(clippy::too_many_arguments)]
pub(super) fn check_batch(
    chain: &str,
    seq: u64,
    r: &Record,
    mut docs: Vec<StoredLeaf>,
    lost: Option<&HashMap<u64, Hash>>,
    violations: &mut Vec<Violation>,
    verified: &mut u64,
) {
    let v = |document: Option<String>, problem: String| Violation {
        chain: chain.to_owned(),
        seq: Some(seq),
        document,
        problem,
    };
    docs.sort_by_key(|d| d.0);
    // Position → leaf, for the positions within the batch.
    let mut leaves: BTreeMap<u64, Hash> = BTreeMap::new();
    let mut ok = true;
    for (pos, leaf, id) in &docs {
        if *pos >= r.n {
            ok = false;
            violations.push(v(
                Some(id.text()),
                format!(
                    "position {pos} is past the batch's {} documents (forged)",
                    r.n
                ),
            ));
        } else if leaves.insert(*pos, *leaf).is_some() {
            ok = false;
            violations.push(v(
                Some(id.text()),
                format!("a second document at position {pos}"),
            ));
        }
    }
    for (&pos, h) in lost.into_iter().flatten() {
        if pos < r.n {
            leaves.entry(pos).or_insert(*h);
        }
    }
    // Every position below `r.n` not in `leaves` is missing: one violation
    // per run of them.
    let mut next = 0u64;
    for &pos in leaves.keys().chain(std::iter::once(&r.n)) {
        if pos > next {
            ok = false;
            violations.push(v(
                None,
                if pos - next == 1 {
                    format!("document at position {next} missing (deleted, and no gap names it)")
                } else {
                    format!(
                        "documents at positions {next}..={} missing (deleted, and no gap names them)",
                        pos - 1
                    )
                },
            ));
        }
        next = pos.saturating_add(1);
    }
    if !ok {
        return;
    }
    // Here every position `0..r.n` is in `leaves`: `r.n` is bounded by
    // the documents and losses at hand.
    let full: Vec<Hash> = leaves.into_values().collect();
    if Some(crate::chain::merkle_root(&full)) != r.root {
        violations.push(v(
            None,
            "Merkle root mismatch: a document of this batch was altered".into(),
        ));
        return;
    }
    *verified += docs.len() as u64;
}
