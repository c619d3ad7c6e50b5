//! The primary picture service (PPS): holds each open picture's raster, applies the batches of
//! sequenced updates that the broadcast service sends, serves snapshots to joining clients and
//! flushes pictures to storage, with a priority job queue deciding what runs next.
//!
//! # Layout
//!
//! - [`service`]: [`Pps`], the in-process [`link::PictureService`] (the contract the broadcast
//!   service talks to lives in the `link` crate, with the client of a remote picture service),
//!   and its [`PpsConfig`].
//! - `picture` (private): the per-picture actor that does the work.
//! - `history` (private): the per-picture writer of stored versions (PROTOCOL.md §15), fed by
//!   the actor's flushes.
//! - [`scheduler`]: the priority job queue granting CPU/IO slots.
//! - [`store`]: the [`Store`](store::Store) trait and its homes (filesystem, S3, memory).
//! - [`config`]: the store and tuning flags, shared with the broadcast service's embedded
//!   mode ([`config::StoreArgs::open`] opens the store they name).
//! - [`wal`]: the write-ahead log: accepted batches on disk before they are confirmed.
//! - [`server`]: the services-mode server (`GET /bs` WebSocket, probes, metrics).

#![warn(missing_docs)]

pub mod config;
mod history;
mod picture;
pub mod scheduler;
pub mod server;
pub mod service;
pub mod store;
pub mod wal;

pub use config::PpsConfig;
pub use service::{Pps, ShutdownSummary};
