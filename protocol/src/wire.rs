//! Wire types of PROTOCOL.md §2. Field and variant order is the contract: bincode 1.x writes
//! fields in declaration order and enum variants as their `u32` index.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// `r, g, b, a`.
pub type Rgba = [u8; 4];

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Point {
    pub x: i32,
    pub y: i32,
}

impl Point {
    pub const fn new(x: i32, y: i32) -> Self {
        Self { x, y }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    Pixels {
        color: Rgba,
        #[serde(deserialize_with = "crate::bounded::bounded_vec")]
        points: Vec<Point>,
    },
    Rect {
        x: i32,
        y: i32,
        w: u32,
        h: u32,
        color: Rgba,
    },
    Stroke {
        color: Rgba,
        width: u16,
        #[serde(deserialize_with = "crate::bounded::bounded_vec")]
        points: Vec<Point>,
    },
    /// `rgba` holds `w*h*4` bytes, row-major.
    Patch {
        x: i32,
        y: i32,
        w: u32,
        h: u32,
        rgba: Bytes,
    },
    Clear {
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

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sequenced {
    pub seq: u64,
    pub client_id: u64,
    pub client_seq: u64,
    pub op: Op,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClientMsg {
    Draw { client_seq: u64, op: Op },
    Ping { nonce: u64 },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ServerMsg {
    Welcome {
        client_id: u64,
        width: u32,
        height: u32,
        snapshot_seq: u64,
        snapshot_png: Bytes,
        #[serde(deserialize_with = "crate::bounded::bounded_vec")]
        pending: Vec<Sequenced>,
    },
    /// One or more consecutive updates, in increasing `seq`.
    Updates(#[serde(deserialize_with = "crate::bounded::bounded_vec")] Vec<Sequenced>),
    Rejected {
        client_seq: u64,
        reason: String,
    },
    Error {
        code: u16,
        message: String,
    },
    Pong {
        nonce: u64,
    },
    Presence {
        clients: u32,
    },
    /// Extension (the project's PROTOCOL.md §8): a `Welcome` whose snapshot is an LZ4 block of
    /// the `width*height*4` RGBA8 bytes instead of a PNG. Sent only to clients that asked for
    /// it with `?snapshot=lz4`, and even then only when the picture service has that encoding
    /// at hand: such a client must accept both forms.
    WelcomeLz4 {
        client_id: u64,
        width: u32,
        height: u32,
        snapshot_seq: u64,
        snapshot_lz4: Bytes,
        #[serde(deserialize_with = "crate::bounded::bounded_vec")]
        pending: Vec<Sequenced>,
    },
    /// Extension (PROTOCOL.md §10): every update up to and including `seq` is in the object
    /// store. Sent only to clients that asked with `?durable=1`, never beyond the last seq the
    /// client was sent, and only when it advances what the client was told.
    Durable {
        seq: u64,
    },
    /// Extension (PROTOCOL.md §11): sent after every `Welcome` to a client that connected with
    /// `?session=K` (`session` is `K`, its `client_id`): `last_client_seq` is the highest
    /// `client_seq` of the session the picture's sequencer has sequenced (0: none it
    /// remembers). Every op of the session up to it is in the picture (in the snapshot, in
    /// `pending` or in `Updates` to come); the ones above it are to be sent again.
    Session {
        session: u64,
        last_client_seq: u64,
    },
}
