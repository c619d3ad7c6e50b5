//! The write-ahead log of a picture service: every accepted batch is appended here, and synced
//! to disk, before the picture service confirms it, so that an update echoed to anyone (the
//! broadcast service echoes only what its picture service confirmed) survives a SIGKILL of
//! the process: on the next start, the log is read back and each picture's updates after its
//! stored seq are applied again (docs/durability.md).
//!
//! - **Group commit.** One thread writes the log. It takes every append waiting for it, writes
//!   them all, syncs the file once (`fdatasync`), then confirms them all: one sync per batch
//!   of appends, never one per update, and never on an async worker thread.
//! - **Segments.** The log is a directory of segment files (`{n:016}.wal`); a new one starts
//!   when the current one is over `segment_bytes`. A segment is deleted once storage holds
//!   every update it logged (the pictures' flushes say so through [`Wal::flushed`]).
//! - **Bounded.** When the segments exceed `max_bytes`, appends fail ([`WalError::Full`]) until
//!   flushes free some: the broadcast service retries later (back-pressure), nothing grows
//!   without bound.
//! - **A failed write stops the log.** After a write or sync error nobody knows what the disk
//!   holds (the lesson of PostgreSQL's fsync bug): every append fails from then on, until the
//!   service restarts and reads the log back. Nothing is confirmed that is not on disk.
//! - **Preallocated segments.** A segment is created at its full size (`fallocate`), then
//!   written from the start: a sync then never has to change the file's size, which made an
//!   `fdatasync` 3.7x faster and cost 40 % less CPU on this VM (0.5 instead of 1.9 ms, 87
//!   instead of 140 us). Zero-filling the file would make syncs cheaper still (0.25 ms) but
//!   writes the whole segment once, and that write stalled the log's syncs behind it (W1 p99
//!   of 73 ms instead of 19, BENCHMARKS.md "Write-ahead log"). Unwritten space reads as
//!   zeros: a zero length is the end of a segment's records.
//! - **Records** are `u32` length, `u32` CRC-32 of the payload, then the payload (a bincode
//!   [`Record`]); reading stops at the first short or damaged record (a write torn by the
//!   crash), which is the end of the log.

use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Instant;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

/// One logged batch: consecutive updates `first_seq ..= last_seq` of a picture.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// The picture's id.
    pub picture: String,
    /// The picture's width in pixels, as the batch carried it: recovery recreates a picture
    /// that never reached storage at this size.
    pub width: u32,
    /// Height in pixels, as `width`.
    pub height: u32,
    /// The ownership epoch the picture service held the picture under when it logged this
    /// (the lease's epoch): after a restart, only records of the epoch storage still names are
    /// applied again.
    pub epoch: u64,
    /// Seq of the first update in `updates`.
    pub first_seq: u64,
    /// Seq of the last update in `updates` (a segment goes once storage holds every record's
    /// `last_seq`).
    pub last_seq: u64,
    /// bincode `Vec<Sequenced>`, as the batch carried them.
    pub updates: Bytes,
}

/// Why opening the log or an append failed. An append that failed is not confirmed: the
/// broadcast service keeps its updates and sends them again.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum WalError {
    /// The segments hold `max_bytes` or more: refused until flushes free some (back-pressure,
    /// docs/durability.md "Bounded").
    #[error("write-ahead log is full ({bytes} bytes of updates not yet in storage, limit {max})")]
    Full {
        /// Bytes of updates the log holds, the refused append not counted.
        bytes: u64,
        /// The limit, [`WalConfig::max_bytes`].
        max: u64,
    },
    /// A read, write or sync failed, or the directory is another process's. After a failed
    /// write or sync, every later append fails with it until the service restarts.
    #[error("write-ahead log: {0}")]
    Io(String),
    /// The log was closed ([`Wal::close`]) or its writer thread is gone.
    #[error("write-ahead log writer stopped")]
    Stopped,
}

/// Where and how big.
#[derive(Clone, Debug)]
pub struct WalConfig {
    /// The log's directory: its segments and its `LOCK` file (one process per directory).
    pub dir: PathBuf,
    /// A new segment starts when the current one is over this, in bytes.
    pub segment_bytes: u64,
    /// Appends fail while the segments hold this many bytes or more ([`WalError::Full`]).
    pub max_bytes: u64,
}

enum Command {
    Append {
        record: Record,
        done: oneshot::Sender<Result<(), WalError>>,
    },
    Flushed {
        picture: String,
        seq: u64,
    },
    Forget {
        picture: String,
    },
}

/// The log's handle: cheap to clone, usable from any thread. When the last clone goes, the
/// writer finishes what it was given and lets go of the directory.
#[derive(Clone)]
pub struct Wal {
    inner: std::sync::Arc<Inner>,
}

struct Inner {
    /// `None` once closed.
    commands: std::sync::Mutex<Option<mpsc::Sender<Command>>>,
    writer: std::sync::Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Inner {
    /// Stops taking commands, waits for the writer to finish those it has and lets go of the
    /// directory.
    fn close(&self) {
        drop(lock(&self.commands).take());
        if let Some(writer) = lock(&self.writer).take() {
            let _ = writer.join();
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.close();
    }
}

/// A mutex's guard, also after a panic elsewhere (the data is an `Option` taken once).
fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Wal {
    /// Opens the log in `config.dir` (created if missing): returns the handle and the records
    /// the log holds from before (every segment, in order, up to the first damaged record),
    /// for the picture service to apply again.
    pub fn open(config: WalConfig) -> Result<(Wal, Vec<Record>), WalError> {
        std::fs::create_dir_all(&config.dir).map_err(|e| io(&config.dir, "create", e))?;
        // Two processes appending to one log would corrupt it: the second one is refused.
        let lock_path = config.dir.join("LOCK");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| io(&lock_path, "open", e))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(WalError::Io(format!(
                    "{} is in use by another process (one picture service per write-ahead log directory: see --wal-dir)",
                    config.dir.display()
                )))
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io(&lock_path, "lock", e)),
        }
        let mut segments = BTreeMap::new();
        let mut recovered = Vec::new();
        for (number, path) in segment_files(&config.dir)? {
            let (records, bytes) = read_segment(&path)?;
            let mut segment = Segment {
                path,
                bytes,
                pictures: HashMap::new(),
            };
            for record in &records {
                segment.logged(&record.picture, record.last_seq);
            }
            recovered.extend(records);
            segments.insert(number, segment);
        }
        let next = segments.keys().next_back().map_or(1, |n| n + 1);
        if !recovered.is_empty() {
            tracing::info!(records = recovered.len(), segments = segments.len(), dir = %config.dir.display(), "write-ahead log holds updates from before: applying them again");
        }
        let (commands, receiver) = mpsc::channel();
        let mut writer = Writer::new(config, segments, next, lock)?;
        let writer = std::thread::Builder::new()
            .name("wal-writer".to_string())
            .spawn(move || writer.run(receiver))
            .map_err(|e| WalError::Io(format!("starting the writer: {e}")))?;
        let inner = Inner {
            commands: std::sync::Mutex::new(Some(commands)),
            writer: std::sync::Mutex::new(Some(writer)),
        };
        Ok((
            Wal {
                inner: std::sync::Arc::new(inner),
            },
            recovered,
        ))
    }

    fn send(&self, command: Command) -> Result<(), mpsc::SendError<Command>> {
        match &*lock(&self.inner.commands) {
            Some(commands) => commands.send(command),
            None => Err(mpsc::SendError(command)),
        }
    }

    /// Closes the log for every clone: what was appended is written, later appends fail with
    /// [`WalError::Stopped`], and the directory is free for the next process (or the next
    /// service in this one). Blocks until the writer is done: call it off the async workers.
    pub fn close(&self) {
        self.inner.close();
    }

    /// Appends `record`; the receiver resolves once it is on disk (or why not).
    pub fn append(&self, record: Record) -> oneshot::Receiver<Result<(), WalError>> {
        let (done, receiver) = oneshot::channel();
        if let Err(mpsc::SendError(Command::Append { done, .. })) =
            self.send(Command::Append { record, done })
        {
            let _ = done.send(Err(WalError::Stopped));
        }
        receiver
    }

    /// Storage holds every update of `picture` up to `seq`: the segments that logged only such
    /// updates may go.
    pub fn flushed(&self, picture: &str, seq: u64) {
        let _ = self.send(Command::Flushed {
            picture: picture.to_string(),
            seq,
        });
    }

    /// The updates of `picture` logged before this start are not wanted (another picture
    /// service owns the picture now): they no longer keep their segments.
    pub fn forget(&self, picture: &str) {
        let _ = self.send(Command::Forget {
            picture: picture.to_string(),
        });
    }
}

fn io(path: &Path, what: &str, error: std::io::Error) -> WalError {
    WalError::Io(format!("{what} {}: {error}", path.display()))
}

/// The segment files of `dir`, by number.
fn segment_files(dir: &Path) -> Result<Vec<(u64, PathBuf)>, WalError> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| io(dir, "list", e))? {
        let entry = entry.map_err(|e| io(dir, "list", e))?;
        let name = entry.file_name();
        let Some(number) = name
            .to_str()
            .and_then(|n| n.strip_suffix(".wal"))
            .and_then(|n| n.parse::<u64>().ok())
        else {
            continue;
        };
        files.push((number, entry.path()));
    }
    files.sort();
    Ok(files)
}

/// The records of one segment up to its end (the file's, or the zeros of its preallocated
/// rest) or its first damaged record, and the bytes they take (a damaged tail is cut off, so
/// the next start reads the same).
fn read_segment(path: &Path) -> Result<(Vec<Record>, u64), WalError> {
    let mut bytes = Vec::new();
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .map_err(|e| io(path, "read", e))?;
    let mut records = Vec::new();
    let mut at = 0usize;
    while let Some(header) = bytes.get(at..at + 8) {
        let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        if len == 0 && bytes[at..].iter().all(|&b| b == 0) {
            // The preallocated rest of the segment: the records end here, nothing is damaged.
            return Ok((records, at as u64));
        }
        let Some(payload) = bytes.get(at + 8..at + 8 + len) else {
            break;
        };
        if crc32fast::hash(payload) != crc {
            break;
        }
        let Ok(record) = protocol::codec::decode::<Record>(payload) else {
            break;
        };
        records.push(record);
        at += 8 + len;
    }
    if at < bytes.len() {
        tracing::warn!(segment = %path.display(), kept = at, dropped = bytes.len() - at, "write-ahead log ends in a torn or damaged record: cut off");
        OpenOptions::new()
            .write(true)
            .open(path)
            .and_then(|f| f.set_len(at as u64))
            .map_err(|e| io(path, "truncate", e))?;
    }
    Ok((records, at as u64))
}

/// Creates segment `number`, `bytes` long from the start where the filesystem can
/// preallocate (else empty, appended to), and makes its name durable: records confirmed in it
/// must not vanish with a directory entry the crash did not keep.
fn open_segment(dir: &Path, number: u64, bytes: u64) -> Result<(PathBuf, File), WalError> {
    let path = dir.join(format!("{number:016}.wal"));
    let file = OpenOptions::new()
        .create_new(true)
        .read(true)
        .write(true)
        .open(&path)
        .map_err(|e| io(&path, "create", e))?;
    if let Err(error) = preallocate(&file, bytes) {
        tracing::warn!(%error, segment = %path.display(), "write-ahead log segment not preallocated: syncs also write its size (slower)");
    }
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io(dir, "sync", e))?;
    Ok((path, file))
}

#[cfg(target_os = "linux")]
fn preallocate(file: &File, bytes: u64) -> std::io::Result<()> {
    rustix::fs::fallocate(file, rustix::fs::FallocateFlags::empty(), 0, bytes)?;
    Ok(())
}

#[cfg(not(target_os = "linux"))]
fn preallocate(_file: &File, _bytes: u64) -> std::io::Result<()> {
    Err(std::io::Error::other("not on this platform"))
}

fn encode(record: &Record) -> Vec<u8> {
    let payload = protocol::codec::encode(record);
    let mut out = Vec::with_capacity(8 + payload.len());
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    out.extend_from_slice(&payload);
    out
}

/// What a segment logged: the highest seq of each picture in it.
struct Segment {
    path: PathBuf,
    bytes: u64,
    pictures: HashMap<String, u64>,
}

impl Segment {
    fn logged(&mut self, picture: &str, seq: u64) {
        let highest = self.pictures.entry(picture.to_string()).or_insert(seq);
        *highest = (*highest).max(seq);
    }
}

/// The writer thread's state.
struct Writer {
    config: WalConfig,
    /// Every segment, the current one last.
    segments: BTreeMap<u64, Segment>,
    current: u64,
    /// The first segment this process wrote: the ones before it are from before the start.
    first_own: u64,
    file: File,
    /// Why the log stopped taking appends, after a failed write.
    failed: Option<String>,
    /// Holds the directory's lock while the writer runs.
    _lock: File,
    /// The highest seq storage holds, per picture (from [`Wal::flushed`]).
    flushed: HashMap<String, u64>,
}

impl Writer {
    fn new(
        config: WalConfig,
        mut segments: BTreeMap<u64, Segment>,
        next: u64,
        lock: File,
    ) -> Result<Writer, WalError> {
        let (path, file) = open_segment(&config.dir, next, config.segment_bytes)?;
        segments.insert(
            next,
            Segment {
                path,
                bytes: 0,
                pictures: HashMap::new(),
            },
        );
        Ok(Writer {
            config,
            segments,
            current: next,
            first_own: next,
            file,
            failed: None,
            _lock: lock,
            flushed: HashMap::new(),
        })
    }

    fn total_bytes(&self) -> u64 {
        self.segments.values().map(|s| s.bytes).sum()
    }

    fn run(&mut self, commands: mpsc::Receiver<Command>) {
        // Blocks for the first command, then takes everything else already waiting: the
        // group that one sync commits.
        while let Ok(first) = commands.recv() {
            let mut group = vec![first];
            group.extend(commands.try_iter());
            let mut buffer = Vec::new();
            let mut waiting = Vec::new();
            for command in group {
                match command {
                    Command::Append { record, done } => {
                        if let Some(why) = &self.failed {
                            let _ = done.send(Err(WalError::Io(why.clone())));
                            continue;
                        }
                        let max = self.config.max_bytes;
                        let bytes = self.total_bytes() + buffer.len() as u64;
                        if bytes >= max {
                            metrics::counter!("pps_wal_full_total").increment(1);
                            let _ = done.send(Err(WalError::Full { bytes, max }));
                            continue;
                        }
                        buffer.extend_from_slice(&encode(&record));
                        if let Some(segment) = self.segments.get_mut(&self.current) {
                            segment.logged(&record.picture, record.last_seq);
                        }
                        waiting.push(done);
                    }
                    Command::Flushed { picture, seq } => {
                        let highest = self.flushed.entry(picture).or_insert(seq);
                        *highest = (*highest).max(seq);
                    }
                    Command::Forget { picture } => {
                        for (_, segment) in self.segments.range_mut(..self.first_own) {
                            segment.pictures.remove(&picture);
                        }
                    }
                }
            }
            if !waiting.is_empty() {
                let started = Instant::now();
                let result = self
                    .file
                    .write_all(&buffer)
                    .and_then(|()| self.file.sync_data())
                    .map_err(|e| WalError::Io(format!("write failed ({e}); the log takes no more appends until the service restarts")));
                metrics::histogram!("pps_wal_sync_seconds").record(started.elapsed().as_secs_f64());
                metrics::counter!("pps_wal_appends_total").increment(waiting.len() as u64);
                match &result {
                    Ok(()) => {
                        if let Some(segment) = self.segments.get_mut(&self.current) {
                            segment.bytes += buffer.len() as u64;
                        }
                    }
                    Err(error) => {
                        tracing::error!(%error, "write-ahead log write failed: no update is confirmed from now on; restart the service (it reads back what the disk holds)");
                        metrics::gauge!("pps_wal_failed").set(1.0);
                        if let WalError::Io(why) = error {
                            self.failed = Some(why.clone());
                        }
                    }
                }
                for done in waiting {
                    let _ = done.send(result.clone());
                }
            }
            if let Err(error) = self.roll_and_trim() {
                tracing::error!(%error, "write-ahead log maintenance failed");
            }
            metrics::gauge!("pps_wal_bytes").set(self.total_bytes() as f64);
        }
    }

    /// Starts a new segment when the current one is full; deletes the older segments storage
    /// has made useless.
    fn roll_and_trim(&mut self) -> Result<(), WalError> {
        let current_bytes = self.segments.get(&self.current).map_or(0, |s| s.bytes);
        if current_bytes >= self.config.segment_bytes {
            let next = self.current + 1;
            let (path, file) = open_segment(&self.config.dir, next, self.config.segment_bytes)?;
            self.file = file;
            self.segments.insert(
                next,
                Segment {
                    path,
                    bytes: 0,
                    pictures: HashMap::new(),
                },
            );
            self.current = next;
        }
        let flushed = &self.flushed;
        let useless: Vec<u64> = self
            .segments
            .iter()
            .filter(|(&number, segment)| {
                number != self.current
                    && segment
                        .pictures
                        .iter()
                        .all(|(picture, seq)| flushed.get(picture).is_some_and(|f| f >= seq))
            })
            .map(|(&number, _)| number)
            .collect();
        for number in useless {
            if let Some(segment) = self.segments.remove(&number) {
                std::fs::remove_file(&segment.path).map_err(|e| io(&segment.path, "remove", e))?;
                tracing::debug!(segment = %segment.path.display(), "write-ahead log segment no longer needed: removed");
            }
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn record(picture: &str, first: u64, last: u64) -> Record {
        Record {
            picture: picture.to_string(),
            width: 8,
            height: 4,
            epoch: 1,
            first_seq: first,
            last_seq: last,
            updates: Bytes::from(vec![first as u8; 40]),
        }
    }

    fn config(dir: &Path, segment_bytes: u64, max_bytes: u64) -> WalConfig {
        WalConfig {
            dir: dir.to_path_buf(),
            segment_bytes,
            max_bytes,
        }
    }

    #[tokio::test]
    async fn appended_records_come_back_after_a_restart_and_go_once_flushed() {
        let dir = tempfile::tempdir().unwrap();
        let (wal, recovered) = Wal::open(config(dir.path(), 150, 1 << 20)).unwrap();
        assert!(recovered.is_empty());
        let written: Vec<Record> = (0..6)
            .map(|i| record(if i % 2 == 0 { "a" } else { "b" }, i * 2 + 1, i * 2 + 2))
            .collect();
        for r in &written {
            wal.append(r.clone()).await.unwrap().unwrap();
        }
        drop(wal);
        let (wal, recovered) = Wal::open(config(dir.path(), 150, 1 << 20)).unwrap();
        assert_eq!(recovered, written);
        // Records of about 90 bytes, segments of 150: two records per segment. Storage has
        // everything of `a`, and `b` up to 8: the first two segments go, the third (`a` 9..10,
        // `b` 11..12) stays for `b`.
        wal.flushed("a", 100);
        wal.flushed("b", 8);
        wal.append(record("c", 1, 1)).await.unwrap().unwrap();
        drop(wal);
        let (_wal, recovered) = Wal::open(config(dir.path(), 150, 1 << 20)).unwrap();
        let expected = vec![written[4].clone(), written[5].clone(), record("c", 1, 1)];
        assert_eq!(recovered, expected);
    }

    #[tokio::test]
    async fn forgotten_pictures_no_longer_keep_the_segments_from_before() {
        let dir = tempfile::tempdir().unwrap();
        let (wal, _) = Wal::open(config(dir.path(), 1, 1 << 20)).unwrap();
        wal.append(record("a", 1, 2)).await.unwrap().unwrap();
        wal.append(record("b", 1, 2)).await.unwrap().unwrap();
        drop(wal);
        let (wal, recovered) = Wal::open(config(dir.path(), 1, 1 << 20)).unwrap();
        assert_eq!(recovered.len(), 2);
        // `a` moved elsewhere while we were down; `b` is stored; `a` is ours again and logs anew.
        wal.forget("a");
        wal.flushed("b", 2);
        wal.append(record("a", 5, 5)).await.unwrap().unwrap();
        drop(wal);
        let (_wal, recovered) = Wal::open(config(dir.path(), 1, 1 << 20)).unwrap();
        assert_eq!(recovered, vec![record("a", 5, 5)]);
    }

    #[tokio::test]
    async fn one_process_per_directory() {
        let dir = tempfile::tempdir().unwrap();
        let (wal, _) = Wal::open(config(dir.path(), 1 << 20, 1 << 20)).unwrap();
        let Err(WalError::Io(why)) = Wal::open(config(dir.path(), 1 << 20, 1 << 20)) else {
            panic!("a second writer was allowed");
        };
        assert!(why.contains("in use by another process"), "{why}");
        // The writer lets go of the lock once every handle is gone.
        drop(wal);
        let (wal, _) = Wal::open(config(dir.path(), 1 << 20, 1 << 20)).unwrap();
        // ... or once closed, while handles remain (picture actors outliving a shutdown).
        let handle = wal.clone();
        wal.append(record("a", 1, 2)).await.unwrap().unwrap();
        wal.close();
        assert!(matches!(
            handle.append(record("a", 3, 3)).await.unwrap(),
            Err(WalError::Stopped)
        ));
        let (_, recovered) = Wal::open(config(dir.path(), 1 << 20, 1 << 20)).unwrap();
        assert_eq!(
            recovered
                .iter()
                .map(|r| (r.first_seq, r.last_seq))
                .collect::<Vec<_>>(),
            [(1, 2)]
        );
    }

    #[tokio::test]
    async fn a_torn_tail_is_cut_off() {
        let dir = tempfile::tempdir().unwrap();
        let (wal, _) = Wal::open(config(dir.path(), 1 << 20, 1 << 20)).unwrap();
        wal.append(record("a", 1, 2)).await.unwrap().unwrap();
        wal.append(record("a", 3, 4)).await.unwrap().unwrap();
        drop(wal);
        let (_, path) = segment_files(dir.path()).unwrap().pop().unwrap();
        // Preallocated: the records, then zeros.
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 1 << 20);
        let end = (encode(&record("a", 1, 2)).len() + encode(&record("a", 3, 4)).len()) as u64;
        // The crash tore the last record: its end never reached the disk.
        let mut file = OpenOptions::new().write(true).open(&path).unwrap();
        std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(end - 5)).unwrap();
        file.write_all(&[0; 5]).unwrap();
        drop(file);
        let (wal, recovered) = Wal::open(config(dir.path(), 1 << 20, 1 << 20)).unwrap();
        assert_eq!(recovered, vec![record("a", 1, 2)]);
        // Cut off for good, and the records after the restart go to a new segment.
        wal.append(record("a", 3, 3)).await.unwrap().unwrap();
        drop(wal);
        let (_, recovered) = Wal::open(config(dir.path(), 1 << 20, 1 << 20)).unwrap();
        assert_eq!(recovered, vec![record("a", 1, 2), record("a", 3, 3)]);
    }

    #[tokio::test]
    async fn a_full_log_refuses_appends_until_flushes_free_it() {
        let dir = tempfile::tempdir().unwrap();
        let (wal, _) = Wal::open(config(dir.path(), 100, 300)).unwrap();
        let mut last = 0;
        loop {
            match wal.append(record("a", last + 1, last + 1)).await.unwrap() {
                Ok(()) => last += 1,
                Err(WalError::Full { bytes, max }) => {
                    assert!(bytes >= max);
                    break;
                }
                Err(other) => panic!("{other}"),
            }
            assert!(last < 100, "never full");
        }
        wal.flushed("a", last);
        // The next group trims the old segments, so appends go through again.
        let _ = wal.append(record("a", last + 1, last + 1)).await.unwrap();
        assert_eq!(
            wal.append(record("a", last + 2, last + 2)).await.unwrap(),
            Ok(())
        );
    }
}
