//! Bounded work: the worst ops the §5 limits allow, on the largest picture (4096x4096), finish
//! in time proportional to the picture, not to what the op's coordinates span, and still give
//! exact pixels.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests and benches may unwrap (common brief)

use std::time::{Duration, Instant};

use protocol::raster::StrokeStrategy;
use protocol::{Op, Point, Raster};

const SIDE: u32 = 4096;

/// Generous enough for an unoptimised test build on a busy machine; the stamping these cases
/// avoid would take hours (billions of span writes).
const BUDGET: Duration = Duration::from_secs(60);

fn timed(raster: &mut Raster, op: &Op) -> u64 {
    let start = Instant::now();
    let n = raster.apply(op);
    let took = start.elapsed();
    assert!(took < BUDGET, "{} took {took:?}", op.kind());
    n
}

/// 4,096 points alternating between two ends (the worst retracing stroke).
fn zigzag(a: Point, b: Point, width: u16) -> Op {
    Op::Stroke {
        color: [10, 20, 30, 128],
        width,
        points: (0..4096).map(|i| if i % 2 == 0 { a } else { b }).collect(),
    }
}

#[test]
fn zigzag_between_far_corners() {
    let mut r = Raster::new(SIDE, SIDE);
    let op = zigzag(
        Point::new(-1_000_000, -1_000_000),
        Point::new(1_000_000, 1_000_000),
        256,
    );
    let n = timed(&mut r, &op);
    // Both directions plot the diagonal (t, t). A pixel is covered when some t has
    // 4*((x-t)^2 + (y-t)^2) <= 256^2; the best t is next to (x+y)/2.
    let covered = |x: i64, y: i64| {
        let t = (x + y).div_euclid(2);
        [t, t + 1]
            .iter()
            .any(|t| 4 * ((x - t) * (x - t) + (y - t) * (y - t)) <= 65_536)
    };
    let mut want = 0;
    for y in 0..i64::from(SIDE) {
        for x in 0..i64::from(SIDE) {
            let px = r.pixel(x as u32, y as u32).unwrap();
            if covered(x, y) {
                want += 1;
                // Blended once onto white: (c*128 + 255*127 + 127) / 255.
                assert_eq!(px, [132, 137, 142, 255], "({x}, {y})");
            } else {
                assert_eq!(px, [255; 4], "({x}, {y})");
            }
        }
    }
    assert_eq!(n, want);
}

#[test]
fn zigzag_along_a_row() {
    let mut r = Raster::new(SIDE, SIDE);
    let op = zigzag(
        Point::new(-1_000_000, 2048),
        Point::new(1_000_000, 2048),
        256,
    );
    // Rows 2048-128 ..= 2048+128 entirely: 257 * 4096.
    assert_eq!(timed(&mut r, &op), 257 * 4096);
    assert_eq!(r.pixel(0, 1919), Some([255; 4]));
    assert_eq!(r.pixel(4095, 1920), Some([132, 137, 142, 255]));
    assert_eq!(r.pixel(0, 2176), Some([132, 137, 142, 255]));
    assert_eq!(r.pixel(0, 2177), Some([255; 4]));
}

#[test]
fn zigzag_across_the_picture() {
    // 4,095 segments each crossing the whole picture, slightly shifted every time.
    let points: Vec<Point> = (0..4096)
        .map(|i| {
            if i % 2 == 0 {
                Point::new(-200, i)
            } else {
                Point::new(4300, 4095 - i)
            }
        })
        .collect();
    let op = Op::Stroke {
        color: [0, 0, 0, 255],
        width: 256,
        points,
    };
    let mut r = Raster::new(SIDE, SIDE);
    let n = timed(&mut r, &op);
    let mut dt = Raster::new(SIDE, SIDE);
    assert_eq!(dt.apply_with(&op, StrokeStrategy::DistanceTransform), n);
    assert!(r == dt);
    assert!(n > u64::from(SIDE) * u64::from(SIDE) / 2);
}

#[test]
fn largest_other_ops() {
    let mut r = Raster::new(SIDE, SIDE);
    let rect = Op::Rect {
        x: -1_000_000,
        y: -1_000_000,
        w: 65_536,
        h: 65_536,
        color: [1, 2, 3, 4],
    };
    assert_eq!(timed(&mut r, &rect), 0);
    let rect = Op::Rect {
        x: -30_000,
        y: -30_000,
        w: 65_536,
        h: 65_536,
        color: [1, 2, 3, 4],
    };
    assert_eq!(timed(&mut r, &rect), u64::from(SIDE) * u64::from(SIDE));
    let pixels = Op::Pixels {
        color: [1, 2, 3, 4],
        points: (0..65_536)
            .map(|i| Point::new(i % 300 * 1000 - 100_000, i / 300))
            .collect(),
    };
    timed(&mut r, &pixels);
    let stroke = Op::Stroke {
        color: [1, 2, 3, 200],
        width: 256,
        points: (0..4096)
            .map(|i| {
                Point::new(
                    (i * 7919) % 2_000_001 - 1_000_000,
                    (i * 104_729) % 8192 - 2048,
                )
            })
            .collect(),
    };
    timed(&mut r, &stroke);
}

/// Strokes wider than the default limit reach the rasterizer where `--max-stroke-width` is
/// raised, and in every client, which applies what its server sequenced. Each builds a disc of
/// reach up to 32,767 (only widths below 65 are cached); building one took O(reach²) steps,
/// about a second each in release and test builds alike, until fuzzing found it
/// (`tests/fuzz-regressions/server_frame/stroke-width-65283-disc-quadratic`). Now it is
/// O(reach): these 400 strokes take well under a second; before, 449 s.
#[test]
fn widest_strokes_build_their_discs_in_linear_time() {
    let mut r = Raster::new(64, 64);
    let start = Instant::now();
    for i in 0..400 {
        let op = Op::Stroke {
            color: [9, 8, 7, 255],
            width: u16::MAX - i,
            points: vec![Point::new(32, -1_000)],
        };
        assert_eq!(r.apply(&op), 64 * 64);
    }
    let took = start.elapsed();
    assert!(took < BUDGET, "400 strokes took {took:?}");
    assert_eq!(r.pixel(0, 63), Some([9, 8, 7, 255]));
}
