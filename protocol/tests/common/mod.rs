//! Shared helpers of the protocol crate's integration tests: the vectors' JSON forms and the
//! picture digest they are compared by.

#![allow(dead_code)]

pub(crate) mod extra;
pub(crate) mod json;

use anyhow::{Context, Result};
use protocol::{Op, Raster};
use sha2::{Digest, Sha256};

/// The directory of the shared vectors: `../shared/vectors` beside the checkout.
pub(crate) const SHARED_VECTORS: &str =
    concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/vectors");

/// The project's own vectors, committed in this crate.
pub(crate) const OWN_VECTORS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/vectors");

pub(crate) fn read_json(path: &str) -> Result<serde_json::Value> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {path}"))
}

/// Lowercase hex SHA-256 of the picture's RGBA8 bytes, as in the vectors.
pub(crate) fn sha256_hex(raster: &Raster) -> String {
    hex::encode(Sha256::digest(raster.pixels()))
}

/// A fresh picture with every op applied in order.
pub(crate) fn render(width: u32, height: u32, ops: &[Op]) -> Raster {
    let mut raster = Raster::new(width, height);
    for op in ops {
        raster.apply(op);
    }
    raster
}
