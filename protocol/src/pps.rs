//! Messages between the broadcast service (BS) and the primary picture service (PPS).
//!
//! In embedded mode they are passed as values; in services mode they travel as bincode in
//! binary WebSocket messages over one multiplexed connection: [`ToPps`] from BS, [`FromPps`]
//! back, every request carrying an id that its reply repeats. `FromPps::Flushed` is pushed to
//! every connected BS whenever a picture reaches storage, so that BS can trim its pending log.
//!
//! A picture is sequenced by the one BS that holds its [`Lease`], granted by the PPS that owns
//! the picture ([`AcquireRequest`]); every batch and release carries it (docs/scaling.md).

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// "Give me the picture": opens (loads or creates) it as needed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotRequest {
    /// The picture id.
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
    /// Include at least every update PPS has accepted when the request arrives, whatever
    /// `min_seq` says (`snapshot.png` asked on a BS that has no room for the picture).
    pub latest: bool,
    /// The picture's owner is unreachable from the asker: a PPS that does not own the picture
    /// answers with what storage holds rather than `Moved`.
    pub force: bool,
}

/// The picture at one seq: the answer to [`SnapshotRequest`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Every update up to and including `seq` is in `image`, and none after it.
    pub seq: u64,
    /// The pixels, as PNG or LZ4.
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

/// The right to sequence one picture, granted by its owner to one BS at a time. Ordered: the
/// ownership epoch (bumped by every takeover of the picture in storage), then the owner's
/// count of grants.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Lease {
    /// The picture's ownership epoch in storage ([`crate::snapshot::Ownership::epoch`]).
    pub epoch: u64,
    /// The owner's count of grants within the epoch.
    pub grant: u64,
}

/// "Let me sequence this picture": answered [`Acquired::Granted`] or [`Acquired::Held`] (by
/// whom), or `PpsError::Moved` when another PPS owns the picture.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AcquireRequest {
    /// The picture id.
    pub picture: String,
    /// Create the picture blank at this size if it exists nowhere.
    pub create: Option<(u32, u32)>,
    /// How other broadcast services reach the asker (its advertise URL), told to relays.
    pub holder: String,
    /// The asker held the lease before and its log still holds updates storage may lack.
    pub claim: Option<Claim>,
    /// The picture's stored owner is unreachable from the asker: take the picture anyway.
    pub force: bool,
}

/// What a former sequencer still holds: its log `first ..= last` (not yet known durable),
/// sequenced under `lease`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claim {
    /// The lease the log was sequenced under.
    pub lease: Lease,
    /// First seq of the log.
    pub first: u64,
    /// Last seq of the log.
    pub last: u64,
}

/// The answer to [`AcquireRequest`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Acquired {
    /// The asker is the sequencer: seqs continue after `seq`, which PPS holds (a claimant
    /// resends its log after it).
    Granted {
        /// The lease every `Apply` and `Release` must carry.
        lease: Lease,
        /// The last seq PPS holds.
        seq: u64,
        /// Width in pixels.
        width: u32,
        /// Height in pixels.
        height: u32,
        /// How long PPS keeps the lease of a sequencer whose connection broke, in
        /// milliseconds: the sequencer may echo on its own for less than that.
        lease_timeout_ms: u64,
        /// The most recent clients' highest `client_seq` among the updates PPS holds (up to
        /// `--session-trail` of them): the new sequencer's session memory (PROTOCOL.md §11)
        /// starts from it.
        sessions: Vec<SessionMark>,
    },
    /// Another BS sequences the picture: relay to it (`holder` is its advertise URL).
    Held {
        /// The holder's advertise URL.
        holder: String,
        /// The holder's lease.
        lease: Lease,
    },
}

/// A client's highest `client_seq` among the updates a picture service holds, sequenced as
/// `seq`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionMark {
    /// The client's id (its session key, for a session client).
    pub client_id: u64,
    /// Its highest `client_seq` among those updates.
    pub client_seq: u64,
    /// The seq that update was given.
    pub seq: u64,
}

/// A batch of consecutive sequenced updates `first_seq ..= last_seq`, in order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApplyBatch {
    /// The picture id.
    pub picture: String,
    /// The sender's lease: a batch from anyone but the holder is refused.
    pub lease: Lease,
    /// The picture's size as BS knows it: lets PPS recreate a picture that has never reached
    /// storage (after a PPS restart) without a separate open. In pixels.
    pub width: u32,
    /// Height in pixels, as `width`.
    pub height: u32,
    /// Seq of the first update in `updates`.
    pub first_seq: u64,
    /// Seq of the last update in `updates`.
    pub last_seq: u64,
    /// bincode `Vec<Sequenced>` (see `codec::sequenced_vec`).
    pub updates: Bytes,
}

/// "I stop sequencing this picture": PPS applies and flushes everything up to `last_seq`, then
/// the lease is free. Answered `Released`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseRequest {
    /// The picture id.
    pub picture: String,
    /// The sender's lease, which the release gives back.
    pub lease: Lease,
    /// The last seq BS sequenced; PPS applies everything up to it before the flush.
    pub last_seq: u64,
}

/// A request from BS to PPS; each is answered by one [`PpsReply`] (or `PpsReply::Error`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PpsRequest {
    /// Answered `Snapshot`.
    Snapshot(SnapshotRequest),
    /// Answered `Accepted`, or `Error(Gap)` / `Error(NotHolder)`.
    Apply(ApplyBatch),
    /// Answered `Released`.
    Release(ReleaseRequest),
    /// Answered `Acquired`, or `Error(Moved)`.
    Acquire(AcquireRequest),
    /// Keeps the connection (and the leases held over it) alive; answered `Pong`.
    Ping,
    /// Store everything accepted of the picture now (admin API); answered `Flushed` with the
    /// seq storage then holds, or `NotFound` when the picture is not open there.
    Flush {
        /// The picture id.
        picture: String,
    },
    /// The picture's stored versions (PROTOCOL.md §15), answered `History`. Read from storage:
    /// any picture service can answer, whoever owns the picture.
    History {
        /// The picture id.
        picture: String,
    },
    /// One stored version, answered `Version`, or `NotFound` when there is no such version.
    Version {
        /// The picture id.
        picture: String,
        /// The version's seq (its name, §15).
        seq: u64,
    },
}

/// One stored version of a picture, as listed in its history (PROTOCOL.md §15).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// The picture as it was at this seq: every update up to it, none after.
    pub seq: u64,
    /// When the version was stored, in milliseconds since the Unix epoch (storage's clock).
    pub time_ms: u64,
    /// The version's PNG, in bytes.
    pub size: u64,
}

/// One stored version of a picture: exactly the PNG stored for it, and its decoded size.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionImage {
    /// The version's seq: every update up to it, none after.
    pub seq: u64,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// RGBA8 PNG with the `tEXt` `seq` chunk, byte for byte as stored.
    pub png: Bytes,
}

/// PPS's answer to one [`PpsRequest`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PpsReply {
    /// The answer to `Snapshot`.
    Snapshot(Snapshot),
    /// The batch is queued (not necessarily applied yet). PPS has every update up to `last_seq`.
    Accepted {
        /// The batch's last seq.
        last_seq: u64,
    },
    /// Every update up to `flushed_seq` is in storage and the picture was dropped from memory.
    Released {
        /// The seq storage holds.
        flushed_seq: u64,
    },
    /// The request failed.
    Error(PpsError),
    /// The answer to `Acquire`.
    Acquired(Acquired),
    /// The answer to `Ping`.
    Pong,
    /// Every update up to `flushed_seq` is in storage (the answer to `Flush`).
    Flushed {
        /// The seq storage holds.
        flushed_seq: u64,
    },
    /// The answer to `History`: the versions, oldest first.
    History(Vec<HistoryEntry>),
    /// The answer to `Version`.
    Version(VersionImage),
}

/// Why PPS refused or failed a request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum PpsError {
    /// The picture (or version) exists neither in memory nor in storage, and was not to be
    /// created.
    #[error("picture not found")]
    NotFound,
    /// The batch does not continue what PPS has: BS must resend from `have + 1`.
    #[error("batch starts at seq {first_seq} but the picture service has seq {have}")]
    Gap {
        /// The last seq PPS has.
        have: u64,
        /// The batch's first seq.
        first_seq: u64,
    },
    /// The request cannot be served as sent (a size out of range, a batch that does not
    /// decode or match its seqs); retrying it will not help.
    #[error("bad request: {0}")]
    BadRequest(String),
    /// Storage failed (load failed, or is unreachable): the picture must not be opened blank.
    #[error("storage: {0}")]
    Storage(String),
    /// PPS cannot serve the picture now (unreachable, over its memory budget, encoding
    /// failed): the asker may retry.
    #[error("picture service unavailable: {0}")]
    Unavailable(String),
    /// PPS is shutting down (draining): the asker turns to the picture's next owner.
    #[error("picture service is shutting down")]
    ShuttingDown,
    /// Another picture service owns the picture (`owner` is its id, `placement::node_id`).
    #[error("the picture is owned by picture service {owner:016x}")]
    Moved {
        /// The owner's node id.
        owner: u64,
    },
    /// The request's lease is not the picture's current one (`holder`: who has it, if anyone).
    #[error("not the holder of the picture's lease (held by {holder:?})")]
    NotHolder {
        /// The current holder's advertise URL; `None` when nobody holds the lease.
        holder: Option<String>,
    },
}

/// A message from BS to PPS on the link (PROTOCOL.md §7).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ToPps {
    /// One request; its reply comes back as [`FromPps::Reply`] with the same `id`.
    Request {
        /// Chosen by BS, unique among its requests in flight on the connection.
        id: u64,
        /// The request.
        request: PpsRequest,
    },
}

/// A message from PPS to BS on the link (PROTOCOL.md §7).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum FromPps {
    /// The reply to the [`ToPps::Request`] with this `id`.
    Reply {
        /// The request's id.
        id: u64,
        /// The answer.
        reply: PpsReply,
    },
    /// Every update of `picture` up to `seq` is durable in storage.
    Flushed {
        /// The picture id.
        picture: String,
        /// The seq storage holds.
        seq: u64,
    },
    /// The first message on a connection: who the picture service is.
    Hello {
        /// Its id (`placement::node_id` of `url`), as it signs the pictures it owns.
        node: u64,
        /// Its advertise URL.
        url: String,
        /// Its lease timeout, in milliseconds.
        lease_timeout_ms: u64,
    },
}
