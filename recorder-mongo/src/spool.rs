//! The on-disk spool: where batches wait while the database is unreachable.
//!
//! A directory of append-only segment files named by a 20-digit sequence
//! number, oldest first. Each record is
//!
//! ```text
//! magic "SPL1" (4 bytes) | payload length u32 LE | CRC-32 of payload u32 LE | payload
//! ```
//!
//! where the payload is the batch's BSON documents back to back (each BSON
//! document starts with its own length). Every append is followed by
//! `fsync` (`sync_data`), so a batch the recorder reports as spooled survives
//! a crash. On reading, a record whose magic, length or checksum is wrong
//! (a torn write at a crash) ends the segment: the records before it are
//! replayed, the rest counted as corrupt. A segment is deleted once every
//! batch in it has been delivered; replaying it again after a crash in
//! between only yields duplicate keys, which count as delivered.

use bson::raw::RawDocumentBuf;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 4] = b"SPL1";
/// A segment is closed and a new one started past this size.
const SEGMENT_BYTES: u64 = 64 * 1024 * 1024;

/// Why a batch could not be spooled.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// The spool holds `max_bytes` already.
    #[error("spool full ({bytes} bytes, limit {max_bytes})")]
    Full {
        /// Bytes on disk.
        bytes: u64,
        /// The configured limit.
        max_bytes: u64,
    },
    /// Reading or writing the spool failed.
    #[error("spool I/O at {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

/// The batches of one segment, and whether a corrupt record cut it short.
pub(crate) struct Segment {
    pub(crate) path: PathBuf,
    pub(crate) batches: Vec<Vec<RawDocumentBuf>>,
    pub(crate) corrupt_bytes: u64,
}

pub(crate) struct Spool {
    dir: PathBuf,
    max_bytes: u64,
    /// Bytes in all segments.
    bytes: u64,
    /// The segment being appended to, with its sequence number and size.
    current: Option<(u64, File, u64)>,
    next_seq: u64,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> SpoolError + '_ {
    move |source| SpoolError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl Spool {
    pub(crate) fn open(dir: &Path, max_bytes: u64) -> Result<Spool, SpoolError> {
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        let mut spool = Spool {
            dir: dir.to_path_buf(),
            max_bytes,
            bytes: 0,
            current: None,
            next_seq: 0,
        };
        for (seq, path) in spool.segments()? {
            spool.bytes += std::fs::metadata(&path).map_err(io_err(&path))?.len();
            spool.next_seq = spool.next_seq.max(seq + 1);
        }
        Ok(spool)
    }

    /// Segment files, oldest first.
    fn segments(&self) -> Result<Vec<(u64, PathBuf)>, SpoolError> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&self.dir).map_err(io_err(&self.dir))? {
            let entry = entry.map_err(io_err(&self.dir))?;
            let name = entry.file_name();
            let Some(seq) = name
                .to_str()
                .and_then(|n| n.strip_suffix(".spool"))
                .and_then(|n| n.parse().ok())
            else {
                continue;
            };
            out.push((seq, entry.path()));
        }
        out.sort();
        Ok(out)
    }

    pub(crate) fn bytes(&self) -> u64 {
        self.bytes
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.bytes == 0
    }

    /// Appends a batch durably.
    pub(crate) fn append(&mut self, docs: &[RawDocumentBuf]) -> Result<(), SpoolError> {
        let payload_len: usize = docs.iter().map(|d| d.as_bytes().len()).sum();
        let record_len = 12 + payload_len as u64;
        if self.bytes + record_len > self.max_bytes {
            return Err(SpoolError::Full {
                bytes: self.bytes,
                max_bytes: self.max_bytes,
            });
        }
        if self
            .current
            .as_ref()
            .is_some_and(|(_, _, size)| *size >= SEGMENT_BYTES)
        {
            self.current = None;
        }
        if self.current.is_none() {
            let seq = self.next_seq;
            self.next_seq += 1;
            let path = self.dir.join(format!("{seq:020}.spool"));
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .map_err(io_err(&path))?;
            // Make the new file's directory entry durable too.
            if let Ok(d) = File::open(&self.dir) {
                let _ = d.sync_all();
            }
            self.current = Some((seq, file, 0));
        }
        let mut record = Vec::with_capacity(record_len as usize);
        let mut hasher = crc32fast::Hasher::new();
        for d in docs {
            hasher.update(d.as_bytes());
        }
        record.extend_from_slice(MAGIC);
        record.extend_from_slice(&(payload_len as u32).to_le_bytes());
        record.extend_from_slice(&hasher.finalize().to_le_bytes());
        for d in docs {
            record.extend_from_slice(d.as_bytes());
        }
        let dir = self.dir.clone();
        let (_, file, size) = self.current.as_mut().expect("opened above");
        file.write_all(&record).map_err(io_err(&dir))?;
        file.sync_data().map_err(io_err(&dir))?;
        *size += record_len;
        self.bytes += record_len;
        Ok(())
    }

    /// Reads the oldest segment (closing it for appends first if it is the
    /// current one), or `None` when the spool is empty.
    pub(crate) fn oldest(&mut self) -> Result<Option<Segment>, SpoolError> {
        let Some((seq, path)) = self.segments()?.into_iter().next() else {
            return Ok(None);
        };
        if self.current.as_ref().is_some_and(|(s, _, _)| *s == seq) {
            self.current = None;
        }
        let mut data = Vec::new();
        File::open(&path)
            .map_err(io_err(&path))?
            .read_to_end(&mut data)
            .map_err(io_err(&path))?;
        let (batches, good) = parse_segment(&data);
        Ok(Some(Segment {
            path,
            batches,
            corrupt_bytes: (data.len() - good) as u64,
        }))
    }

    /// Deletes a fully delivered segment.
    pub(crate) fn remove(&mut self, segment: &Segment) -> Result<(), SpoolError> {
        let len = std::fs::metadata(&segment.path)
            .map(|m| m.len())
            .unwrap_or(0);
        std::fs::remove_file(&segment.path).map_err(io_err(&segment.path))?;
        self.bytes = self.bytes.saturating_sub(len);
        Ok(())
    }
}

/// Parses records until the data ends or a record is bad; returns the
/// batches and how many bytes were good.
fn parse_segment(data: &[u8]) -> (Vec<Vec<RawDocumentBuf>>, usize) {
    let mut batches = Vec::new();
    let mut at = 0;
    while data.len() - at >= 12 {
        if &data[at..at + 4] != MAGIC {
            break;
        }
        let len = u32::from_le_bytes(data[at + 4..at + 8].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_le_bytes(data[at + 8..at + 12].try_into().expect("4 bytes"));
        let Some(payload) = data.get(at + 12..at + 12 + len) else {
            break;
        };
        if crc32fast::hash(payload) != crc {
            break;
        }
        let Some(docs) = split_documents(payload) else {
            break;
        };
        batches.push(docs);
        at += 12 + len;
    }
    (batches, at)
}

fn split_documents(mut payload: &[u8]) -> Option<Vec<RawDocumentBuf>> {
    let mut docs = Vec::new();
    while !payload.is_empty() {
        let len = i32::from_le_bytes(payload.get(..4)?.try_into().ok()?);
        let len = usize::try_from(len).ok()?;
        let doc = payload.get(..len)?;
        docs.push(RawDocumentBuf::from_bytes(doc.to_vec()).ok()?);
        payload = &payload[len..];
    }
    Some(docs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(i: i32) -> RawDocumentBuf {
        let mut d = RawDocumentBuf::new();
        d.append("i", i);
        d
    }

    #[test]
    fn batches_survive_reopen_and_a_torn_tail_is_cut() {
        let dir = std::env::temp_dir().join(format!("spanrec-spool-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        {
            let mut s = Spool::open(&dir, 1 << 20).unwrap();
            s.append(&[doc(1), doc(2)]).unwrap();
            s.append(&[doc(3)]).unwrap();
        }
        // A torn write: half a record at the end.
        let seg = std::fs::read_dir(&dir)
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        let mut f = OpenOptions::new().append(true).open(&seg).unwrap();
        f.write_all(b"SPL1\x10\0\0\0garbage").unwrap();
        drop(f);
        let mut s = Spool::open(&dir, 1 << 20).unwrap();
        assert!(!s.is_empty());
        let segment = s.oldest().unwrap().unwrap();
        assert_eq!(segment.batches.len(), 2);
        assert_eq!(segment.batches[0].len(), 2);
        assert_eq!(segment.batches[1][0], doc(3));
        assert_eq!(segment.corrupt_bytes, 15);
        s.remove(&segment).unwrap();
        assert!(s.is_empty());
        assert!(s.oldest().unwrap().is_none());
        let full = Spool::open(&dir, 10).unwrap().append(&[doc(1)]);
        assert!(matches!(full, Err(SpoolError::Full { .. })));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
