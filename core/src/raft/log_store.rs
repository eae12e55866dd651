//! The raft log on the disk seam: one append-only record file plus a vote file.
//!
//! `raft/log` is a sequence of records, each `u32 LE length | u32 LE crc32(payload) | payload`,
//! where the payload is a JSON [`Record`]: an entry, a truncate-since, a purge-upto or a committed
//! log id. Appends are synced before openraft's `LogFlushed` callback fires, so an acknowledged entry
//! survives a crash. On start the file is replayed; the first record that is short, fails its crc or
//! does not parse ends the log, and the file is cut back to the last good record (a crash can leave
//! a torn tail; it must never stop the node). After a purge the file is rewritten without the purged
//! entries, so it does not grow forever.
//!
//! The vote lives in `raft/vote`, replaced with `write_atomic` (it must be durable before a vote is
//! answered). The committed log id, which is only a hint that lets a restarting node re-apply its
//! log before it hears from a leader, is a record in the log file written without its own sync: it
//! becomes durable with the next synced append, and a lost one only means less is re-applied early.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::ops::RangeBounds;
use std::sync::{Arc, Mutex};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{Entry, ErrorSubject, ErrorVerb, LogId, OptionalSend, RaftLogReader, StorageError, Vote};
use serde::{Deserialize, Serialize};

use super::{storage_err, RaftId, TypeConfig};
use crate::env::Disk;

/// The record file of the raft log.
pub const LOG_FILE: &str = "raft/log";
/// The vote, replaced atomically.
pub const VOTE_FILE: &str = "raft/vote";

/// Record header: payload length and crc32 of the payload.
const HEADER_LEN: usize = 8;
/// No sane record is this large; a length beyond it is garbage, not an allocation request.
const MAX_RECORD_LEN: usize = 256 * 1024 * 1024;

/// One record of the log file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Record {
    Entry(Entry<TypeConfig>),
    /// Entries from this index on are gone (a follower's conflicting suffix).
    TruncateSince(u64),
    /// Entries up to and including this log id are gone (behind a snapshot).
    PurgeUpto(LogId<RaftId>),
    Committed(Option<LogId<RaftId>>),
}

/// What replaying the log file found.
#[derive(Debug, Default, Clone)]
pub struct Replayed {
    pub entries: BTreeMap<u64, Entry<TypeConfig>>,
    pub last_purged: Option<LogId<RaftId>>,
    pub committed: Option<LogId<RaftId>>,
    /// Bytes of good records; anything after is a torn or garbled tail.
    pub good_len: usize,
    /// Bytes that were cut off.
    pub torn_bytes: usize,
}

impl Replayed {
    fn apply(&mut self, record: Record) {
        match record {
            Record::Entry(entry) => {
                // Appending at `i` replaces whatever was at `i` and after: that is what a log is.
                let index = entry.log_id.index;
                self.entries.split_off(&index);
                self.entries.insert(index, entry);
            }
            Record::TruncateSince(index) => {
                self.entries.split_off(&index);
            }
            Record::PurgeUpto(log_id) => {
                self.entries = self.entries.split_off(&(log_id.index + 1));
                if self.last_purged.is_none_or(|p| p.index < log_id.index) {
                    self.last_purged = Some(log_id);
                }
            }
            Record::Committed(committed) => self.committed = committed,
        }
    }

    /// The committed hint, if the log still backs it (it names an entry we hold, or one purged).
    fn checked_committed(&self) -> Option<LogId<RaftId>> {
        let committed = self.committed?;
        let held = match self.entries.get(&committed.index) {
            Some(entry) => entry.log_id == committed,
            None => self.last_purged.is_some_and(|p| p.index >= committed.index),
        };
        held.then_some(committed)
    }
}

/// Encodes one record with its header.
pub fn encode_record(record: &Record) -> Vec<u8> {
    // Serialising our own types to JSON cannot fail (no maps with non-string keys, no foreign types).
    let payload = serde_json::to_vec(record).expect("a raft record serialises to JSON");
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32(&payload).to_le_bytes());
    out.extend_from_slice(&payload);
    out
}

/// Replays a log file. Never fails: whatever follows the last good record is reported as torn.
pub fn replay(bytes: &[u8]) -> Replayed {
    let mut replayed = Replayed::default();
    let mut offset = 0;
    while offset < bytes.len() {
        let Some(header) = bytes.get(offset..offset + HEADER_LEN) else {
            break;
        };
        let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        if len > MAX_RECORD_LEN {
            break;
        }
        let Some(payload) = bytes.get(offset + HEADER_LEN..offset + HEADER_LEN + len) else {
            break;
        };
        if crc32(payload) != crc {
            break;
        }
        let Ok(record) = serde_json::from_slice::<Record>(payload) else {
            break;
        };
        replayed.apply(record);
        offset += HEADER_LEN + len;
    }
    replayed.good_len = offset;
    replayed.torn_bytes = bytes.len() - offset;
    replayed
}

/// CRC-32 (IEEE 802.3, as zlib and `crc32fast` compute it), bitwise over a nibble table.
pub fn crc32(data: &[u8]) -> u32 {
    const TABLE: [u32; 16] = [
        0x0000_0000,
        0x1db7_1064,
        0x3b6e_20c8,
        0x26d9_30ac,
        0x76dc_4190,
        0x6b6b_51f4,
        0x4db2_6158,
        0x5005_713c,
        0xedb8_8320,
        0xf00f_9344,
        0xd6d6_a3e8,
        0xcb61_b38c,
        0x9b64_c2b0,
        0x86d3_d2d4,
        0xa00a_e278,
        0xbdbd_f21c,
    ];
    let mut crc = !0u32;
    for &byte in data {
        crc = TABLE[((crc ^ byte as u32) & 0x0f) as usize] ^ (crc >> 4);
        crc = TABLE[((crc ^ (byte as u32 >> 4)) & 0x0f) as usize] ^ (crc >> 4);
    }
    !crc
}

/// The in-memory view of the log, shared with the readers openraft hands to replication tasks.
#[derive(Debug, Default)]
struct LogInner {
    entries: BTreeMap<u64, Entry<TypeConfig>>,
    last_purged: Option<LogId<RaftId>>,
    committed: Option<LogId<RaftId>>,
    vote: Option<Vote<RaftId>>,
}

/// openraft's log storage on a [`Disk`]. Clones share the same log (readers are clones).
#[derive(Clone)]
pub struct LogStore {
    disk: Arc<dyn Disk>,
    inner: Arc<Mutex<LogInner>>,
    /// Bytes cut off the tail when the log was opened (for traces and tests).
    pub torn_bytes: usize,
}

impl std::fmt::Debug for LogStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogStore").field("torn_bytes", &self.torn_bytes).finish_non_exhaustive()
    }
}

fn log_err(verb: ErrorVerb, err: impl std::fmt::Display) -> StorageError<RaftId> {
    storage_err(ErrorSubject::Logs, verb, err)
}

fn vote_err(verb: ErrorVerb, err: impl std::fmt::Display) -> StorageError<RaftId> {
    storage_err(ErrorSubject::Vote, verb, err)
}

impl LogStore {
    /// Opens the log on `disk`: replays the record file (cutting off a torn tail) and reads the vote.
    pub async fn open(disk: Arc<dyn Disk>) -> Result<LogStore, StorageError<RaftId>> {
        let bytes = disk.read(LOG_FILE).await.map_err(|e| log_err(ErrorVerb::Read, e))?.unwrap_or_default();
        let replayed = replay(&bytes);
        if replayed.torn_bytes > 0 {
            // Later appends must follow the last good record, or the next replay would stop at the
            // garbage before them and lose them.
            disk.write_atomic(LOG_FILE, &bytes[..replayed.good_len]).await.map_err(|e| log_err(ErrorVerb::Write, e))?;
        }
        let vote = match disk.read(VOTE_FILE).await.map_err(|e| vote_err(ErrorVerb::Read, e))? {
            None => None,
            // write_atomic never leaves a partial file, so a garbled vote is real corruption: refuse
            // to start rather than vote twice in a term.
            Some(bytes) => Some(serde_json::from_slice(&bytes).map_err(|e| vote_err(ErrorVerb::Read, e))?),
        };
        let committed = replayed.checked_committed();
        let torn_bytes = replayed.torn_bytes;
        let inner = LogInner { entries: replayed.entries, last_purged: replayed.last_purged, committed, vote };
        Ok(LogStore { disk, inner: Arc::new(Mutex::new(inner)), torn_bytes })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LogInner> {
        self.inner.lock().expect("raft log lock poisoned")
    }

    /// Every entry currently held (after the purged prefix), in order.
    pub fn entries(&self) -> Vec<Entry<TypeConfig>> {
        self.lock().entries.values().cloned().collect()
    }

    /// The last purged log id and the last log id.
    pub fn bounds(&self) -> (Option<LogId<RaftId>>, Option<LogId<RaftId>>) {
        let inner = self.lock();
        (inner.last_purged, inner.entries.values().next_back().map(|e| e.log_id).or(inner.last_purged))
    }

    pub fn vote(&self) -> Option<Vote<RaftId>> {
        self.lock().vote
    }

    async fn append_records(&self, records: &[Record], sync: bool) -> Result<(), StorageError<RaftId>> {
        let mut bytes = Vec::new();
        for record in records {
            bytes.extend_from_slice(&encode_record(record));
        }
        self.disk.append(LOG_FILE, &bytes).await.map_err(|e| log_err(ErrorVerb::Write, e))?;
        if sync {
            self.disk.sync(LOG_FILE).await.map_err(|e| log_err(ErrorVerb::Write, e))?;
        }
        Ok(())
    }

    /// Rewrites the log file with only what is still needed: the purge point, the committed hint and
    /// the entries after the purge point.
    async fn compact(&self) -> Result<(), StorageError<RaftId>> {
        let bytes = {
            let inner = self.lock();
            let mut bytes = Vec::new();
            if let Some(purged) = inner.last_purged {
                bytes.extend_from_slice(&encode_record(&Record::PurgeUpto(purged)));
            }
            if inner.committed.is_some() {
                bytes.extend_from_slice(&encode_record(&Record::Committed(inner.committed)));
            }
            for entry in inner.entries.values() {
                bytes.extend_from_slice(&encode_record(&Record::Entry(entry.clone())));
            }
            bytes
        };
        self.disk.write_atomic(LOG_FILE, &bytes).await.map_err(|e| log_err(ErrorVerb::Write, e))
    }

    /// Rewrites the log file with its good records, durably (a write-and-rename, synced): after a
    /// failed write the file may end in a torn record, and bytes the page cache holds may never
    /// have reached the disk; after this, what the log holds is what is on the disk. Fails, with
    /// the disk's reason, while the disk refuses writes.
    pub async fn repair(disk: &dyn Disk) -> Result<(), StorageError<RaftId>> {
        let bytes = disk.read(LOG_FILE).await.map_err(|e| log_err(ErrorVerb::Read, e))?.unwrap_or_default();
        let good = replay(&bytes).good_len;
        disk.write_atomic(LOG_FILE, &bytes[..good]).await.map_err(|e| log_err(ErrorVerb::Write, e))
    }

    /// Replaces the whole raft state on the disk: a log holding only `purged` (and `committed`),
    /// and `vote`. Used by force-new-cluster, before the replica is started.
    pub async fn reset(
        disk: &dyn Disk,
        purged: Option<LogId<RaftId>>,
        committed: Option<LogId<RaftId>>,
        vote: Option<Vote<RaftId>>,
    ) -> Result<(), StorageError<RaftId>> {
        let mut bytes = Vec::new();
        if let Some(purged) = purged {
            bytes.extend_from_slice(&encode_record(&Record::PurgeUpto(purged)));
        }
        if committed.is_some() {
            bytes.extend_from_slice(&encode_record(&Record::Committed(committed)));
        }
        disk.write_atomic(LOG_FILE, &bytes).await.map_err(|e| log_err(ErrorVerb::Write, e))?;
        match vote {
            Some(vote) => {
                let bytes = serde_json::to_vec(&vote).map_err(|e| vote_err(ErrorVerb::Write, e))?;
                disk.write_atomic(VOTE_FILE, &bytes).await.map_err(|e| vote_err(ErrorVerb::Write, e))
            }
            None => disk.remove(VOTE_FILE).await.map_err(|e| vote_err(ErrorVerb::Write, e)),
        }
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError<RaftId>> {
        Ok(self.lock().entries.range(range).map(|(_, e)| e.clone()).collect())
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<RaftId>> {
        let (last_purged_log_id, last_log_id) = self.bounds();
        Ok(LogState { last_purged_log_id, last_log_id })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<RaftId>) -> Result<(), StorageError<RaftId>> {
        let bytes = serde_json::to_vec(vote).map_err(|e| vote_err(ErrorVerb::Write, e))?;
        self.disk.write_atomic(VOTE_FILE, &bytes).await.map_err(|e| vote_err(ErrorVerb::Write, e))?;
        self.lock().vote = Some(*vote);
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<RaftId>>, StorageError<RaftId>> {
        Ok(self.lock().vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId<RaftId>>) -> Result<(), StorageError<RaftId>> {
        self.append_records(&[Record::Committed(committed)], false).await?;
        self.lock().committed = committed;
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<RaftId>>, StorageError<RaftId>> {
        Ok(self.lock().committed)
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), StorageError<RaftId>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<Entry<TypeConfig>> = entries.into_iter().collect();
        let records: Vec<Record> = entries.iter().cloned().map(Record::Entry).collect();
        {
            // Readers may see entries before they are durable; openraft only acts on them (commit,
            // ack to the leader) after the flush callback below.
            let mut inner = self.lock();
            for entry in entries {
                let index = entry.log_id.index;
                inner.entries.split_off(&index);
                inner.entries.insert(index, entry);
            }
        }
        let result = self.append_records(&records, true).await;
        let io_result = match &result {
            Ok(()) => Ok(()),
            Err(err) => Err(std::io::Error::other(err.to_string())),
        };
        callback.log_io_completed(io_result);
        result
    }

    async fn truncate(&mut self, log_id: LogId<RaftId>) -> Result<(), StorageError<RaftId>> {
        self.lock().entries.split_off(&log_id.index);
        // Synced: a crash must not resurrect the conflicting suffix under a newer vote.
        self.append_records(&[Record::TruncateSince(log_id.index)], true).await
    }

    async fn purge(&mut self, log_id: LogId<RaftId>) -> Result<(), StorageError<RaftId>> {
        {
            let mut inner = self.lock();
            inner.entries = inner.entries.split_off(&(log_id.index + 1));
            if inner.last_purged.is_none_or(|p| p.index < log_id.index) {
                inner.last_purged = Some(log_id);
            }
        }
        self.compact().await
    }
}
