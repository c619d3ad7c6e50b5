//! An op that decodes and passes the limits, applied to a small picture by every stroke strategy
//! and by a naive reference: `protocol::fuzz::op_apply`.

#![no_main]

use raster_fuzz as _; // the capped allocator

libfuzzer_sys::fuzz_target!(|data: &[u8]| protocol::fuzz::op_apply(data));
