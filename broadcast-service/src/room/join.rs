//! Joins: a client (or a resync of one) gets a `Welcome` with the owner's snapshot at `S` and
//! exactly the published updates after `S`, and is subscribed to what is published next; a
//! relay of another broadcast service gets the same without the snapshot.
//!
//! Touches the joiners, the clients and relays it subscribes, and the log's pins; asks the
//! picture service for snapshots.

use std::collections::VecDeque;
use std::time::Duration;

use bytes::Bytes;
use protocol::codec;
use protocol::pps::{PpsError, Snapshot, SnapshotImage, SnapshotRequest};
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::{Client, Ctl, Downstream, JoinRequest, Joining, RelayJoin, Role, Room, Wants};
use crate::outbox::Outbox;
use crate::pending::Misfit;
use crate::ws;

impl Room {
    pub(super) fn on_join(&mut self, request: JoinRequest) {
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
        if let Role::Acquiring { in_flight: None } = self.role {
            if self.retry_at.is_none() {
                self.acquire();
            }
        }
    }

    pub(super) fn start_join(
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
                asked: false,
                ready: None,
            },
        );
        self.request_snapshot(join);
    }

    /// Whether this room knows whom to ask for snapshots and where its log starts: it holds
    /// the lease, or its relay link has started.
    fn serving(&self) -> bool {
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

    /// Welcomes the joins whose snapshots wait for the log (called after each publish).
    pub(super) fn welcome_ready_joins(&mut self) {
        let ready: Vec<u64> = self
            .joining
            .iter()
            .filter(|(_, j)| j.ready.is_some())
            .map(|(&join, _)| join)
            .collect();
        for join in ready {
            self.try_welcome(join);
        }
    }

    /// Welcomes join `join` if its snapshot fits the log: it is no older than the log and no
    /// newer than what was published (then it waits for the publish).
    fn try_welcome(&mut self, join: u64) {
        let Some(opened) = self.opened else {
            return;
        };
        let Some(seq) = self
            .joining
            .get(&join)
            .and_then(|j| j.ready.as_ref())
            .map(|s| s.seq)
        else {
            return;
        };
        let pending = match self.log.welcome(seq) {
            Ok(pending) => pending,
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
        };
        let Some(joining) = self.joining.remove(&join) else {
            return;
        };
        let Some(snapshot) = joining.ready else {
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
        self.clients_changed();
    }

    pub(super) fn join_failed(&mut self, join: u64, error: PpsError) {
        if let PpsError::Moved { .. } = error {
            // The picture went to another owner: this room finds it anew (see `sequencer.rs`).
            self.lost_owner(&error);
        }
        let Some(joining) = self.joining.get(&join) else {
            return;
        };
        let retryable = matches!(
            error,
            PpsError::Unavailable(_) | PpsError::Storage(_) | PpsError::Moved { .. }
        );
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
        let frame = ws::binary_frame_in(codec::welcome_frame_after(
            ws::HEADROOM,
            0,
            opened.width,
            opened.height,
            since,
            &SnapshotImage::Png(Bytes::new()),
            pending,
        ));
        request.outbox.send_welcome(frame);
        tracing::info!(picture = %self.id, relay = request.relay, since, asked = ?request.since, "relay linked");
        metrics::gauge!("bs_relays_downstream").increment(1.0);
        self.relays.insert(
            request.relay,
            Downstream {
                outbox: request.outbox,
                clients: 0,
            },
        );
        let _ = request.joined.send(Ok(()));
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
