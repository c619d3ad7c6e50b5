//! One picture's sequencer: an actor task that owns the picture's room state.
//!
//! It assigns `seq`, appends every update to the *pending log* (the updates the picture
//! service has not yet made durable), publishes each tick's updates as one shared `Updates`
//! frame, hands the log to the picture service in bounded batches, and joins clients.
//!
//! It never awaits network I/O: requests to the picture service are enqueued synchronously
//! (see [`PictureService`]) and their replies come back as [`Ctl`] messages; clients are fed
//! through their [`Outbox`] without waiting.
//!
//! # The join invariant
//!
//! A joiner gets PPS's snapshot at `S` and exactly the log entries `S+1 ..= k`, and is
//! subscribed from `k+1`, all in one step of this actor. For that the log must still hold
//! everything after `S`. The log is trimmed only up to seqs PPS reported durable, and a
//! snapshot always includes at least what PPS had made durable when it was taken; so a join
//! *pins* the trim point it saw when it started (the log is not trimmed past a pin) and asks
//! for a snapshot with `min_seq` = that pin. Hence `S >= pin` and the log holds `S+1 ..`.
//! Before the `Welcome` is queued, the updates of the current tick are published to the
//! clients already subscribed, so the joiner's `pending` and its first `Updates` neither
//! overlap nor leave a gap.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use primary_picture_service::PictureService;
use protocol::codec;
use protocol::pps::{
    ApplyBatch, PpsError, ReleaseRequest, Snapshot, SnapshotImage, SnapshotRequest,
};
use protocol::ServerMsg;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::config::{Config, SlowClientPolicy};
use crate::outbox::Outbox;
use crate::registry::Registry;
use crate::ws;

/// Control messages: joins, replies from the picture service, events, queries.
pub(crate) enum Ctl {
    Join(JoinRequest),
    SnapshotReady {
        join: u64,
        result: Result<Snapshot, PpsError>,
    },
    RetryJoin(u64),
    Accepted {
        result: Result<u64, PpsError>,
    },
    Released {
        last_seq: u64,
        result: Result<u64, PpsError>,
    },
    Flushed(u64),
    PpsReconnected,
    LastSeq(oneshot::Sender<u64>),
    Shutdown,
}

/// What a connected client's reader sends, in the order the client sent it.
pub(crate) enum Input {
    /// `op` is the op's bincode encoding, sliced out of the client's frame.
    Draw {
        client_id: u64,
        client_seq: u64,
        op: Bytes,
    },
    Leave {
        client_id: u64,
    },
}

/// What a joiner asked for in its upgrade request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Wants {
    /// The size to create the picture at if it does not exist.
    pub size: (u32, u32),
    /// `?snapshot=lz4`: a `WelcomeLz4` where the picture service has the LZ4 form at hand.
    pub lz4: bool,
}

pub(crate) struct JoinRequest {
    pub client_id: u64,
    pub outbox: Outbox,
    pub wants: Wants,
    /// Tells the reader it may start reading the client's messages.
    pub joined: oneshot::Sender<Result<(), ()>>,
}

/// Settings every room shares.
pub(crate) struct RoomSettings {
    pub tick: Duration,
    pub tick_per_client: Duration,
    pub tick_max: Duration,
    pub client_queue_bytes: usize,
    pub slow_client: SlowClientPolicy,
    pub max_resyncs_per_minute: u32,
    pub batch_updates: usize,
    pub inflight_batches: usize,
    pub join_timeout: Duration,
}

impl RoomSettings {
    /// The tick of a room with `clients` subscribers (see `Config::tick_per_client`).
    pub(crate) fn tick_for(&self, clients: usize) -> Duration {
        let scaled = self
            .tick_per_client
            .saturating_mul(u32::try_from(clients).unwrap_or(u32::MAX));
        self.tick.max(scaled.min(self.tick_max))
    }

    pub(crate) fn from_config(c: &Config) -> Self {
        Self {
            tick: c.tick,
            tick_per_client: c.tick_per_client,
            tick_max: c.tick_max.max(c.tick),
            client_queue_bytes: c.client_queue_bytes,
            slow_client: c.slow_client,
            max_resyncs_per_minute: c.max_resyncs_per_minute,
            batch_updates: c.pps_batch_updates.max(1),
            inflight_batches: c.pps_inflight_batches.max(1),
            join_timeout: c.join_timeout,
        }
    }
}

struct Client {
    outbox: Outbox,
    /// Asked for `WelcomeLz4` (resyncs too).
    lz4: bool,
    /// When this client was last resynced, for the resync budget.
    resyncs: VecDeque<Instant>,
}

struct Joining {
    client_id: u64,
    outbox: Outbox,
    wants: Wants,
    /// `None` for a resync of a client that is already reading.
    joined: Option<oneshot::Sender<Result<(), ()>>>,
    /// The trim point when the join started: the log keeps everything after it.
    pin: u64,
    started: Instant,
    resyncs: VecDeque<Instant>,
}

/// Picture dimensions and seq numbering, known once the first snapshot arrived.
#[derive(Clone, Copy)]
struct Opened {
    width: u32,
    height: u32,
}

pub(crate) struct Room {
    id: String,
    /// Identifies this incarnation in the registry (a picture can get a new room after the
    /// old one exited).
    instance: u64,
    pps: Arc<dyn PictureService>,
    settings: Arc<RoomSettings>,
    registry: Arc<Registry>,
    ctl_tx: mpsc::UnboundedSender<Ctl>,
    opened: Option<Opened>,
    /// The seq the next accepted draw gets.
    next_seq: u64,
    /// Sequenced updates `trimmed + 1 .. next_seq`, encoded (as in `Updates`).
    log: VecDeque<Bytes>,
    /// Every seq up to this one is durable: the log starts right after it.
    trimmed: u64,
    /// The highest seq PPS reported durable (trimming may lag behind it because of pins).
    flushed: u64,
    /// The highest seq handed to PPS.
    sent: u64,
    /// The highest seq PPS accepted.
    acked: u64,
    inflight: usize,
    /// After a PPS failure, no batch is sent before this.
    pps_retry_at: Option<Instant>,
    pps_backoff: Duration,
    /// A release request is out: `Some(last_seq)`.
    releasing: Option<u64>,
    /// The highest seq a release confirmed durable and dropped from PPS memory.
    released: Option<u64>,
    clients: BTreeMap<u64, Client>,
    joining: HashMap<u64, Joining>,
    next_join: u64,
    /// Updates sequenced in the current tick, not yet published.
    tick: Vec<Bytes>,
    publish_at: Option<Instant>,
    shutting_down: bool,
}

impl Room {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn spawn(
        id: String,
        instance: u64,
        pps: Arc<dyn PictureService>,
        settings: Arc<RoomSettings>,
        registry: Arc<Registry>,
        ctl_tx: mpsc::UnboundedSender<Ctl>,
        ctl_rx: mpsc::UnboundedReceiver<Ctl>,
        input_rx: mpsc::Receiver<Input>,
    ) {
        let room = Room {
            id,
            instance,
            pps,
            settings,
            registry,
            ctl_tx,
            opened: None,
            next_seq: 1,
            log: VecDeque::new(),
            trimmed: 0,
            flushed: 0,
            sent: 0,
            acked: 0,
            inflight: 0,
            pps_retry_at: None,
            pps_backoff: Duration::from_millis(100),
            releasing: None,
            released: None,
            clients: BTreeMap::new(),
            joining: HashMap::new(),
            next_join: 0,
            tick: Vec::new(),
            publish_at: None,
            shutting_down: false,
        };
        metrics::gauge!("bs_rooms").increment(1.0);
        tokio::spawn(room.run(ctl_rx, input_rx));
    }

    async fn run(
        mut self,
        mut ctl_rx: mpsc::UnboundedReceiver<Ctl>,
        mut input_rx: mpsc::Receiver<Input>,
    ) {
        tracing::debug!(picture = %self.id, "room started");
        loop {
            let publish_at = self.publish_at;
            let retry_at = self.pps_retry_at;
            tokio::select! {
                biased;
                Some(ctl) = ctl_rx.recv() => self.on_ctl(ctl),
                Some(input) = input_rx.recv() => self.on_input(input),
                _ = sleep_until(publish_at), if publish_at.is_some() => {}
                _ = sleep_until(retry_at), if retry_at.is_some() => self.pps_retry_at = None,
            }
            // Take whatever else is already waiting before publishing: one frame per turn.
            for _ in 0..4096 {
                match ctl_rx.try_recv() {
                    Ok(ctl) => {
                        self.on_ctl(ctl);
                        continue;
                    }
                    Err(_) => match input_rx.try_recv() {
                        Ok(input) => self.on_input(input),
                        Err(_) => break,
                    },
                }
            }
            if self.publish_at.is_some_and(|at| at <= Instant::now()) {
                self.publish();
            }
            // PPS gets a tick's updates together, right after the clients do: pumping on every
            // turn sent a batch per update or two (W1 N=256: ~2,900 batches a second, each a
            // task here and a job in PPS) for no gain, since clients never wait on PPS.
            if self.publish_at.is_none() || self.unsent() >= self.settings.batch_updates as u64 {
                self.pump_pps();
            }
            if self.idle()
                && self
                    .registry
                    .remove_if_idle(&self.id, self.instance, &ctl_rx, &input_rx)
            {
                break;
            }
        }
        metrics::gauge!("bs_rooms").decrement(1.0);
        metrics::gauge!("bs_pending_log_entries").decrement(self.log.len() as f64);
        tracing::debug!(picture = %self.id, last_seq = self.next_seq - 1, "room closed");
    }

    /// Nothing left to do here: no clients, nothing PPS does not have durably (or PPS was
    /// never reached and nobody waits).
    fn idle(&self) -> bool {
        if !self.clients.is_empty() || !self.joining.is_empty() {
            return false;
        }
        match self.opened {
            None => true,
            Some(_) => self.released.is_some_and(|r| r >= self.next_seq - 1),
        }
    }

    fn on_ctl(&mut self, ctl: Ctl) {
        match ctl {
            Ctl::Join(request) => self.on_join(request),
            Ctl::SnapshotReady { join, result } => self.on_snapshot(join, result),
            Ctl::RetryJoin(join) => self.request_snapshot(join),
            Ctl::Accepted { result } => self.on_accepted(result),
            Ctl::Released { last_seq, result } => self.on_released(last_seq, result),
            Ctl::Flushed(seq) => {
                self.flushed = self.flushed.max(seq);
                self.trim();
            }
            Ctl::PpsReconnected => {
                // PPS may have lost what it had not flushed: replay everything we hold.
                tracing::info!(picture = %self.id, from = self.trimmed + 1, "replaying pending log to the picture service");
                self.sent = self.trimmed;
                self.acked = self.trimmed;
                self.pps_retry_at = None;
                self.released = None;
            }
            Ctl::LastSeq(reply) => {
                let last = if self.opened.is_some() {
                    self.next_seq - 1
                } else {
                    0
                };
                let _ = reply.send(last);
            }
            Ctl::Shutdown => {
                self.shutting_down = true;
                self.publish();
                for (_, client) in std::mem::take(&mut self.clients) {
                    client.outbox.close(1012, "service restart");
                }
                for (_, joining) in self.joining.drain() {
                    joining.outbox.close(1012, "service restart");
                    if let Some(joined) = joining.joined {
                        let _ = joined.send(Err(()));
                    }
                }
            }
        }
    }

    fn on_input(&mut self, input: Input) {
        match input {
            Input::Draw {
                client_id,
                client_seq,
                op,
            } => {
                if self.opened.is_none() || !self.clients.contains_key(&client_id) {
                    // The client is being resynced: tell it this op was not taken (it will
                    // get a fresh Welcome), so it never waits for an echo that cannot come.
                    metrics::counter!("bs_draws_dropped").increment(1);
                    if let Some(joining) = self.joining.values().find(|j| j.client_id == client_id)
                    {
                        let rejected = ServerMsg::Rejected {
                            client_seq,
                            reason: "not applied: the connection is being resynced".into(),
                        };
                        joining.outbox.send_direct(&codec::encode(&rejected));
                    }
                    return;
                }
                let seq = self.next_seq;
                self.next_seq += 1;
                let mut entry = BytesMut::with_capacity(24 + op.len());
                entry.put_u64_le(seq);
                entry.put_u64_le(client_id);
                entry.put_u64_le(client_seq);
                entry.put_slice(&op);
                let entry = entry.freeze();
                self.log.push_back(entry.clone());
                metrics::gauge!("bs_pending_log_entries").increment(1.0);
                self.tick.push(entry);
                if self.publish_at.is_none() {
                    let tick = self.settings.tick_for(self.clients.len());
                    self.publish_at = Some(Instant::now() + tick);
                }
                self.released = None;
                metrics::counter!("bs_updates_sequenced").increment(1);
            }
            Input::Leave { client_id } => {
                let was_client = self.clients.remove(&client_id).is_some();
                let before = self.joining.len();
                self.joining.retain(|_, j| j.client_id != client_id);
                if was_client || before != self.joining.len() {
                    self.trim();
                    self.broadcast_presence();
                }
            }
        }
    }

    /// Sends the current tick's updates to every subscribed client as one shared frame.
    fn publish(&mut self) {
        self.publish_at = None;
        if self.tick.is_empty() {
            return;
        }
        let frame = ws::binary_frame_in(codec::updates_frame_after(ws::HEADROOM, self.tick.iter()));
        self.tick.clear();
        self.deliver_all(&frame);
    }

    /// Sends `frame` (framed once) to every subscribed client: the same bytes for all.
    fn deliver_all(&mut self, frame: &Bytes) {
        let mut slow = Vec::new();
        for (&id, client) in &self.clients {
            if client.outbox.queued_bytes() + frame.len() > self.settings.client_queue_bytes {
                slow.push(id);
            } else {
                client.outbox.send(frame.clone());
            }
        }
        metrics::counter!("bs_frames_sent").increment((self.clients.len() - slow.len()) as u64);
        for id in slow {
            self.on_slow_client(id);
        }
    }

    fn on_slow_client(&mut self, id: u64) {
        let Some(mut client) = self.clients.remove(&id) else {
            return;
        };
        let now = Instant::now();
        while client
            .resyncs
            .front()
            .is_some_and(|t| now.duration_since(*t) > Duration::from_secs(60))
        {
            client.resyncs.pop_front();
        }
        let budget_left = (client.resyncs.len() as u32) < self.settings.max_resyncs_per_minute;
        if self.settings.slow_client == SlowClientPolicy::Disconnect || !budget_left {
            tracing::info!(picture = %self.id, client = id, "disconnecting a client that cannot keep up");
            metrics::counter!("bs_slow_client_disconnects").increment(1);
            client.outbox.start_new_generation();
            client.outbox.close(1013, "cannot keep up; try again later");
        } else {
            tracing::info!(picture = %self.id, client = id, "resyncing a client that cannot keep up");
            metrics::counter!("bs_slow_client_resyncs").increment(1);
            client.outbox.start_new_generation();
            client.resyncs.push_back(now);
            let wants = Wants {
                size: self.opened.map(|o| (o.width, o.height)).unwrap_or((1, 1)),
                lz4: client.lz4,
            };
            self.start_join(id, client.outbox, wants, None, client.resyncs);
        }
        self.broadcast_presence();
    }

    fn on_join(&mut self, request: JoinRequest) {
        if self.shutting_down {
            request.outbox.close(1012, "service restart");
            let _ = request.joined.send(Err(()));
            return;
        }
        self.start_join(
            request.client_id,
            request.outbox,
            request.wants,
            Some(request.joined),
            VecDeque::new(),
        );
    }

    fn start_join(
        &mut self,
        client_id: u64,
        outbox: Outbox,
        wants: Wants,
        joined: Option<oneshot::Sender<Result<(), ()>>>,
        resyncs: VecDeque<Instant>,
    ) {
        let join = self.next_join;
        self.next_join += 1;
        self.joining.insert(
            join,
            Joining {
                client_id,
                outbox,
                wants,
                joined,
                pin: self.trimmed,
                started: Instant::now(),
                resyncs,
            },
        );
        self.request_snapshot(join);
    }

    fn request_snapshot(&mut self, join: u64) {
        let Some(joining) = self.joining.get(&join) else {
            return;
        };
        let request = SnapshotRequest {
            picture: self.id.clone(),
            create: Some(
                self.opened
                    .map(|o| (o.width, o.height))
                    .unwrap_or(joining.wants.size),
            ),
            min_seq: joining.pin,
            lz4: joining.wants.lz4,
        };
        let reply = self.pps.snapshot(request);
        let ctl = self.ctl_tx.clone();
        tokio::spawn(async move {
            let result = reply.await;
            let _ = ctl.send(Ctl::SnapshotReady { join, result });
        });
    }

    fn on_snapshot(&mut self, join: u64, result: Result<Snapshot, PpsError>) {
        if !self.joining.contains_key(&join) {
            return; // the joiner left meanwhile
        }
        let snapshot = match result {
            Ok(snapshot) => snapshot,
            Err(error) => return self.join_failed(join, error),
        };
        let opened = match self.opened {
            Some(opened) => opened,
            None => {
                // First contact with PPS: numbering continues from the picture's seq.
                let opened = Opened {
                    width: snapshot.width,
                    height: snapshot.height,
                };
                self.opened = Some(opened);
                self.next_seq = snapshot.seq + 1;
                self.trimmed = snapshot.seq;
                self.flushed = snapshot.seq;
                self.sent = snapshot.seq;
                self.acked = snapshot.seq;
                for j in self.joining.values_mut() {
                    j.pin = snapshot.seq;
                }
                tracing::info!(picture = %self.id, seq = snapshot.seq, width = snapshot.width, height = snapshot.height, "picture opened");
                opened
            }
        };
        let last = self.next_seq - 1;
        if snapshot.seq < self.trimmed || snapshot.seq > last {
            // Cannot happen while PPS keeps its promises (see the module doc); never send a
            // gap or an overlap: try again.
            tracing::error!(picture = %self.id, snapshot_seq = snapshot.seq, log_from = self.trimmed + 1, last, "snapshot does not fit the pending log; retrying");
            return self.join_failed(join, PpsError::Unavailable("snapshot out of range".into()));
        }
        let Some(joining) = self.joining.remove(&join) else {
            return;
        };
        // Publish the tick first so that `pending` and the first `Updates` meet exactly.
        self.publish();
        let from = (snapshot.seq - self.trimmed) as usize;
        // PPS gives the LZ4 form only to requests that asked for it (`joining.wants.lz4`).
        metrics::counter!("bs_welcomes", "snapshot" => match snapshot.image {
            SnapshotImage::Png(_) => "png",
            SnapshotImage::Lz4(_) => "lz4",
        })
        .increment(1);
        let frame = ws::binary_frame_in(codec::welcome_frame_after(
            ws::HEADROOM,
            joining.client_id,
            opened.width,
            opened.height,
            snapshot.seq,
            &snapshot.image,
            self.log.range(from..),
        ));
        metrics::histogram!("bs_join_seconds").record(joining.started.elapsed().as_secs_f64());
        joining.outbox.send_welcome(frame);
        self.clients.insert(
            joining.client_id,
            Client {
                outbox: joining.outbox,
                lz4: joining.wants.lz4,
                resyncs: joining.resyncs,
            },
        );
        if let Some(joined) = joining.joined {
            let _ = joined.send(Ok(()));
        }
        self.trim();
        self.broadcast_presence();
    }

    fn join_failed(&mut self, join: u64, error: PpsError) {
        let Some(joining) = self.joining.get(&join) else {
            return;
        };
        let retryable = matches!(error, PpsError::Unavailable(_) | PpsError::Storage(_));
        if retryable && joining.started.elapsed() < self.settings.join_timeout {
            tracing::warn!(picture = %self.id, %error, "snapshot for a joining client failed; retrying");
            let ctl = self.ctl_tx.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(250)).await;
                let _ = ctl.send(Ctl::RetryJoin(join));
            });
            return;
        }
        tracing::warn!(picture = %self.id, %error, "a client could not join");
        metrics::counter!("bs_join_failures").increment(1);
        if let Some(joining) = self.joining.remove(&join) {
            joining
                .outbox
                .error_and_close(503, &format!("picture unavailable: {error}"), 1013);
            if let Some(joined) = joining.joined {
                let _ = joined.send(Err(()));
            }
        }
        self.trim();
    }

    fn broadcast_presence(&mut self) {
        let message = codec::encode(&ServerMsg::Presence {
            clients: self.clients.len() as u32,
        });
        self.deliver_all(&ws::binary_frame(&message));
    }

    /// Drops log entries PPS made durable, but none that a join in progress may still need.
    fn trim(&mut self) {
        let pinned = self.joining.values().map(|j| j.pin).min();
        let target = pinned.map_or(self.flushed, |p| p.min(self.flushed));
        let target = target
            .min(self.sent.max(self.trimmed))
            .min(self.next_seq - 1);
        let before = self.log.len();
        while self.trimmed < target {
            self.log.pop_front();
            self.trimmed += 1;
        }
        metrics::gauge!("bs_pending_log_entries").decrement((before - self.log.len()) as f64);
    }

    /// Sequenced updates not yet handed to PPS.
    fn unsent(&self) -> u64 {
        self.next_seq - 1 - self.sent
    }

    /// Hands unsent updates to PPS (bounded in flight), and asks for a release when the last
    /// client has gone.
    fn pump_pps(&mut self) {
        let Some(opened) = self.opened else {
            return;
        };
        if self.pps_retry_at.is_some() {
            return;
        }
        let last = self.next_seq - 1;
        while self.inflight < self.settings.inflight_batches && self.sent < last {
            let first = self.sent + 1;
            let end = last.min(self.sent + self.settings.batch_updates as u64);
            let from = (first - self.trimmed - 1) as usize;
            let to = (end - self.trimmed) as usize;
            let batch = ApplyBatch {
                picture: self.id.clone(),
                width: opened.width,
                height: opened.height,
                first_seq: first,
                last_seq: end,
                updates: codec::sequenced_vec(self.log.range(from..to)),
            };
            let reply = self.pps.apply(batch);
            self.inflight += 1;
            self.sent = end;
            let ctl = self.ctl_tx.clone();
            tokio::spawn(async move {
                let result = reply.await;
                let _ = ctl.send(Ctl::Accepted { result });
            });
        }
        let nobody = self.clients.is_empty() && self.joining.is_empty();
        if nobody
            && self.releasing.is_none()
            && self.inflight == 0
            && self.sent == last
            && self.acked >= last
            && self.released.is_none_or(|r| r < last)
        {
            self.releasing = Some(last);
            let reply = self.pps.release(ReleaseRequest {
                picture: self.id.clone(),
                last_seq: last,
            });
            let ctl = self.ctl_tx.clone();
            tokio::spawn(async move {
                let result = reply.await;
                let _ = ctl.send(Ctl::Released {
                    last_seq: last,
                    result,
                });
            });
        }
    }

    fn on_accepted(&mut self, result: Result<u64, PpsError>) {
        self.inflight = self.inflight.saturating_sub(1);
        match result {
            Ok(have) => {
                self.acked = self.acked.max(have);
                self.pps_backoff = Duration::from_millis(100);
            }
            Err(PpsError::Gap { have, first_seq }) => {
                if have < self.trimmed {
                    tracing::error!(picture = %self.id, have, log_from = self.trimmed + 1, "the picture service lost updates that were reported durable");
                }
                tracing::warn!(picture = %self.id, have, first_seq, "picture service asks to resend");
                self.sent = have.clamp(self.trimmed, self.sent);
                self.acked = self.acked.min(self.sent);
            }
            Err(error) => {
                tracing::warn!(picture = %self.id, %error, backoff_ms = self.pps_backoff.as_millis() as u64, "sending updates to the picture service failed; will resend");
                self.sent = self.acked.max(self.trimmed).min(self.sent);
                self.back_off();
            }
        }
    }

    fn on_released(&mut self, last_seq: u64, result: Result<u64, PpsError>) {
        self.releasing = None;
        match result {
            Ok(flushed) => {
                debug_assert!(
                    flushed >= last_seq,
                    "a release flushes at least what it was asked"
                );
                self.flushed = self.flushed.max(flushed);
                self.released = Some(flushed);
                self.trim();
                tracing::info!(picture = %self.id, flushed, "picture released to storage");
            }
            Err(PpsError::Gap { have, .. }) => {
                // PPS lost updates it had not flushed (a restart we have not heard of yet):
                // resend them, then release again.
                tracing::warn!(picture = %self.id, have, "release found the picture service behind; resending");
                self.sent = have.clamp(self.trimmed, self.sent);
                self.acked = self.acked.min(self.sent);
            }
            Err(error) => {
                tracing::warn!(picture = %self.id, %error, "release failed; will retry");
                self.back_off();
            }
        }
    }

    fn back_off(&mut self) {
        self.pps_retry_at = Some(Instant::now() + self.pps_backoff);
        self.pps_backoff = (self.pps_backoff * 2).min(Duration::from_secs(2));
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(args: &[&str]) -> RoomSettings {
        use clap::Parser;
        let mut argv = vec!["broadcast-service"];
        argv.extend_from_slice(args);
        RoomSettings::from_config(&Config::parse_from(argv))
    }

    #[test]
    fn tick_grows_with_the_room_up_to_its_cap() {
        let ms = Duration::from_millis;
        let scaled = settings(&[
            "--tick",
            "5ms",
            "--tick-per-client",
            "40us",
            "--tick-max",
            "10ms",
        ]);
        assert_eq!(scaled.tick_for(0), ms(5));
        assert_eq!(scaled.tick_for(64), ms(5));
        assert_eq!(scaled.tick_for(200), ms(8));
        assert_eq!(scaled.tick_for(250), ms(10));
        assert_eq!(scaled.tick_for(100_000), ms(10));
        let fixed = settings(&["--tick", "5ms", "--tick-per-client", "0s"]);
        assert_eq!(fixed.tick_for(100_000), ms(5));
        // A cap below the base tick never shortens it.
        let capped = settings(&[
            "--tick",
            "5ms",
            "--tick-per-client",
            "1ms",
            "--tick-max",
            "1ms",
        ]);
        assert_eq!(capped.tick_for(1000), ms(5));
        // The defaults: 5 ms up to 119 clients, 42 µs a client above, at most 11 ms.
        let defaults = settings(&[]);
        assert_eq!(defaults.tick_for(119), ms(5));
        assert_eq!(defaults.tick_for(256), Duration::from_micros(10_752));
        assert_eq!(defaults.tick_for(1000), ms(11));
    }
}
