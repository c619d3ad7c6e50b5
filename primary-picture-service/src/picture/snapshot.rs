//! Serving joiners: a snapshot at (at least) each one's `min_seq`, from the last PNG encoding
//! while it is recent and close behind, in the LZ4 form to those who ask once it is at hand;
//! giving up on a `min_seq` that never arrives; and the PNG and LZ4 encodings themselves,
//! which flushes reuse.
//!
//! Touches the snapshot waiters and `last_encoding` of the [`Loaded`] state; reads its seqs, and
//! its raster through a job.

use bytes::Bytes;
use protocol::pps::{PpsError, Snapshot, SnapshotImage};
use protocol::snapshot::{encode_lz4, encode_png, Compression};
use tokio::time::Instant;

use super::{Actor, Loaded, Mailbox};
use crate::scheduler::Priority;

/// A joiner waiting for its snapshot.
pub(super) struct SnapshotWaiter {
    pub(super) min_seq: u64,
    /// Would rather have the LZ4 form (given when at hand, never waited for).
    pub(super) lz4: bool,
    /// Takes what storage holds even when another service owns the picture.
    pub(super) force: bool,
    /// When waiting for `min_seq` to arrive stops.
    pub(super) deadline: Instant,
}

/// The last PNG encoding of the picture: reused for snapshots, and for the next flush when no
/// update was applied since.
pub(super) struct Encoding {
    pub(super) seq: u64,
    pub(super) png: Bytes,
    /// The LZ4 form at the same seq, made after a joiner asked for it (see
    /// [`Actor::encode_lz4`]).
    pub(super) lz4: Option<Bytes>,
    pub(super) at: Instant,
}

impl Loaded {
    /// The seq of the last encoding when it has no LZ4 form yet and the raster is still at
    /// that seq.
    fn lz4_wanted(&self) -> Option<u64> {
        self.last_encoding
            .as_ref()
            .filter(|e| e.lz4.is_none() && e.seq == self.applied_seq)
            .map(|e| e.seq)
    }
}

impl Actor {
    pub(super) async fn serve_snapshots(&mut self, mailbox: &mut Mailbox) {
        let started = Instant::now();
        let reuse = self.shared.config.snapshot_reuse;
        let Some(loaded) = self.picture.loaded() else {
            return;
        };
        let applied = loaded.applied_seq;
        let need = self
            .snapshot_waiters
            .iter()
            .filter(|w| w.min_seq <= applied)
            .map(|w| w.min_seq)
            .max()
            .unwrap_or(0);
        // An encoding at `applied_seq` is exact whatever its age; an older one is reused while
        // recent and close behind (the joiner gets the updates after it from BS's log).
        let behind = self.shared.config.snapshot_reuse_updates;
        let fresh = loaded.last_encoding.as_ref().is_some_and(|e| {
            e.seq >= need
                && (e.seq == applied || (e.at.elapsed() < reuse && applied - e.seq <= behind))
        });
        if !fresh {
            if let Err(error) = self.encode(Priority::High, mailbox).await {
                // A picture lost meanwhile has failed every waiter already.
                if let Some(loaded) = self.picture.loaded() {
                    let applied = loaded.applied_seq;
                    self.snapshot_waiters
                        .reply_where(|w| w.min_seq <= applied, |_| Err(error.clone()));
                }
                return;
            }
        }
        let Some(loaded) = self.picture.loaded() else {
            return;
        };
        let Some(encoding) = loaded.last_encoding.as_ref() else {
            return;
        };
        let Some(raster) = loaded.raster.as_ref() else {
            return;
        };
        let snapshot = Snapshot {
            width: raster.width(),
            height: raster.height(),
            seq: encoding.seq,
            image: SnapshotImage::Png(encoding.png.clone()),
        };
        let lz4 = encoding.lz4.clone();
        let mut lz4_missed = false;
        self.snapshot_waiters.reply_where(
            |w| w.min_seq <= snapshot.seq,
            |w| {
                Ok(match &lz4 {
                    Some(lz4) if w.lz4 => Snapshot {
                        image: SnapshotImage::Lz4(lz4.clone()),
                        ..snapshot.clone()
                    },
                    _ => {
                        lz4_missed |= w.lz4;
                        snapshot.clone()
                    }
                })
            },
        );
        metrics::histogram!("pps_snapshot_seconds").record(started.elapsed().as_secs_f64());
        if lz4_missed {
            self.encode_lz4(mailbox).await;
        }
    }

    /// Joiners asked for the LZ4 form and got the PNG only: encodes the LZ4 form of the last
    /// encoding for the joiners after them, if the raster is still at that encoding's seq
    /// (otherwise the next encoding gets one when a joiner asks again). Runs after the replies,
    /// so no joiner ever waits for it.
    async fn encode_lz4(&mut self, mailbox: &mut Mailbox) {
        if self.picture.loaded().and_then(Loaded::lz4_wanted).is_none() {
            return;
        }
        let permit = self.permit(Priority::High, mailbox).await;
        let Some(seq) = self.picture.loaded().and_then(Loaded::lz4_wanted) else {
            return;
        };
        let started = Instant::now();
        let result = self
            .with_raster(mailbox, "lz4 encoding", |raster| encode_lz4(raster))
            .await;
        drop(permit);
        metrics::histogram!("pps_encode_lz4_seconds").record(started.elapsed().as_secs_f64());
        match result {
            Some(Ok(lz4)) => {
                if let Some(encoding) = self
                    .picture
                    .loaded_mut()
                    .and_then(|loaded| loaded.last_encoding.as_mut())
                    .filter(|e| e.seq == seq)
                {
                    encoding.lz4 = Some(Bytes::from(lz4));
                }
            }
            Some(Err(error)) => {
                tracing::warn!(picture = %self.id, %error, "lz4 encoding failed; joiners get the png");
            }
            None => {}
        }
    }

    /// Encodes the raster at `applied_seq` into `last_encoding`.
    pub(super) async fn encode(
        &mut self,
        priority: Priority,
        mailbox: &mut Mailbox,
    ) -> Result<(), PpsError> {
        let permit = self.permit(priority, mailbox).await;
        let Some(seq) = self
            .picture
            .loaded()
            .filter(|loaded| loaded.raster.is_some())
            .map(|loaded| loaded.applied_seq)
        else {
            return Err(PpsError::Unavailable("picture not loaded".to_string()));
        };
        let started = Instant::now();
        let result = self
            .with_raster(mailbox, "png encoding", move |raster| {
                encode_png(raster, seq, Compression::Fast)
            })
            .await;
        drop(permit);
        metrics::histogram!("pps_encode_seconds").record(started.elapsed().as_secs_f64());
        match result {
            Some(Ok(png)) => {
                if let Some(loaded) = self.picture.loaded_mut() {
                    loaded.last_encoding = Some(Encoding {
                        seq,
                        png: Bytes::from(png),
                        lz4: None,
                        at: Instant::now(),
                    });
                }
                Ok(())
            }
            Some(Err(error)) => {
                tracing::error!(picture = %self.id, %error, "png encoding failed");
                Err(PpsError::Unavailable(format!(
                    "png encoding failed: {error}"
                )))
            }
            None => Err(PpsError::Unavailable("png encoding failed".to_string())),
        }
    }

    /// Fails the joiners whose `min_seq` has not arrived by their deadline.
    pub(super) fn expire_snapshot_waiters(&mut self) {
        let Some(loaded) = self.picture.loaded() else {
            return;
        };
        let now = Instant::now();
        let received = loaded.received_seq;
        let id = &self.id;
        self.snapshot_waiters.reply_where(
            |w| w.min_seq > received && w.deadline <= now,
            |w| {
                tracing::warn!(picture = %id, min_seq = w.min_seq, received, "snapshot gave up waiting for its seq");
                Err(PpsError::Unavailable(format!(
                    "timed out waiting for seq {} (have {received})",
                    w.min_seq
                )))
            },
        );
    }
}
