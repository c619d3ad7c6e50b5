//! Who may write the picture and who may sequence it (docs/scaling.md).
//!
//! **Ownership** is decided by storage: a picture is ours once a conditional write of it named
//! us as its owner with a new epoch (a *takeover*), and stays ours until a write of ours is
//! refused (someone else took it: the picture is lost from memory at once, see `flush.rs`) or
//! we write it released. Until then the copy is a [`Owning::Reader`]: it serves snapshots of
//! what storage holds, but accepts no batch and grants no lease.
//!
//! The **sequencer lease** is granted by the owner to one broadcast service at a time. Every
//! batch must carry it. A holder whose connection breaks keeps it for the lease timeout; a
//! vacant lease goes to the next asker once storage holds everything accepted so far (so only
//! the current or last sequencer can ever hold updates storage lacks), after a check that the
//! picture is still ours. After a takeover from an owner that had not released the picture, the
//! lease goes only to a claimant (the last sequencer, whose log fills the gap) for one lease
//! timeout.
//!
//! Touches the ownership and lease of the [`Loaded`] state and the lease requests waiting; the
//! takeover write itself goes through `flush.rs`.

use protocol::pps::{AcquireRequest, Acquired, Lease, PpsError};
use protocol::snapshot::Ownership;
use tokio::time::Instant;

use super::ConnId;
use super::{Actor, Loaded, Mailbox, Picture};

/// A lease request waiting for an answer.
pub(super) struct Acquirer {
    pub(super) request: AcquireRequest,
    pub(super) conn: ConnId,
}

/// Whose the picture is, as far as this copy knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Owning {
    /// Loaded to be read: storage names this record (another owner, nobody, a released one, or
    /// ourselves before a restart).
    Reader { stored: Ownership },
    /// Ours: our last write named us with `epoch`.
    Owner {
        epoch: u64,
        /// Until then the lease goes only to a claimant (a takeover from an owner that had not
        /// released the picture).
        claims_until: Option<Instant>,
        /// Claims under a lease older than this epoch are stale.
        claim_floor: u64,
    },
}

/// The sequencer lease of a picture we own.
#[derive(Default)]
pub(super) struct LeaseState {
    pub(super) holder: Option<Holder>,
    /// The last lease granted and to whom (its advertise URL); kept when the lease falls
    /// vacant, so that a claim under it is recognised as the last sequencer coming back.
    pub(super) last: Option<(Lease, String)>,
    /// Storage confirmed the picture is ours since the lease was last vacated (a write of ours
    /// succeeded, or a check found our version): a vacant lease is granted only then.
    pub(super) confirmed: bool,
}

pub(super) struct Holder {
    pub(super) lease: Lease,
    pub(super) url: String,
    pub(super) conn: ConnId,
    /// Set when its connection broke: the lease is vacant from then on.
    pub(super) expires: Option<Instant>,
}

/// What the lease requests need done before they can be answered.
pub(super) enum LeaseNeed {
    /// Take the picture in storage (a takeover write).
    Take,
    /// Storage must hold everything accepted before the lease changes hands.
    Handover,
    /// Check with storage that the picture is still ours.
    Verify,
    /// Nothing can be done before this (a claim window, a holder's expiry).
    Wait(Instant),
}

impl Owning {
    /// The owner a request must be sent to instead of us, if any: a picture stored as owned by
    /// another service that did not release it.
    pub(super) fn moved_to(&self, me: u64) -> Option<u64> {
        match self {
            Owning::Reader { stored }
                if stored.owner != 0 && stored.owner != me && !stored.released =>
            {
                Some(stored.owner)
            }
            _ => None,
        }
    }
}

impl Loaded {
    /// The current holder, unless its lease has run out.
    pub(super) fn holder(&self) -> Option<&Holder> {
        self.lease.holder.as_ref()
    }

    /// Whether a batch or release under `lease` comes from the current holder.
    pub(super) fn holds(&self, lease: &Lease) -> bool {
        matches!(self.owning, Owning::Owner { .. })
            && self.holder().is_some_and(|h| h.lease == *lease)
    }

    /// The reply for a request under someone else's lease.
    pub(super) fn not_holder(&self) -> PpsError {
        PpsError::NotHolder {
            holder: self.holder().map(|h| h.url.clone()),
        }
    }

    /// Vacates the lease (released by its holder, or expired).
    pub(super) fn vacate(&mut self) {
        if self.lease.holder.take().is_some() {
            self.lease.confirmed = false;
        }
    }

    fn granted(&self, lease: Lease, lease_timeout_ms: u64) -> Acquired {
        let (width, height) = self
            .raster
            .as_ref()
            .map_or((0, 0), |r| (r.width(), r.height()));
        Acquired::Granted {
            lease,
            seq: self.received_seq,
            width,
            height,
            lease_timeout_ms,
            sessions: self.trail.marks(),
        }
    }

    /// Whether the lease may go to `holder` only once storage has everything accepted: it was
    /// last held by another broadcast service, and storage lacks some of what it sent.
    fn handover_pending(&self, holder: &str) -> bool {
        let other = self
            .lease
            .last
            .as_ref()
            .is_some_and(|(_, url)| url != holder);
        other && self.flushed_seq < self.received_seq
    }

    /// Whether `request`'s claim makes it the sequencer that must continue: it sequenced
    /// under a lease no older than any this owner knows of, and its log joins what we hold.
    fn valid_claim(&self, request: &AcquireRequest, claim_floor: u64) -> bool {
        request.claim.is_some_and(|claim| {
            claim.lease.epoch >= claim_floor
                && self
                    .lease
                    .last
                    .as_ref()
                    .is_none_or(|(last, _)| claim.lease >= *last)
                && claim.first <= self.received_seq + 1
                && claim.last >= self.received_seq
        })
    }
}

/// What to do with one lease request now.
enum Decision {
    Answer(Result<Acquired, PpsError>),
    Wait,
}

impl Actor {
    /// Answers the lease requests that can be answered now: `Moved` where another owner has the
    /// picture, `Held`, or a grant. The others keep waiting for [`Actor::lease_need`].
    pub(super) fn settle_acquirers(&mut self) {
        let now = Instant::now();
        let me = self.shared.config.node();
        let lease_timeout_ms = self.shared.config.lease_timeout.as_millis() as u64;
        let Actor {
            picture,
            acquirers,
            id,
            ..
        } = self;
        let Picture::Loaded(loaded) = picture else {
            return;
        };
        if let Some(expires) = loaded.holder().and_then(|h| h.expires) {
            if expires <= now {
                tracing::info!(picture = %id, "sequencer lease expired: its holder did not come back");
                metrics::counter!("pps_leases_expired_total").increment(1);
                loaded.vacate();
            }
        }
        if acquirers.is_empty() {
            return;
        }
        let (claims_until, claim_floor) = match loaded.owning {
            Owning::Reader { .. } => {
                if let Some(owner) = loaded.owning.moved_to(me) {
                    acquirers.reply_where(|a| !a.request.force, |_| Err(PpsError::Moved { owner }));
                }
                return; // the others wait for the takeover
            }
            Owning::Owner {
                claims_until,
                claim_floor,
                ..
            } => (claims_until, claim_floor),
        };
        for (acquirer, reply) in acquirers.take_all().collect::<Vec<_>>() {
            let decision = decide(
                loaded,
                &acquirer,
                now,
                (claims_until, claim_floor),
                lease_timeout_ms,
            );
            match decision {
                Decision::Answer(result) => {
                    if let Ok(Acquired::Granted { lease, .. }) = &result {
                        if loaded
                            .lease
                            .holder
                            .as_ref()
                            .is_none_or(|h| h.lease != *lease)
                        {
                            tracing::info!(picture = %id, holder = %acquirer.request.holder, epoch = lease.epoch, grant = lease.grant, claimed = acquirer.request.claim.is_some(), "sequencer lease granted");
                            metrics::counter!("pps_leases_granted_total").increment(1);
                        }
                        loaded.lease.holder = Some(Holder {
                            lease: *lease,
                            url: acquirer.request.holder.clone(),
                            conn: acquirer.conn,
                            expires: None,
                        });
                        loaded.lease.last = Some((*lease, acquirer.request.holder.clone()));
                    }
                    let _ = reply.send(result);
                }
                Decision::Wait => acquirers.push(acquirer, reply),
            }
        }
    }

    /// What the waiting lease requests need next, if anything (see [`LeaseNeed`]).
    pub(super) fn lease_need(&self, loaded: &Loaded, now: Instant) -> Option<LeaseNeed> {
        // Updates logged before a crash (those that continue the stored picture, see
        // `apply_recovered`) are applied once the picture is ours again.
        if !self.recovered.is_empty() && matches!(loaded.owning, Owning::Reader { .. }) {
            return Some(LeaseNeed::Take);
        }
        if self.acquirers.is_empty() {
            return loaded.holder().and_then(|h| h.expires).map(LeaseNeed::Wait);
        }
        let (claims_until, claim_floor) = match loaded.owning {
            Owning::Reader { .. } => return Some(LeaseNeed::Take),
            Owning::Owner {
                claims_until,
                claim_floor,
                ..
            } => (claims_until, claim_floor),
        };
        if let Some(holder) = loaded.holder() {
            return holder.expires.map(LeaseNeed::Wait);
        }
        let mut need = None;
        for acquirer in self.acquirers.iter() {
            if loaded.valid_claim(&acquirer.request, claim_floor) {
                return Some(if loaded.lease.confirmed {
                    // `settle_acquirers` grants it on the next turn.
                    LeaseNeed::Wait(now)
                } else {
                    LeaseNeed::Verify
                });
            }
            if let Some(until) = claims_until.filter(|until| *until > now) {
                need = Some(LeaseNeed::Wait(until));
                continue;
            }
            if loaded.handover_pending(&acquirer.request.holder) {
                return Some(LeaseNeed::Handover);
            }
            if !loaded.lease.confirmed {
                return Some(LeaseNeed::Verify);
            }
            need = Some(LeaseNeed::Wait(now));
        }
        need
    }

    /// Checks with storage that the picture is still ours: our version is still the stored
    /// one. If not, someone took it: the copy is lost (the requests are answered, and asked
    /// again find the new owner).
    pub(super) async fn verify(&mut self, mailbox: &mut Mailbox) {
        let store = self.shared.store.clone();
        let id = self.id.clone();
        let head = self
            .while_handling(mailbox, async move { store.head(&id).await })
            .await;
        let Some(loaded) = self.picture.loaded_mut() else {
            return;
        };
        match head {
            Ok(Some(head)) if Some(&head.version) == loaded.version.as_ref() => {
                loaded.lease.confirmed = true;
            }
            Ok(head) => {
                metrics::counter!("pps_fenced_total").increment(1);
                tracing::warn!(picture = %self.id, stored_epoch = head.as_ref().map(|h| h.meta.ownership.epoch), "the picture was taken by another picture service; dropping our copy");
                self.lose("the picture moved to another picture service");
            }
            Err(error) => {
                tracing::warn!(picture = %self.id, %error, "cannot check the picture's owner in storage; will retry");
                let at = super::retry_after(&mut self.flush_backoff);
                if let Some(loaded) = self.picture.loaded_mut() {
                    loaded.flush_retry_at = Some(at);
                }
            }
        }
    }

    /// A broadcast service's connection is gone: the lease it holds runs out one lease timeout
    /// after it was last heard, and its lease requests are dropped.
    pub(super) fn on_disconnected(&mut self, conn: ConnId, last_heard: Instant) {
        let lease_timeout = self.shared.config.lease_timeout;
        if let Some(holder) = self
            .picture
            .loaded_mut()
            .and_then(|loaded| loaded.lease.holder.as_mut())
            .filter(|h| h.conn == conn)
        {
            holder.expires = Some(last_heard + lease_timeout);
            tracing::info!(picture = %self.id, holder = %holder.url, lease_timeout_ms = lease_timeout.as_millis() as u64, "the sequencer's connection broke; its lease runs out unless it comes back");
        }
        self.acquirers.reply_where(
            |a| a.conn == conn,
            |_| Err(PpsError::Unavailable("connection closed".to_string())),
        );
    }

    /// The ownership a takeover of this copy writes, and whether the new owner must then wait
    /// for claims (the record it replaces was not released: a sequencer may hold updates
    /// storage lacks).
    pub(super) fn takeover_record(&self, loaded: &Loaded) -> (Ownership, bool, u64) {
        let me = self.shared.config.node();
        let stored = match loaded.owning {
            Owning::Reader { stored } => stored,
            Owning::Owner { epoch, .. } => Ownership {
                epoch,
                owner: me,
                released: true,
            },
        };
        let record = Ownership {
            epoch: stored.epoch + 1,
            owner: me,
            released: false,
        };
        (record, !stored.released, stored.epoch)
    }
}

/// The answer for one lease request on a picture we own.
fn decide(
    loaded: &mut Loaded,
    acquirer: &Acquirer,
    now: Instant,
    (claims_until, claim_floor): (Option<Instant>, u64),
    lease_timeout_ms: u64,
) -> Decision {
    if let Some(holder) = loaded.lease.holder.as_mut() {
        if holder.url == acquirer.request.holder {
            // The holder asks again (its connection broke and came back): the same lease, over
            // its new connection.
            holder.conn = acquirer.conn;
            holder.expires = None;
            let lease = holder.lease;
            return Decision::Answer(Ok(loaded.granted(lease, lease_timeout_ms)));
        }
        return Decision::Answer(Ok(Acquired::Held {
            holder: holder.url.clone(),
            lease: holder.lease,
        }));
    }
    let claimant = loaded.valid_claim(&acquirer.request, claim_floor);
    if !claimant {
        if claims_until.is_some_and(|until| until > now) {
            return Decision::Wait;
        }
        if loaded.handover_pending(&acquirer.request.holder) {
            return Decision::Wait;
        }
    }
    if !loaded.lease.confirmed {
        return Decision::Wait;
    }
    let epoch = match loaded.owning {
        Owning::Owner { epoch, .. } => epoch,
        Owning::Reader { .. } => return Decision::Wait,
    };
    let grant = loaded
        .lease
        .last
        .as_ref()
        .filter(|(last, _)| last.epoch == epoch)
        .map_or(1, |(last, _)| last.grant + 1);
    Decision::Answer(Ok(loaded.granted(Lease { epoch, grant }, lease_timeout_ms)))
}
