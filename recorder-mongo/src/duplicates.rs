//! What a duplicate-key error means: the same span delivered before (a
//! retry, a replay), or a different span under the same `_id` (a
//! collision: a forked process repeating ids, or chance).
//!
//! Every document carries `hash`, the content hash of its other elements
//! (`encode::content_hash`). On a duplicate key the writer reads the
//! stored document's `hash`: equal means the same span, delivered; anything
//! else is a collision, and the sent span is stored under a disambiguated
//! `_id` (the original 24 bytes followed by its 8-byte hash, big-endian),
//! never dropped. The disambiguated `_id` is itself deterministic, so a
//! retried collision is a plain duplicate.

use crate::encode::content_hash;
use bson::raw::{RawDocument, RawDocumentBuf};
use bson::spec::BinarySubtype;
use bson::{doc, Binary, Bson};
use mongodb::error::Error as DriverError;
use mongodb::sync::Collection;
use std::collections::HashMap;

/// The documents among `docs[duplicates]` that are *not* the stored ones,
/// each re-keyed under its disambiguated `_id` (or `Err` with the document
/// when it cannot be, which the caller counts as lost).
pub(crate) fn collisions(
    collection: &Collection<RawDocumentBuf>,
    docs: &[RawDocumentBuf],
    duplicates: &[usize],
) -> Result<Vec<Result<RawDocumentBuf, ()>>, DriverError> {
    let ids: Vec<Bson> = duplicates
        .iter()
        .filter_map(|&i| docs.get(i))
        .filter_map(|d| id_bytes(d))
        .map(|bytes| {
            Bson::Binary(Binary {
                subtype: BinarySubtype::Generic,
                bytes: bytes.to_vec(),
            })
        })
        .collect();
    let mut stored: HashMap<Vec<u8>, Option<i64>> = HashMap::with_capacity(ids.len());
    let cursor = collection
        .find(doc! { "_id": { "$in": ids } })
        .projection(doc! { "hash": 1 })
        .run()?;
    for found in cursor {
        let found = found?;
        if let Some(id) = id_bytes(&found) {
            stored.insert(id.to_vec(), content_hash(&found));
        }
    }
    let mut out = Vec::new();
    for &i in duplicates {
        let Some(sent) = docs.get(i) else { continue };
        let sent_hash = content_hash(sent);
        let same = match (id_bytes(sent).and_then(|id| stored.get(id)), sent_hash) {
            // Not written by this encoder (no hash): nothing to compare.
            (_, None) => true,
            (Some(stored_hash), Some(h)) => *stored_hash == Some(h),
            // Gone since the insert (a TTL, an operator): store it again.
            (None, Some(_)) => false,
        };
        if !same {
            out.push(sent_hash.and_then(|h| disambiguated(sent, h)).ok_or(()));
        }
    }
    Ok(out)
}

/// The bytes of a document's binary `_id`.
fn id_bytes(doc: &RawDocument) -> Option<&[u8]> {
    doc.get_binary("_id").ok().map(|b| b.bytes)
}

/// `doc` with `_id` = its 24-byte `_id` followed by `hash` (big-endian).
/// The `_id` is the first element, as the encoder writes it.
fn disambiguated(doc: &RawDocument, hash: i64) -> Option<RawDocumentBuf> {
    let bytes = doc.as_bytes();
    // type 0x05, "_id\0", length 24, subtype 0, 24 bytes.
    const ID_ELEMENT: usize = 1 + 4 + 4 + 1 + 24;
    let element = bytes.get(4..4 + ID_ELEMENT)?;
    if element[..5] != *b"\x05_id\0" || element[5..9] != 24i32.to_le_bytes() {
        return None;
    }
    let mut out = Vec::with_capacity(bytes.len() + 8);
    out.extend_from_slice(&i32::try_from(bytes.len() + 8).ok()?.to_le_bytes());
    out.extend_from_slice(b"\x05_id\0");
    out.extend_from_slice(&32i32.to_le_bytes());
    out.push(0);
    out.extend_from_slice(&element[10..]);
    out.extend_from_slice(&hash.to_be_bytes());
    out.extend_from_slice(bytes.get(4 + ID_ELEMENT..)?);
    RawDocumentBuf::from_bytes(out).ok()
}

/// The document as the encoder wrote it: a disambiguated (32-byte) `_id`
/// back to its first 24 bytes; any other document unchanged. What the
/// chain's leaf hash covers.
pub(crate) fn as_written(doc: &RawDocument) -> std::borrow::Cow<'_, [u8]> {
    let bytes = doc.as_bytes();
    const LONG_ID: usize = 1 + 4 + 4 + 1 + 32;
    match bytes.get(4..4 + LONG_ID) {
        Some(e) if e[..5] == *b"\x05_id\0" && e[5..9] == 32i32.to_le_bytes() && e[9] == 0 => {
            let mut out = Vec::with_capacity(bytes.len() - 8);
            out.extend_from_slice(&((bytes.len() - 8) as i32).to_le_bytes());
            out.extend_from_slice(b"\x05_id\0");
            out.extend_from_slice(&24i32.to_le_bytes());
            out.push(0);
            out.extend_from_slice(&e[10..34]);
            out.extend_from_slice(&bytes[4 + LONG_ID..]);
            std::borrow::Cow::Owned(out)
        }
        _ => std::borrow::Cow::Borrowed(bytes),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_disambiguated_document_keeps_every_other_field() {
        let mut id = vec![7u8; 24];
        id[0] = 1;
        let original = bson::to_vec(&doc! {
            "_id": Binary { subtype: BinarySubtype::Generic, bytes: id.clone() },
            "name": "x",
            "hash": 42i64,
        })
        .unwrap();
        let original = RawDocumentBuf::from_bytes(original).unwrap();
        let d = disambiguated(&original, 0x0102_0304_0506_0708).unwrap();
        let mut want = id;
        want.extend_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(d.get_binary("_id").unwrap().bytes, &want[..]);
        assert_eq!(d.get_str("name").unwrap(), "x");
        assert_eq!(d.get_i64("hash").unwrap(), 42);
        assert_eq!(&*as_written(&d), original.as_bytes());
        assert_eq!(&*as_written(&original), original.as_bytes());
        // Not an encoder's `_id`: refused, not mangled.
        let other = RawDocumentBuf::from_bytes(bson::to_vec(&doc! { "_id": 1 }).unwrap()).unwrap();
        assert!(disambiguated(&other, 1).is_none());
    }
}
