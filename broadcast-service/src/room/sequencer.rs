//! The lease, and sequencing with it (docs/scaling.md): asking the picture's owner for the lease
//! (following it when the picture moved, taking it anyway when its owner is unreachable),
//! handing batches over under the lease, publishing what the owner accepted (or, while the owner
//! is unreachable, what the lease still covers), releasing the picture when nobody is left, and
//! what happens when the lease is lost.
//!
//! Touches the role, the log's hand-off side and publishing, `link`, `claim_lease`, the retry
//! state; asks the picture service.

use protocol::codec;
use protocol::pps::{
    AcquireRequest, Acquired, ApplyBatch, Claim, Lease, PpsError, ReleaseRequest, SessionMark,
};
use tokio::time::Instant;

use super::{Ctl, Opened, Role, Room};
use crate::ws;

/// Redirections (`Moved`) followed before asking with `force` where we are.
const MAX_REDIRECTS: u32 = 3;

impl Room {
    /// Asks the picture service for the lease.
    pub(super) fn acquire(&mut self) {
        self.attempts += 1;
        let attempt = self.attempts;
        self.role = Role::Acquiring {
            in_flight: Some(attempt),
        };
        let size = self
            .opened
            .map(|o| (o.width, o.height))
            .or_else(|| self.joining.values().next().map(|j| j.wants.size));
        let claim = self.claim_lease.map(|lease| Claim {
            lease,
            first: self.log.trimmed() + 1,
            last: self.log.last(),
        });
        let request = AcquireRequest {
            picture: self.id.clone(),
            create: size,
            holder: self.cluster.advertise_url.clone(),
            claim,
            force: self.force,
        };
        tracing::debug!(picture = %self.id, link = %self.cluster.link(self.link).url, claim = ?request.claim, force = self.force, "asking for the lease");
        let reply = self.pps().acquire(request);
        self.post_back(reply, move |result| Ctl::Acquired { attempt, result });
    }

    pub(super) fn on_acquired(&mut self, attempt: u64, result: Result<Acquired, PpsError>) {
        if !matches!(self.role, Role::Acquiring { in_flight: Some(a) } if a == attempt) {
            return; // an answer to an attempt given up
        }
        self.role = Role::Acquiring { in_flight: None };
        match result {
            Ok(Acquired::Granted {
                lease,
                seq,
                width,
                height,
                lease_timeout_ms,
                sessions,
            }) => self.granted(lease, seq, (width, height), lease_timeout_ms, sessions),
            Ok(Acquired::Held { holder, lease }) => {
                if holder == self.cluster.advertise_url {
                    // Held by us as far as the owner knows, by an earlier room of ours for the
                    // picture: it releases soon; ask again then.
                    tracing::debug!(picture = %self.id, ?lease, "lease held by an earlier room here");
                    return self.back_off();
                }
                self.relay_to(holder);
            }
            Err(PpsError::Moved { owner }) => {
                self.redirects += 1;
                match self.cluster.by_node(owner) {
                    Some(link)
                        if self.redirects <= MAX_REDIRECTS
                            && self.cluster.link(link).pps.is_ready() =>
                    {
                        tracing::info!(picture = %self.id, to = %self.cluster.link(link).url, "the picture is owned by another picture service; asking it");
                        self.link = link;
                    }
                    _ => {
                        tracing::warn!(picture = %self.id, owner = %protocol::snapshot::owner_text(owner), via = %self.cluster.link(self.link).url, "the picture's owner is unreachable from here; asking to take it");
                        self.force = true;
                    }
                }
                self.acquire();
            }
            Err(error) => {
                tracing::warn!(picture = %self.id, %error, link = %self.cluster.link(self.link).url, "asking for the lease failed; will retry");
                // Joiners wait for the lease as they would for a snapshot: at most the join
                // timeout, and not at all when retrying will not help.
                let hopeless = matches!(error, PpsError::BadRequest(_) | PpsError::NotFound);
                let joins: Vec<u64> = self
                    .joining
                    .iter()
                    .filter(|(_, j)| hopeless || j.started.elapsed() >= self.settings.join_timeout)
                    .map(|(&join, _)| join)
                    .collect();
                for join in joins {
                    self.join_failed_now(join, &error);
                }
                if hopeless {
                    // A picture that does not exist is not created for a follower.
                    self.fail_followers(&error);
                }
                self.reroute(matches!(error, PpsError::ShuttingDown));
                self.back_off();
            }
        }
    }

    /// Fails a join at once, whatever its time left.
    fn join_failed_now(&mut self, join: u64, error: &PpsError) {
        if let Some(joining) = self.joining.get_mut(&join) {
            joining.started = Instant::now() - self.settings.join_timeout;
        }
        self.join_failed(join, error.clone());
    }

    /// Picks the picture service to ask next: the first reachable one in the picture's order
    /// (`leaving`: not the current one, which is shutting down). Asking elsewhere than the
    /// stored owner then needs `force`, which the owner's `Moved` answer brings about.
    fn reroute(&mut self, leaving: bool) {
        let avoid = leaving.then_some(self.link);
        let link = self.cluster.route(&self.id, avoid);
        if link != self.link {
            tracing::info!(picture = %self.id, from = %self.cluster.link(self.link).url, to = %self.cluster.link(link).url, "asking another picture service");
            self.link = link;
            self.redirects = 0;
        }
    }

    /// The lease is ours: seqs continue after `seq`, which the owner holds.
    fn granted(
        &mut self,
        lease: Lease,
        seq: u64,
        (width, height): (u32, u32),
        lease_timeout_ms: u64,
        sessions: Vec<SessionMark>,
    ) {
        self.backoff.reset();
        self.redirects = 0;
        let continues = match self.opened {
            None => false,
            // Our log (our own, claimed, or a relay's copy) runs up to or past `seq`: the
            // owner has everything up to it, what follows is handed over next.
            Some(_) => {
                let ours = self.claim_lease.is_some();
                let fits = self.log.resume_at(seq).is_ok();
                // A relay's copy continues only if it had received exactly what the owner
                // holds; our own log, if nothing we published is missing at the owner.
                fits && (ours || self.log.last() == seq)
            }
        };
        if !continues {
            if self.opened.is_some() {
                tracing::warn!(picture = %self.id, seq, log_last = self.log.last(), "the lease came with a picture this room's log does not continue");
                // Only what the owner confirmed (as far as this room knows) stays remembered.
                self.sessions
                    .forget_after(seq.min(self.log.acked()).min(self.log.published()));
            }
            self.opened = Some(Opened { width, height });
            self.reopen_log(seq);
            self.resync_all("the picture continues from another seq");
        } else {
            // The sessions' draws this room's log holds (a relay's copy, or its own log): the
            // memory moves with the log to the new sequencer, as far as the log reaches.
            for entry in self.log.after(self.log.trimmed()) {
                if let Some((seq, client_id, client_seq)) = entry_header(entry) {
                    self.sessions.learn(client_id, client_seq, seq);
                }
            }
        }
        // What the owner holds says which sessions' ops are in the picture, also those this
        // room's log never saw (a broadcast service restarted after a crash, or the clients of
        // another one resuming here).
        for mark in sessions.into_iter().filter(|m| m.seq <= seq) {
            self.sessions
                .learn(mark.client_id, mark.client_seq, mark.seq);
        }
        tracing::info!(picture = %self.id, epoch = lease.epoch, grant = lease.grant, seq, link = %self.cluster.link(self.link).url, "sequencing the picture");
        metrics::counter!("bs_leases_acquired_total").increment(1);
        self.claim_lease = Some(lease);
        self.role = Role::Sequencer {
            lease,
            lease_timeout: std::time::Duration::from_millis(lease_timeout_ms),
        };
        self.force = false;
        self.request_pending_snapshots();
        self.answer_waiting_sessions();
        self.pump_pps();
    }

    /// How far the subscribers may be sent updates: what the owner accepted while it is
    /// reachable (an echo is then never lost with this service); while it is not, what this
    /// room sequenced, as long as its lease cannot have passed to anyone else.
    fn publish_frontier(&self) -> u64 {
        match self.role {
            Role::Sequencer { lease_timeout, .. } => {
                let pps = self.pps();
                if pps.is_ready() {
                    self.log.acked()
                } else if !lease_timeout.is_zero()
                    && pps.echo_until().is_some_and(|until| Instant::now() < until)
                {
                    self.log.last()
                } else {
                    self.log.published()
                }
            }
            _ => self.log.published(),
        }
    }

    /// Sends the updates of ended ticks that the frontier allows to every subscribed client as
    /// one shared frame.
    pub(super) fn publish(&mut self) {
        let frontier = self
            .publish_frontier()
            .min(self.tick_end.max(self.log.published()));
        if frontier > self.log.published() {
            let frame = ws::binary_frame_in(codec::updates_frame_after(
                ws::HEADROOM,
                self.log.publishable(frontier),
            ));
            self.log.mark_published(frontier);
            self.deliver_all(&frame);
        }
        if self.log.published() < self.log.last() && self.publish_at.is_none() {
            if let Role::Sequencer { .. } = self.role {
                // Echoes held back while the owner is unreachable: look again in a tick.
                if !self.pps().is_ready() {
                    self.publish_at = Some(Instant::now() + self.settings.tick);
                }
            }
        }
        self.welcome_ready_joins();
    }

    /// Hands unsent updates to the owner (bounded in flight), and asks for a release when
    /// nobody is left.
    pub(super) fn pump_pps(&mut self) {
        let (Some(opened), Role::Sequencer { lease, .. }) = (self.opened, &self.role) else {
            return;
        };
        let lease = *lease;
        if self.retry_at.is_some() {
            return;
        }
        let pps = self.pps();
        let (max_updates, max_inflight) =
            (self.settings.batch_updates, self.settings.inflight_batches);
        while let Some(batch) = self.log.next_batch(max_updates, max_inflight) {
            let reply = pps.apply(ApplyBatch {
                picture: self.id.clone(),
                lease,
                width: opened.width,
                height: opened.height,
                first_seq: batch.first,
                last_seq: batch.last,
                updates: batch.updates,
            });
            self.post_back(reply, move |result| Ctl::Accepted { lease, result });
        }
        if let Some(last) = self.log.start_release(self.nobody()) {
            let reply = pps.release(ReleaseRequest {
                picture: self.id.clone(),
                lease,
                last_seq: last,
            });
            self.post_back(reply, move |result| Ctl::Released {
                last_seq: last,
                result,
            });
        }
    }

    pub(super) fn on_accepted(&mut self, lease: Lease, result: Result<u64, PpsError>) {
        if !matches!(self.role, Role::Sequencer { lease: current, .. } if current == lease) {
            // An answer to a batch of an earlier lease: what it says was settled then.
            return;
        }
        match result {
            Ok(have) => {
                self.log.accepted(have);
                self.backoff.reset();
                // The ended ticks' updates it confirmed go out now, not a tick later.
                self.publish();
            }
            Err(PpsError::Gap { have, first_seq }) => {
                if have < self.log.trimmed() {
                    tracing::error!(picture = %self.id, have, log_from = self.log.trimmed() + 1, "the picture service lost updates that were reported durable");
                }
                tracing::warn!(picture = %self.id, have, first_seq, "picture service asks to resend");
                self.log.gap(have);
            }
            Err(error @ (PpsError::NotHolder { .. } | PpsError::Moved { .. })) => {
                self.log.failed();
                self.lease_lost(&error);
            }
            Err(error) => {
                tracing::warn!(picture = %self.id, %error, backoff_ms = self.backoff.current().as_millis() as u64, "sending updates to the picture service failed; will resend");
                self.log.failed();
                if matches!(error, PpsError::ShuttingDown) || !self.pps().is_ready() {
                    // The owner is going away or unreachable: once it has let the picture
                    // go (or the lease timeout lets us take it), ask another.
                    self.reroute(matches!(error, PpsError::ShuttingDown));
                    if self.cluster.link(self.link).pps.is_ready() {
                        self.claim_again();
                    }
                }
                self.back_off();
            }
        }
    }

    pub(super) fn on_released(&mut self, last_seq: u64, result: Result<u64, PpsError>) {
        match result {
            Ok(flushed) => {
                debug_assert!(
                    flushed >= last_seq,
                    "a release flushes at least what it was asked"
                );
                self.log.released(flushed);
                self.stored(flushed);
                tracing::info!(picture = %self.id, flushed, "picture released to storage");
                if self.nobody() {
                    // The lease went with the release.
                    self.claim_lease = None;
                    self.role = Role::Acquiring { in_flight: None };
                } else {
                    // Someone came meanwhile: the lease is to be asked for again.
                    self.claim_again();
                }
            }
            Err(PpsError::Gap { have, .. }) => {
                // PPS lost updates it had not flushed (a restart we have not heard of yet):
                // resend them, then release again.
                tracing::warn!(picture = %self.id, have, "release found the picture service behind; resending");
                self.log.release_gap(have);
            }
            Err(error @ (PpsError::NotHolder { .. } | PpsError::Moved { .. })) => {
                self.log.release_failed();
                self.lease_lost(&error);
            }
            Err(error) => {
                tracing::warn!(picture = %self.id, %error, "release failed; will retry");
                self.log.release_failed();
                self.back_off();
            }
        }
    }

    /// The owner's link came back: it may have lost what it held (a restart). A sequencer asks
    /// for the lease again with a claim on its log (the owner then takes it back, with
    /// everything the log holds); a relay's link to the sequencer is not concerned.
    pub(super) fn on_pps_reconnected(&mut self) {
        if let Role::Sequencer { .. } = self.role {
            tracing::info!(picture = %self.id, entries = self.log.len(), "picture service reconnected: claiming the lease again");
            self.claim_again();
        }
    }

    /// Asks for the lease again, claiming what the log holds. Meanwhile draws are sequenced
    /// but not published; a grant hands everything the owner lacks over again.
    pub(super) fn claim_again(&mut self) {
        self.retry_at = None;
        self.acquire();
    }

    /// The owner refused this room's lease (`NotHolder`) or the picture moved (`Moved`):
    /// another broadcast service may sequence it now, or the owner forgot us (it restarted).
    /// The relays of this room are closed (they find the next sequencer), and the room asks
    /// for the lease again with a claim on its log: it gets it back, or relays to the new
    /// holder ([`Room::relay_to`] then settles what this room sequenced alone).
    pub(super) fn lease_lost(&mut self, why: &PpsError) {
        if !matches!(self.role, Role::Sequencer { .. }) {
            return;
        }
        tracing::warn!(picture = %self.id, reason = %why, published = self.log.published(), accepted = self.log.acked(), "lost the picture's lease; asking again");
        metrics::counter!("bs_lease_lost_total").increment(1);
        for (_, relay) in std::mem::take(&mut self.relays) {
            metrics::gauge!("bs_relays_downstream").decrement(1.0);
            relay.outbox.close(1012, "the sequencer moved; relink");
        }
        self.lost_owner(why);
        self.claim_again();
    }

    /// The picture moved to another owner: ask anew where it is.
    pub(super) fn lost_owner(&mut self, why: &PpsError) {
        if let PpsError::Moved { owner } = why {
            if let Some(link) = self.cluster.by_node(*owner) {
                self.link = link;
            }
        }
    }
}

/// `(seq, client_id, client_seq)` of an encoded `Sequenced` (its first 24 bytes).
fn entry_header(entry: &[u8]) -> Option<(u64, u64, u64)> {
    let field = |i: usize| {
        let bytes: [u8; 8] = entry.get(i * 8..i * 8 + 8)?.try_into().ok()?;
        Some(u64::from_le_bytes(bytes))
    };
    Some((field(0)?, field(1)?, field(2)?))
}
