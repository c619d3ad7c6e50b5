//! Messages between the broadcast service (BS) and the primary picture service (PPS).
//!
//! In embedded mode they are passed as values; in services mode they travel as bincode in
//! binary WebSocket messages over one multiplexed connection: [`ToPps`] from BS, [`FromPps`]
//! back, every request carrying an id that its reply repeats. `FromPps::Flushed` is pushed to
//! every connected BS whenever a picture reaches storage, so that BS can trim its pending log.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// "Give me the picture": opens (loads or creates) it as needed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotRequest {
    pub picture: String,
    /// `Some((width, height))`: create the picture blank at this size when it exists neither in
    /// memory nor in storage. `None`: a missing picture is [`PpsError::NotFound`].
    pub create: Option<(u32, u32)>,
    /// The snapshot must include at least every update up to this seq (read-your-writes); the
    /// reply waits until PPS has applied that far.
    pub min_seq: u64,
    /// Rather give the picture as an LZ4 block of its RGBA8 bytes ([`SnapshotImage::Lz4`])
    /// where PPS has one at the snapshot's seq, for a joiner that asked for it (PROTOCOL.md §8).
    /// PPS never delays the reply for it: it answers with the PNG and encodes the LZ4 form
    /// afterwards, for the next joiners.
    pub lz4: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    pub width: u32,
    pub height: u32,
    /// Every update up to and including `seq` is in `image`, and none after it.
    pub seq: u64,
    pub image: SnapshotImage,
}

/// The picture of a [`Snapshot`], in one form only: a snapshot crosses the network in
/// services mode, and megabytes sent twice would slow every join.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SnapshotImage {
    /// RGBA8 PNG with the `tEXt` `seq` chunk.
    Png(Bytes),
    /// One LZ4 block of the RGBA8 bytes (`snapshot::encode_lz4`): only to a request with
    /// [`SnapshotRequest::lz4`], and only when at hand.
    Lz4(Bytes),
}

impl SnapshotImage {
    /// The PNG, unless this is the LZ4 form.
    pub fn png(&self) -> Option<&Bytes> {
        match self {
            SnapshotImage::Png(png) => Some(png),
            SnapshotImage::Lz4(_) => None,
        }
    }

    /// The LZ4 block, unless this is the PNG form.
    pub fn lz4(&self) -> Option<&Bytes> {
        match self {
            SnapshotImage::Lz4(lz4) => Some(lz4),
            SnapshotImage::Png(_) => None,
        }
    }
}

/// A batch of consecutive sequenced updates `first_seq ..= last_seq`, in order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApplyBatch {
    pub picture: String,
    /// The picture's size as BS knows it: lets PPS recreate a picture that has never reached
    /// storage (after a PPS restart) without a separate open.
    pub width: u32,
    pub height: u32,
    pub first_seq: u64,
    pub last_seq: u64,
    /// bincode `Vec<Sequenced>` (see `codec::sequenced_vec`).
    pub updates: Bytes,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseRequest {
    pub picture: String,
    /// The last seq BS sequenced; PPS applies everything up to it before the flush.
    pub last_seq: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PpsRequest {
    Snapshot(SnapshotRequest),
    Apply(ApplyBatch),
    Release(ReleaseRequest),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PpsReply {
    Snapshot(Snapshot),
    /// The batch is queued (not necessarily applied yet). PPS has every update up to `last_seq`.
    Accepted {
        last_seq: u64,
    },
    /// Every update up to `flushed_seq` is in storage and the picture was dropped from memory.
    Released {
        flushed_seq: u64,
    },
    Error(PpsError),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum PpsError {
    #[error("picture not found")]
    NotFound,
    /// The batch does not continue what PPS has: BS must resend from `have + 1`.
    #[error("batch starts at seq {first_seq} but the picture service has seq {have}")]
    Gap { have: u64, first_seq: u64 },
    #[error("bad request: {0}")]
    BadRequest(String),
    /// Storage failed (load failed, or is unreachable): the picture must not be opened blank.
    #[error("storage: {0}")]
    Storage(String),
    #[error("picture service unavailable: {0}")]
    Unavailable(String),
    #[error("picture service is shutting down")]
    ShuttingDown,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ToPps {
    Request { id: u64, request: PpsRequest },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum FromPps {
    Reply {
        id: u64,
        reply: PpsReply,
    },
    /// Every update of `picture` up to `seq` is durable in storage.
    Flushed {
        picture: String,
        seq: u64,
    },
}
