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
//! - [`PictureId`]: a picture id, checked once where it comes in.
//! - [`placement`]: rendezvous hashing of pictures over picture services, and their owner ids.
//! - [`fuzz`]: the invariants the fuzz targets (`fuzz/`) check on untrusted bytes, here so that
//!   `cargo test` replays their corpus and past crashes through the same code.

#![warn(missing_docs)]

pub mod backoff;
mod bounded;
pub mod codec;
pub mod fuzz;
mod id;
pub mod limits;
pub mod placement;
pub mod pps;
pub mod raster;
pub mod relay;
pub mod snapshot;
pub mod sync;
pub mod wire;

pub use codec::DecodeError;
pub use id::{InvalidPictureId, PictureId};
pub use limits::{LimitError, Limits};
pub use raster::Raster;
pub use wire::{ClientMsg, Op, Point, Rgba, Sequenced, ServerMsg};
