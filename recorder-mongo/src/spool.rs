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
//! `fsync` (`sync_data`), so a batch the recorder reports as spooled
//! survives a crash.
//!
//! What the disk can do to it, and what the spool does:
//! - **A failed append** (disk full, `EIO`, a failed `fsync`): the segment
//!   is cut back to its last whole record (`set_len`, synced) and closed;
//!   the next append starts a new segment. A batch reported as not spooled
//!   is therefore never replayed (counted once), and no record follows a
//!   torn one.
//! - **A torn or corrupt record** (a crash mid-write, a bad sector): the
//!   reader resynchronises on the next record whose magic, length, checksum
//!   and documents are all valid; only the bytes in between are lost
//!   (counted as corrupt), never the good batches after them.
//! - **A crash during replay**: the number of batches of the oldest segment
//!   already delivered is kept durably in `progress` (written to a
//!   temporary file, synced, renamed), so a restart resumes after them
//!   instead of delivering and counting them again. Only a batch whose
//!   insert was acknowledged in the instant before the crash, before its
//!   progress was synced, is inserted again (duplicate keys: counted as
//!   duplicates, not as delivered).
//! - **Two processes, one directory**: the first holds an exclusive lock
//!   on `LOCK` for its lifetime; a second gets `SpoolError::Locked`.
//! - **Who can read it**: a directory the spool creates is `0700`, its
//!   files `0600` (audit data is not world-readable).

use bson::raw::RawDocumentBuf;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
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
    /// Another process (or recorder) holds this spool directory.
    #[error("spool directory {path} is in use by another recorder (its LOCK is held)")]
    Locked {
        /// The directory.
        path: PathBuf,
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

/// The batches of one segment, how many were delivered already, and how
/// many bytes were corrupt.
pub(crate) struct Segment {
    pub(crate) seq: u64,
    pub(crate) path: PathBuf,
    pub(crate) batches: Vec<Vec<RawDocumentBuf>>,
    /// Batches at the front already delivered (from `progress`): skip them.
    pub(crate) delivered: usize,
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
    /// `(segment, batches delivered)` of the segment being replayed, as
    /// last synced to `progress`.
    progress: Option<(u64, usize)>,
    /// The exclusive lock on `LOCK`, held while the spool is open.
    _lock: File,
}

const LOCK: &str = "LOCK";
const PROGRESS: &str = "progress";

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> SpoolError + '_ {
    move |source| SpoolError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl Spool {
    pub(crate) fn open(dir: &Path, max_bytes: u64) -> Result<Spool, SpoolError> {
        // Directories created here are the spool's own: owner only.
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io_err(dir))?;
        let lock_path = dir.join(LOCK);
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&lock_path)
            .map_err(io_err(&lock_path))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(SpoolError::Locked {
                    path: dir.to_path_buf(),
                })
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io_err(&lock_path)(e)),
        }
        let mut spool = Spool {
            dir: dir.to_path_buf(),
            max_bytes,
            bytes: 0,
            current: None,
            next_seq: 0,
            progress: None,
            _lock: lock,
        };
        for (seq, path) in spool.segments()? {
            spool.bytes += std::fs::metadata(&path).map_err(io_err(&path))?.len();
            spool.next_seq = spool.next_seq.max(seq + 1);
        }
        spool.progress = std::fs::read(dir.join(PROGRESS))
            .ok()
            .and_then(|b| parse_progress(&b));
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

    /// Appends a batch durably. On failure the segment is cut back to its
    /// last whole record and closed: the batch is not in the spool (it is
    /// never replayed), and the next append starts a new segment.
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
            let path = self.segment_path(seq);
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o600)
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
        let Some((seq, file, size)) = self.current.as_mut() else {
            unreachable!("a segment is open: opened above");
        };
        let path = self.dir.join(format!("{seq:020}.spool"));
        let written = write_record(file, &record).and_then(|()| file.sync_data());
        if let Err(e) = written {
            // Cut back to the last whole record (its bytes may be on disk
            // even if `fsync` failed) and start a new segment next time.
            let _ = file.set_len(*size).and_then(|()| file.sync_data());
            self.current = None;
            return Err(io_err(&path)(e));
        }
        *size += record_len;
        self.bytes += record_len;
        Ok(())
    }

    fn segment_path(&self, seq: u64) -> PathBuf {
        self.dir.join(format!("{seq:020}.spool"))
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
        let (batches, corrupt) = parse_segment(&data);
        let delivered = match self.progress {
            Some((s, n)) if s == seq => n.min(batches.len()),
            _ => 0,
        };
        Ok(Some(Segment {
            seq,
            path,
            batches,
            delivered,
            corrupt_bytes: corrupt as u64,
        }))
    }

    /// Records, durably, that the first `delivered` batches of `segment`
    /// are in the database, so that a restart does not deliver (and count)
    /// them again.
    pub(crate) fn mark_delivered(
        &mut self,
        segment: &Segment,
        delivered: usize,
    ) -> Result<(), SpoolError> {
        let tmp = self.dir.join(format!("{PROGRESS}.tmp"));
        let mut bytes = Vec::with_capacity(20);
        bytes.extend_from_slice(&segment.seq.to_le_bytes());
        bytes.extend_from_slice(&(delivered as u64).to_le_bytes());
        bytes.extend_from_slice(&crc32fast::hash(&bytes).to_le_bytes());
        let mut f = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io_err(&tmp))?;
        write_record(&mut f, &bytes)
            .and_then(|()| f.sync_data())
            .map_err(io_err(&tmp))?;
        let dest = self.dir.join(PROGRESS);
        std::fs::rename(&tmp, &dest).map_err(io_err(&dest))?;
        if let Ok(d) = File::open(&self.dir) {
            let _ = d.sync_all();
        }
        self.progress = Some((segment.seq, delivered));
        Ok(())
    }

    /// Deletes a fully delivered segment.
    pub(crate) fn remove(&mut self, segment: &Segment) -> Result<(), SpoolError> {
        let len = std::fs::metadata(&segment.path)
            .map(|m| m.len())
            .unwrap_or(0);
        std::fs::remove_file(&segment.path).map_err(io_err(&segment.path))?;
        self.bytes = self.bytes.saturating_sub(len);
        if self.progress.is_some_and(|(s, _)| s == segment.seq) {
            let _ = std::fs::remove_file(self.dir.join(PROGRESS));
            self.progress = None;
        }
        Ok(())
    }
}

/// `write_all`, with a fault to inject in tests (`SPOOL_FAULT`).
fn write_record(file: &mut File, bytes: &[u8]) -> std::io::Result<()> {
    #[cfg(test)]
    if let Some(after) = tests::take_fault() {
        // A torn write: part of the record reaches the file, then the
        // disk fails.
        file.write_all(&bytes[..after.min(bytes.len())])?;
        return Err(std::io::Error::other("injected: no space left on device"));
    }
    file.write_all(bytes)
}

fn parse_progress(b: &[u8]) -> Option<(u64, usize)> {
    let (body, crc) = (b.get(..16)?, b.get(16..20)?);
    if crc32fast::hash(body).to_le_bytes() != crc {
        return None;
    }
    let seq = u64::from_le_bytes(body[..8].try_into().ok()?);
    let n = u64::from_le_bytes(body[8..16].try_into().ok()?);
    Some((seq, usize::try_from(n).ok()?))
}

/// Parses every valid record of a segment: a record that is bad (torn,
/// corrupt) is skipped by resynchronising on the next position where a
/// whole valid record starts. Returns the batches and how many bytes were
/// skipped.
fn parse_segment(data: &[u8]) -> (Vec<Vec<RawDocumentBuf>>, usize) {
    let mut batches = Vec::new();
    let (mut at, mut skipped) = (0, 0);
    while at < data.len() {
        match parse_record(&data[at..]) {
            Some((docs, len)) => {
                batches.push(docs);
                at += len;
            }
            None => {
                // Resynchronise: the next magic where a valid record starts.
                let next = data[at + 1..]
                    .windows(MAGIC.len())
                    .enumerate()
                    .filter(|(_, w)| w == MAGIC)
                    .map(|(i, _)| at + 1 + i)
                    .find(|&i| parse_record(&data[i..]).is_some())
                    .unwrap_or(data.len());
                skipped += next - at;
                at = next;
            }
        }
    }
    (batches, skipped)
}

/// One record at the start of `data`: its documents and length, if it is
/// whole and valid.
fn parse_record(data: &[u8]) -> Option<(Vec<RawDocumentBuf>, usize)> {
    if data.get(..4)? != MAGIC {
        return None;
    }
    let len = u32::from_le_bytes(data.get(4..8)?.try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(data.get(8..12)?.try_into().ok()?);
    let payload = data.get(12..12 + len)?;
    if crc32fast::hash(payload) != crc {
        return None;
    }
    Some((split_documents(payload)?, 12 + len))
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
    use std::cell::Cell;
    use std::os::unix::fs::PermissionsExt;

    thread_local! {
        /// Bytes of the next record written before an injected failure.
        static FAULT: Cell<Option<usize>> = const { Cell::new(None) };
    }

    pub(super) fn take_fault() -> Option<usize> {
        FAULT.with(Cell::take)
    }

    fn fail_next_write_after(bytes: usize) {
        FAULT.with(|f| f.set(Some(bytes)));
    }

    fn doc(i: i32) -> RawDocumentBuf {
        let mut d = RawDocumentBuf::new();
        d.append("i", i);
        d
    }

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("spanrec-spool-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    /// Every batch the spool holds, oldest first, as delivered by replay.
    fn drain(s: &mut Spool) -> Vec<Vec<RawDocumentBuf>> {
        let mut out = Vec::new();
        while let Some(seg) = s.oldest().unwrap() {
            out.extend(seg.batches.iter().skip(seg.delivered).cloned());
            s.remove(&seg).unwrap();
        }
        out
    }

    #[test]
    fn batches_survive_reopen_and_a_torn_tail_is_cut() {
        let dir = dir("torn");
        {
            let mut s = Spool::open(&dir, 1 << 20).unwrap();
            s.append(&[doc(1), doc(2)]).unwrap();
            s.append(&[doc(3)]).unwrap();
        }
        // A torn write: half a record at the end.
        let seg = dir.join(format!("{:020}.spool", 0));
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
        drop(s);
        let full = Spool::open(&dir, 10).unwrap().append(&[doc(1)]);
        assert!(matches!(full, Err(SpoolError::Full { .. })));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_failed_append_is_cut_back_and_later_batches_survive() {
        let dir = dir("fault");
        let mut s = Spool::open(&dir, 1 << 20).unwrap();
        s.append(&[doc(1)]).unwrap();
        // The disk fails halfway through the second record, then again
        // (as a failed fsync would) after all of it.
        fail_next_write_after(9);
        assert!(matches!(s.append(&[doc(2)]), Err(SpoolError::Io { .. })));
        s.append(&[doc(3)]).unwrap();
        fail_next_write_after(usize::MAX);
        assert!(s.append(&[doc(4)]).is_err());
        s.append(&[doc(5)]).unwrap();
        drop(s);
        let mut s = Spool::open(&dir, 1 << 20).unwrap();
        // Reported failed: not replayed. Reported spooled: every one.
        assert_eq!(
            drain(&mut s),
            vec![vec![doc(1)], vec![doc(3)], vec![doc(5)]]
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_corrupt_record_costs_only_its_own_bytes() {
        let dir = dir("resync");
        {
            let mut s = Spool::open(&dir, 1 << 20).unwrap();
            for i in 0..5 {
                s.append(&[doc(i), doc(100 + i)]).unwrap();
            }
        }
        // Flip a byte inside the second record's payload, and append junk
        // that contains a magic.
        let seg = dir.join(format!("{:020}.spool", 0));
        let mut data = std::fs::read(&seg).unwrap();
        let record = (data.len()) / 5;
        data[record + 20] ^= 0xff;
        data.extend_from_slice(b"junkSPL1junk");
        std::fs::write(&seg, &data).unwrap();
        let mut s = Spool::open(&dir, 1 << 20).unwrap();
        let segment = s.oldest().unwrap().unwrap();
        let firsts: Vec<_> = segment.batches.iter().map(|b| b[0].clone()).collect();
        assert_eq!(firsts, vec![doc(0), doc(2), doc(3), doc(4)]);
        assert_eq!(segment.corrupt_bytes as usize, record + 12);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn replay_progress_survives_a_restart() {
        let dir = dir("progress");
        {
            let mut s = Spool::open(&dir, 1 << 20).unwrap();
            for i in 0..4 {
                s.append(&[doc(i)]).unwrap();
            }
            let seg = s.oldest().unwrap().unwrap();
            assert_eq!(seg.delivered, 0);
            s.mark_delivered(&seg, 1).unwrap();
            s.mark_delivered(&seg, 2).unwrap();
            // The process dies here.
        }
        let mut s = Spool::open(&dir, 1 << 20).unwrap();
        assert_eq!(drain(&mut s), vec![vec![doc(2)], vec![doc(3)]]);
        assert!(!dir.join(PROGRESS).exists());
        // A damaged progress file is ignored (everything is replayed).
        s.append(&[doc(7)]).unwrap();
        std::fs::write(dir.join(PROGRESS), b"garbage").unwrap();
        drop(s);
        let mut s = Spool::open(&dir, 1 << 20).unwrap();
        assert_eq!(drain(&mut s), vec![vec![doc(7)]]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn one_directory_one_recorder_and_owner_only() {
        let dir = dir("lock");
        let mut s = Spool::open(&dir, 1 << 20).unwrap();
        assert!(matches!(
            Spool::open(&dir, 1 << 20),
            Err(SpoolError::Locked { .. })
        ));
        s.append(&[doc(1)]).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join(format!("{:020}.spool", 0))), 0o600);
        assert_eq!(mode(&dir.join(LOCK)), 0o600);
        drop(s);
        // Released with the spool.
        Spool::open(&dir, 1 << 20).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }
}
