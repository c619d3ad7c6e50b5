//! Writing the picture to storage: starting the one write in flight (a flush, a release, or a
//! takeover that makes the picture ours), what its result changes (the stored version,
//! `flushed_seq`, whose the picture is, the `Flushed` event, retries with backoff), and
//! answering the releases and shutdown flushes that waited for storage.
//!
//! Every write is conditional on the version this copy read or last wrote, and names its owner
//! (docs/scaling.md). A write refused because someone else wrote the picture means it is not
//! ours any more: the copy is lost at once and the write never retried, so a stored picture is
//! never replaced by an older owner's.
//!
//! Touches the write, `version`, `flushed_seq`, `dirty_since`, `flush_retry_at` and the
//! ownership of the [`Loaded`](super::Loaded) state, the actor's `flush_backoff`, the durable
//! waiters (and `unload_wanted` when a release completes), storage and the `Flushed` event.

use bytes::Bytes;
use protocol::snapshot::{with_ownership, Ownership};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::Instrument;

use super::lease::Owning;
use super::{retry_after, Actor, Mailbox};
use crate::history::HistoryWriter;
use crate::scheduler::Priority;
use crate::store::{StoreError, StoredMeta, Version};
use link::PpsEvent;

/// How a write task ended.
pub(super) type WriteResult = Result<Result<Version, StoreError>, tokio::task::JoinError>;

pub(super) enum DurableKind {
    /// Replies `Released` and unloads the picture if nothing happened since the request.
    Release {
        /// `activity` when the release arrived.
        activity_at_request: u64,
    },
    /// A shutdown flush.
    Flush,
    /// A flush the admin API asked for.
    Store,
}

/// Waits until storage holds `target`.
pub(super) struct DurableWaiter {
    pub(super) target: u64,
    pub(super) kind: DurableKind,
}

/// The write to storage in flight.
pub(super) struct Write {
    seq: u64,
    started: Instant,
    /// The owner record it writes.
    record: Ownership,
    kind: WriteKind,
    /// The bytes it writes, for the history (`crate::history`) once they are stored.
    png: Bytes,
    pub(super) handle: JoinHandle<Result<Version, StoreError>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum WriteKind {
    /// Our picture, as it is now (`record.released`: let go).
    Flush,
    /// Makes the picture ours; `wait_claims`: the record replaced was not released.
    Takeover { wait_claims: bool, claim_floor: u64 },
}

impl Actor {
    /// Writes the picture as ours with a new epoch (see `lease.rs`): what a copy that was only
    /// read must do before it grants a lease or accepts a batch.
    pub(super) async fn start_takeover(&mut self, mailbox: &mut Mailbox) {
        let Some(loaded) = self.picture.loaded() else {
            return;
        };
        let (record, wait_claims, claim_floor) = self.takeover_record(loaded);
        tracing::info!(picture = %self.id, epoch = record.epoch, wait_claims, "taking the picture");
        self.start_write(
            Priority::High,
            record,
            WriteKind::Takeover {
                wait_claims,
                claim_floor,
            },
            mailbox,
        )
        .await;
    }

    /// Flushes the picture, ours, as it is now; `release`: as let go.
    pub(super) async fn start_flush(
        &mut self,
        priority: Priority,
        release: bool,
        mailbox: &mut Mailbox,
    ) {
        let Some(Owning::Owner { epoch, .. }) = self.picture.loaded().map(|l| l.owning) else {
            // Not ours: nothing of it may be written (a copy that is only read is clean).
            return;
        };
        let record = Ownership {
            epoch,
            owner: self.shared.config.node(),
            released: release,
        };
        self.start_write(priority, record, WriteKind::Flush, mailbox)
            .await;
    }

    /// Encodes (unless the last encoding is already at `applied_seq`) and starts the write of
    /// `record` with the picture.
    async fn start_write(
        &mut self,
        priority: Priority,
        record: Ownership,
        kind: WriteKind,
        mailbox: &mut Mailbox,
    ) {
        let current = self.picture.loaded().is_some_and(|loaded| {
            loaded
                .last_encoding
                .as_ref()
                .is_some_and(|e| e.seq == loaded.applied_seq)
        });
        if !current && self.encode(priority, mailbox).await.is_err() {
            self.schedule_flush_retry();
            return;
        }
        let Some(loaded) = self.picture.loaded_mut() else {
            return;
        };
        let (Some(encoding), Some(raster)) =
            (loaded.last_encoding.as_ref(), loaded.raster.as_ref())
        else {
            return;
        };
        let meta = StoredMeta {
            seq: encoding.seq,
            width: raster.width(),
            height: raster.height(),
            ownership: record,
        };
        // The owner record goes into the PNG's chunks (so the bytes, and with them the stored
        // version, change with the owner): a copy of the encoding, not a new encoding.
        let png = match with_ownership(&encoding.png, &record) {
            Ok(png) => Bytes::from(png),
            Err(error) => {
                tracing::error!(picture = %self.id, %error, "cannot write the owner record into the png");
                self.schedule_flush_retry();
                return;
            }
        };
        let store = self.shared.store.clone();
        let id = self.id.clone();
        let expected = loaded.version.clone();
        tracing::debug!(picture = %self.id, seq = meta.seq, ?priority, ?kind, ?record, ?expected, "write started");
        // One span per write to storage (exported over OTLP when configured).
        let span = tracing::info_span!(
            "flush",
            picture = %self.id,
            seq = meta.seq,
            bytes = png.len(),
            released = record.released,
            takeover = matches!(kind, WriteKind::Takeover { .. }),
        );
        loaded.write = Some(Write {
            seq: meta.seq,
            started: Instant::now(),
            record,
            kind,
            png: png.clone(),
            handle: tokio::spawn(
                async move { store.save(&id, png, &meta, expected.as_ref()).await }
                    .instrument(span),
            ),
        });
    }

    pub(super) async fn finish_write(&mut self, result: WriteResult) {
        let Some(loaded) = self.picture.loaded_mut() else {
            return;
        };
        let Some(write) = loaded.write.take() else {
            return;
        };
        let result = match result {
            Ok(result) => result,
            Err(e) => Err(StoreError::Unavailable(format!("write task failed: {e}"))),
        };
        let elapsed = write.started.elapsed();
        match result {
            Ok(version) => {
                metrics::counter!("pps_flushes_total").increment(1);
                metrics::histogram!("pps_flush_seconds").record(elapsed.as_secs_f64());
                tracing::debug!(picture = %self.id, seq = write.seq, elapsed_ms = elapsed.as_millis() as u64, "flushed");
                loaded.version = Some(version);
                loaded.flushed_seq = loaded.flushed_seq.max(write.seq);
                loaded.flush_retry_at = None;
                loaded.wal_full = false;
                self.flush_backoff.reset();
                if loaded.applied_seq == loaded.flushed_seq {
                    loaded.dirty_since = None;
                } else {
                    loaded.dirty_since = Some(Instant::now());
                }
                // A write of ours went through: nobody took the picture before it.
                loaded.lease.confirmed = true;
                match write.kind {
                    WriteKind::Takeover {
                        wait_claims,
                        claim_floor,
                    } => {
                        let lease_timeout = self.shared.config.lease_timeout;
                        let claims_until = (wait_claims && !lease_timeout.is_zero())
                            .then(|| Instant::now() + lease_timeout);
                        loaded.owning = Owning::Owner {
                            epoch: write.record.epoch,
                            claims_until,
                            claim_floor,
                        };
                        let from = if wait_claims {
                            "unreleased"
                        } else {
                            "released"
                        };
                        metrics::counter!("pps_takeovers_total", "from" => from).increment(1);
                        tracing::info!(picture = %self.id, epoch = write.record.epoch, waits_for_claims_ms = claims_until.map(|_| lease_timeout.as_millis() as u64), "picture taken");
                    }
                    WriteKind::Flush if write.record.released => {
                        // Let go: the next lease request takes it again, with a new epoch.
                        loaded.owning = Owning::Reader {
                            stored: write.record,
                        };
                        loaded.lease.confirmed = false;
                        tracing::debug!(picture = %self.id, seq = write.seq, "picture stored as released");
                    }
                    WriteKind::Flush => {}
                }
                if let Some(wal) = &self.shared.wal {
                    wal.flushed(&self.id, write.seq);
                }
                if write.kind == WriteKind::Flush {
                    // (A takeover writes what storage held already.)
                    let _ = self.shared.events.send(PpsEvent::Flushed {
                        picture: self.id.to_string(),
                        seq: write.seq,
                    });
                    self.offer_history(write.seq, write.png, write.record.released);
                }
            }
            Err(StoreError::Conflict { .. }) => {
                // Someone else wrote the picture: it is theirs now. Our copy (and the batches
                // accepted since our last write, which the sequencer still holds) is dropped,
                // never written over theirs.
                metrics::counter!("pps_flush_conflicts_total").increment(1);
                metrics::counter!("pps_fenced_total").increment(1);
                tracing::warn!(picture = %self.id, seq = write.seq, epoch = write.record.epoch, "write refused: another picture service owns the picture now; dropping our copy");
                self.lose("the picture moved to another picture service");
            }
            Err(error) => {
                metrics::counter!("pps_flush_failures_total").increment(1);
                tracing::warn!(picture = %self.id, seq = write.seq, %error, retry_in_ms = self.flush_backoff.current().as_millis() as u64, "flush failed; will retry");
                self.schedule_flush_retry();
            }
        }
    }

    /// Hands a stored flush to the history writer (started on the first one), which decides
    /// whether it becomes a version: never awaited, so versions cost the flush nothing.
    fn offer_history(&mut self, seq: u64, png: Bytes, released: bool) {
        let config = &self.shared.config;
        if config.history_keep == 0 {
            return;
        }
        let writer = self.history.get_or_insert_with(|| {
            HistoryWriter::start(
                self.shared.store.clone(),
                self.id.clone(),
                config.history_interval,
                config.history_keep,
            )
        });
        writer.offer(seq, png, released);
    }

    /// Backs off after a failed flush. `flush_backoff` grows even when the picture was lost
    /// meanwhile (a failed encode may have lost it): it belongs to the actor, not the copy.
    fn schedule_flush_retry(&mut self) {
        let at = retry_after(&mut self.flush_backoff);
        if let Some(loaded) = self.picture.loaded_mut() {
            loaded.flush_retry_at = Some(at);
        }
    }

    /// Replies to releases and flushes that storage now satisfies.
    pub(super) fn settle_durable_waiters(&mut self) {
        let Some(loaded) = self.picture.loaded() else {
            return;
        };
        let (flushed, received) = (loaded.flushed_seq, loaded.received_seq);
        // Ours and let go: not settled before it is stored as released.
        let release_due = matches!(loaded.owning, Owning::Owner { .. })
            && loaded.holder().is_none()
            && self.acquirers.is_empty();
        let (id, activity, unload_wanted) = (&self.id, self.activity, &mut self.unload_wanted);
        self.durable_waiters.reply_where(
            |w| w.target <= flushed && !release_due,
            |w| {
                if let DurableKind::Release {
                    activity_at_request,
                } = w.kind
                {
                    tracing::debug!(picture = %id, flushed, "picture released");
                    if activity_at_request == activity && received == flushed {
                        *unload_wanted = true;
                    }
                }
                Ok(flushed)
            },
        );
    }
}
