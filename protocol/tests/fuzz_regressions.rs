//! The fuzz targets' inputs, replayed by `cargo test` through the very functions the targets
//! run (`protocol::fuzz`): the committed seed corpus (`fuzz/corpus/<target>/`) and every input
//! that once made a target fail (`tests/fuzz-regressions/<target>/`, README "Fuzzing").
//! A panic in one of those functions is the failure the fuzzer reported; this keeps it fixed.

#![allow(clippy::expect_used)]

use std::fs;
use std::path::{Path, PathBuf};

use protocol::codec;
use protocol::{Limits, Op};

const CORPUS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../fuzz/corpus");
const REGRESSIONS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fuzz-regressions");

/// The files of `dir/target`, sorted; none where the directory does not exist.
fn inputs(dir: &str, target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = Path::new(dir).join(target);
    let Ok(entries) = fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut paths: Vec<PathBuf> = entries
        .map(|e| e.expect("readable directory entry").path())
        .filter(|p| p.is_file() && p.extension().is_none_or(|e| e != "md"))
        .collect();
    paths.sort();
    paths
        .into_iter()
        .map(|p| {
            let bytes = fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            (p, bytes)
        })
        .collect()
}

/// Runs `check` on every committed input of `target`; returns the seeds (corpus only).
fn replay(target: &str, check: fn(&[u8])) -> Vec<(PathBuf, Vec<u8>)> {
    let seeds = inputs(CORPUS, target);
    assert!(!seeds.is_empty(), "no seed corpus for {target} in {CORPUS}");
    for (path, bytes) in seeds.iter().chain(&inputs(REGRESSIONS, target)) {
        // A panic names the input: the test harness prints this line's output before it.
        eprintln!("{target}: {}", path.display());
        check(bytes);
    }
    seeds
}

#[test]
fn client_frame_inputs() {
    let seeds = replay("client_frame", protocol::fuzz::client_frame);
    // The seeds are the wire vectors: each decodes, so fuzzing starts past the decoder.
    for (path, bytes) in &seeds {
        assert!(
            codec::decode_client(bytes).is_ok(),
            "{} does not decode",
            path.display()
        );
    }
    assert_eq!(seeds.len(), 12);
}

#[test]
fn op_apply_inputs() {
    let seeds = replay("op_apply", protocol::fuzz::op_apply);
    // The seeds are the raster vectors' ops: each decodes and is within the limits, so fuzzing
    // starts inside the rasterizer.
    for (path, bytes) in &seeds {
        let op =
            codec::decode::<Op>(&bytes[2..]).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(Limits::default().check(&op), Ok(()), "{}", path.display());
    }
    assert_eq!(seeds.len(), 49);
}

#[test]
fn server_frame_inputs() {
    let seeds = replay("server_frame", protocol::fuzz::server_frame);
    for (path, bytes) in &seeds {
        assert!(
            codec::decode_server(bytes).is_ok(),
            "{} does not decode",
            path.display()
        );
    }
    assert_eq!(seeds.len(), 18);
}
