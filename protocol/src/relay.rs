//! The relay link between two broadcast services (PROTOCOL.md §9, docs/scaling.md): a service
//! that does not hold a picture's sequencer lease relays its clients to the one that does over
//! one WebSocket per picture (`GET /pictures/{id}/relay?since=SEQ`).
//!
//! Downward the sequencer sends exactly what it sends its own clients, as `ServerMsg` frames: a
//! `Welcome` whose `snapshot_png` is empty (the updates after `since`, or none), then every
//! `Updates` and `Presence` frame, byte for byte, plus `Durable` frames (for the relay's
//! clients that asked for them) and `Session` answers (for one client of the relay). Upward
//! the relay sends [`RelayUp`].

use serde::{Deserialize, Serialize};

use crate::wire::Op;

/// What a relay sends to the sequencer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RelayUp {
    /// A draw of one of the relay's clients, in that client's order. `client_id` is the id the
    /// relay gave the client (it appears in the echo).
    Draw {
        /// The relay's id for the client.
        client_id: u64,
        /// The client's number for the op.
        client_seq: u64,
        /// The op, unchanged.
        op: Op,
    },
    /// How many clients of the picture the relay has now (the sequencer's `Presence` counts
    /// every relay's clients with its own).
    Clients {
        /// Clients of the picture connected to the relay.
        count: u32,
    },
    /// A draw of a relay's client that connected with a session key (PROTOCOL.md §11): as
    /// `Draw` (same layout), and the sequencer drops it if it sequenced that `client_seq` of
    /// the session (`client_id`) already.
    SessionDraw {
        /// The client's session key `K`.
        client_id: u64,
        /// The client's number for the op, increasing over the session's connections.
        client_seq: u64,
        /// The op, unchanged.
        op: Op,
    },
    /// A relay's session client was welcomed: the sequencer answers down the link with
    /// `ServerMsg::Session` for it (the highest `client_seq` of the session it sequenced),
    /// which the relay passes on to that client alone.
    SessionQuery {
        /// The session key `K` of the welcomed client.
        session: u64,
    },
}
