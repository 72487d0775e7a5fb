//! The tamper-evident chain: every batch of span documents gets a record in
//! `<collection>.chain` holding the Merkle root of its documents and the
//! hash of the record before it; spans lost after they were chained get a
//! gap record. Schema, canonical encoding and threat model:
//! `docs/audit-integrity.md`.
//!
//! Hashes (SHA-256, with domain-separation prefixes as in RFC 6962 §2.1,
//! "Merkle Hash Trees"):
//! - leaf: `SHA-256(0x00 ‖ document)`, the span document's BSON bytes as
//!   the encoder wrote them (MongoDB stores and returns them unchanged);
//! - node: `SHA-256(0x01 ‖ left ‖ right)`; the root of `n` leaves splits
//!   them at the largest power of two below `n` (RFC 6962's MTH); the root
//!   of no leaves is `SHA-256("")`;
//! - record: `SHA-256(0x02 ‖ elements)`, where `elements` are the BSON
//!   bytes of every field of the chain record before `hash`;
//! - `mac` (with a key): HMAC-SHA-256(key, record hash).

use bson::raw::{RawDocument, RawDocumentBuf};
use bson::spec::ElementType;
use hmac::{KeyInit, Mac};
use sha2::{Digest, Sha256};
use std::fmt;
use std::path::{Path, PathBuf};

/// A SHA-256 digest.
pub type Hash = [u8; 32];

/// The leaf hash of a stored span document: of the document as the
/// encoder wrote it (a collision's disambiguated `_id` shortened back to
/// its 24 bytes).
pub fn stored_leaf_hash(doc: &RawDocument) -> Hash {
    leaf_hash(&crate::duplicates::as_written(doc))
}

/// `SHA-256(0x00 ‖ document)`.
pub fn leaf_hash(document: &[u8]) -> Hash {
    Sha256::new()
        .chain_update([0u8])
        .chain_update(document)
        .finalize()
        .into()
}

/// The RFC 6962 Merkle tree hash of `leaves` (leaf hashes, in position
/// order).
pub fn merkle_root(leaves: &[Hash]) -> Hash {
    match leaves.len() {
        0 => Sha256::digest([]).into(),
        1 => leaves[0],
        n => {
            let k = 1usize << (usize::BITS - 1 - (n - 1).leading_zeros());
            let (l, r) = (merkle_root(&leaves[..k]), merkle_root(&leaves[k..]));
            Sha256::new()
                .chain_update([1u8])
                .chain_update(l)
                .chain_update(r)
                .finalize()
                .into()
        }
    }
}

/// `SHA-256(0x02 ‖ elements)`: a chain record's hash over the bytes of its
/// fields before `hash`.
pub fn record_hash(elements: &[u8]) -> Hash {
    Sha256::new()
        .chain_update([2u8])
        .chain_update(elements)
        .finalize()
        .into()
}

/// Lowercase hex of a hash (or any bytes).
pub fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 15)]));
    }
    out
}

/// A hash from 64 hex digits.
pub fn from_hex(s: &str) -> Option<Hash> {
    let s = s.as_bytes();
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in s.chunks(2).enumerate() {
        let digit = |c: u8| (c as char).to_digit(16);
        out[i] = (digit(pair[0])? * 16 + digit(pair[1])?) as u8;
    }
    Some(out)
}

/// The HMAC key that makes the chain extendable only by its holder. Never
/// printed (`Debug` shows `ChainKey(****)`).
#[derive(Clone)]
pub struct ChainKey(Vec<u8>);

impl fmt::Debug for ChainKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ChainKey(****)")
    }
}

/// Why a [`ChainKey`] could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ChainKeyError {
    /// The file could not be read.
    #[error("cannot read the chain key file {path}: {source}")]
    File {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The environment variable is not set (or not UTF-8).
    #[error("the chain key variable ${0} is not set")]
    Env(String),
    /// The key is shorter than 16 bytes (after trimming whitespace).
    #[error("the chain key is too short ({0} bytes; at least 16)")]
    TooShort(usize),
    /// The key file holds more than [`MAX_KEY_FILE_BYTES`] (a wrong path:
    /// a log, a device).
    #[error("the chain key file {0} is longer than 64 KiB: not a key")]
    TooLong(PathBuf),
}

/// The most [`ChainKey::from_file`] reads: a key is tens of bytes, and a
/// path mistyped to a device or a log must not be read without end.
pub const MAX_KEY_FILE_BYTES: u64 = 64 << 10;

impl ChainKey {
    /// A key from bytes (at least 16).
    pub fn new(key: impl Into<Vec<u8>>) -> Result<ChainKey, ChainKeyError> {
        let key = key.into();
        if key.len() < 16 {
            return Err(ChainKeyError::TooShort(key.len()));
        }
        Ok(ChainKey(key))
    }

    /// The contents of a file, trailing whitespace trimmed.
    pub fn from_file(path: &Path) -> Result<ChainKey, ChainKeyError> {
        use std::io::Read;
        let file_error = |source| ChainKeyError::File {
            path: path.to_path_buf(),
            source,
        };
        let mut bytes = Vec::new();
        std::fs::File::open(path)
            .and_then(|f| f.take(MAX_KEY_FILE_BYTES + 1).read_to_end(&mut bytes))
            .map_err(file_error)?;
        if bytes.len() as u64 > MAX_KEY_FILE_BYTES {
            return Err(ChainKeyError::TooLong(path.to_path_buf()));
        }
        let end = bytes
            .iter()
            .rposition(|b| !b.is_ascii_whitespace())
            .map_or(0, |i| i + 1);
        ChainKey::new(&bytes[..end])
    }

    /// The value of an environment variable.
    pub fn from_env(var: &str) -> Result<ChainKey, ChainKeyError> {
        let v = std::env::var(var).map_err(|_| ChainKeyError::Env(var.into()))?;
        ChainKey::new(v.trim().as_bytes())
    }

    /// HMAC-SHA-256 of a record hash.
    pub fn mac(&self, record: &Hash) -> Hash {
        let mut m =
            hmac::Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes keys of any length");
        m.update(record);
        m.finalize().into_bytes().into()
    }
}

/// Where a span document sits in the chain (fields `chain`, `seq`, `pos`).
#[derive(Debug, Clone, Copy)]
pub struct ChainPos<'a> {
    /// The chain's id.
    pub chain: &'a str,
    /// The batch's sequence number.
    pub seq: u64,
    /// The document's position in the batch.
    pub pos: u32,
}

/// The last record of a chain: what checkpoints and the next chain name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainHead {
    /// The chain's id.
    pub chain: String,
    /// The last record's sequence number.
    pub seq: u64,
    /// The last record's hash.
    pub hash: Hash,
}

impl fmt::Display for ChainHead {
    /// `chain seq hash`: one line of a checkpoint file.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {}", self.chain, self.seq, to_hex(&self.hash))
    }
}

impl ChainHead {
    /// Parses `chain seq hash` (a checkpoint line).
    pub fn parse(line: &str) -> Option<ChainHead> {
        let mut it = line.split_whitespace();
        let head = ChainHead {
            chain: it.next()?.to_owned(),
            seq: it.next()?.parse().ok()?,
            hash: from_hex(it.next()?)?,
        };
        it.next().is_none().then_some(head)
    }
}

/// Why spans went missing, as chain records name it (the tracer's drop
/// reasons, in `DropCounts` order).
pub const GAP_REASONS: [&str; 6] = [
    "ring_full",
    "block_timeout",
    "unsampled",
    "shutdown",
    "recorder_error",
    "rejected",
];

/// What the chain's collection name adds to the span collection's: its
/// records go to `<collection>.chain`.
pub const COLLECTION_SUFFIX: &str = ".chain";

/// The collection the chain records of span collection `collection` go to.
pub fn collection_name(collection: &str) -> String {
    format!("{collection}{COLLECTION_SUFFIX}")
}

/// A chain record's `_id`: `<chain>-<seq, 20 digits>`.
pub fn record_id(chain: &str, seq: u64) -> String {
    format!("{chain}-{seq:020}")
}

/// Whether a document is a chain record (string `_id`) rather than a span
/// (binary `_id`): batches carry their chain record last, also in the spool.
pub(crate) fn is_record(doc: &RawDocument) -> bool {
    matches!(
        doc.get("_id").ok().flatten().map(|v| v.element_type()),
        Some(ElementType::String)
    )
}

/// The bytes of a chain record's fields before `hash`, and its stored
/// `hash` (for the verifier and the gap records).
pub fn record_parts(doc: &RawDocument) -> Option<(&[u8], Hash)> {
    // `hash` (Binary, 32 bytes) then optionally `mac`, then the NUL.
    let bytes = doc.as_bytes();
    let hash = doc.get_binary("hash").ok()?;
    let hash: Hash = hash.bytes.try_into().ok()?;
    let needle = {
        let mut n = Vec::with_capacity(11);
        n.extend_from_slice(b"\x05hash\0");
        n.extend_from_slice(&32i32.to_le_bytes());
        n
    };
    let at = bytes
        .windows(needle.len())
        .rposition(|w| w == needle.as_slice())?;
    Some((bytes.get(4..at)?, hash))
}

/// One chain: its id, the next sequence number and the hash of its last
/// record. Records are built by the recorder (batches, on the flusher) and
/// the writer (gaps), so it sits behind a mutex, taken once per batch.
pub(crate) struct ChainState {
    pub(crate) id: String,
    next_seq: u64,
    head: Hash,
    key: Option<ChainKey>,
    /// Where the head is kept for the next process on this spool
    /// (`<spool_dir>/chain-head`), and the operator's checkpoint file.
    head_file: PathBuf,
    checkpoint_file: Option<PathBuf>,
    /// Tracer drops already named in a record, by reason.
    pub(crate) named_drops: [u64; 6],
}

/// What a batch record says about spans missing since the previous one.
pub(crate) type Drops = [u64; 6];

impl ChainState {
    /// A new chain, linked to the previous chain of this spool if its head
    /// is on record. Returns its start record.
    pub(crate) fn start(
        spool_dir: &Path,
        key: Option<ChainKey>,
        checkpoint_file: Option<PathBuf>,
    ) -> (ChainState, RawDocumentBuf) {
        let head_file = spool_dir.join("chain-head");
        let previous = std::fs::read_to_string(&head_file)
            .ok()
            .and_then(|s| ChainHead::parse(s.trim()));
        let mut state = ChainState {
            id: new_chain_id(),
            next_seq: 0,
            head: [0; 32],
            key,
            head_file,
            checkpoint_file,
            named_drops: [0; 6],
        };
        let record = state.record("start", |w| {
            if let Some(p) = &previous {
                let mut link = bson::RawDocumentBuf::new();
                link.append("chain", p.chain.as_str());
                link.append("seq", p.seq as i64);
                link.append("hash", bin(&p.hash));
                w.append("prev_chain", link);
            }
        });
        (state, record)
    }

    /// The next record's sequence number (the batch's, for its documents).
    pub(crate) fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// The record of a batch of `n` documents with these leaf hashes, and
    /// the tracer's drops since the previous record.
    pub(crate) fn batch(&mut self, leaves: &[Hash], drops: Drops) -> RawDocumentBuf {
        let root = merkle_root(leaves);
        self.record("batch", |w| {
            w.append("n", leaves.len() as i64);
            w.append("root", bin(&root));
            append_drops(w, drops);
        })
    }

    /// A gap record: spans of batch `of_seq` (at `positions`, with their
    /// leaf hashes) lost after they were chained, and why. With
    /// `lost_record`, the batch's own record was lost too (its hash keeps
    /// the links checkable).
    pub(crate) fn gap(
        &mut self,
        of_chain: &str,
        of_seq: u64,
        reason: &str,
        lost: &[(u32, Hash)],
        lost_record: Option<Hash>,
    ) -> RawDocumentBuf {
        self.record("gap", |w| {
            w.append("of_chain", of_chain);
            w.append("of_seq", of_seq as i64);
            w.append("reason", reason);
            w.append("n", lost.len() as i64);
            let mut positions = bson::RawArrayBuf::new();
            for (pos, leaf) in lost {
                let mut p = bson::RawDocumentBuf::new();
                p.append("pos", i64::from(*pos));
                p.append("leaf", bin(leaf));
                positions.push(p);
            }
            w.append("positions", positions);
            if let Some(h) = lost_record {
                w.append("lost_record", bin(&h));
            }
        })
    }

    fn record(&mut self, kind: &str, body: impl FnOnce(&mut RawDocumentBuf)) -> RawDocumentBuf {
        let seq = self.next_seq;
        let mut w = RawDocumentBuf::new();
        w.append("_id", record_id(&self.id, seq));
        w.append("chain", self.id.as_str());
        w.append("seq", seq as i64);
        w.append("kind", kind);
        w.append("time", bson::DateTime::now());
        w.append("prev", bin(&self.head));
        body(&mut w);
        let elements = &w.as_bytes()[4..w.as_bytes().len() - 1];
        let hash = record_hash(elements);
        w.append("hash", bin(&hash));
        if let Some(key) = &self.key {
            w.append("mac", bin(&key.mac(&hash)));
        }
        self.next_seq += 1;
        self.head = hash;
        // The head for the next process on this spool: a plain overwrite
        // (a torn file only costs the next chain its back link).
        let _ = std::fs::write(&self.head_file, format!("{}\n", self.head()));
        w
    }

    /// The chain's head: its last record.
    pub(crate) fn head(&self) -> ChainHead {
        ChainHead {
            chain: self.id.clone(),
            seq: self.next_seq.saturating_sub(1),
            hash: self.head,
        }
    }

    /// Appends the head to the operator's checkpoint file, if any.
    pub(crate) fn checkpoint(&self) -> std::io::Result<()> {
        let Some(path) = &self.checkpoint_file else {
            return Ok(());
        };
        use std::io::Write as _;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        writeln!(f, "{}", self.head())?;
        f.sync_data()
    }
}

/// A lost document's position in its batch and its leaf hash.
type LostLeaf = (u32, Hash);

/// The chain a recorder extends, shared by the recorder (batch records,
/// on the flusher) and its writer (gap records).
pub(crate) struct ChainShared {
    pub(crate) state: parking_lot::Mutex<ChainState>,
    /// Records the writer still has to insert (the start record, gaps).
    pub(crate) pending: parking_lot::Mutex<Vec<RawDocumentBuf>>,
}

impl ChainShared {
    /// Gap records for chained documents among `docs` that are lost for
    /// good (`reason`), queued for the writer; a batch record among `docs`
    /// is named as lost with them (its hash keeps the links checkable).
    pub(crate) fn gap_for(&self, docs: &[RawDocumentBuf], reason: &str) {
        let lost_record = docs.iter().find(|d| is_record(d)).and_then(|d| {
            Some((
                d.get_str("chain").ok()?,
                d.get_i64("seq").ok()?,
                record_parts(d)?.1,
            ))
        });
        // (chain, seq) → [(pos, leaf)]
        let mut groups: Vec<(&str, u64, Vec<LostLeaf>)> = Vec::new();
        for d in docs.iter().filter(|d| !is_record(d)) {
            let (Ok(chain), Ok(seq), Ok(pos)) =
                (d.get_str("chain"), d.get_i64("seq"), d.get_i32("pos"))
            else {
                continue;
            };
            let (seq, pos) = (seq as u64, pos as u32);
            let leaf = leaf_hash(d.as_bytes());
            match groups.iter_mut().find(|(c, s, _)| *c == chain && *s == seq) {
                Some((_, _, v)) => v.push((pos, leaf)),
                None => groups.push((chain, seq, vec![(pos, leaf)])),
            }
        }
        if let Some((chain, seq, _)) = lost_record {
            if !groups
                .iter()
                .any(|(c, s, _)| *c == chain && *s == seq as u64)
            {
                groups.push((chain, seq as u64, Vec::new()));
            }
        }
        let mut state = self.state.lock();
        let mut records = Vec::with_capacity(groups.len());
        for (chain, seq, lost) in groups {
            let record = lost_record
                .filter(|(c, s, _)| *c == chain && *s as u64 == seq)
                .map(|(_, _, h)| h);
            records.push(state.gap(chain, seq, reason, &lost, record));
        }
        drop(state);
        self.pending.lock().extend(records);
    }
}

fn append_drops(w: &mut RawDocumentBuf, drops: Drops) {
    let mut d = RawDocumentBuf::new();
    for (reason, n) in GAP_REASONS.iter().zip(drops) {
        if n > 0 {
            d.append(*reason, n as i64);
        }
    }
    w.append("dropped", d);
}

fn bin(h: &Hash) -> bson::Binary {
    bson::Binary {
        subtype: bson::spec::BinarySubtype::Generic,
        bytes: h.to_vec(),
    }
}

/// 32 hex digits, unique per recorder instance: time, process id and a
/// per-process counter, hashed.
fn new_chain_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    let h: Hash = Sha256::new()
        .chain_update(now.to_le_bytes())
        .chain_update(std::process::id().to_le_bytes())
        // ORDERING: Relaxed: only uniqueness within the process matters.
        .chain_update(N.fetch_add(1, Ordering::Relaxed).to_le_bytes())
        .finalize()
        .into();
    to_hex(&h)[..32].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_file_that_is_no_key_is_refused_without_reading_it_all() {
        assert!(matches!(
            ChainKey::from_file(Path::new("/dev/zero")),
            Err(ChainKeyError::TooLong(_))
        ));
        let f = std::env::temp_dir().join(format!("spanrec-key-{}", std::process::id()));
        std::fs::write(&f, "a key of sixteen bytes at least\n").unwrap();
        assert!(ChainKey::from_file(&f).is_ok());
        let _ = std::fs::remove_file(f);
    }

    #[test]
    fn merkle_root_follows_rfc6962() {
        // RFC 6962 §2.1 by hand for 3 leaves: MTH = H(1 ‖ H(1 ‖ a ‖ b) ‖ c).
        let (a, b, c) = (leaf_hash(b"a"), leaf_hash(b"b"), leaf_hash(b"c"));
        let node = |l: &Hash, r: &Hash| -> Hash {
            let mut v = vec![1u8];
            v.extend_from_slice(l);
            v.extend_from_slice(r);
            Sha256::digest(&v).into()
        };
        assert_eq!(merkle_root(&[a, b, c]), node(&node(&a, &b), &c));
        assert_eq!(merkle_root(&[a]), a);
        assert_eq!(
            to_hex(&merkle_root(&[])),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        let mut leaf_a = vec![0u8];
        leaf_a.extend_from_slice(b"a");
        assert_eq!(a, <[u8; 32]>::from(Sha256::digest(&leaf_a)));
    }

    #[test]
    fn records_link_and_hash_what_they_hold() {
        let dir = std::env::temp_dir().join(format!("spanrec-chain-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let _ = std::fs::remove_file(dir.join("chain-head"));
        let key = ChainKey::new(*b"0123456789abcdef").unwrap();
        let (mut c, start) = ChainState::start(&dir, Some(key.clone()), None);
        let batch = c.batch(&[leaf_hash(b"x")], [1, 0, 0, 0, 0, 0]);
        let gap = c.gap(&c.id.clone(), 1, "rejected", &[(0, leaf_hash(b"x"))], None);
        assert_eq!(gap.get_i64("seq").unwrap(), 2);
        let (elements, hash) = record_parts(&start).unwrap();
        assert_eq!(record_hash(elements), hash);
        assert_eq!(start.get_binary("mac").unwrap().bytes, key.mac(&hash));
        assert_eq!(batch.get_binary("prev").unwrap().bytes, hash);
        assert!(is_record(&batch));
        // The next chain on this spool names this one's head.
        let (_, next) = ChainState::start(&dir, None, None);
        let link = next.get_document("prev_chain").unwrap();
        assert_eq!(link.get_str("chain").unwrap(), c.id);
        assert_eq!(link.get_i64("seq").unwrap(), 2);
        assert_eq!(format!("{key:?}"), "ChainKey(****)");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
