//! Wire types of PROTOCOL.md §2. Field and variant order is the contract: bincode 1.x writes
//! fields in declaration order and enum variants as their `u32` index.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// `r, g, b, a`.
pub type Rgba = [u8; 4];

/// A pixel position: `x` to the right, `y` down, `(0, 0)` the top-left pixel. Ops may carry
/// points outside the picture (they are clipped, PROTOCOL.md §4) within the coordinate limit
/// of §5.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Point {
    /// Column, in pixels.
    pub x: i32,
    /// Row, in pixels.
    pub y: i32,
}

impl Point {
    /// The point at column `x`, row `y`.
    pub const fn new(x: i32, y: i32) -> Self {
        Self { x, y }
    }
}

/// A drawing operation (PROTOCOL.md §2). What it does to pixels is §4 ([`crate::raster`]);
/// what sizes are allowed is §5 ([`crate::limits`]). Coordinates are pixels.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// Blends `color` onto each listed point inside the picture, each pixel once however often
    /// it is listed.
    Pixels {
        /// Colour blended onto each point.
        color: Rgba,
        /// The points, 1..=65,536 by default (§5); duplicates count once.
        #[serde(deserialize_with = "crate::bounded::bounded_vec")]
        points: Vec<Point>,
    },
    /// Blends `color` onto the rectangle `x <= px < x+w`, `y <= py < y+h`.
    Rect {
        /// Left column.
        x: i32,
        /// Top row.
        y: i32,
        /// Width in pixels, 1..=65,536 by default (§5).
        w: u32,
        /// Height in pixels, 1..=65,536 by default (§5).
        h: u32,
        /// Colour blended onto the rectangle.
        color: Rgba,
    },
    /// Blends `color` onto every pixel within `width / 2` of the line through `points` (the
    /// exact rule and line algorithm are §4).
    Stroke {
        /// Colour blended onto the covered pixels.
        color: Rgba,
        /// Pen diameter in pixels, 1..=256 by default (§5).
        width: u16,
        /// The spine's vertices, in drawing order, 1..=4,096 by default (§5); one point draws
        /// a dot.
        #[serde(deserialize_with = "crate::bounded::bounded_vec")]
        points: Vec<Point>,
    },
    /// Blends a `w`×`h` block of pixels with its top-left corner at `(x, y)`.
    Patch {
        /// Left column.
        x: i32,
        /// Top row.
        y: i32,
        /// Width in pixels, 1..=512 by default (§5).
        w: u32,
        /// Height in pixels, 1..=512 by default (§5).
        h: u32,
        /// `w*h*4` bytes of RGBA8, row-major; any other length is rejected (§5).
        rgba: Bytes,
    },
    /// Sets every pixel of the picture to `color`, without blending.
    Clear {
        /// The colour every pixel becomes.
        color: Rgba,
    },
}

impl Op {
    /// Short name for logs, metrics and rejection reasons.
    pub fn kind(&self) -> &'static str {
        match self {
            Op::Pixels { .. } => "pixels",
            Op::Rect { .. } => "rect",
            Op::Stroke { .. } => "stroke",
            Op::Patch { .. } => "patch",
            Op::Clear { .. } => "clear",
        }
    }
}

/// An accepted op with its place in the picture's total order: an update (PROTOCOL.md §3).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sequenced {
    /// The picture's sequence number for this op: consecutive, starting at 1 for a new picture
    /// and continuing across restarts (§3.1).
    pub seq: u64,
    /// The id the server gave the connection that drew it (for a session client, its session
    /// key, §11).
    pub client_id: u64,
    /// The number its sender gave it in `Draw`; a client's ops are sequenced in that order.
    pub client_seq: u64,
    /// What was drawn.
    pub op: Op,
}

/// A message from a drawing client to the broadcast service (PROTOCOL.md §2).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClientMsg {
    /// Asks for `op` to be sequenced. Answered by its echo in `Updates`, or by `Rejected`.
    Draw {
        /// The client's own number for the op, increasing; echoed back in [`Sequenced`] and
        /// `Rejected`.
        client_seq: u64,
        /// The op to draw.
        op: Op,
    },
    /// Asks for a `Pong` carrying the same `nonce` (to measure round trips).
    Ping {
        /// Any value; returned unchanged.
        nonce: u64,
    },
}

/// A message from the broadcast service to a client (PROTOCOL.md §2), with the extensions
/// of §8, §10 and §11 after the six variants of the contract.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ServerMsg {
    /// The picture as of `snapshot_seq`, then the updates after it (§3.2). First message of
    /// every connection; may come again at any time (a resync, §3.5), replacing the picture.
    Welcome {
        /// The id this connection's ops are echoed with.
        client_id: u64,
        /// Picture width in pixels.
        width: u32,
        /// Picture height in pixels.
        height: u32,
        /// The last seq included in the snapshot.
        snapshot_seq: u64,
        /// The picture as a PNG (RGBA8, [`crate::snapshot`]); empty in a resumed `Welcome`
        /// (§11), where the client keeps its own picture.
        snapshot_png: Bytes,
        /// The updates `snapshot_seq+1 ..= k`, consecutive; `Updates` continue at `k+1`.
        #[serde(deserialize_with = "crate::bounded::bounded_vec")]
        pending: Vec<Sequenced>,
    },
    /// One or more consecutive updates, in increasing `seq`.
    Updates(#[serde(deserialize_with = "crate::bounded::bounded_vec")] Vec<Sequenced>),
    /// The client's `Draw` with this `client_seq` broke a limit (§3.4, §5) or the rate limit,
    /// or came from a view-only client (§13): it was not sequenced.
    Rejected {
        /// The `client_seq` of the refused `Draw`.
        client_seq: u64,
        /// Human-readable: the broken limit and its bound (§7).
        reason: String,
    },
    /// The connection is about to be closed for this reason (§2, §7).
    Error {
        /// An HTTP-like status: 400, 413, 429, 500 or 503 (§5), 409 for a session clash (§11).
        code: u16,
        /// Human-readable detail.
        message: String,
    },
    /// The answer to `Ping`.
    Pong {
        /// The `Ping`'s nonce.
        nonce: u64,
    },
    /// How many clients the picture has, sent whenever that changes (§3.6).
    Presence {
        /// Clients connected to the picture, over every broadcast service of a cluster (§9).
        clients: u32,
    },
    /// Extension (the project's PROTOCOL.md §8): a `Welcome` whose snapshot is an LZ4 block of
    /// the `width*height*4` RGBA8 bytes instead of a PNG. Sent only to clients that asked for
    /// it with `?snapshot=lz4`, and even then only when the picture service has that encoding
    /// at hand: such a client must accept both forms.
    WelcomeLz4 {
        /// As in `Welcome`.
        client_id: u64,
        /// Picture width in pixels.
        width: u32,
        /// Picture height in pixels.
        height: u32,
        /// The last seq included in the snapshot.
        snapshot_seq: u64,
        /// One LZ4 block (no frame, no size prefix) of exactly `width*height*4` bytes
        /// ([`crate::snapshot::decode_lz4`]).
        snapshot_lz4: Bytes,
        /// As in `Welcome`.
        #[serde(deserialize_with = "crate::bounded::bounded_vec")]
        pending: Vec<Sequenced>,
    },
    /// Extension (PROTOCOL.md §10): every update up to and including `seq` is in the object
    /// store. Sent only to clients that asked with `?durable=1`, never beyond the last seq the
    /// client was sent, and only when it advances what the client was told.
    Durable {
        /// Every update up to and including this seq is stored.
        seq: u64,
    },
    /// Extension (PROTOCOL.md §11): sent after every `Welcome` to a client that connected with
    /// `?session=K` (`session` is `K`, its `client_id`): `last_client_seq` is the highest
    /// `client_seq` of the session the picture's sequencer has sequenced (0: none it
    /// remembers). Every op of the session up to it is in the picture (in the snapshot, in
    /// `pending` or in `Updates` to come); the ones above it are to be sent again.
    Session {
        /// The session key `K` the client connected with.
        session: u64,
        /// Highest `client_seq` of the session that was sequenced; 0 when none is remembered.
        last_client_seq: u64,
    },
}
