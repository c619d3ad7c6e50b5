//! Loading the picture: reading it from storage, verifying and decoding it (answering joiners
//! with the stored bytes while it decodes), creating it blank when storage has none and a
//! request gave its size, and failed loads (retried while batches wait, never opened blank).
//!
//! Touches the [`Unloaded`] state and the waiters that wait for the load; it opens the picture
//! through [`Actor::open`] and sets nothing of the loaded state itself.

use protocol::pps::{PpsError, Snapshot, SnapshotImage};
use protocol::snapshot::{check_png, decode_png, PngError};
use protocol::Raster;
use tokio::time::Instant;

use super::lease::Owning;
use super::{retry_after, Actor, Loaded, Mailbox, Picture, Unloaded};
use crate::scheduler::Priority;
use crate::store::{StoreError, StoredPicture};

impl Actor {
    pub(super) async fn load(&mut self, priority: Priority, mailbox: &mut Mailbox) {
        if self.over_budget() {
            return;
        }
        let started = Instant::now();
        match self.read(priority, mailbox).await {
            Ok(Some((raster, stored))) => {
                let seq = stored.meta.seq;
                tracing::info!(picture = %self.id, seq, width = raster.width(), height = raster.height(), elapsed_ms = started.elapsed().as_millis() as u64, "picture loaded");
                self.open(Loaded::new(
                    raster,
                    Some(stored),
                    self.shared.config.session_trail,
                ));
            }
            Ok(None) => match self.picture.unloaded_mut().and_then(|u| u.create_size) {
                Some((width, height)) => {
                    tracing::info!(picture = %self.id, width, height, "picture created");
                    self.open(Loaded::new(
                        Raster::new(width, height),
                        None,
                        self.shared.config.session_trail,
                    ));
                }
                None => {
                    // Only snapshots, leases (a long-poll follower's room, PROTOCOL.md §16)
                    // without `create` and releases asked: nothing to open.
                    self.snapshot_waiters.reply_all(|_| Err(PpsError::NotFound));
                    self.acquirers.reply_all(|_| Err(PpsError::NotFound));
                    self.durable_waiters.reply_all(|w| {
                        if w.target == 0 {
                            Ok(0)
                        } else {
                            Err(PpsError::NotFound)
                        }
                    });
                }
            },
            Err(error) => self.load_failed(error),
        }
    }

    /// Whether the pictures in memory take the whole `--max-loaded-bytes`: then this one is not
    /// loaded, and everything that waits for it is answered `Unavailable` (the actor exits).
    /// Updates recovered from the write-ahead log, and releases, are served whatever the
    /// budget says.
    fn over_budget(&mut self) -> bool {
        let loaded = self
            .shared
            .loaded_bytes
            .load(std::sync::atomic::Ordering::Relaxed);
        let budget = self.shared.config.max_loaded_bytes;
        // Releases and flushes alone (nothing that needs the picture in memory afterwards)
        // are answered as before, loading it if they must.
        let needs_memory = !self.snapshot_waiters.is_empty()
            || !self.acquirers.is_empty()
            || self
                .picture
                .unloaded_mut()
                .is_some_and(|u| !u.unchecked.is_empty());
        if loaded < budget || !self.recovered.is_empty() || !needs_memory {
            return false;
        }
        metrics::counter!("pps_loads_refused_total").increment(1);
        tracing::warn!(picture = %self.id, loaded, budget, "not loading the picture: the pictures in memory take --max-loaded-bytes");
        let error = PpsError::Unavailable(format!(
            "the picture service's memory budget is taken ({loaded} of --max-loaded-bytes {budget} bytes in pictures): try again later"
        ));
        self.snapshot_waiters.reply_all(|_| Err(error.clone()));
        self.durable_waiters.reply_all(|_| Err(error.clone()));
        self.acquirers.reply_all(|_| Err(error.clone()));
        if let Some(unloaded) = self.picture.unloaded_mut() {
            unloaded.unchecked.reply_all(|_| Err(error.clone()));
        }
        true
    }

    /// The stored picture, decoded (`None`: storage has none). A stored picture that does not
    /// decode, or whose size is not the one storage gives, is `Corrupt`.
    async fn read(
        &mut self,
        priority: Priority,
        mailbox: &mut Mailbox,
    ) -> Result<Option<(Raster, StoredPicture)>, StoreError> {
        let loaded = self.shared.store.load(&self.id).await;
        metrics::counter!("pps_loads_total").increment(1);
        let Some(stored) = loaded? else {
            return Ok(None);
        };
        let permit = self.permit(priority, mailbox).await;
        let max_side = self.shared.config.max_side;
        let png = stored.png.clone();
        let checked = self
            .blocking(mailbox, move || check_png(&png, max_side))
            .await;
        let decoded = match checked {
            Ok(Ok(header))
                if header.width == stored.meta.width && header.height == stored.meta.height =>
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
                if let Some(unloaded) = self.picture.unloaded_mut() {
                    unloaded.loading_snapshot = None;
                }
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
                picture: self.id.to_string(),
                reason: e.to_string(),
            }),
            Err(e) => Err(StoreError::Corrupt {
                picture: self.id.to_string(),
                reason: format!("decoding task failed: {e}"),
            }),
        }
    }

    /// Answers the joiners waiting for a stored picture with its stored bytes (verified by
    /// `check_png`), and keeps answering new ones so until the decode ends. The reply is the one
    /// they would get after the decode: nothing can be applied before it, so the picture is
    /// exactly at the stored seq either way.
    fn serve_while_decoding(&mut self, stored: &StoredPicture) {
        // A picture another service owns is asked of that service, unless the asker cannot
        // reach it.
        let record = Owning::Reader {
            stored: stored.meta.ownership,
        };
        if let Some(owner) = record.moved_to(self.shared.config.node()) {
            self.snapshot_waiters
                .reply_where(|w| !w.force, |_| Err(PpsError::Moved { owner }));
        }
        let snapshot = Snapshot {
            width: stored.meta.width,
            height: stored.meta.height,
            seq: stored.meta.seq,
            image: SnapshotImage::Png(stored.png.clone()),
        };
        self.snapshot_waiters.reply_where(
            |w| w.min_seq <= snapshot.seq,
            |_| {
                metrics::counter!("pps_snapshots_before_decode_total").increment(1);
                Ok(snapshot.clone())
            },
        );
        if let Some(unloaded) = self.picture.unloaded_mut() {
            unloaded.loading_snapshot = Some(snapshot);
        }
    }

    fn load_failed(&mut self, error: StoreError) {
        metrics::counter!("pps_load_failures_total").increment(1);
        let message = error.to_string();
        // Never open a picture blank because storage failed: tell the joiners, and
        // keep the batches until the load succeeds.
        self.snapshot_waiters
            .reply_all(|_| Err(PpsError::Storage(message.clone())));
        self.durable_waiters
            .reply_all(|_| Err(PpsError::Storage(message.clone())));
        self.acquirers
            .reply_all(|_| Err(PpsError::Storage(message.clone())));
        let Picture::Unloaded(Unloaded {
            unchecked,
            create_size,
            load_retry_at,
            load_backoff,
            ..
        }) = &mut self.picture
        else {
            return;
        };
        let retryable = matches!(error, StoreError::Unavailable(_));
        if !retryable {
            unchecked.reply_all(|_| Err(PpsError::Storage(message.clone())));
        }
        if unchecked.is_empty() {
            tracing::warn!(picture = %self.id, %error, "picture load failed");
            *load_retry_at = None;
            *create_size = None;
        } else {
            let backoff = load_backoff.current();
            *load_retry_at = Some(retry_after(load_backoff));
            tracing::warn!(picture = %self.id, %error, retry_in_ms = backoff.as_millis() as u64, batches = unchecked.len(), "picture load failed; retrying while batches wait");
        }
    }
}
