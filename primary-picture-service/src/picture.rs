//! The picture actor: one task per open picture, owning its raster and deciding, turn by turn,
//! what to do next (highest first):
//!
//! 1. load the picture if a request needs it (once, however many requests arrive meanwhile);
//! 2. serve snapshot waiters (applying queued batches up to their `min_seq` first, reusing the
//!    last PNG encoding while it is recent);
//! 3. serve releases and shutdown flushes (apply up to their seq, flush at high priority);
//! 4. apply queued batches;
//! 5. flush periodically once the picture has been dirty for `flush_interval`.
//!
//! CPU work runs in `spawn_blocking` holding a [`Scheduler`](crate::scheduler::Scheduler)
//! permit; the raster is moved into the closure and back. At most one write to storage is in
//! flight per picture, and the actor keeps applying batches while it runs.
//!
//! The invariants BS relies on: a batch is `Accepted` only once it is queued after everything
//! PPS holds (so `received_seq` has no holes); every snapshot is exactly the picture at its
//! `seq`; `Flushed { seq }` is emitted only once storage has every update up to `seq`; the last
//! PNG encoding is always the newest one, so its seq is never below `flushed_seq`; and a
//! picture whose load failed is never opened blank.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use protocol::pps::{
    ApplyBatch, PpsError, ReleaseRequest, Snapshot, SnapshotImage, SnapshotRequest,
};
use protocol::snapshot::{check_png, decode_png, encode_lz4, encode_png, Compression, PngError};
use protocol::{Raster, Sequenced};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::api::PpsEvent;
use crate::scheduler::{Permit, Priority};
use crate::service::Shared;
use crate::store::{StoreError, StoredMeta, StoredPicture, Version};

type Reply<T> = oneshot::Sender<Result<T, PpsError>>;

/// A request to a picture actor.
pub(crate) enum Msg {
    Snapshot(SnapshotRequest, Reply<Snapshot>),
    Apply(ApplyBatch, Reply<u64>),
    Release(ReleaseRequest, Reply<u64>),
    /// Shutdown: flush everything received so far at high priority; replies the flushed seq.
    Flush(Reply<u64>),
}

/// A batch whose updates passed validation, waiting for the picture to load before its seqs
/// can be checked against what PPS holds.
struct Unchecked {
    first_seq: u64,
    last_seq: u64,
    updates: Vec<Sequenced>,
    reply: Reply<u64>,
}

/// Accepted updates not applied yet; `updates` starts after everything queued before it.
struct Queued {
    first_seq: u64,
    updates: Vec<Sequenced>,
}

struct SnapshotWaiter {
    min_seq: u64,
    /// Would rather have the LZ4 form (given when at hand, never waited for).
    lz4: bool,
    /// When waiting for `min_seq` to arrive stops.
    deadline: Instant,
    reply: Reply<Snapshot>,
}

enum DurableKind {
    /// Replies `Released` and unloads the picture if nothing happened since the request.
    Release {
        /// `activity` when the release arrived.
        activity_at_request: u64,
    },
    /// A shutdown flush.
    Flush,
}

/// Waits until storage holds `target`.
struct DurableWaiter {
    target: u64,
    kind: DurableKind,
    reply: Reply<u64>,
}

/// The last PNG encoding of the picture: reused for snapshots, and for the next flush when no
/// update was applied since.
struct Encoding {
    seq: u64,
    png: Bytes,
    /// The LZ4 form at the same seq, made after a joiner asked for it (see
    /// [`Actor::encode_lz4`]).
    lz4: Option<Bytes>,
    at: Instant,
}

/// The write to storage in flight.
struct Write {
    seq: u64,
    started: Instant,
    handle: JoinHandle<Result<Version, StoreError>>,
}

/// Why an idle actor woke up.
enum Woke {
    Msg(Msg),
    Write(Result<Result<Version, StoreError>, tokio::task::JoinError>),
    Timer,
}

/// What the actor does next.
enum Step {
    Load(Priority),
    /// Apply queued batches up to (at least) `target`.
    Apply {
        target: u64,
        priority: Priority,
    },
    ServeSnapshots,
    Flush(Priority),
    /// Nothing to do before `wake` (or a message, or the write finishing).
    Idle {
        wake: Option<Instant>,
    },
    Exit,
}

struct Actor {
    shared: Arc<Shared>,
    /// The picture id.
    id: String,
    /// Whether the picture is in memory (loaded or created) and its seqs are meaningful.
    loaded: bool,
    /// The picture; `None` until loaded, and while a CPU job has moved it into its closure.
    raster: Option<Raster>,
    /// Every update up to this seq is in `raster`.
    applied_seq: u64,
    /// Every update up to this seq is in `raster` or `queue` (the seq BS is told PPS has).
    received_seq: u64,
    /// Every update up to this seq is in storage.
    flushed_seq: u64,
    /// The stored version, expected by the next conditional write (`None`: not stored yet).
    version: Option<Version>,
    /// Batches received before the picture was loaded.
    unchecked: Vec<Unchecked>,
    /// Accepted, not yet applied.
    queue: VecDeque<Queued>,
    snapshot_waiters: Vec<SnapshotWaiter>,
    durable_waiters: Vec<DurableWaiter>,
    last_encoding: Option<Encoding>,
    /// When the picture first had updates not in storage (`None`: clean).
    dirty_since: Option<Instant>,
    write: Option<Write>,
    /// A failed write is retried not before this.
    flush_retry_at: Option<Instant>,
    flush_backoff: Duration,
    /// A failed load is retried not before this.
    load_retry_at: Option<Instant>,
    load_backoff: Duration,
    /// Counts snapshot and apply requests, so that a release knows whether anyone asked since.
    activity: u64,
    /// Last request of any kind, for idle eviction.
    last_activity: Instant,
    /// Set when a release completed with nothing happening since it was asked.
    unload_wanted: bool,
    /// The size to create the picture at if storage has none: from the first snapshot with
    /// `create` or the first batch (which carries BS's idea of the size).
    create_size: Option<(u32, u32)>,
    /// While a stored picture is being decoded: its stored bytes, already verified, which
    /// answer snapshot requests at once. A cold join then waits for the read only, not also
    /// for the decode (tens of milliseconds for 2048²), which happens meanwhile.
    loading_snapshot: Option<Snapshot>,
}

/// Runs a picture actor until it unloads.
pub(crate) async fn run(
    shared: Arc<Shared>,
    id: String,
    mut mailbox: mpsc::UnboundedReceiver<Msg>,
) {
    let min_backoff = shared.config.min_backoff;
    let mut actor = Actor {
        shared,
        id,
        loaded: false,
        raster: None,
        applied_seq: 0,
        received_seq: 0,
        flushed_seq: 0,
        version: None,
        unchecked: Vec::new(),
        queue: VecDeque::new(),
        snapshot_waiters: Vec::new(),
        durable_waiters: Vec::new(),
        last_encoding: None,
        dirty_since: None,
        write: None,
        flush_retry_at: None,
        flush_backoff: min_backoff,
        load_retry_at: None,
        load_backoff: min_backoff,
        activity: 0,
        last_activity: Instant::now(),
        unload_wanted: false,
        create_size: None,
        loading_snapshot: None,
    };
    tracing::debug!(picture = %actor.id, "picture actor started");
    actor.run(&mut mailbox).await;
    tracing::debug!(picture = %actor.id, "picture actor stopped");
}

impl Actor {
    async fn run(&mut self, mailbox: &mut mpsc::UnboundedReceiver<Msg>) {
        loop {
            while let Ok(msg) = mailbox.try_recv() {
                self.on_msg(msg);
            }
            if let Some(write) = self.write.as_mut().filter(|w| w.handle.is_finished()) {
                let result = (&mut write.handle).await;
                self.finish_write(result).await;
            }
            self.expire_snapshot_waiters();
            self.settle_durable_waiters();
            match self.next_step() {
                Step::Load(priority) => self.load(priority, mailbox).await,
                Step::Apply { target, priority } => self.apply(target, priority, mailbox).await,
                Step::ServeSnapshots => self.serve_snapshots(mailbox).await,
                Step::Flush(priority) => self.start_flush(priority, mailbox).await,
                Step::Idle { wake } => {
                    let sleep = async {
                        match wake {
                            Some(at) => tokio::time::sleep_until(at).await,
                            None => std::future::pending().await,
                        }
                    };
                    let write = &mut self.write;
                    let write_done = async {
                        match write.as_mut() {
                            Some(write) => (&mut write.handle).await,
                            None => std::future::pending().await,
                        }
                    };
                    let woke = tokio::select! {
                        msg = mailbox.recv() => match msg {
                            Some(msg) => Woke::Msg(msg),
                            // The service itself is gone.
                            None => return,
                        },
                        result = write_done => Woke::Write(result),
                        () = sleep => Woke::Timer,
                    };
                    match woke {
                        Woke::Msg(msg) => self.on_msg(msg),
                        Woke::Write(result) => self.finish_write(result).await,
                        Woke::Timer => {}
                    }
                }
                Step::Exit => {
                    if self.try_exit(mailbox) {
                        return;
                    }
                }
            }
        }
    }

    fn loaded(&self) -> bool {
        self.loaded
    }

    /// Runs CPU work off the async threads, handling messages meanwhile (so batches are
    /// acknowledged and snapshot requests queued while a long job runs).
    async fn blocking<T: Send + 'static>(
        &mut self,
        mailbox: &mut mpsc::UnboundedReceiver<Msg>,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, tokio::task::JoinError> {
        let handle = tokio::task::spawn_blocking(work);
        tokio::pin!(handle);
        loop {
            tokio::select! {
                biased;
                result = &mut handle => return result,
                Some(msg) = mailbox.recv() => self.on_msg(msg),
            }
        }
    }

    fn has_requesters(&self) -> bool {
        !self.unchecked.is_empty()
            || !self.snapshot_waiters.is_empty()
            || !self.durable_waiters.is_empty()
    }

    fn next_step(&mut self) -> Step {
        let now = Instant::now();
        if !self.loaded() {
            if !self.has_requesters() {
                return Step::Exit;
            }
            if let Some(at) = self.load_retry_at.filter(|at| *at > now) {
                return Step::Idle { wake: Some(at) };
            }
            let urgent = !self.snapshot_waiters.is_empty() || !self.durable_waiters.is_empty();
            return Step::Load(if urgent {
                Priority::High
            } else {
                Priority::Mid
            });
        }

        // Snapshots whose seq has arrived.
        let snapshot_need = self
            .snapshot_waiters
            .iter()
            .filter(|w| w.min_seq <= self.received_seq)
            .map(|w| w.min_seq)
            .max();
        if let Some(need) = snapshot_need {
            if self.applied_seq < need {
                return Step::Apply {
                    target: need,
                    priority: Priority::High,
                };
            }
            return Step::ServeSnapshots;
        }

        // Releases and shutdown flushes.
        let mut wake: Option<Instant> = None;
        let mut wake_at = |at: Instant| {
            wake = Some(wake.map_or(at, |w: Instant| w.min(at)));
        };
        if let Some(target) = self
            .durable_waiters
            .iter()
            .map(|w| w.target)
            .filter(|t| *t > self.flushed_seq)
            .max()
        {
            if self.applied_seq < target {
                return Step::Apply {
                    target,
                    priority: Priority::High,
                };
            }
            match self.flush_retry_at {
                Some(at) if at > now => wake_at(at),
                _ if self.write.is_none() => return Step::Flush(Priority::High),
                // Wait for the write in flight; another flush follows if it was not enough.
                _ => {}
            }
        }

        if !self.queue.is_empty() {
            return Step::Apply {
                target: self.received_seq,
                priority: Priority::Mid,
            };
        }

        if let Some(dirty_since) = self.dirty_since {
            if self.write.is_none() {
                let due = dirty_since + self.shared.config.flush_interval;
                let due = self.flush_retry_at.map_or(due, |at| at.max(due));
                if due <= now {
                    return Step::Flush(Priority::Low);
                }
                wake_at(due);
            }
        }

        for waiter in &self.snapshot_waiters {
            wake_at(waiter.deadline);
        }

        let clean = self.dirty_since.is_none() && self.write.is_none() && !self.has_requesters();
        if clean {
            if self.unload_wanted {
                return Step::Exit;
            }
            let idle_until = self.last_activity + self.shared.config.idle_unload;
            if idle_until <= now {
                return Step::Exit;
            }
            wake_at(idle_until);
        }
        Step::Idle { wake }
    }

    /// Removes the actor from the registry, unless a request is waiting in its mailbox (then
    /// handles it and returns false). The registry lock makes this atomic with respect to
    /// senders, so no request is ever sent to an exiting actor.
    fn try_exit(&mut self, mailbox: &mut mpsc::UnboundedReceiver<Msg>) -> bool {
        let msg = {
            let mut registry = self.shared.registry();
            match mailbox.try_recv() {
                Ok(msg) => msg,
                Err(_) => {
                    registry.remove(&self.id);
                    metrics::gauge!("pps_open_pictures").set(registry.len() as f64);
                    return true;
                }
            }
        };
        self.on_msg(msg);
        false
    }

    fn on_msg(&mut self, msg: Msg) {
        self.last_activity = Instant::now();
        match msg {
            Msg::Snapshot(request, reply) => {
                self.activity += 1;
                self.unload_wanted = false;
                if let Some((width, height)) = request.create {
                    if let Err(error) = self.check_size(width, height) {
                        let _ = reply.send(Err(error));
                        return;
                    }
                }
                if !self.loaded() {
                    // A joiner should not wait for the backoff of a load retried for batches.
                    self.load_retry_at = None;
                }
                if let Some(snapshot) = &self.loading_snapshot {
                    if request.min_seq <= snapshot.seq {
                        metrics::counter!("pps_snapshots_before_decode").increment(1);
                        let _ = reply.send(Ok(snapshot.clone()));
                        return;
                    }
                }
                self.snapshot_waiters.push(SnapshotWaiter {
                    min_seq: request.min_seq,
                    lz4: request.lz4,
                    deadline: Instant::now() + self.shared.config.snapshot_wait,
                    reply,
                });
                if let Some(size) = request.create {
                    self.create_size.get_or_insert(size);
                }
            }
            Msg::Apply(batch, reply) => {
                self.activity += 1;
                self.unload_wanted = false;
                match self.validate(batch) {
                    Err(error) => {
                        let _ = reply.send(Err(error));
                    }
                    Ok((first_seq, last_seq, updates, size)) => {
                        self.create_size.get_or_insert(size);
                        let batch = Unchecked {
                            first_seq,
                            last_seq,
                            updates,
                            reply,
                        };
                        if self.loaded() {
                            self.accept(batch);
                        } else {
                            self.unchecked.push(batch);
                        }
                    }
                }
            }
            Msg::Release(request, reply) => {
                if self.loaded() && request.last_seq > self.received_seq {
                    let _ = reply.send(Err(PpsError::Gap {
                        have: self.received_seq,
                        first_seq: request.last_seq,
                    }));
                    return;
                }
                self.durable_waiters.push(DurableWaiter {
                    target: request.last_seq,
                    kind: DurableKind::Release {
                        activity_at_request: self.activity,
                    },
                    reply,
                });
            }
            Msg::Flush(reply) => {
                if !self.loaded() {
                    // Nothing accepted, nothing to flush.
                    let _ = reply.send(Ok(self.flushed_seq));
                    return;
                }
                self.durable_waiters.push(DurableWaiter {
                    target: self.received_seq,
                    kind: DurableKind::Flush,
                    reply,
                });
            }
        }
    }

    fn check_size(&self, width: u32, height: u32) -> Result<(), PpsError> {
        let max = self.shared.config.max_side;
        if width == 0 || height == 0 || width > max || height > max {
            return Err(PpsError::BadRequest(format!(
                "picture size {width}x{height} is outside 1..={max}"
            )));
        }
        Ok(())
    }

    /// Decodes a batch and checks that it holds exactly the consecutive seqs it claims.
    #[allow(clippy::type_complexity)]
    fn validate(
        &self,
        batch: ApplyBatch,
    ) -> Result<(u64, u64, Vec<Sequenced>, (u32, u32)), PpsError> {
        self.check_size(batch.width, batch.height)?;
        let updates: Vec<Sequenced> = protocol::codec::decode(&batch.updates)
            .map_err(|e| PpsError::BadRequest(format!("batch updates: {e}")))?;
        let consecutive = updates
            .iter()
            .enumerate()
            .all(|(i, u)| Some(u.seq) == batch.first_seq.checked_add(i as u64));
        let count_matches = batch.last_seq >= batch.first_seq
            && batch.last_seq - batch.first_seq + 1 == updates.len() as u64;
        if batch.first_seq == 0 || !consecutive || !count_matches {
            return Err(PpsError::BadRequest(format!(
                "batch claims seqs {}..={} but holds {} updates that do not match",
                batch.first_seq,
                batch.last_seq,
                updates.len()
            )));
        }
        Ok((
            batch.first_seq,
            batch.last_seq,
            updates,
            (batch.width, batch.height),
        ))
    }

    /// Queues a batch after everything PPS holds, or replies why not.
    fn accept(&mut self, batch: Unchecked) {
        if batch.first_seq > self.received_seq + 1 {
            let _ = batch.reply.send(Err(PpsError::Gap {
                have: self.received_seq,
                first_seq: batch.first_seq,
            }));
            return;
        }
        if batch.last_seq <= self.received_seq {
            metrics::counter!("pps_duplicate_batches").increment(1);
            let _ = batch.reply.send(Ok(self.received_seq));
            return;
        }
        let received = self.received_seq;
        let updates: Vec<Sequenced> = batch
            .updates
            .into_iter()
            .filter(|u| u.seq > received)
            .collect();
        let first_seq = received + 1;
        self.received_seq = batch.last_seq;
        self.queue.push_back(Queued { first_seq, updates });
        let _ = batch.reply.send(Ok(self.received_seq));
    }

    fn expire_snapshot_waiters(&mut self) {
        if !self.loaded() {
            return;
        }
        let now = Instant::now();
        let received = self.received_seq;
        let (expired, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut self.snapshot_waiters)
            .into_iter()
            .partition(|w| w.min_seq > received && w.deadline <= now);
        self.snapshot_waiters = kept;
        for waiter in expired {
            tracing::warn!(picture = %self.id, min_seq = waiter.min_seq, received, "snapshot gave up waiting for its seq");
            let _ = waiter.reply.send(Err(PpsError::Unavailable(format!(
                "timed out waiting for seq {} (have {received})",
                waiter.min_seq
            ))));
        }
    }

    /// Replies to releases and flushes that storage now satisfies.
    fn settle_durable_waiters(&mut self) {
        if !self.loaded() {
            return;
        }
        let flushed = self.flushed_seq;
        let (done, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.durable_waiters)
            .into_iter()
            .partition(|w| w.target <= flushed);
        self.durable_waiters = waiting;
        for waiter in done {
            if let DurableKind::Release {
                activity_at_request,
            } = waiter.kind
            {
                tracing::debug!(picture = %self.id, flushed, "picture released");
                if activity_at_request == self.activity && self.received_seq == flushed {
                    self.unload_wanted = true;
                }
            }
            let _ = waiter.reply.send(Ok(flushed));
        }
    }

    /// Acquires a scheduler slot, handling messages while waiting for it.
    async fn permit(
        &mut self,
        priority: Priority,
        mailbox: &mut mpsc::UnboundedReceiver<Msg>,
    ) -> Permit {
        let scheduler = self.shared.scheduler.clone();
        let acquire = scheduler.acquire(priority);
        tokio::pin!(acquire);
        loop {
            tokio::select! {
                biased;
                permit = &mut acquire => return permit,
                Some(msg) = mailbox.recv() => self.on_msg(msg),
            }
        }
    }

    /// Answers the joiners waiting for a stored picture with its stored bytes (verified by
    /// `check_png`), and keeps answering new ones so until the decode ends. The reply is the one
    /// they would get after the decode: nothing can be applied before it, so the picture is
    /// exactly at the stored seq either way.
    fn serve_while_decoding(&mut self, stored: &StoredPicture) {
        let snapshot = Snapshot {
            width: stored.meta.width,
            height: stored.meta.height,
            seq: stored.meta.seq,
            image: SnapshotImage::Png(stored.png.clone()),
        };
        let (ready, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut self.snapshot_waiters)
            .into_iter()
            .partition(|w| w.min_seq <= snapshot.seq);
        self.snapshot_waiters = kept;
        for waiter in ready {
            metrics::counter!("pps_snapshots_before_decode").increment(1);
            let _ = waiter.reply.send(Ok(snapshot.clone()));
        }
        self.loading_snapshot = Some(snapshot);
    }

    async fn load(&mut self, priority: Priority, mailbox: &mut mpsc::UnboundedReceiver<Msg>) {
        let started = Instant::now();
        let loaded = self.shared.store.load(&self.id).await;
        metrics::counter!("pps_loads").increment(1);
        let result = match loaded {
            Ok(Some(stored)) => {
                let permit = self.permit(priority, mailbox).await;
                let max_side = self.shared.config.max_side;
                let png = stored.png.clone();
                let checked = self
                    .blocking(mailbox, move || check_png(&png, max_side))
                    .await;
                let decoded = match checked {
                    Ok(Ok(header))
                        if header.width == stored.meta.width
                            && header.height == stored.meta.height =>
                    {
                        self.serve_while_decoding(&stored);
                        let png = stored.png.clone();
                        let delay = self.shared.config.decode_delay;
                        let decoded = self
                            .blocking(mailbox, move || {
                                if let Some(delay) = delay {
                                    std::thread::sleep(delay);
                                }
                                decode_png(&png, max_side)
                            })
                            .await;
                        self.loading_snapshot = None;
                        decoded
                    }
                    Ok(Ok(header)) => Ok(Err(PngError::Malformed(format!(
                        "png is {}x{}, storage says {}x{}",
                        header.width, header.height, stored.meta.width, stored.meta.height
                    )))),
                    Ok(Err(error)) => Ok(Err(error)),
                    Err(join) => Err(join),
                };
                drop(permit);
                match decoded {
                    Ok(Ok(decoded)) => Ok(Some((decoded.raster, stored))),
                    Ok(Err(e)) => Err(StoreError::Corrupt {
                        picture: self.id.clone(),
                        reason: e.to_string(),
                    }),
                    Err(e) => Err(StoreError::Corrupt {
                        picture: self.id.clone(),
                        reason: format!("decoding task failed: {e}"),
                    }),
                }
            }
            Ok(None) => Ok(None),
            Err(e) => Err(e),
        };
        match result {
            Ok(Some((raster, stored))) => {
                let seq = stored.meta.seq;
                tracing::info!(picture = %self.id, seq, width = raster.width(), height = raster.height(), elapsed_ms = started.elapsed().as_millis() as u64, "picture loaded");
                self.raster = Some(raster);
                self.applied_seq = seq;
                self.received_seq = seq;
                self.flushed_seq = seq;
                self.version = Some(stored.version);
                self.last_encoding = Some(Encoding {
                    seq,
                    png: stored.png,
                    lz4: None,
                    at: Instant::now(),
                });
                self.opened();
            }
            Ok(None) => match self.create_size {
                Some((width, height)) => {
                    tracing::info!(picture = %self.id, width, height, "picture created");
                    self.raster = Some(Raster::new(width, height));
                    self.applied_seq = 0;
                    self.received_seq = 0;
                    self.flushed_seq = 0;
                    self.version = None;
                    self.last_encoding = None;
                    self.opened();
                }
                None => {
                    // Only snapshots without `create` and releases asked: nothing to open.
                    for waiter in self.snapshot_waiters.drain(..) {
                        let _ = waiter.reply.send(Err(PpsError::NotFound));
                    }
                    for waiter in self.durable_waiters.drain(..) {
                        let reply = if waiter.target == 0 {
                            Ok(0)
                        } else {
                            Err(PpsError::NotFound)
                        };
                        let _ = waiter.reply.send(reply);
                    }
                }
            },
            Err(error) => {
                metrics::counter!("pps_load_failures").increment(1);
                let message = error.to_string();
                // Never open a picture blank because storage failed: tell the joiners, and
                // keep the batches until the load succeeds.
                for waiter in self.snapshot_waiters.drain(..) {
                    let _ = waiter.reply.send(Err(PpsError::Storage(message.clone())));
                }
                for waiter in self.durable_waiters.drain(..) {
                    let _ = waiter.reply.send(Err(PpsError::Storage(message.clone())));
                }
                let retryable = matches!(error, StoreError::Unavailable(_));
                if !retryable {
                    for batch in self.unchecked.drain(..) {
                        let _ = batch.reply.send(Err(PpsError::Storage(message.clone())));
                    }
                }
                if self.unchecked.is_empty() {
                    tracing::warn!(picture = %self.id, %error, "picture load failed");
                    self.load_retry_at = None;
                    self.create_size = None;
                } else {
                    let backoff = self.load_backoff;
                    self.load_retry_at = Some(Instant::now() + jitter(backoff));
                    self.load_backoff = (backoff * 2).min(self.shared.config.max_backoff);
                    tracing::warn!(picture = %self.id, %error, retry_in_ms = backoff.as_millis() as u64, batches = self.unchecked.len(), "picture load failed; retrying while batches wait");
                }
            }
        }
    }

    /// The picture is in memory: check the batches that waited for it.
    fn opened(&mut self) {
        self.loaded = true;
        self.load_retry_at = None;
        self.load_backoff = self.shared.config.min_backoff;
        self.dirty_since = None;
        self.flush_retry_at = None;
        for batch in std::mem::take(&mut self.unchecked) {
            self.accept(batch);
        }
        let received = self.received_seq;
        let (gaps, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut self.durable_waiters)
            .into_iter()
            .partition(|w| matches!(w.kind, DurableKind::Release { .. }) && w.target > received);
        self.durable_waiters = kept;
        for waiter in gaps {
            let _ = waiter.reply.send(Err(PpsError::Gap {
                have: received,
                first_seq: waiter.target,
            }));
        }
    }

    async fn apply(
        &mut self,
        target: u64,
        priority: Priority,
        mailbox: &mut mpsc::UnboundedReceiver<Msg>,
    ) {
        let permit = self.permit(priority, mailbox).await;
        if self.raster.is_none() {
            return;
        }
        let chunk = self.shared.config.apply_chunk.max(1);
        let mut batches = Vec::new();
        while let Some(front) = self.queue.front() {
            let needed = front.first_seq <= target;
            if batches.len() >= chunk && !needed {
                break;
            }
            if priority == Priority::Mid && batches.len() >= chunk {
                break;
            }
            if let Some(batch) = self.queue.pop_front() {
                batches.push(batch);
            }
        }
        let mut applied = self.applied_seq;
        let delay = self.shared.config.apply_delay;
        let started = Instant::now();
        let result = self
            .with_raster(mailbox, "applying updates", move |raster| {
                let mut count = 0u64;
                let mut batch_count = 0u64;
                for batch in &batches {
                    for update in &batch.updates {
                        if update.seq > applied {
                            raster.apply(&update.op);
                            applied = update.seq;
                            count += 1;
                        }
                    }
                    batch_count += 1;
                    if let Some(delay) = delay {
                        std::thread::sleep(delay);
                    }
                }
                (applied, count, batch_count)
            })
            .await;
        drop(permit);
        if let Some((applied, count, batch_count)) = result {
            if applied > self.applied_seq {
                self.applied_seq = applied;
                self.dirty_since.get_or_insert_with(Instant::now);
            }
            metrics::counter!("pps_batches_applied").increment(batch_count);
            metrics::counter!("pps_updates_applied").increment(count);
            metrics::histogram!("pps_apply_seconds").record(started.elapsed().as_secs_f64());
        }
    }

    /// Runs `work` on the raster in `spawn_blocking` (messages are handled meanwhile) and puts
    /// the raster back. `None` when there is no raster, or when `work` panicked: the raster
    /// went with it, so the picture is dropped from memory (`lose`; storage and the broadcast
    /// service's log still have everything).
    async fn with_raster<T: Send + 'static>(
        &mut self,
        mailbox: &mut mpsc::UnboundedReceiver<Msg>,
        what: &str,
        work: impl FnOnce(&mut Raster) -> T + Send + 'static,
    ) -> Option<T> {
        let mut raster = self.raster.take()?;
        let result = self
            .blocking(mailbox, move || {
                let out = work(&mut raster);
                (raster, out)
            })
            .await;
        match result {
            Ok((raster, out)) => {
                self.raster = Some(raster);
                Some(out)
            }
            Err(error) => {
                tracing::error!(picture = %self.id, %error, "{what} failed; dropping the picture from memory");
                self.lose(&format!("{what} failed"));
                None
            }
        }
    }

    async fn serve_snapshots(&mut self, mailbox: &mut mpsc::UnboundedReceiver<Msg>) {
        let started = Instant::now();
        let reuse = self.shared.config.snapshot_reuse;
        let need = self
            .snapshot_waiters
            .iter()
            .filter(|w| w.min_seq <= self.applied_seq)
            .map(|w| w.min_seq)
            .max()
            .unwrap_or(0);
        // An encoding at `applied_seq` is exact whatever its age; an older one is reused while
        // recent and close behind (the joiner gets the updates after it from BS's log).
        let applied = self.applied_seq;
        let behind = self.shared.config.snapshot_reuse_updates;
        let fresh = self.last_encoding.as_ref().is_some_and(|e| {
            e.seq >= need
                && (e.seq == applied || (e.at.elapsed() < reuse && applied - e.seq <= behind))
        });
        if !fresh {
            if let Err(error) = self.encode(Priority::High, mailbox).await {
                let applied = self.applied_seq;
                let (failed, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut self.snapshot_waiters)
                    .into_iter()
                    .partition(|w| w.min_seq <= applied);
                self.snapshot_waiters = kept;
                for waiter in failed {
                    let _ = waiter.reply.send(Err(error.clone()));
                }
                return;
            }
        }
        let Some(encoding) = self.last_encoding.as_ref() else {
            return;
        };
        let Some(raster) = self.raster.as_ref() else {
            return;
        };
        let snapshot = Snapshot {
            width: raster.width(),
            height: raster.height(),
            seq: encoding.seq,
            image: SnapshotImage::Png(encoding.png.clone()),
        };
        let lz4 = encoding.lz4.clone();
        let (ready, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut self.snapshot_waiters)
            .into_iter()
            .partition(|w| w.min_seq <= snapshot.seq);
        self.snapshot_waiters = kept;
        let mut lz4_missed = false;
        for waiter in ready {
            let reply = match &lz4 {
                Some(lz4) if waiter.lz4 => Snapshot {
                    image: SnapshotImage::Lz4(lz4.clone()),
                    ..snapshot.clone()
                },
                _ => {
                    lz4_missed |= waiter.lz4;
                    snapshot.clone()
                }
            };
            let _ = waiter.reply.send(Ok(reply));
        }
        metrics::histogram!("pps_snapshot_seconds").record(started.elapsed().as_secs_f64());
        if lz4_missed {
            self.encode_lz4(mailbox).await;
        }
    }

    /// Joiners asked for the LZ4 form and got the PNG only: encodes the LZ4 form of the last
    /// encoding for the joiners after them, if the raster is still at that encoding's seq
    /// (otherwise the next encoding gets one when a joiner asks again). Runs after the replies,
    /// so no joiner ever waits for it.
    async fn encode_lz4(&mut self, mailbox: &mut mpsc::UnboundedReceiver<Msg>) {
        let wanted = |this: &Self| {
            this.last_encoding
                .as_ref()
                .filter(|e| e.lz4.is_none() && e.seq == this.applied_seq)
                .map(|e| e.seq)
        };
        if wanted(self).is_none() {
            return;
        }
        let permit = self.permit(Priority::High, mailbox).await;
        let Some(seq) = wanted(self) else {
            return;
        };
        let started = Instant::now();
        let result = self
            .with_raster(mailbox, "lz4 encoding", |raster| encode_lz4(raster))
            .await;
        drop(permit);
        metrics::histogram!("pps_encode_lz4_seconds").record(started.elapsed().as_secs_f64());
        match result {
            Some(Ok(lz4)) => {
                if let Some(encoding) = self.last_encoding.as_mut().filter(|e| e.seq == seq) {
                    encoding.lz4 = Some(Bytes::from(lz4));
                }
            }
            Some(Err(error)) => {
                tracing::warn!(picture = %self.id, %error, "lz4 encoding failed; joiners get the png");
            }
            None => {}
        }
    }

    /// Encodes the raster at `applied_seq` into `last_encoding`.
    async fn encode(
        &mut self,
        priority: Priority,
        mailbox: &mut mpsc::UnboundedReceiver<Msg>,
    ) -> Result<(), PpsError> {
        let permit = self.permit(priority, mailbox).await;
        if self.raster.is_none() {
            return Err(PpsError::Unavailable("picture not loaded".to_string()));
        }
        let seq = self.applied_seq;
        let started = Instant::now();
        let result = self
            .with_raster(mailbox, "png encoding", move |raster| {
                encode_png(raster, seq, Compression::Fast)
            })
            .await;
        drop(permit);
        metrics::histogram!("pps_encode_seconds").record(started.elapsed().as_secs_f64());
        match result {
            Some(Ok(png)) => {
                self.last_encoding = Some(Encoding {
                    seq,
                    png: Bytes::from(png),
                    lz4: None,
                    at: Instant::now(),
                });
                Ok(())
            }
            Some(Err(error)) => {
                tracing::error!(picture = %self.id, %error, "png encoding failed");
                Err(PpsError::Unavailable(format!(
                    "png encoding failed: {error}"
                )))
            }
            None => Err(PpsError::Unavailable("png encoding failed".to_string())),
        }
    }

    /// Encodes (unless the last encoding is already at `applied_seq`) and starts the write.
    async fn start_flush(
        &mut self,
        priority: Priority,
        mailbox: &mut mpsc::UnboundedReceiver<Msg>,
    ) {
        let current = self
            .last_encoding
            .as_ref()
            .is_some_and(|e| e.seq == self.applied_seq);
        if !current && self.encode(priority, mailbox).await.is_err() {
            self.schedule_flush_retry();
            return;
        }
        let (Some(encoding), Some(raster)) = (self.last_encoding.as_ref(), self.raster.as_ref())
        else {
            return;
        };
        let meta = StoredMeta {
            seq: encoding.seq,
            width: raster.width(),
            height: raster.height(),
        };
        let png = encoding.png.clone();
        let store = self.shared.store.clone();
        let id = self.id.clone();
        let expected = self.version.clone();
        tracing::debug!(picture = %self.id, seq = meta.seq, ?priority, "flush started");
        self.write = Some(Write {
            seq: meta.seq,
            started: Instant::now(),
            handle: tokio::spawn(
                async move { store.save(&id, png, &meta, expected.as_ref()).await },
            ),
        });
    }

    async fn finish_write(
        &mut self,
        result: Result<Result<Version, StoreError>, tokio::task::JoinError>,
    ) {
        let Some(write) = self.write.take() else {
            return;
        };
        let result = match result {
            Ok(result) => result,
            Err(e) => Err(StoreError::Unavailable(format!("write task failed: {e}"))),
        };
        let elapsed = write.started.elapsed();
        match result {
            Ok(version) => {
                metrics::counter!("pps_flushes").increment(1);
                metrics::histogram!("pps_flush_seconds").record(elapsed.as_secs_f64());
                tracing::debug!(picture = %self.id, seq = write.seq, elapsed_ms = elapsed.as_millis() as u64, "flushed");
                self.version = Some(version);
                self.flushed_seq = self.flushed_seq.max(write.seq);
                self.flush_retry_at = None;
                self.flush_backoff = self.shared.config.min_backoff;
                if self.applied_seq == self.flushed_seq {
                    self.dirty_since = None;
                } else {
                    self.dirty_since = Some(Instant::now());
                }
                let _ = self.shared.events.send(PpsEvent::Flushed {
                    picture: self.id.clone(),
                    seq: write.seq,
                });
            }
            Err(StoreError::Conflict { .. }) => {
                metrics::counter!("pps_flush_conflicts").increment(1);
                tracing::error!(picture = %self.id, seq = write.seq, "flush conflict: the stored picture was changed by another writer");
                self.resolve_conflict().await;
            }
            Err(error) => {
                metrics::counter!("pps_flush_failures").increment(1);
                tracing::warn!(picture = %self.id, seq = write.seq, %error, retry_in_ms = self.flush_backoff.as_millis() as u64, "flush failed; will retry");
                self.schedule_flush_retry();
            }
        }
    }

    fn schedule_flush_retry(&mut self) {
        let backoff = self.flush_backoff;
        self.flush_retry_at = Some(Instant::now() + jitter(backoff));
        self.flush_backoff = (backoff * 2).min(self.shared.config.max_backoff);
    }

    /// Someone else wrote the picture. Acknowledged updates must not be lost: when the stored
    /// copy is not ahead of ours, overwrite it (expecting its new version); when it is ahead,
    /// another owner has taken over and our copy is dropped.
    async fn resolve_conflict(&mut self) {
        match self.shared.store.load(&self.id).await {
            Ok(Some(stored)) if stored.meta.seq > self.applied_seq => {
                tracing::error!(picture = %self.id, stored_seq = stored.meta.seq, applied = self.applied_seq, "another owner is ahead; dropping our copy");
                self.lose("ownership lost");
            }
            Ok(stored) => {
                tracing::warn!(picture = %self.id, stored_seq = stored.as_ref().map(|s| s.meta.seq), applied = self.applied_seq, "stored picture is not ahead; overwriting it");
                self.version = stored.map(|s| s.version);
                self.dirty_since.get_or_insert_with(Instant::now);
                self.flush_retry_at = None;
            }
            Err(error) => {
                tracing::warn!(picture = %self.id, %error, "reloading after a conflict failed; will retry");
                self.schedule_flush_retry();
            }
        }
    }

    /// Drops the picture from memory and fails every waiter; the next request reloads it.
    fn lose(&mut self, reason: &str) {
        let error = PpsError::Unavailable(reason.to_string());
        for waiter in self.snapshot_waiters.drain(..) {
            let _ = waiter.reply.send(Err(error.clone()));
        }
        for waiter in self.durable_waiters.drain(..) {
            let _ = waiter.reply.send(Err(error.clone()));
        }
        for batch in self.unchecked.drain(..) {
            let _ = batch.reply.send(Err(error.clone()));
        }
        self.loaded = false;
        self.raster = None;
        self.queue.clear();
        self.applied_seq = 0;
        self.received_seq = 0;
        self.flushed_seq = 0;
        self.version = None;
        self.last_encoding = None;
        self.dirty_since = None;
        self.flush_retry_at = None;
        self.create_size = None;
        // A write in flight finishes on its own; its result no longer concerns this copy.
        self.write = None;
    }
}

/// `base` plus up to 25% random extra, so that many pictures failing together do not retry in
/// lockstep.
fn jitter(base: Duration) -> Duration {
    let extra = base.as_millis() as u64 / 4;
    base + Duration::from_millis(if extra == 0 {
        0
    } else {
        rand::random::<u64>() % extra
    })
}
