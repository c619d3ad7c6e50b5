//! The history writer (PROTOCOL.md §15): stored versions of a picture, written beside it.
//!
//! A picture actor offers every successful flush of its picture (the seq and the very bytes
//! stored) to its [`HistoryWriter`] and goes on at once: versions never delay a flush, and a
//! failed version never touches the picture. The writer's task decides whether the offer becomes
//! a version, writes it, and prunes:
//!
//! - a flush becomes a version when the newest stored version is at least `history_interval`
//!   old (so a changing picture gets one at most every interval; zero: every flush), or when
//!   it is the release flush (the picture as its last client left it);
//! - a version is a create-only write of the flushed PNG at `{id}.history/{seq:020}.png`
//!   ([`crate::store::version_key`]); one that exists already is left as it is;
//! - after each version, the oldest beyond `history_keep` are deleted.
//!
//! Only the newest offer waits (a `watch` channel): if storage is slow, intermediate flushes
//! are skipped, never queued. A failed write or prune is logged, counted in
//! `pps_history_failures_total{op}`, and tried again at the next offer (the next flush).
//! When the actor goes (the picture is released and unloaded), the writer finishes the offer
//! it holds, the release's, and stops.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use protocol::PictureId;
use tokio::sync::watch;

use crate::store::{Store, StoreError};

/// A flush offered to the history.
#[derive(Clone, Debug)]
struct Offer {
    seq: u64,
    /// The PNG exactly as the flush stored it.
    png: Bytes,
    /// The release flush: always a version.
    released: bool,
}

/// One picture's history writer; dropping it lets the task finish its last offer and stop.
pub(crate) struct HistoryWriter {
    offers: watch::Sender<Option<Offer>>,
}

impl HistoryWriter {
    /// Starts the writer of `picture`'s history; `keep` must be at least 1.
    pub(crate) fn start(
        store: Arc<dyn Store>,
        picture: PictureId,
        interval: Duration,
        keep: usize,
    ) -> HistoryWriter {
        let (offers, receiver) = watch::channel(None);
        tokio::spawn(run(store, picture, interval, keep.max(1), receiver));
        HistoryWriter { offers }
    }

    /// Offers a flush that storage now holds: `png` is what was stored at `seq`.
    pub(crate) fn offer(&self, seq: u64, png: Bytes, released: bool) {
        // No receiver only if the task panicked: the history stops, the picture does not care.
        let _ = self.offers.send(Some(Offer { seq, png, released }));
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn failed(picture: &str, op: &'static str, error: &StoreError) {
    metrics::counter!("pps_history_failures_total", "op" => op).increment(1);
    tracing::warn!(%picture, op, %error, "history: storage failed; will retry at the next flush");
}

/// The newest stored version: its seq and when it was stored (ms since the epoch).
type Newest = Option<(u64, u64)>;

async fn run(
    store: Arc<dyn Store>,
    picture: PictureId,
    interval: Duration,
    keep: usize,
    mut offers: watch::Receiver<Option<Offer>>,
) {
    // `None` until storage has been asked (then `Some(None)`: no version yet).
    let mut newest: Option<Newest> = None;
    // `changed` still reports an offer made just before the sender was dropped (the release).
    while offers.changed().await.is_ok() {
        let Some(offer) = offers.borrow_and_update().clone() else {
            continue;
        };
        let known = match newest {
            Some(known) => known,
            None => match store.list_versions(&picture).await {
                Ok(listed) => {
                    let known = listed.last().map(|v| (v.seq, v.time_ms));
                    newest = Some(known);
                    known
                }
                Err(error) => {
                    failed(&picture, "list", &error);
                    continue;
                }
            },
        };
        let due = match known {
            None => true,
            Some((seq, _)) if offer.seq <= seq => false,
            Some(_) if offer.released || interval.is_zero() => true,
            Some((_, at)) => now_ms().saturating_sub(at) >= interval.as_millis() as u64,
        };
        if !due {
            continue;
        }
        match store
            .put_version(&picture, offer.seq, offer.png.clone())
            .await
        {
            Ok(()) => {
                metrics::counter!("pps_history_versions_total").increment(1);
                tracing::debug!(%picture, seq = offer.seq, released = offer.released, "history: version stored");
            }
            // Stored already (by us before a restart, or a previous owner): it is the same
            // picture at the same seq.
            Err(StoreError::Conflict { .. }) => {}
            Err(error) => {
                failed(&picture, "put", &error);
                continue;
            }
        }
        newest = Some(Some((offer.seq, now_ms())));
        prune(store.as_ref(), &picture, keep).await;
    }
}

/// Deletes the oldest versions beyond `keep`. A failure is retried after the next version.
async fn prune(store: &dyn Store, picture: &PictureId, keep: usize) {
    let listed = match store.list_versions(picture).await {
        Ok(listed) => listed,
        Err(error) => return failed(picture, "list", &error),
    };
    let excess = listed.len().saturating_sub(keep);
    for version in &listed[..excess] {
        if let Err(error) = store.delete_version(picture, version.seq).await {
            return failed(picture, "prune", &error);
        }
        metrics::counter!("pps_history_pruned_total").increment(1);
        tracing::debug!(%picture, seq = version.seq, "history: version pruned");
    }
}
