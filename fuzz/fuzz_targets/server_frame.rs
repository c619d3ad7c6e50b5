//! A server's frame as the Rust client reads it (decode or scan, snapshot, updates applied):
//! `protocol::fuzz::server_frame`.

#![no_main]

use raster_fuzz as _; // the capped allocator

libfuzzer_sys::fuzz_target!(|data: &[u8]| protocol::fuzz::server_frame(data));
