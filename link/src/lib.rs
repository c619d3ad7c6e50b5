//! The link between a broadcast service and its picture services: what the broadcast service
//! needs from a picture service ([`PictureService`], [`PpsEvent`]), whether it runs in the same
//! process (`primary_picture_service::Pps`, embedded mode) or behind the network
//! ([`remote::RemotePps`], services mode).
//!
//! This crate is all a broadcast service built for services mode only links of the picture
//! service: not its store, its write-ahead log or the S3 client (`broadcast-service` without its
//! default `embedded` feature). The messages on the wire are `protocol::pps`.
#![warn(missing_docs)]

pub mod remote;

/// Largest picture side, in pixels, unless `--max-side` says otherwise: both binaries' default,
/// so a broadcast service and its picture services agree on it out of the box.
pub const DEFAULT_MAX_SIDE: u32 = 4096;

/// Largest WebSocket message on a link, in bytes, unless a flag says otherwise (a snapshot of a
/// big picture is the largest message): the default of both ends (`--pps-max-message-size`,
/// the picture service's `--max-message-size`), so they agree out of the box.
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 64 << 20;

use futures::future::BoxFuture;
use protocol::pps::{
    AcquireRequest, Acquired, ApplyBatch, HistoryEntry, PpsError, ReleaseRequest, Snapshot,
    SnapshotRequest, VersionImage,
};
use tokio::sync::broadcast;
use tokio::time::Instant;

/// Something the picture service tells every broadcast service, unasked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PpsEvent {
    /// Every update of `picture` up to `seq` is durable in storage: BS may trim its log.
    Flushed {
        /// The picture's id.
        picture: String,
        /// The highest seq storage holds.
        seq: u64,
    },
    /// The connection to the picture service was (re)established after a loss, or events were
    /// missed: the service may have lost whatever was not flushed. BS must resend every update
    /// it still holds (PPS ignores the ones it already has) and re-issue pending releases.
    Reconnected,
}

/// The contract between BS and PPS.
///
/// Ordering: every method *enqueues its request before it returns*; the returned future only
/// waits for the reply. So two calls made one after the other from one task reach PPS in that
/// order (batches of a picture stay in seq order) even if their futures are awaited elsewhere,
/// concurrently or never. None of the methods blocks.
pub trait PictureService: Send + Sync + 'static {
    /// Asks for the picture's sequencer lease (docs/scaling.md): `Granted` (sequence it),
    /// `Held` (relay to the holder), or `PpsError::Moved` (another service owns it).
    fn acquire(&self, request: AcquireRequest) -> BoxFuture<'static, Result<Acquired, PpsError>>;

    /// The picture as a PNG snapshot, opening it (loading from storage, or creating it blank
    /// when `create` is set) as needed. Waits until PPS has applied `min_seq`.
    fn snapshot(&self, request: SnapshotRequest) -> BoxFuture<'static, Result<Snapshot, PpsError>>;

    /// Queues a batch of consecutive updates. Resolves to the last seq PPS now holds
    /// (`PpsReply::Accepted`), or `PpsError::Gap` when the batch does not continue it.
    fn apply(&self, batch: ApplyBatch) -> BoxFuture<'static, Result<u64, PpsError>>;

    /// Applies everything up to `last_seq`, flushes it at high priority and drops the picture
    /// from memory. Resolves to the flushed seq once storage has it.
    fn release(&self, request: ReleaseRequest) -> BoxFuture<'static, Result<u64, PpsError>>;

    /// Stores everything the service has accepted of `picture` now, at high priority, without
    /// letting it go (the admin API's flush). Resolves to the seq storage then holds;
    /// `PpsError::NotFound` when the picture is not open in that service (nothing to store).
    fn flush(&self, picture: String) -> BoxFuture<'static, Result<u64, PpsError>>;
    /// The picture's stored versions, by seq ascending (PROTOCOL.md §15): read from storage,
    /// so any picture service answers for any picture, open or not. Empty when it has none.
    fn history(&self, picture: String) -> BoxFuture<'static, Result<Vec<HistoryEntry>, PpsError>>;

    /// Stored version `seq` of the picture: its PNG byte for byte as stored, with its decoded
    /// width and height; `PpsError::NotFound` when there is no such version.
    fn version(
        &self,
        picture: String,
        seq: u64,
    ) -> BoxFuture<'static, Result<VersionImage, PpsError>>;

    /// Subscribes to [`PpsEvent`]s. A lagging receiver must treat `Lagged` as `Reconnected`.
    fn events(&self) -> broadcast::Receiver<PpsEvent>;

    /// Whether the service is reachable now (readiness).
    fn is_ready(&self) -> bool;

    /// While the service is unreachable: until when a sequencer holding a lease from it may
    /// still echo updates the service has not accepted (the lease cannot have passed to
    /// another broadcast service before then). `None`: not at all. In process: forever.
    fn echo_until(&self) -> Option<Instant>;

    /// The service's id (`protocol::placement::node_id`, how it signs the pictures it owns),
    /// once known.
    fn node(&self) -> Option<u64>;
}
