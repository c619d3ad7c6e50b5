//! A client's binary WebSocket frame through the broadcast service's reader (decode, limits) and on
//! to the picture service and the clients: `protocol::fuzz::client_frame`.

#![no_main]

use raster_fuzz as _; // the capped allocator

libfuzzer_sys::fuzz_target!(|data: &[u8]| protocol::fuzz::client_frame(data));
