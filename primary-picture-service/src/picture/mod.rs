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
//!
//! # State
//!
//! A picture is [`Picture::Unloaded`] (nothing is known of its seqs: batches wait for the load)
//! or [`Picture::Loaded`] (the raster, its seqs, the queue, the last encoding, the write in
//! flight). The seqs start in [`Loaded::new`] when the picture opens and end in
//! [`Actor::lose`]. Requests waiting for something, in either state, are [`Waiters`] beside it.
//!
//! # Layout
//!
//! - this file: the messages, the state, the actor's loop and [`Actor::next_step`], taking
//!   messages in, opening and losing the picture;
//! - [`jobs`]: waiting for a scheduler slot or a CPU job (on the raster) while still taking
//!   messages in;
//! - [`load`]: reading the picture from storage, answering joiners while it decodes, creating it
//!   blank, failed loads;
//! - [`apply`]: batches: validating, accepting them after what the picture holds, applying;
//! - [`snapshot`]: serving joiners, the PNG and LZ4 encodings;
//! - [`flush`]: writing to storage, conflicts, releases and shutdown flushes;
//! - [`waiters`]: the one list of waiting requests and how they are answered;
//! - [`shared`]: what the service and every actor share ([`Shared`]: configuration, store,
//!   scheduler, the open pictures' mailboxes, events, the log, the memory budget).

mod apply;
mod flush;
mod jobs;
mod lease;
mod load;
mod shared;
mod snapshot;
mod trail;
mod waiters;

use std::collections::VecDeque;
use std::sync::Arc;

use protocol::backoff::Backoff;
use protocol::pps::{
    AcquireRequest, Acquired, ApplyBatch, PpsError, ReleaseRequest, Snapshot, SnapshotRequest,
};
use protocol::snapshot::Ownership;
use protocol::{PictureId, Raster};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::history::HistoryWriter;
use crate::scheduler::Priority;
use crate::store::{StoredPicture, Version};
use crate::wal::{Record, WalError};

use self::apply::Batch;
use self::flush::{DurableKind, DurableWaiter, Write, WriteResult};
use self::lease::{Acquirer, LeaseNeed, LeaseState, Owning};
pub(crate) use self::shared::{Charge, ConnId, Shared};
use self::snapshot::{Encoding, SnapshotWaiter};
use self::trail::SessionTrail;
use self::waiters::Waiters;

type Reply<T> = oneshot::Sender<Result<T, PpsError>>;

/// The actor's end of its mailbox.
type Mailbox = mpsc::UnboundedReceiver<Msg>;

/// A request to a picture actor.
pub(crate) enum Msg {
    Snapshot(SnapshotRequest, Reply<Snapshot>),
    Apply(ApplyBatch, ConnId, Reply<u64>),
    Release(ReleaseRequest, Reply<u64>),
    Acquire(AcquireRequest, ConnId, Reply<Acquired>),
    /// A broadcast service's connection is gone (it was last heard at `last_heard`).
    Disconnected {
        conn: ConnId,
        last_heard: Instant,
    },
    /// Shutdown: flush everything received so far at high priority, as released (the next
    /// owner takes the picture without waiting); replies the flushed seq.
    Flush(Reply<u64>),
    /// The admin API: store everything received so far at high priority, keeping the lease and
    /// the picture; replies the flushed seq.
    Store(Reply<u64>),
    /// The write-ahead log wrote (or failed to write) the oldest batch waiting for it.
    WalDone(Result<(), WalError>),
    /// Updates the write-ahead log held from before a crash: applied again, then stored.
    Recover(Vec<Record>),
}

/// Whether the picture is in memory.
enum Picture {
    /// Not in memory: not loaded yet, its load failed, or it was lost.
    Unloaded(Unloaded),
    /// In memory: loaded from storage or created blank.
    Loaded(Box<Loaded>),
}

/// What waits for the picture to load, and how loading it goes.
struct Unloaded {
    /// Batches that passed validation, waiting for the picture to load before their seqs can
    /// be checked against what PPS holds.
    unchecked: Waiters<Batch, u64>,
    /// The size to create the picture at if storage has none: from the first snapshot with
    /// `create` or the first batch (which carries BS's idea of the size).
    create_size: Option<(u32, u32)>,
    /// A failed load is retried not before this.
    load_retry_at: Option<Instant>,
    load_backoff: Backoff,
    /// While a stored picture is being decoded: its stored bytes, already verified, which
    /// answer snapshot requests at once. A cold join then waits for the read only, not also
    /// for the decode (tens of milliseconds for 2048²), which happens meanwhile.
    loading_snapshot: Option<Snapshot>,
}

/// A picture in memory, and everything that is known only while it is.
struct Loaded {
    /// The picture; `None` only while a job on it ([`Actor::with_raster`]) has moved it into its
    /// closure (the job puts it back, or the picture is lost).
    raster: Option<Raster>,
    /// Every update up to this seq is in `raster`.
    applied_seq: u64,
    /// Every update up to this seq is in `raster` or `queue` (the seq BS is told PPS has).
    received_seq: u64,
    /// Every update up to this seq is in storage.
    flushed_seq: u64,
    /// The stored version, expected by the next conditional write (`None`: not stored yet).
    version: Option<Version>,
    /// Accepted, not yet applied; each batch starts after everything queued before it.
    queue: VecDeque<Batch>,
    last_encoding: Option<Encoding>,
    /// When the picture first had updates not in storage (`None`: clean).
    dirty_since: Option<Instant>,
    /// The write to storage in flight (at most one).
    write: Option<Write>,
    /// A failed write is retried not before this.
    flush_retry_at: Option<Instant>,
    /// Whose the picture is: ours (we may write it, grant its lease, accept batches) or only
    /// read.
    owning: Owning,
    /// The sequencer lease, while ours.
    lease: LeaseState,
    /// Every update up to this seq is in `raster`, `queue` or on its way into the write-ahead
    /// log (`wal_waiting`): what the next batch must continue.
    promised_seq: u64,
    /// Batches being written to the write-ahead log, in order, with their replies: queued and
    /// confirmed once on disk.
    wal_waiting: VecDeque<(Batch, Reply<u64>)>,
    /// The write-ahead log refused a batch for being full: flush now, not at the interval, to
    /// free it.
    wal_full: bool,
    /// The recent clients' highest `client_seq`s, for the next lease grant.
    trail: SessionTrail,
    /// The raster's bytes in the service's memory budget (`--max-loaded-bytes`), given back
    /// when this state goes.
    charge: Option<Charge>,
}

impl Unloaded {
    fn new(load_backoff: Backoff) -> Self {
        Self {
            unchecked: Waiters::default(),
            create_size: None,
            load_retry_at: None,
            load_backoff,
            loading_snapshot: None,
        }
    }
}

impl Loaded {
    /// A picture just opened: exactly what storage holds (`stored`), or blank and never stored.
    /// The one place its seqs start; they go with it in [`Actor::lose`].
    fn new(raster: Raster, stored: Option<StoredPicture>, session_trail: usize) -> Self {
        let record = stored
            .as_ref()
            .map_or(Ownership::NONE, |s| s.meta.ownership);
        let (seq, version, last_encoding) = match stored {
            Some(stored) => (
                stored.meta.seq,
                Some(stored.version),
                Some(Encoding {
                    seq: stored.meta.seq,
                    png: stored.png,
                    lz4: None,
                    at: Instant::now(),
                }),
            ),
            None => (0, None, None),
        };
        Self {
            raster: Some(raster),
            applied_seq: seq,
            received_seq: seq,
            promised_seq: seq,
            wal_waiting: VecDeque::new(),
            wal_full: false,
            trail: SessionTrail::new(session_trail),
            flushed_seq: seq,
            version,
            queue: VecDeque::new(),
            last_encoding,
            dirty_since: None,
            write: None,
            flush_retry_at: None,
            owning: Owning::Reader { stored: record },
            lease: LeaseState::default(),
            charge: None,
        }
    }
}

impl Picture {
    fn loaded(&self) -> Option<&Loaded> {
        match self {
            Picture::Loaded(loaded) => Some(loaded),
            Picture::Unloaded(_) => None,
        }
    }

    fn loaded_mut(&mut self) -> Option<&mut Loaded> {
        match self {
            Picture::Loaded(loaded) => Some(loaded),
            Picture::Unloaded(_) => None,
        }
    }

    fn unloaded_mut(&mut self) -> Option<&mut Unloaded> {
        match self {
            Picture::Unloaded(unloaded) => Some(unloaded),
            Picture::Loaded(_) => None,
        }
    }
}

/// Why an idle actor woke up.
enum Woke {
    Msg(Msg),
    Write(WriteResult),
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
    /// Write the picture: `release` says it is let go (no holder, nobody waiting for the lease).
    Flush {
        priority: Priority,
        release: bool,
    },
    /// Take the picture in storage (write it as ours, with a new epoch).
    Take,
    /// Check with storage that the picture is still ours.
    Verify,
    /// Nothing to do before `wake` (or a message, or the write finishing).
    Idle {
        wake: Option<Instant>,
    },
    Exit,
}

struct Actor {
    shared: Arc<Shared>,
    /// The picture id.
    id: PictureId,
    /// Whether the picture is in memory, with what each state holds.
    picture: Picture,
    /// Joiners, waiting for the load, then for their `min_seq` to arrive and be applied.
    snapshot_waiters: Waiters<SnapshotWaiter, Snapshot>,
    /// Releases and shutdown flushes, waiting for storage to hold their seq.
    durable_waiters: Waiters<DurableWaiter, u64>,
    /// Lease requests, waiting for the picture to load, be taken, be handed over.
    acquirers: Waiters<Acquirer, Acquired>,
    /// Updates the write-ahead log held from before a crash, to apply once the picture is ours.
    recovered: Vec<Record>,
    /// This actor's own mailbox, for the write-ahead log's answers (weak: the mailbox still
    /// closes when the service drops it).
    me: mpsc::WeakUnboundedSender<Msg>,
    /// Delay before retrying the next failed write: doubles with every failure, back to
    /// `min_backoff` after a success only (a lost and reloaded copy carries on from it).
    flush_backoff: Backoff,
    /// Counts snapshot and apply requests, so that a release knows whether anyone asked since.
    activity: u64,
    /// Last request of any kind, for idle eviction.
    last_activity: Instant,
    /// Set when a release completed with nothing happening since it was asked.
    unload_wanted: bool,
    /// Stores versions of the picture's flushes (`crate::history`); started at the first
    /// flush, `None` while history is off (`history_keep` 0) or before.
    history: Option<HistoryWriter>,
}

/// Runs a picture actor until it unloads.
pub(crate) async fn run(
    shared: Arc<Shared>,
    id: PictureId,
    mut mailbox: mpsc::UnboundedReceiver<Msg>,
    me: mpsc::WeakUnboundedSender<Msg>,
) {
    let (min_backoff, max_backoff) = (shared.config.min_backoff, shared.config.max_backoff);
    let mut actor = Actor {
        shared,
        id,
        picture: Picture::Unloaded(Unloaded::new(Backoff::new(min_backoff, max_backoff))),
        snapshot_waiters: Waiters::default(),
        durable_waiters: Waiters::default(),
        acquirers: Waiters::default(),
        recovered: Vec::new(),
        me,
        flush_backoff: Backoff::new(min_backoff, max_backoff),
        activity: 0,
        last_activity: Instant::now(),
        unload_wanted: false,
        history: None,
    };
    tracing::debug!(picture = %actor.id, "picture actor started");
    actor.run(&mut mailbox).await;
    tracing::debug!(picture = %actor.id, "picture actor stopped");
}

impl Actor {
    async fn run(&mut self, mailbox: &mut Mailbox) {
        loop {
            while let Ok(msg) = mailbox.try_recv() {
                self.on_msg(msg);
            }
            if let Some(write) = self
                .picture
                .loaded_mut()
                .and_then(|loaded| loaded.write.as_mut())
                .filter(|w| w.handle.is_finished())
            {
                let result = (&mut write.handle).await;
                self.finish_write(result).await;
            }
            self.expire_snapshot_waiters();
            self.settle_durable_waiters();
            // Logged updates first: a lease granted now continues after them.
            self.apply_recovered();
            self.settle_acquirers();
            match self.next_step() {
                Step::Load(priority) => self.load(priority, mailbox).await,
                Step::Apply { target, priority } => self.apply(target, priority, mailbox).await,
                Step::ServeSnapshots => self.serve_snapshots(mailbox).await,
                Step::Flush { priority, release } => {
                    self.start_flush(priority, release, mailbox).await
                }
                Step::Take => self.start_takeover(mailbox).await,
                Step::Verify => self.verify(mailbox).await,
                Step::Idle { wake } => {
                    let sleep = async {
                        match wake {
                            Some(at) => tokio::time::sleep_until(at).await,
                            None => std::future::pending().await,
                        }
                    };
                    let write = self
                        .picture
                        .loaded_mut()
                        .and_then(|loaded| loaded.write.as_mut());
                    let write_done = async {
                        match write {
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

    fn has_requesters(&self) -> bool {
        let unchecked = match &self.picture {
            Picture::Unloaded(unloaded) => !unloaded.unchecked.is_empty(),
            Picture::Loaded(_) => false,
        };
        let logging = self
            .picture
            .loaded()
            .is_some_and(|loaded| !loaded.wal_waiting.is_empty());
        unchecked
            || logging
            || !self.snapshot_waiters.is_empty()
            || !self.durable_waiters.is_empty()
            || !self.acquirers.is_empty()
            || !self.recovered.is_empty()
    }

    fn next_step(&self) -> Step {
        let now = Instant::now();
        let loaded = match &self.picture {
            Picture::Unloaded(unloaded) => {
                if !self.has_requesters() {
                    return Step::Exit;
                }
                if let Some(at) = unloaded.load_retry_at.filter(|at| *at > now) {
                    return Step::Idle { wake: Some(at) };
                }
                let urgent = !self.snapshot_waiters.is_empty()
                    || !self.durable_waiters.is_empty()
                    || !self.acquirers.is_empty();
                return Step::Load(if urgent {
                    Priority::High
                } else {
                    Priority::Mid
                });
            }
            Picture::Loaded(loaded) => loaded,
        };

        // Snapshots whose seq has arrived.
        let snapshot_need = self
            .snapshot_waiters
            .iter()
            .filter(|w| w.min_seq <= loaded.received_seq)
            .map(|w| w.min_seq)
            .max();
        if let Some(need) = snapshot_need {
            if loaded.applied_seq < need {
                return Step::Apply {
                    target: need,
                    priority: Priority::High,
                };
            }
            return Step::ServeSnapshots;
        }

        let mut wake: Option<Instant> = None;
        let mut wake_at = |at: Instant| {
            wake = Some(wake.map_or(at, |w: Instant| w.min(at)));
        };
        // Writes wait for the one in flight and for the backoff of a failed one.
        let may_write = loaded.write.is_none() && loaded.flush_retry_at.is_none_or(|at| at <= now);
        if let Some(at) = loaded.flush_retry_at.filter(|at| *at > now) {
            wake_at(at);
        }
        // A picture let go (no holder, nobody asking for the lease) is written as released.
        let let_go = loaded.holder().is_none() && self.acquirers.is_empty();

        // Lease requests: the picture taken, a handover flush, a check with storage.
        match self.lease_need(loaded, now) {
            Some(LeaseNeed::Take) if may_write => return Step::Take,
            Some(LeaseNeed::Handover) => {
                if loaded.applied_seq < loaded.received_seq {
                    return Step::Apply {
                        target: loaded.received_seq,
                        priority: Priority::High,
                    };
                }
                if may_write {
                    return Step::Flush {
                        priority: Priority::High,
                        release: false,
                    };
                }
            }
            Some(LeaseNeed::Verify) if may_write => return Step::Verify,
            Some(LeaseNeed::Wait(at)) => wake_at(at),
            _ => {}
        }

        // Releases and shutdown flushes: storage must hold their seq, and a picture of ours
        // that is let go must be stored as released.
        let owner = matches!(loaded.owning, Owning::Owner { .. });
        if let Some(target) = self
            .durable_waiters
            .iter()
            .map(|w| w.target)
            .filter(|t| *t > loaded.flushed_seq || (owner && let_go))
            .max()
        {
            if loaded.applied_seq < target {
                return Step::Apply {
                    target,
                    priority: Priority::High,
                };
            }
            // Otherwise wait for the write in flight; another flush follows if it was not
            // enough.
            if may_write {
                return Step::Flush {
                    priority: Priority::High,
                    release: let_go,
                };
            }
        }

        if !loaded.queue.is_empty() {
            return Step::Apply {
                target: loaded.received_seq,
                priority: Priority::Mid,
            };
        }

        // Ours, dirty, and its sequencer gone (its lease ran out): store it now, as released,
        // rather than at the next periodic flush; the next sequencer then takes it at once.
        if owner && let_go && loaded.dirty_since.is_some() && may_write {
            return Step::Flush {
                priority: Priority::High,
                release: true,
            };
        }

        if let Some(dirty_since) = loaded.dirty_since {
            if loaded.write.is_none() {
                let due = if loaded.wal_full {
                    now
                } else {
                    dirty_since + self.shared.config.flush_interval
                };
                let due = loaded.flush_retry_at.map_or(due, |at| at.max(due));
                if due <= now {
                    return Step::Flush {
                        priority: Priority::Low,
                        release: false,
                    };
                }
                wake_at(due);
            }
        }

        for waiter in self.snapshot_waiters.iter() {
            wake_at(waiter.deadline);
        }

        // A picture with a sequencer is in use however long it has been quiet.
        let clean = loaded.dirty_since.is_none()
            && loaded.write.is_none()
            && loaded.holder().is_none()
            && !self.has_requesters();
        if clean {
            let idle_until = self.last_activity + self.shared.config.idle_unload;
            if self.unload_wanted || idle_until <= now {
                // Ours: stored as released first, so the next owner need not wait.
                if owner {
                    if may_write {
                        return Step::Flush {
                            priority: Priority::Low,
                            release: true,
                        };
                    }
                } else {
                    return Step::Exit;
                }
            } else {
                wake_at(idle_until);
            }
        }
        Step::Idle { wake }
    }

    /// Removes the actor from the registry, unless a request is waiting in its mailbox (then
    /// handles it and returns false). The registry lock makes this atomic with respect to
    /// senders, so no request is ever sent to an exiting actor.
    fn try_exit(&mut self, mailbox: &mut Mailbox) -> bool {
        let msg = {
            let mut registry = self.shared.registry();
            match mailbox.try_recv() {
                Ok(msg) => msg,
                Err(_) => {
                    registry.remove(self.id.as_str());
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
                if let Err(error) = self.asked(request.create) {
                    let _ = reply.send(Err(error));
                    return;
                }
                let me = self.shared.config.node();
                if let Picture::Loaded(loaded) = &self.picture {
                    if let Some(owner) = loaded.owning.moved_to(me).filter(|_| !request.force) {
                        let _ = reply.send(Err(PpsError::Moved { owner }));
                        return;
                    }
                }
                if let Picture::Unloaded(unloaded) = &mut self.picture {
                    if let Some(snapshot) = &unloaded.loading_snapshot {
                        if request.min_seq <= snapshot.seq {
                            metrics::counter!("pps_snapshots_before_decode_total").increment(1);
                            let _ = reply.send(Ok(snapshot.clone()));
                            return;
                        }
                    }
                }
                let latest = match &self.picture {
                    Picture::Loaded(loaded) if request.latest => loaded.received_seq,
                    _ => 0,
                };
                let waiter = SnapshotWaiter {
                    min_seq: request.min_seq.max(latest),
                    lz4: request.lz4,
                    force: request.force,
                    deadline: Instant::now() + self.shared.config.snapshot_wait,
                };
                self.snapshot_waiters.push(waiter, reply);
            }
            Msg::Acquire(request, conn, reply) => {
                if let Err(error) = self.asked(request.create) {
                    let _ = reply.send(Err(error));
                    return;
                }
                self.acquirers.push(Acquirer { request, conn }, reply);
            }
            Msg::Disconnected { conn, last_heard } => self.on_disconnected(conn, last_heard),
            Msg::WalDone(result) => self.on_logged(result),
            Msg::Recover(records) => {
                tracing::info!(picture = %self.id, batches = records.len(), "applying updates logged before a crash");
                self.recovered.extend(records);
                if let Picture::Unloaded(unloaded) = &mut self.picture {
                    unloaded.load_retry_at = None;
                }
            }
            Msg::Apply(batch, conn, reply) => {
                self.activity += 1;
                self.unload_wanted = false;
                let batch = match self.validate(batch) {
                    Ok(batch) => batch,
                    Err(error) => {
                        let _ = reply.send(Err(error));
                        return;
                    }
                };
                match &mut self.picture {
                    Picture::Loaded(_) => self.accept_from(conn, batch, reply),
                    Picture::Unloaded(unloaded) => {
                        unloaded.create_size.get_or_insert(batch.size);
                        unloaded.unchecked.push(batch, reply);
                    }
                }
            }
            Msg::Release(request, reply) => {
                if let Some(loaded) = self.picture.loaded_mut() {
                    if !loaded.holds(&request.lease) {
                        let _ = reply.send(Err(loaded.not_holder()));
                        return;
                    }
                    // The sequencer gives the lease back: no batch of it is accepted any more.
                    loaded.vacate();
                    if request.last_seq > loaded.received_seq {
                        let _ = reply.send(Err(PpsError::Gap {
                            have: loaded.received_seq,
                            first_seq: request.last_seq,
                        }));
                        return;
                    }
                }
                let waiter = DurableWaiter {
                    target: request.last_seq,
                    kind: DurableKind::Release {
                        activity_at_request: self.activity,
                    },
                };
                self.durable_waiters.push(waiter, reply);
            }
            Msg::Flush(reply) => {
                let Some(loaded) = self.picture.loaded_mut() else {
                    // Nothing accepted, nothing to flush (and nothing flushed: the flushed seq
                    // of a picture not in memory is 0).
                    let _ = reply.send(Ok(0));
                    return;
                };
                // The service is going away: its lease goes with it.
                loaded.vacate();
                let waiter = DurableWaiter {
                    target: loaded.received_seq,
                    kind: DurableKind::Flush,
                };
                self.durable_waiters.push(waiter, reply);
            }
            Msg::Store(reply) => {
                let Some(loaded) = self.picture.loaded() else {
                    let _ = reply.send(Err(PpsError::NotFound));
                    return;
                };
                // Only the owner writes the picture (a copy only read has nothing unstored).
                if let Some(owner) = loaded.owning.moved_to(self.shared.config.node()) {
                    let _ = reply.send(Err(PpsError::Moved { owner }));
                    return;
                }
                let waiter = DurableWaiter {
                    target: loaded.received_seq,
                    kind: DurableKind::Store,
                };
                self.durable_waiters.push(waiter, reply);
            }
        }
    }

    /// A joiner or a sequencer asked for the picture (creating it at `create` if it exists
    /// nowhere): it is in use, and if it is not loaded, the load should not wait for the backoff
    /// of one retried for batches. `Err` when the size is out of bounds.
    fn asked(&mut self, create: Option<(u32, u32)>) -> Result<(), PpsError> {
        if let Some((width, height)) = create {
            self.check_size(width, height)?;
        }
        self.activity += 1;
        self.unload_wanted = false;
        if let Picture::Unloaded(unloaded) = &mut self.picture {
            unloaded.load_retry_at = None;
            if let Some(size) = create {
                unloaded.create_size.get_or_insert(size);
            }
        }
        Ok(())
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

    /// The picture is in memory: check the batches that waited for it, then the releases
    /// (one beyond what it holds now is a gap).
    fn open(&mut self, mut loaded: Loaded) {
        if let Some(raster) = &loaded.raster {
            let bytes = u64::from(raster.width()) * u64::from(raster.height()) * 4;
            loaded.charge = Some(Charge::new(&self.shared.loaded_bytes, bytes));
        }
        if let Picture::Unloaded(unloaded) = &mut self.picture {
            // Batches that came before the load were sent under a lease granted before it:
            // refused (`NotHolder`), their sender acquires again.
            for (_, reply) in unloaded.unchecked.take_all() {
                let _ = reply.send(Err(loaded.not_holder()));
            }
        }
        let received = loaded.received_seq;
        self.picture = Picture::Loaded(Box::new(loaded));
        self.durable_waiters.reply_where(
            |w| matches!(w.kind, DurableKind::Release { .. }) && w.target > received,
            |w| {
                Err(PpsError::Gap {
                    have: received,
                    first_seq: w.target,
                })
            },
        );
    }

    /// Drops the picture from memory and fails every waiter; the next request reloads it.
    fn lose(&mut self, reason: &str) {
        let error = PpsError::Unavailable(reason.to_string());
        self.snapshot_waiters.reply_all(|_| Err(error.clone()));
        self.durable_waiters.reply_all(|_| Err(error.clone()));
        self.acquirers.reply_all(|_| Err(error.clone()));
        if let Some(loaded) = self.picture.loaded_mut() {
            for (_, reply) in loaded.wal_waiting.drain(..) {
                let _ = reply.send(Err(error.clone()));
            }
        }
        // The seqs, the queue, the encoding and the version go with the loaded state. A write
        // in flight finishes on its own; its result no longer concerns this copy.
        let config = &self.shared.config;
        let unloaded = Unloaded::new(Backoff::new(config.min_backoff, config.max_backoff));
        if let Picture::Unloaded(mut lost) =
            std::mem::replace(&mut self.picture, Picture::Unloaded(unloaded))
        {
            lost.unchecked.reply_all(|_| Err(error.clone()));
        }
    }
}

/// When to retry after a failure: after `backoff`'s next delay from now.
fn retry_after(backoff: &mut Backoff) -> Instant {
    Instant::now() + backoff.next_delay()
}
