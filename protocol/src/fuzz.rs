//! What the fuzz targets (`fuzz/`, README "Fuzzing") check on one input, kept here so that
//! `cargo test` replays their corpus and every input that ever crashed one of them through the
//! very same code (`protocol/tests/fuzz_regressions.rs`).
//!
//! Each function takes arbitrary bytes, runs them through the functions the services run on
//! untrusted input (not copies of them), and panics when an invariant breaks: libFuzzer reports
//! a panic as a crash and keeps the input. Returning normally means the input was handled:
//! refused as undecodable or over a limit, or accepted and checked.
//!
//! - [`client_frame`]: a client's binary WebSocket frame, as the broadcast service's reader
//!   handles it (`broadcast-service/src/connection.rs`: [`codec::decode_client`], then
//!   [`Limits::check`], then [`codec::draw_op`] spliced by [`codec::sequenced_entry`]), then as
//!   the picture service decodes the batch it lands in and as clients decode the `Updates`
//!   frame that carries it.
//! - [`op_apply`]: an op that decodes and passes the limits (strokes up to
//!   [`MAX_STROKE_WIDTH`] wide), applied by the rasterizer to a small picture with every stroke
//!   strategy, against a naive transcription of PROTOCOL.md §4.
//! - [`server_frame`]: a server's frame as the Rust client reads it
//!   (`client/src/connection.rs`: [`codec::decode_server`] or [`codec::scan_updates`], the
//!   snapshot through [`snapshot::decode_png`] / [`snapshot::decode_lz4`], the updates applied
//!   as a client applies what its server sequenced).

use bytes::Bytes;

use crate::codec;
use crate::raster::{line_reference, StrokeStrategy};
use crate::snapshot;
use crate::wire::{ClientMsg, Op, Point, Rgba, Sequenced, ServerMsg};
use crate::{Limits, Raster};

/// Largest side of the pictures ops are applied to: small, so that one input costs
/// microseconds and the fuzzer tries many, yet larger than a word of the rasterizer's
/// coverage bitmaps (64), so rows spanning several words are exercised.
pub const MAX_SIDE: u32 = 72;

/// The widest stroke [`op_apply`] and [`server_frame`] draw: the width limit is the one
/// operators raise (`--max-stroke-width`), and the rasterizer changes paths at width 508
/// ([`crate::raster::DT_MAX_REACH`]), so the default 256 is not enough. Wider still costs a
/// stroke time in proportion to its width squared, which would only slow the fuzzer down.
pub const MAX_STROKE_WIDTH: u16 = 1024;

/// The limits [`op_apply`] and [`server_frame`] check ops against: the defaults, with strokes
/// up to [`MAX_STROKE_WIDTH`].
pub fn wide_limits() -> Limits {
    Limits {
        max_stroke_width: MAX_STROKE_WIDTH,
        ..Limits::default()
    }
}

/// The naive reference is run only on ops whose coordinates all lie within this distance of
/// the picture: it plots every spine point of every segment, which for coordinates at the
/// limits (±1,000,000) is millions of points per segment.
const NAIVE_REACH: i64 = 4096;

/// ... and only where the discs of its spine points near the picture test at most this many
/// pixels (a few milliseconds), so that no input costs the fuzzer more than that.
const NAIVE_BUDGET: i64 = 4_000_000;

/// A client's frame through the broadcast service's reader, and an accepted `Draw` on through
/// the picture service and to the clients. Panics when an invariant breaks.
pub fn client_frame(data: &[u8]) {
    let frame = Bytes::copy_from_slice(data);
    let Ok(msg) = codec::decode_client(&frame) else {
        return;
    };
    // Decoding is strict (fixed-width integers, exact lengths, nothing left over), so the
    // layout is canonical: a frame that decodes is exactly the encoding of what it decodes to.
    // The sequencer relies on it: it forwards the op's bytes, never a re-encoding.
    assert_eq!(
        codec::encode(&msg),
        data,
        "a decoded frame re-encodes differently"
    );
    let ClientMsg::Draw { client_seq, op } = msg else {
        return;
    };
    if Limits::default().check(&op).is_err() {
        return; // answered `Rejected`: nothing goes further
    }
    let expected = Sequenced {
        seq: u64::MAX,
        client_id: 1,
        client_seq,
        op,
    };
    let entry = codec::sequenced_entry(
        expected.seq,
        expected.client_id,
        client_seq,
        &codec::draw_op(&frame),
    );
    assert_eq!(entry, codec::encode_sequenced(&expected));
    // The picture service's side: the batch body, decoded as `Apply` is.
    let batch = codec::sequenced_vec(std::slice::from_ref(&entry).iter());
    let updates: Vec<Sequenced> = match codec::decode(&batch) {
        Ok(updates) => updates,
        Err(e) => panic!("the batch of an accepted draw does not decode: {e}"),
    };
    assert_eq!(updates, std::slice::from_ref(&expected));
    // The clients' side: the `Updates` frame, decoded whole and scanned for headers.
    let frame = codec::updates_frame([entry].iter());
    match codec::decode_server(&frame) {
        Ok(ServerMsg::Updates(got)) => assert_eq!(got, updates),
        other => panic!("the updates frame of an accepted draw decodes as {other:?}"),
    }
    check_scan(&frame);
    let mut raster = patterned(MAX_SIDE, MAX_SIDE);
    apply_in_bounds(&mut raster, &expected.op);
}

/// Input: two bytes giving the picture's width and height (each `1..=MAX_SIDE`), then one
/// bincode `Op`. An op that decodes and passes [`wide_limits`] is applied to a patterned
/// picture with every stroke strategy; all must give the same pixels and count, and the naive
/// reference too where it is affordable. Panics when they differ.
pub fn op_apply(data: &[u8]) {
    let [w, h, rest @ ..] = data else {
        return;
    };
    let (width, height) = (side(*w), side(*h));
    let Ok(op) = codec::decode::<Op>(rest) else {
        return;
    };
    if wide_limits().check(&op).is_err() {
        return;
    }
    let start = patterned(width, height);
    let mut auto = start.clone();
    let covered = apply_in_bounds(&mut auto, &op);
    for strategy in [StrokeStrategy::Stamp, StrokeStrategy::DistanceTransform] {
        let mut other = start.clone();
        let n = other.apply_with(&op, strategy);
        assert_eq!(n, covered, "{strategy:?} covers another number of pixels");
        assert!(
            other.pixels() == auto.pixels(),
            "{strategy:?} draws other pixels than Auto"
        );
    }
    if let Some((pixels, n)) = naive(&start, &op) {
        assert_eq!(
            covered, n,
            "the rasterizer's count differs from the reference"
        );
        assert!(
            auto.pixels() == pixels.as_slice(),
            "the rasterizer's pixels differ from the reference"
        );
    }
}

/// A server's frame as the Rust client reads it. Panics when an invariant breaks.
pub fn server_frame(data: &[u8]) {
    // Load generators scan `Updates` frames instead of decoding them; both must agree on
    // which frames are `Updates` and what they hold.
    check_scan(data);
    let Ok(msg) = codec::decode_server(data) else {
        return;
    };
    assert_eq!(
        codec::encode(&msg),
        data,
        "a decoded frame re-encodes differently"
    );
    let (raster, pending) = match msg {
        ServerMsg::Welcome {
            width,
            height,
            snapshot_png,
            pending,
            ..
        } => {
            let raster = snapshot::decode_png(&snapshot_png, MAX_SIDE).ok().map(|d| {
                assert!(d.raster.width() <= MAX_SIDE && d.raster.height() <= MAX_SIDE);
                d.raster
            });
            // The client refuses a snapshot of another size than its Welcome says.
            let raster = raster.filter(|r| (r.width(), r.height()) == (width, height));
            (raster, pending)
        }
        ServerMsg::WelcomeLz4 {
            width,
            height,
            snapshot_lz4,
            pending,
            ..
        } => {
            let raster = snapshot::decode_lz4(&snapshot_lz4, width, height, MAX_SIDE).ok();
            if let Some(r) = &raster {
                assert_eq!((r.width(), r.height()), (width, height));
            }
            (raster, pending)
        }
        ServerMsg::Updates(updates) => (Some(patterned(MAX_SIDE, MAX_SIDE)), updates),
        _ => return,
    };
    // A client applies what its server sequenced without checking it: ops within the limits
    // the server was configured with. Here those are [`wide_limits`]; a server beyond any limit
    // can make its clients work without bound, which is trusting the server, not a bug here.
    if let Some(mut raster) = raster {
        for update in pending
            .iter()
            .filter(|u| wide_limits().check(&u.op).is_ok())
        {
            apply_in_bounds(&mut raster, &update.op);
        }
    }
}

/// Checks [`codec::scan_updates`] against [`codec::decode_server`] on one frame: the scan
/// finds updates exactly where decoding finds an `Updates` message, and the same ones.
fn check_scan(frame: &[u8]) {
    match (codec::scan_updates(frame), codec::decode_server(frame)) {
        (Ok(Some(headers)), Ok(ServerMsg::Updates(updates))) => {
            assert_eq!(headers.len(), updates.len());
            for (h, u) in headers.iter().zip(&updates) {
                assert_eq!(
                    (h.seq, h.client_id, h.client_seq),
                    (u.seq, u.client_id, u.client_seq)
                );
                assert_eq!(frame[h.entry.0..h.entry.1], codec::encode_sequenced(u)[..]);
                assert_eq!(frame[h.op.0..h.op.1], codec::encode(&u.op)[..]);
            }
        }
        (Ok(Some(headers)), decoded) => {
            panic!(
                "scan_updates finds {} updates, decode_server {decoded:?}",
                headers.len()
            )
        }
        (scanned, Ok(ServerMsg::Updates(updates))) => {
            panic!(
                "decode_server finds {} updates, scan_updates {scanned:?}",
                updates.len()
            )
        }
        _ => {}
    }
}

/// Applies `op`, checking that the picture keeps its size and the count is at most its area.
fn apply_in_bounds(raster: &mut Raster, op: &Op) -> u64 {
    let (w, h, len) = (raster.width(), raster.height(), raster.pixels().len());
    let covered = raster.apply(op);
    assert!(
        covered <= u64::from(w) * u64::from(h),
        "covers {covered} pixels of {w}x{h}"
    );
    assert_eq!(
        (raster.width(), raster.height(), raster.pixels().len()),
        (w, h, len)
    );
    covered
}

fn side(byte: u8) -> u32 {
    1 + u32::from(byte) % MAX_SIDE
}

/// A picture whose pixels (alpha included) all differ from their neighbours, so that every
/// blend shows, unlike on the all-white start of a new picture.
fn patterned(width: u32, height: u32) -> Raster {
    let len = width as usize * height as usize * 4;
    let pixels = (0..len).map(|i| (i * 151 + i / 7) as u8).collect();
    match Raster::from_rgba(width, height, pixels) {
        Some(raster) => raster,
        None => unreachable!("the length is width*height*4"),
    }
}

/// §4's blend, transcribed without any precomputation.
fn naive_blend(dst: &mut [u8], src: Rgba) {
    let a = u32::from(src[3]);
    if a == 255 {
        dst.copy_from_slice(&src);
    } else if a != 0 {
        for k in 0..3 {
            dst[k] = ((u32::from(src[k]) * a + u32::from(dst[k]) * (255 - a) + 127) / 255) as u8;
        }
        dst[3] = (a + (u32::from(dst[3]) * (255 - a) + 127) / 255) as u8;
    }
}

/// `op` applied to `start` straight from PROTOCOL.md §4 (each covered pixel's source colour
/// first, then one blend per covered pixel): the pixels and how many were covered. `None` where
/// that would cost too much (a stroke far outside the picture).
fn naive(start: &Raster, op: &Op) -> Option<(Vec<u8>, u64)> {
    let (w, h) = (i64::from(start.width()), i64::from(start.height()));
    let mut src: Vec<Option<Rgba>> = vec![None; (w * h) as usize];
    let mut put = |x: i64, y: i64, color: Rgba| {
        if (0..w).contains(&x) && (0..h).contains(&y) {
            src[(y * w + x) as usize] = Some(color);
        }
    };
    match op {
        Op::Pixels { color, points } => {
            for p in points {
                put(i64::from(p.x), i64::from(p.y), *color);
            }
        }
        Op::Rect {
            x,
            y,
            w: rw,
            h: rh,
            color,
        } => {
            let (x0, y0) = (i64::from(*x), i64::from(*y));
            for py in y0.max(0)..(y0 + i64::from(*rh)).min(h) {
                for px in x0.max(0)..(x0 + i64::from(*rw)).min(w) {
                    put(px, py, *color);
                }
            }
        }
        Op::Patch {
            x,
            y,
            w: pw,
            h: ph,
            rgba,
        } => {
            let (x0, y0, pw) = (i64::from(*x), i64::from(*y), i64::from(*pw));
            for py in y0.max(0)..(y0 + i64::from(*ph)).min(h) {
                for px in x0.max(0)..(x0 + pw).min(w) {
                    let s = (((py - y0) * pw + (px - x0)) * 4) as usize;
                    put(px, py, [rgba[s], rgba[s + 1], rgba[s + 2], rgba[s + 3]]);
                }
            }
        }
        Op::Stroke {
            color,
            width,
            points,
        } => {
            let near = |p: &Point| {
                (-NAIVE_REACH..w + NAIVE_REACH).contains(&i64::from(p.x))
                    && (-NAIVE_REACH..h + NAIVE_REACH).contains(&i64::from(p.y))
            };
            if !points.iter().all(near) {
                return None;
            }
            let spine: Vec<Point> = if points.len() == 1 {
                points.clone()
            } else {
                points
                    .windows(2)
                    .flat_map(|p| line_reference(p[0], p[1]))
                    .collect()
            };
            let r2 = i64::from(*width) * i64::from(*width);
            // 4*d² <= width² means d <= width/2: a spine point farther than that from the
            // picture covers none of it.
            let reach = i64::from(*width) / 2 + 1;
            let spine: Vec<Point> = spine
                .into_iter()
                .filter(|c| {
                    let (cx, cy) = (i64::from(c.x), i64::from(c.y));
                    cx >= -reach && cy >= -reach && cx < w + reach && cy < h + reach
                })
                .collect();
            let disc = (2 * reach + 1).min(w) * (2 * reach + 1).min(h);
            if spine.len() as i64 * disc > NAIVE_BUDGET {
                return None;
            }
            for c in spine {
                let (cx, cy) = (i64::from(c.x), i64::from(c.y));
                for py in (cy - reach).max(0)..=(cy + reach).min(h - 1) {
                    for px in (cx - reach).max(0)..=(cx + reach).min(w - 1) {
                        if 4 * ((px - cx) * (px - cx) + (py - cy) * (py - cy)) <= r2 {
                            put(px, py, *color);
                        }
                    }
                }
            }
        }
        Op::Clear { color } => {
            let pixels = start.pixels().chunks(4).flat_map(|_| *color).collect();
            return Some((pixels, (w * h) as u64));
        }
    }
    let mut pixels = start.pixels().to_vec();
    let mut n = 0;
    for (px, color) in pixels.chunks_exact_mut(4).zip(&src) {
        if let Some(color) = color {
            naive_blend(px, *color);
            n += 1;
        }
    }
    Some((pixels, n))
}
