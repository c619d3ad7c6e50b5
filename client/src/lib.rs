//! Rust client of the collaborative raster service: a library that joins a picture over
//! WebSocket and keeps a local copy of it, the `raster` CLI built on it, and the load generator
//! (`raster bench`, in the binary) used by benchmarks; the broadcast service's end-to-end
//! tests drive the service with this library.
//!
//! The client does not trust the server: it checks the ordering guarantees of PROTOCOL.md §3 as
//! it reads (every seq exactly once, increasing, no gaps after the snapshot; own echoes in
//! `client_seq` order) and turns a violation into [`ClientError::Protocol`], so every test and
//! benchmark that uses it doubles as a conformance check.
//!
//! # Layout
//!
//! - [`connection`]: [`Client`] (connect, draw, events, sync helpers) and its split halves
//!   [`Sender`] and [`Receiver`] for one task drawing while another reads.
//! - [`http`]: `GET /pictures/{id}/snapshot.png`, and following a picture over plain HTTP
//!   (`GET /pictures/{id}/updates` long-polls, PROTOCOL.md §16: [`http::Follower`]).
//! - [`token`]: minting tokens (HS256 JWTs granting `draw` or `view`, PROTOCOL.md §13) for
//!   development and tests.
//! - [`ops`]: random ops for tests and benchmarks, and bounding boxes for display.
//! - [`script`]: ops in the JSON form of the shared test vectors (`raster draw --script`).
//! - [`error`]: the error type, [`ClientError`].

#![warn(missing_docs)]

pub mod connection;
pub mod error;
pub mod http;
pub mod ops;
pub mod script;
pub mod token;

pub use connection::{Client, ConnectOptions, Event, LogEntry, Receiver, Resumed, Sender};
pub use error::ClientError;
pub use http::{
    snapshot, snapshot_with_token, timelapse, Follower, TimelapseOptions, TimelapseProgress,
};
pub use ops::{random_op, Profile};

/// The WebSocket base (`ws://host:port`) for a base URL given as `ws://`, `http://` or bare
/// `host:port`, without a trailing slash.
pub fn ws_base(base_url: &str) -> String {
    let base = base_url.trim_end_matches('/');
    if let Some(rest) = base.strip_prefix("http://") {
        format!("ws://{rest}")
    } else if let Some(rest) = base.strip_prefix("https://") {
        format!("wss://{rest}")
    } else if base.starts_with("ws://") || base.starts_with("wss://") {
        base.to_string()
    } else {
        format!("ws://{base}")
    }
}

/// The HTTP base (`http://host:port`) for a base URL given as `ws://`, `http://` or bare
/// `host:port`, without a trailing slash.
pub fn http_base(base_url: &str) -> String {
    let ws = ws_base(base_url);
    if let Some(rest) = ws.strip_prefix("ws://") {
        format!("http://{rest}")
    } else if let Some(rest) = ws.strip_prefix("wss://") {
        format!("https://{rest}")
    } else {
        ws
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls() {
        assert_eq!(ws_base("http://127.0.0.1:8080/"), "ws://127.0.0.1:8080");
        assert_eq!(ws_base("ws://h:1"), "ws://h:1");
        assert_eq!(ws_base("h:1"), "ws://h:1");
        assert_eq!(http_base("ws://h:1/"), "http://h:1");
        assert_eq!(http_base("http://h:1"), "http://h:1");
    }
}
