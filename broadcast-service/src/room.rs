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
//! subscribed from `k+1`, all in one step of this actor. The log itself ([`PendingLog`]) keeps
//! the entries a join may need (it is pinned while the join waits for its snapshot) and says
//! which ones a `Welcome` at `S` carries. Before the `Welcome` is queued, the updates of the
//! current tick are published to the clients already subscribed, so the joiner's `pending` and
//! its first `Updates` neither overlap nor leave a gap.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
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
use crate::pending::PendingLog;
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
    /// The sequenced updates the picture service has not made durable, and where the
    /// clients, the joiners and the picture service stand in them.
    log: PendingLog,
    /// Entries of `log` counted in the `bs_pending_log_entries` gauge.
    counted_entries: usize,
    /// After a PPS failure, no batch is sent before this.
    pps_retry_at: Option<Instant>,
    pps_backoff: Duration,
    clients: BTreeMap<u64, Client>,
    /// Joins waiting for their snapshot, by join id (the log's pins have the same keys).
    joining: HashMap<u64, Joining>,
    next_join: u64,
    /// When the current tick's updates are published.
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
            log: PendingLog::new(),
            counted_entries: 0,
            pps_retry_at: None,
            pps_backoff: Duration::from_millis(100),
            clients: BTreeMap::new(),
            joining: HashMap::new(),
            next_join: 0,
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
            if self.publish_at.is_none() || self.log.unsent() >= self.settings.batch_updates as u64
            {
                self.pump_pps();
            }
            self.count_entries();
            // Test builds check the log's invariants at every turn.
            debug_assert_eq!(self.log.check(), Ok(()), "picture {}", self.id);
            if self.idle()
                && self
                    .registry
                    .remove_if_idle(&self.id, self.instance, &ctl_rx, &input_rx)
            {
                break;
            }
        }
        metrics::gauge!("bs_rooms").decrement(1.0);
        metrics::gauge!("bs_pending_log_entries").decrement(self.counted_entries as f64);
        tracing::debug!(picture = %self.id, last_seq = self.log.last(), "room closed");
    }

    /// Brings the `bs_pending_log_entries` gauge up to date with the log.
    fn count_entries(&mut self) {
        let len = self.log.len();
        if len != self.counted_entries {
            metrics::gauge!("bs_pending_log_entries")
                .increment(len as f64 - self.counted_entries as f64);
            self.counted_entries = len;
        }
    }

    /// Nothing left to do here: no clients, nothing PPS does not have durably (or PPS was
    /// never reached and nobody waits).
    fn idle(&self) -> bool {
        if !self.clients.is_empty() || !self.joining.is_empty() {
            return false;
        }
        match self.opened {
            None => true,
            Some(_) => self.log.is_released(),
        }
    }

    fn on_ctl(&mut self, ctl: Ctl) {
        match ctl {
            Ctl::Join(request) => self.on_join(request),
            Ctl::SnapshotReady { join, result } => self.on_snapshot(join, result),
            Ctl::RetryJoin(join) => self.request_snapshot(join),
            Ctl::Accepted { result } => self.on_accepted(result),
            Ctl::Released { last_seq, result } => self.on_released(last_seq, result),
            Ctl::Flushed(seq) => self.log.flushed(seq),
            Ctl::PpsReconnected => {
                // PPS may have lost what it had not flushed: replay everything we hold.
                tracing::info!(picture = %self.id, entries = self.log.len(), "replaying pending log to the picture service");
                self.log.replay();
                self.pps_retry_at = None;
            }
            Ctl::LastSeq(reply) => {
                let last = if self.opened.is_some() {
                    self.log.last()
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
                for (join, joining) in std::mem::take(&mut self.joining) {
                    self.log.unpin(join);
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
                self.log.append(client_id, client_seq, &op);
                if self.publish_at.is_none() {
                    let tick = self.settings.tick_for(self.clients.len());
                    self.publish_at = Some(Instant::now() + tick);
                }
                metrics::counter!("bs_updates_sequenced").increment(1);
            }
            Input::Leave { client_id } => {
                let was_client = self.clients.remove(&client_id).is_some();
                let left: Vec<u64> = self
                    .joining
                    .iter()
                    .filter(|(_, j)| j.client_id == client_id)
                    .map(|(&join, _)| join)
                    .collect();
                for join in &left {
                    self.joining.remove(join);
                    self.log.unpin(*join);
                }
                if was_client || !left.is_empty() {
                    self.broadcast_presence();
                }
            }
        }
    }

    /// Sends the current tick's updates to every subscribed client as one shared frame.
    fn publish(&mut self) {
        self.publish_at = None;
        if !self.log.has_unpublished() {
            return;
        }
        let frame = ws::binary_frame_in(codec::updates_frame_after(
            ws::HEADROOM,
            self.log.unpublished(),
        ));
        self.log.mark_published();
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
        self.log.pin(join);
        self.joining.insert(
            join,
            Joining {
                client_id,
                outbox,
                wants,
                joined,
                started: Instant::now(),
                resyncs,
            },
        );
        self.request_snapshot(join);
    }

    fn request_snapshot(&mut self, join: u64) {
        let (Some(joining), Some(pin)) = (self.joining.get(&join), self.log.pin_of(join)) else {
            return;
        };
        let request = SnapshotRequest {
            picture: self.id.clone(),
            create: Some(
                self.opened
                    .map(|o| (o.width, o.height))
                    .unwrap_or(joining.wants.size),
            ),
            min_seq: pin,
            lz4: joining.wants.lz4,
        };
        let reply = self.pps.snapshot(request);
        self.post_back(reply, move |result| Ctl::SnapshotReady { join, result });
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
                self.log.open_at(snapshot.seq);
                tracing::info!(picture = %self.id, seq = snapshot.seq, width = snapshot.width, height = snapshot.height, "picture opened");
                opened
            }
        };
        // Publish the tick first so that `pending` and the first `Updates` meet exactly.
        self.publish();
        let pending = match self.log.welcome(snapshot.seq) {
            Ok(pending) => pending,
            Err(misfit) => {
                // Cannot happen while PPS keeps its promises (see the module doc); never send
                // a gap or an overlap: try again.
                tracing::error!(picture = %self.id, ?misfit, "snapshot does not fit the pending log; retrying");
                return self
                    .join_failed(join, PpsError::Unavailable("snapshot out of range".into()));
            }
        };
        let Some(joining) = self.joining.remove(&join) else {
            return;
        };
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
            pending,
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
        self.log.unpin(join);
        self.broadcast_presence();
    }

    fn join_failed(&mut self, join: u64, error: PpsError) {
        let Some(joining) = self.joining.get(&join) else {
            return;
        };
        let retryable = matches!(error, PpsError::Unavailable(_) | PpsError::Storage(_));
        if retryable && joining.started.elapsed() < self.settings.join_timeout {
            tracing::warn!(picture = %self.id, %error, "snapshot for a joining client failed; retrying");
            self.post_back(tokio::time::sleep(Duration::from_millis(250)), move |()| {
                Ctl::RetryJoin(join)
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
        self.log.unpin(join);
    }

    fn broadcast_presence(&mut self) {
        let message = codec::encode(&ServerMsg::Presence {
            clients: self.clients.len() as u32,
        });
        self.deliver_all(&ws::binary_frame(&message));
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
        let (max_updates, max_inflight) =
            (self.settings.batch_updates, self.settings.inflight_batches);
        while let Some(batch) = self.log.next_batch(max_updates, max_inflight) {
            let reply = self.pps.apply(ApplyBatch {
                picture: self.id.clone(),
                width: opened.width,
                height: opened.height,
                first_seq: batch.first,
                last_seq: batch.last,
                updates: batch.updates,
            });
            self.post_back(reply, |result| Ctl::Accepted { result });
        }
        let nobody = self.clients.is_empty() && self.joining.is_empty();
        if let Some(last) = self.log.start_release(nobody) {
            let reply = self.pps.release(ReleaseRequest {
                picture: self.id.clone(),
                last_seq: last,
            });
            self.post_back(reply, move |result| Ctl::Released {
                last_seq: last,
                result,
            });
        }
    }

    /// Awaits `reply` on its own task and posts what it resolves to back to this room's
    /// mailbox, as `ctl(result)`: the room itself never awaits.
    fn post_back<T: Send + 'static>(
        &self,
        reply: impl std::future::Future<Output = T> + Send + 'static,
        ctl: impl FnOnce(T) -> Ctl + Send + 'static,
    ) {
        let mailbox = self.ctl_tx.clone();
        tokio::spawn(async move {
            let result = reply.await;
            let _ = mailbox.send(ctl(result));
        });
    }

    fn on_accepted(&mut self, result: Result<u64, PpsError>) {
        match result {
            Ok(have) => {
                self.log.accepted(have);
                self.pps_backoff = Duration::from_millis(100);
            }
            Err(PpsError::Gap { have, first_seq }) => {
                if have < self.log.trimmed() {
                    tracing::error!(picture = %self.id, have, log_from = self.log.trimmed() + 1, "the picture service lost updates that were reported durable");
                }
                tracing::warn!(picture = %self.id, have, first_seq, "picture service asks to resend");
                self.log.gap(have);
            }
            Err(error) => {
                tracing::warn!(picture = %self.id, %error, backoff_ms = self.pps_backoff.as_millis() as u64, "sending updates to the picture service failed; will resend");
                self.log.failed();
                self.back_off();
            }
        }
    }

    fn on_released(&mut self, last_seq: u64, result: Result<u64, PpsError>) {
        match result {
            Ok(flushed) => {
                debug_assert!(
                    flushed >= last_seq,
                    "a release flushes at least what it was asked"
                );
                self.log.released(flushed);
                tracing::info!(picture = %self.id, flushed, "picture released to storage");
            }
            Err(PpsError::Gap { have, .. }) => {
                // PPS lost updates it had not flushed (a restart we have not heard of yet):
                // resend them, then release again.
                tracing::warn!(picture = %self.id, have, "release found the picture service behind; resending");
                self.log.release_gap(have);
            }
            Err(error) => {
                tracing::warn!(picture = %self.id, %error, "release failed; will retry");
                self.log.release_failed();
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
