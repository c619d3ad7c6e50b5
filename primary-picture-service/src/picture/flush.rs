//! Writing the picture to storage: starting the one write in flight, what its result changes
//! (the stored version, `flushed_seq`, the `Flushed` event, retries with backoff), conflicts
//! with another writer, and answering the releases and shutdown flushes that waited for
//! storage.
//!
//! Touches the write, `version`, `flushed_seq`, `dirty_since` and `flush_retry_at` of the
//! [`Loaded`](super::Loaded) state, the actor's `flush_backoff`, the durable waiters (and
//! `unload_wanted` when a release completes), storage and the `Flushed` event; a conflict with
//! an owner ahead of us loses the picture.

use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::{retry_after, Actor, Mailbox};
use crate::api::PpsEvent;
use crate::scheduler::Priority;
use crate::store::{StoreError, StoredMeta, Version};

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
    pub(super) handle: JoinHandle<Result<Version, StoreError>>,
}

impl Actor {
    /// Encodes (unless the last encoding is already at `applied_seq`) and starts the write.
    pub(super) async fn start_flush(&mut self, priority: Priority, mailbox: &mut Mailbox) {
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
        };
        let png = encoding.png.clone();
        let store = self.shared.store.clone();
        let id = self.id.clone();
        let expected = loaded.version.clone();
        tracing::debug!(picture = %self.id, seq = meta.seq, ?priority, "flush started");
        loaded.write = Some(Write {
            seq: meta.seq,
            started: Instant::now(),
            handle: tokio::spawn(
                async move { store.save(&id, png, &meta, expected.as_ref()).await },
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
                metrics::counter!("pps_flushes").increment(1);
                metrics::histogram!("pps_flush_seconds").record(elapsed.as_secs_f64());
                tracing::debug!(picture = %self.id, seq = write.seq, elapsed_ms = elapsed.as_millis() as u64, "flushed");
                loaded.version = Some(version);
                loaded.flushed_seq = loaded.flushed_seq.max(write.seq);
                loaded.flush_retry_at = None;
                self.flush_backoff = self.shared.config.min_backoff;
                if loaded.applied_seq == loaded.flushed_seq {
                    loaded.dirty_since = None;
                } else {
                    loaded.dirty_since = Some(Instant::now());
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

    /// Backs off after a failed flush. `flush_backoff` grows even when the picture was lost
    /// meanwhile (a failed encode may have lost it): it belongs to the actor, not the copy.
    fn schedule_flush_retry(&mut self) {
        let at = retry_after(&mut self.flush_backoff, self.shared.config.max_backoff);
        if let Some(loaded) = self.picture.loaded_mut() {
            loaded.flush_retry_at = Some(at);
        }
    }

    /// Someone else wrote the picture. Acknowledged updates must not be lost: when the stored
    /// copy is not ahead of ours, overwrite it (expecting its new version); when it is ahead,
    /// another owner has taken over and our copy is dropped.
    async fn resolve_conflict(&mut self) {
        let Some(applied) = self.picture.loaded().map(|loaded| loaded.applied_seq) else {
            return;
        };
        match self.shared.store.load(&self.id).await {
            Ok(Some(stored)) if stored.meta.seq > applied => {
                tracing::error!(picture = %self.id, stored_seq = stored.meta.seq, applied, "another owner is ahead; dropping our copy");
                self.lose("ownership lost");
            }
            Ok(stored) => {
                tracing::warn!(picture = %self.id, stored_seq = stored.as_ref().map(|s| s.meta.seq), applied, "stored picture is not ahead; overwriting it");
                if let Some(loaded) = self.picture.loaded_mut() {
                    loaded.version = stored.map(|s| s.version);
                    loaded.dirty_since.get_or_insert_with(Instant::now);
                    loaded.flush_retry_at = None;
                }
            }
            Err(error) => {
                tracing::warn!(picture = %self.id, %error, "reloading after a conflict failed; will retry");
                self.schedule_flush_retry();
            }
        }
    }

    /// Replies to releases and flushes that storage now satisfies.
    pub(super) fn settle_durable_waiters(&mut self) {
        let Some(loaded) = self.picture.loaded() else {
            return;
        };
        let (flushed, received) = (loaded.flushed_seq, loaded.received_seq);
        let (id, activity, unload_wanted) = (&self.id, self.activity, &mut self.unload_wanted);
        self.durable_waiters.reply_where(
            |w| w.target <= flushed,
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
