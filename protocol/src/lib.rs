//! The collaborative raster protocol: everything every party must agree on, and no I/O.
//!
//! # Layout
//!
//! - [`wire`]: the message types of PROTOCOL.md §2 (`ClientMsg`, `ServerMsg`, `Op`, ...).
//! - [`codec`]: bincode 1.x encoding, and decoding of untrusted bytes with every length bounded;
//!   frame builders that splice pre-encoded updates so one encoding is shared by all clients.
//! - [`limits`]: the per-op limits of PROTOCOL.md §5 as a validation function.
//! - [`raster`]: the one rasterizer that defines what an op does to pixels (PROTOCOL.md §4).
//! - [`snapshot`]: the PNG form of a picture (RGBA8 with a `tEXt` `seq` chunk, PROTOCOL.md §6).
//! - [`pps`]: the messages between the broadcast service and the primary picture service.
//! - [`relay`]: what a relay sends up its link to a picture's sequencer.
//! - [`placement`]: rendezvous hashing of pictures over picture services, and their owner ids.
//! - [`fuzz`]: the invariants the fuzz targets (`fuzz/`) check on untrusted bytes, here so that
//!   `cargo test` replays their corpus and past crashes through the same code.

#![warn(missing_docs)]

pub mod backoff;
mod bounded;
pub mod codec;
pub mod fuzz;
pub mod limits;
pub mod placement;
pub mod pps;
pub mod raster;
pub mod relay;
pub mod snapshot;
pub mod sync;
pub mod wire;

pub use codec::DecodeError;
pub use limits::{LimitError, Limits};
pub use raster::Raster;
pub use wire::{ClientMsg, Op, Point, Rgba, Sequenced, ServerMsg};

/// Picture ids match `^[A-Za-z0-9_-]{1,64}$` (PROTOCOL.md §1).
pub fn valid_picture_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::valid_picture_id;

    #[test]
    fn picture_ids() {
        assert!(valid_picture_id("a"));
        assert!(valid_picture_id("Az09_-"));
        assert!(valid_picture_id(&"x".repeat(64)));
        assert!(!valid_picture_id(""));
        assert!(!valid_picture_id(&"x".repeat(65)));
        assert!(!valid_picture_id("a b"));
        assert!(!valid_picture_id("a/b"));
        assert!(!valid_picture_id("é"));
        assert!(!valid_picture_id("a.png"));
    }
}
