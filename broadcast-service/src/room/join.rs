//! Joins: a client (or a resync of one) gets a `Welcome` with the owner's snapshot at `S` and
//! exactly the published updates after `S`, and is subscribed to what is published next; a
//! relay of another broadcast service gets the same without the snapshot. A client resuming
//! after `SEQ` (PROTOCOL.md §11) gets no snapshot either when the log still holds every
//! published update after `SEQ`. A session's new connection replaces its old one.
//!
//! Touches the joiners, the clients and relays it subscribes, and the log's pins; asks the
//! picture service for snapshots.

use std::collections::VecDeque;
use std::time::Duration;

use bytes::Bytes;
use protocol::backoff::Backoff;
use protocol::codec;
use protocol::pps::{PpsError, Snapshot, SnapshotImage, SnapshotRequest};
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::{Client, Ctl, Downstream, JoinRequest, Joining, RelayJoin, Role, Room, Subscriber};
use crate::pending::{Entries, Misfit};
use crate::ws;

/// Close code sent to a session's connection that a newer connection of the session replaced
/// (PROTOCOL.md §11): the client should not reconnect from it.
pub(crate) const REPLACED_CLOSE: u16 = 4001;

/// Where a `Welcome`'s picture comes from.
enum Start {
    /// The picture service's snapshot.
    Snapshot(Snapshot),
    /// None: the client has the picture up to this seq (`?since=`), and the log holds every
    /// published update after it.
    Resumed(u64),
}

impl Room {
    pub(super) fn on_join(&mut self, request: JoinRequest) {
        if self.shutting_down {
            request.outbox.close(1012, "service restart");
            let _ = request.joined.send(Err(()));
            return;
        }
        if !self.make_room_for(&request) {
            return;
        }
        self.start_join(
            Subscriber {
                client_id: request.client_id,
                conn: request.conn,
                outbox: request.outbox,
                wants: request.wants,
                durable_told: 0,
            },
            Some(request.joined),
            VecDeque::new(),
        );
        if let Role::Acquiring { in_flight: None } = self.role {
            if self.retry_at.is_none() {
                self.acquire();
            }
        }
    }

    /// A joiner's id must be free: a session's older connection (joined or joining) is closed
    /// and replaced; any other holder of the id keeps it and the joiner is refused. `false`:
    /// refused.
    fn make_room_for(&mut self, request: &JoinRequest) -> bool {
        let id = request.client_id;
        let held_by_client = self.clients.get(&id).map(|c| c.session);
        let held_by_joiner = self
            .joining
            .values()
            .find(|j| j.client_id == id)
            .map(|j| j.wants.session);
        let Some(old_is_session) = held_by_client.or(held_by_joiner) else {
            return true;
        };
        if !(request.wants.session && old_is_session) {
            // A session key equal to another client's id (or, by chance, the other way round).
            tracing::info!(picture = %self.id, client = id, "client id in use; refusing a joiner");
            let message = if request.wants.session {
                "session key in use by another client"
            } else {
                "client id in use; try again"
            };
            request.outbox.error_and_close(409, message, 1008);
            return false;
        }
        tracing::debug!(picture = %self.id, session = id, "a session's new connection replaces its old one");
        metrics::counter!("bs_sessions_replaced_total").increment(1);
        let reason = "replaced by a newer connection of this session";
        if let Some(old) = self.clients.remove(&id) {
            old.outbox.start_new_generation();
            old.outbox.close(REPLACED_CLOSE, reason);
        }
        let joins: Vec<u64> = self
            .joining
            .iter()
            .filter(|(_, j)| j.client_id == id)
            .map(|(&join, _)| join)
            .collect();
        for join in joins {
            if let Some(old) = self.joining.remove(&join) {
                old.outbox.close(REPLACED_CLOSE, reason);
                if let Some(joined) = old.joined {
                    let _ = joined.send(Err(()));
                }
            }
            self.log.unpin(join);
        }
        // Its Presence is sent when the new one joins.
        true
    }

    pub(super) fn start_join(
        &mut self,
        subscriber: Subscriber,
        joined: Option<oneshot::Sender<Result<(u32, u32), ()>>>,
        resyncs: VecDeque<Instant>,
    ) {
        let join = self.next_join;
        self.next_join += 1;
        self.log.pin(join);
        let Subscriber {
            client_id,
            conn,
            outbox,
            wants,
            durable_told,
        } = subscriber;
        self.joining.insert(
            join,
            Joining {
                client_id,
                conn,
                outbox,
                wants,
                durable_told,
                resume_refused: false,
                joined,
                started: Instant::now(),
                resyncs,
                asked: false,
                ready: None,
                // From 100 ms, doubling to 1 s (give or take a quarter): a picture service
                // coming back is asked soon, and many joiners do not ask in step.
                retry: Backoff::new(Duration::from_millis(100), Duration::from_secs(1)),
            },
        );
        self.request_snapshot(join);
    }

    /// Whether this room knows whom to ask for snapshots and where its log starts: it holds
    /// the lease, or its relay link has started.
    pub(super) fn serving(&self) -> bool {
        match self.role {
            Role::Sequencer { .. } => true,
            Role::Relay { started, .. } => started,
            Role::Acquiring { .. } => false,
        }
    }

    /// Asks for the snapshots of every join that waits for this room to be serving.
    pub(super) fn request_pending_snapshots(&mut self) {
        let waiting: Vec<u64> = self
            .joining
            .iter()
            .filter(|(_, j)| !j.asked)
            .map(|(&join, _)| join)
            .collect();
        for join in waiting {
            self.request_snapshot(join);
        }
    }

    pub(super) fn request_snapshot(&mut self, join: u64) {
        if !self.serving() {
            if let Some(joining) = self.joining.get_mut(&join) {
                joining.asked = false;
            }
            return;
        }
        if self.try_resume(join) {
            return;
        }
        let (Some(joining), Some(pin)) = (self.joining.get_mut(&join), self.log.pin_of(join))
        else {
            return;
        };
        joining.asked = true;
        let request = SnapshotRequest {
            picture: self.id.clone(),
            create: Some(
                self.opened
                    .map(|o| (o.width, o.height))
                    .unwrap_or(joining.wants.size),
            ),
            min_seq: pin,
            lz4: joining.wants.lz4,
            latest: false,
            force: self.force,
        };
        let reply = self.pps().snapshot(request);
        self.post_back(reply, move |result| Ctl::SnapshotReady { join, result });
    }

    pub(super) fn on_snapshot(&mut self, join: u64, result: Result<Snapshot, PpsError>) {
        let Some(joining) = self.joining.get_mut(&join) else {
            return; // the joiner left meanwhile
        };
        match result {
            Ok(snapshot) => {
                joining.ready = Some(snapshot);
                self.try_welcome(join);
            }
            Err(error) => self.join_failed(join, error),
        }
    }

    /// Welcomes the joins whose snapshots wait for the log, and the resuming joins the log
    /// has caught up with (called after each publish).
    pub(super) fn welcome_ready_joins(&mut self) {
        let ready: Vec<u64> = self
            .joining
            .iter()
            .filter(|(_, j)| j.ready.is_some() || (j.asked && j.wants.since.is_some()))
            .map(|(&join, _)| join)
            .collect();
        for join in ready {
            if !self.try_resume(join) {
                self.try_welcome(join);
            }
        }
    }

    /// Welcomes join `join` without a snapshot if it asked to resume after a seq (`since`)
    /// and the log holds every published update after it. A `since` behind the log gets the
    /// snapshot; one ahead of what was published waits for the snapshot, and is resumed if the
    /// log catches up first (a relay a little behind the broadcast service the client was on).
    ///
    /// A `since` beyond everything the sequencer sequenced means the picture went back (a
    /// crash lost updates the client was sent): that join never resumes (it would keep updates
    /// the picture no longer has). A relay cannot tell that from being behind.
    fn try_resume(&mut self, join: u64) -> bool {
        if !self.serving() || self.opened.is_none() {
            return false;
        }
        let Some(since) = self.joining.get(&join).and_then(|j| j.wants.since) else {
            return false;
        };
        if self.log.welcome(since).is_ok() {
            self.welcome(join, Start::Resumed(since));
            return true;
        }
        if matches!(self.role, Role::Sequencer { .. }) && since > self.log.last() {
            tracing::info!(picture = %self.id, since, last = self.log.last(), "a client resumes after a seq the picture does not have; full welcome");
            if let Some(joining) = self.joining.get_mut(&join) {
                joining.wants.since = None;
                joining.resume_refused = true;
            }
        }
        false
    }

    /// Welcomes join `join` if its snapshot fits the log: it is no older than the log and no
    /// newer than what was published (then it waits for the publish).
    fn try_welcome(&mut self, join: u64) {
        if self.opened.is_none() {
            return;
        }
        let Some(seq) = self
            .joining
            .get(&join)
            .and_then(|j| j.ready.as_ref())
            .map(|s| s.seq)
        else {
            return;
        };
        match self.log.welcome(seq) {
            Ok(_) => {}
            Err(Misfit::Ahead { .. }) => return,
            Err(misfit) => {
                // Cannot happen while PPS keeps its promises (see the module doc); never send
                // a gap or an overlap: try again.
                tracing::error!(picture = %self.id, ?misfit, "snapshot does not fit the pending log; retrying");
                if let Some(joining) = self.joining.get_mut(&join) {
                    joining.ready = None;
                }
                return self
                    .join_failed(join, PpsError::Unavailable("snapshot out of range".into()));
            }
        }
        let Some(snapshot) = self.joining.get_mut(&join).and_then(|j| j.ready.take()) else {
            return;
        };
        self.welcome(join, Start::Snapshot(snapshot));
    }

    /// Sends join `join` its `Welcome` from `start` (which fits the log: checked by the
    /// caller) and subscribes it; a session client is told its session's highest `client_seq`
    /// (at a relay, once the sequencer answers), a client that asked for `Durable` how far
    /// storage has what it was sent.
    fn welcome(&mut self, join: u64, start: Start) {
        let Some(opened) = self.opened else {
            return;
        };
        let at = match &start {
            Start::Snapshot(snapshot) => snapshot.seq,
            Start::Resumed(since) => *since,
        };
        let Ok(pending) = self.log.welcome(at) else {
            return;
        };
        let Some(joining) = self.joining.remove(&join) else {
            return;
        };
        let empty = SnapshotImage::Png(Bytes::new());
        let image = match &start {
            Start::Snapshot(snapshot) => &snapshot.image,
            // PROTOCOL.md §11: a `Welcome` (variant 0, whatever form was asked) at `since`
            // with an empty snapshot.
            Start::Resumed(_) => &empty,
        };
        // PPS gives the LZ4 form only to requests that asked for it (`joining.wants.lz4`).
        metrics::counter!("bs_welcomes_total", "snapshot" => match (&start, image) {
            (Start::Resumed(_), _) => "resumed",
            (_, SnapshotImage::Png(_)) => "png",
            (_, SnapshotImage::Lz4(_)) => "lz4",
        })
        .increment(1);
        if joining.wants.since.is_some() || joining.resume_refused {
            let outcome = match start {
                Start::Resumed(_) => "resumed",
                Start::Snapshot(_) => "full",
            };
            metrics::counter!("bs_resumes_total", "outcome" => outcome).increment(1);
        }
        let frame = welcome_frame(
            joining.client_id,
            opened.width,
            opened.height,
            at,
            image,
            pending,
        );
        metrics::histogram!("bs_join_seconds").record(joining.started.elapsed().as_secs_f64());
        joining.outbox.send_welcome(frame);
        let mut client = Client {
            outbox: joining.outbox,
            conn: joining.conn,
            lz4: joining.wants.lz4,
            durable: joining.wants.durable.then_some(joining.durable_told),
            session: joining.wants.session,
            session_answered: false,
            resyncs: joining.resyncs,
        };
        if client.session {
            self.answer_session(joining.client_id, &mut client);
        }
        self.tell_durable(&mut client);
        self.clients.insert(joining.client_id, client);
        if let Some(joined) = joining.joined {
            let _ = joined.send(Ok((opened.width, opened.height)));
        }
        self.log.unpin(join);
        self.clients_changed();
    }

    pub(super) fn join_failed(&mut self, join: u64, error: PpsError) {
        if let PpsError::Moved { .. } = error {
            // The picture went to another owner: this room finds it anew (see `sequencer.rs`).
            self.lost_owner(&error);
        }
        let Some(joining) = self.joining.get_mut(&join) else {
            return;
        };
        let retryable = matches!(
            error,
            PpsError::Unavailable(_) | PpsError::Storage(_) | PpsError::Moved { .. }
        );
        if retryable && joining.started.elapsed() < self.settings.join_timeout {
            tracing::warn!(picture = %self.id, %error, "snapshot for a joining client failed; retrying");
            let delay = joining.retry.next_delay();
            self.post_back(tokio::time::sleep(delay), move |()| Ctl::RetryJoin(join));
            return;
        }
        tracing::warn!(picture = %self.id, %error, "a client could not join");
        metrics::counter!("bs_join_failures_total").increment(1);
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

    /// A relay of another broadcast service links to this room: if it sequences the picture,
    /// the relay gets a `Welcome` without a snapshot with the published updates after its
    /// `since` (or none, at the published seq, when the log no longer holds them), then every
    /// frame the clients get.
    pub(super) fn on_relay_join(&mut self, request: RelayJoin) {
        let refuse = |request: RelayJoin, why: &str| {
            let _ = request.joined.send(Err(why.to_string()));
        };
        if self.shutting_down {
            return refuse(request, "this broadcast service is shutting down");
        }
        let (Role::Sequencer { .. }, Some(opened)) = (&self.role, self.opened) else {
            return refuse(
                request,
                "this broadcast service does not sequence the picture",
            );
        };
        self.publish();
        let published = self.log.published();
        let since = request
            .since
            .filter(|since| self.log.welcome(*since).is_ok())
            .unwrap_or(published);
        let Ok(pending) = self.log.welcome(since) else {
            return refuse(request, "the pending log does not fit");
        };
        let empty = SnapshotImage::Png(Bytes::new());
        let frame = welcome_frame(0, opened.width, opened.height, since, &empty, pending);
        request.outbox.send_welcome(frame);
        tracing::info!(picture = %self.id, relay = request.relay, since, asked = ?request.since, "relay linked");
        metrics::gauge!("bs_relays_downstream").increment(1.0);
        let mut downstream = Downstream {
            outbox: request.outbox,
            clients: 0,
            durable: 0,
        };
        // Relays get every `Durable` (for their clients that asked).
        self.tell_relay_durable(&mut downstream);
        self.relays.insert(request.relay, downstream);
        let _ = request.joined.send(Ok(()));
    }

    /// Answers the session clients welcomed here that wait for their `Session` message: from
    /// this room's memory if it sequences the picture, else by asking the sequencer (a relay
    /// whose link (re)started). Their draws were held by the client until then.
    pub(super) fn answer_waiting_sessions(&mut self) {
        let waiting: Vec<u64> = self
            .clients
            .iter()
            .filter(|(_, c)| c.session && !c.session_answered)
            .map(|(&id, _)| id)
            .collect();
        for id in waiting {
            if let Some(mut client) = self.clients.remove(&id) {
                self.answer_session(id, &mut client);
                self.clients.insert(id, client);
            }
        }
    }

    /// Awaits `reply` on its own task and posts what it resolves to back to this room's
    /// mailbox, as `ctl(result)`: the room itself never awaits.
    pub(super) fn post_back<T: Send + 'static>(
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
}

/// A `Welcome` frame (or `WelcomeLz4`, by the image's form), framed for the socket.
fn welcome_frame(
    client_id: u64,
    width: u32,
    height: u32,
    snapshot_seq: u64,
    image: &SnapshotImage,
    pending: Entries<'_>,
) -> Bytes {
    ws::binary_frame_in(codec::welcome_frame_after(
        ws::HEADROOM,
        client_id,
        width,
        height,
        snapshot_seq,
        image,
        pending,
    ))
}
