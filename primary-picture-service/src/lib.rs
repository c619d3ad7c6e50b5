//! The primary picture service (PPS): holds each open picture's raster, applies the batches of
//! sequenced updates that the broadcast service sends, serves snapshots to joining clients and
//! flushes pictures to storage, with a priority job queue deciding what runs next.
//!
//! # Layout
//!
//! - [`api`]: the [`PictureService`] contract the broadcast service talks to.
//! - [`store`]: the [`Store`](store::Store) trait and its homes (filesystem, S3, memory).

pub mod api;
pub mod store;

pub use api::{PictureService, PpsEvent};
