//! Hand-checked pixels: every expected value below is worked out in the comments from
//! PROTOCOL.md §4, independently of the code.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests and benches may unwrap (common brief)

use std::collections::BTreeSet;

use protocol::raster::{blend, StrokeStrategy};
use protocol::{Op, Point, Raster, Rgba};

const BLACK_HALF: Rgba = [0, 0, 0, 128];
const BLACK: Rgba = [0, 0, 0, 255];

/// The set of pixels that are no longer white.
fn painted(r: &Raster) -> BTreeSet<(u32, u32)> {
    let mut out = BTreeSet::new();
    for y in 0..r.height() {
        for x in 0..r.width() {
            if r.pixel(x, y) != Some([255; 4]) {
                out.insert((x, y));
            }
        }
    }
    out
}

fn set(pixels: &[(u32, u32)]) -> BTreeSet<(u32, u32)> {
    pixels.iter().copied().collect()
}

fn pts(p: &[(i32, i32)]) -> Vec<Point> {
    p.iter().map(|&(x, y)| Point::new(x, y)).collect()
}

fn stroke(color: Rgba, width: u16, points: &[(i32, i32)]) -> Op {
    Op::Stroke {
        color,
        width,
        points: pts(points),
    }
}

/// Applies `op` to a fresh picture with every strategy, checks they agree, returns one picture
/// and the covered count.
fn draw(w: u32, h: u32, op: &Op) -> (Raster, u64) {
    let mut first: Option<(Raster, u64)> = None;
    for strategy in [
        StrokeStrategy::Auto,
        StrokeStrategy::Stamp,
        StrokeStrategy::DistanceTransform,
    ] {
        let mut r = Raster::new(w, h);
        let n = r.apply_with(op, strategy);
        match &first {
            None => first = Some((r, n)),
            Some((r0, n0)) => {
                assert_eq!(n, *n0, "{strategy:?}");
                assert!(r.pixels() == r0.pixels(), "{strategy:?}");
            }
        }
    }
    first.unwrap()
}

#[test]
fn half_alpha_blend() {
    let mut px = [255, 255, 255, 255];
    blend(&mut px, [0, 0, 0, 128]);
    // (0*128 + 255*127 + 127) / 255 = 32512 / 255 = 127; alpha: 128 + (255*127 + 127)/255 = 255
    assert_eq!(px, [127, 127, 127, 255]);
    let mut px = [255, 255, 255, 255];
    blend(&mut px, [200, 100, 50, 128]);
    // r: (25600 + 32385 + 127) / 255 = 58112 / 255 = 227
    // g: (12800 + 32385 + 127) / 255 = 45312 / 255 = 177
    // b: (6400 + 32385 + 127) / 255 = 38912 / 255 = 152
    assert_eq!(px, [227, 177, 152, 255]);
    // Onto transparent black: channels (s*128 + 0 + 127)/255, alpha 128 + (0 + 127)/255 = 128.
    // r: 25727 / 255 = 100; g: 12927 / 255 = 50; b: 6527 / 255 = 25
    let mut px = [0, 0, 0, 0];
    blend(&mut px, [200, 100, 50, 128]);
    assert_eq!(px, [100, 50, 25, 128]);
}

#[test]
fn alpha_zero_and_opaque() {
    let mut px = [1, 2, 3, 4];
    blend(&mut px, [9, 9, 9, 0]);
    assert_eq!(px, [1, 2, 3, 4]);
    blend(&mut px, [9, 8, 7, 255]);
    assert_eq!(px, [9, 8, 7, 255]);
}

#[test]
fn single_point_strokes_of_width_1_2_3() {
    // width 1: 4*d2 <= 1, so d2 == 0: the point alone.
    let (r, n) = draw(7, 7, &stroke(BLACK, 1, &[(3, 3)]));
    assert_eq!((painted(&r), n), (set(&[(3, 3)]), 1));
    // width 2: 4*d2 <= 4, so d2 <= 1: the point and its 4 neighbours.
    let (r, n) = draw(7, 7, &stroke(BLACK, 2, &[(3, 3)]));
    let plus = set(&[(3, 2), (2, 3), (3, 3), (4, 3), (3, 4)]);
    assert_eq!((painted(&r), n), (plus, 5));
    // width 3: 4*d2 <= 9, so d2 <= 2: the 3x3 square (the corners have d2 == 2).
    let (r, n) = draw(7, 7, &stroke(BLACK, 3, &[(3, 3)]));
    let square: Vec<_> = (2..=4).flat_map(|y| (2..=4).map(move |x| (x, y))).collect();
    assert_eq!((painted(&r), n), (set(&square), 9));
    // width 4: d2 <= 4: the 3x3 square plus the 4 points 2 away on the axes, 13 pixels.
    let (r, n) = draw(7, 7, &stroke(BLACK, 4, &[(3, 3)]));
    assert_eq!(n, 13);
    assert!(painted(&r).contains(&(3, 1)) && painted(&r).contains(&(5, 3)));
    assert!(!painted(&r).contains(&(1, 1)) && !painted(&r).contains(&(5, 4)));
}

#[test]
fn short_segment_of_width_1_2_3() {
    // line((1,1), (4,2)): dx=3, dy=-1, err=2.
    //   plot(1,1); e2=4: x=2, err=1           (4 <= 3 is false: y stays)
    //   plot(2,1); e2=2: x=3, err=0; 2 <= 3: y=2, err=3
    //   plot(3,2); e2=6: x=4, err=2
    //   plot(4,2): done.
    let spine = [(1, 1), (4, 2)];
    let (r, n) = draw(7, 5, &stroke(BLACK, 1, &spine));
    assert_eq!(
        (painted(&r), n),
        (set(&[(1, 1), (2, 1), (3, 2), (4, 2)]), 4)
    );
    // width 2: the union of the four pluses.
    let (r, n) = draw(7, 5, &stroke(BLACK, 2, &spine));
    let want = set(&[
        (1, 0),
        (2, 0),
        (0, 1),
        (1, 1),
        (2, 1),
        (3, 1),
        (4, 1),
        (1, 2),
        (2, 2),
        (3, 2),
        (4, 2),
        (5, 2),
        (3, 3),
        (4, 3),
    ]);
    assert_eq!((painted(&r), n), (want, 14));
    // width 3: the union of 3x3 squares: row 0 x 0..=3, rows 1 and 2 x 0..=5, row 3 x 2..=5.
    let (r, n) = draw(7, 5, &stroke(BLACK, 3, &spine));
    let mut want = Vec::new();
    want.extend((0..=3).map(|x| (x, 0)));
    want.extend((0..=5).map(|x| (x, 1)));
    want.extend((0..=5).map(|x| (x, 2)));
    want.extend((2..=5).map(|x| (x, 3)));
    assert_eq!((painted(&r), n), (set(&want), 20));
}

#[test]
fn point_listed_twice_is_blended_once() {
    // Once: 127 (see half_alpha_blend). Twice would be (127*127 + 127)/255 = 63.
    let mut r = Raster::new(3, 1);
    let n = r.apply(&Op::Pixels {
        color: BLACK_HALF,
        points: pts(&[(1, 0), (1, 0), (2, 0), (1, 0)]),
    });
    assert_eq!(n, 2);
    assert_eq!(r.pixel(0, 0), Some([255; 4]));
    assert_eq!(r.pixel(1, 0), Some([127, 127, 127, 255]));
    assert_eq!(r.pixel(2, 0), Some([127, 127, 127, 255]));
}

#[test]
fn self_crossing_stroke_is_blended_once() {
    // (0,0)->(4,4) is the diagonal (t,t); (4,4)->(4,0) the column x=4; (4,0)->(0,4) the
    // anti-diagonal (4-t,t). They share (4,4), (4,0) and cross at (2,2): 5 + 4 + 3 = 12 pixels,
    // every one blended once to 127.
    let op = stroke(BLACK_HALF, 1, &[(0, 0), (4, 4), (4, 0), (0, 4)]);
    let (r, n) = draw(6, 6, &op);
    let want = set(&[
        (0, 0),
        (1, 1),
        (2, 2),
        (3, 3),
        (4, 4),
        (4, 3),
        (4, 2),
        (4, 1),
        (4, 0),
        (3, 1),
        (1, 3),
        (0, 4),
    ]);
    assert_eq!((painted(&r), n), (want.clone(), 12));
    for (x, y) in want {
        assert_eq!(r.pixel(x, y), Some([127, 127, 127, 255]), "({x}, {y})");
    }
    // Wide and retraced many times: still one blend per pixel.
    let op = stroke(BLACK_HALF, 5, &[(1, 1), (4, 4), (1, 1), (4, 4), (1, 1)]);
    let (r, _) = draw(6, 6, &op);
    for (x, y) in painted(&r) {
        assert_eq!(r.pixel(x, y), Some([127, 127, 127, 255]), "({x}, {y})");
    }
}

#[test]
fn rects_partly_and_wholly_outside() {
    let mut r = Raster::new(4, 4);
    // x -2..=1, y -1..=1 clip to x 0..=1, y 0..=1.
    let n = r.apply(&Op::Rect {
        x: -2,
        y: -1,
        w: 4,
        h: 3,
        color: BLACK,
    });
    assert_eq!(n, 4);
    assert_eq!(painted(&r), set(&[(0, 0), (1, 0), (0, 1), (1, 1)]));
    // Ending just before the picture, starting just after it, or a million away: nothing.
    for (x, y, w, h) in [
        (-3, 0, 3, 4),
        (4, 0, 1, 1),
        (0, 4, 1, 1),
        (0, -65_536, 4, 65_536),
        (1_000_000, 1_000_000, 65_536, 65_536),
        (-1_000_000, -1_000_000, 65_536, 65_536),
    ] {
        assert_eq!(
            r.apply(&Op::Rect {
                x,
                y,
                w,
                h,
                color: [9, 9, 9, 255]
            }),
            0
        );
    }
    assert_eq!(painted(&r).len(), 4);
}

#[test]
fn patches_partly_outside() {
    // A 2x2 patch at (-1, 3) on 3x4: only its byte (i=1, j=0), at picture (0, 3), is inside.
    let rgba: Vec<u8> = (0..16).collect();
    let mut r = Raster::new(3, 4);
    let n = r.apply(&Op::Patch {
        x: -1,
        y: 3,
        w: 2,
        h: 2,
        rgba: rgba.into(),
    });
    assert_eq!(n, 1);
    // Source pixel (1, 0) is bytes 4..8 = [4, 5, 6, 7]: alpha 7 onto white:
    // channel c: (c*7 + 255*248 + 127)/255 = (c*7 + 63367)/255: 4 -> 248, 5 -> 248, 6 -> 248;
    // alpha: 7 + (255*248 + 127)/255 = 7 + 248 = 255.
    assert_eq!(r.pixel(0, 3), Some([248, 248, 248, 255]));
    assert_eq!(painted(&r).len(), 1);
}

#[test]
fn pixels_far_outside_are_ignored() {
    let mut r = Raster::new(4, 4);
    let n = r.apply(&Op::Pixels {
        color: BLACK,
        points: pts(&[
            (-1, 0),
            (4, 0),
            (0, -1),
            (0, 4),
            (1_000_000, 1),
            (-1_000_000, 1),
            (i32::MIN, i32::MAX),
            (3, 3),
        ]),
    });
    assert_eq!((n, painted(&r)), (1, set(&[(3, 3)])));
}

#[test]
fn strokes_between_far_coordinates() {
    // A horizontal spine between x = -1,000,000 and 1,000,000 on row 2: width 1 is row 2.
    let (r, n) = draw(8, 4, &stroke(BLACK, 1, &[(-1_000_000, 2), (1_000_000, 2)]));
    assert_eq!((n, painted(&r)), (8, (0..8).map(|x| (x, 2)).collect()));
    // The diagonal from (-1e6,-1e6) to (1e6,1e6) plots (t, t) (dx == dy: both steps every
    // time). Width 3 covers the 3x3 squares around it: exactly |x - y| <= 2; on 6x6 that is
    // 6 + 2*5 + 2*4 = 24 pixels. The i32 extremes give the same diagonal.
    let diagonal: BTreeSet<_> = (0..6u32)
        .flat_map(|y| (0..6u32).map(move |x| (x, y)))
        .filter(|&(x, y)| x.abs_diff(y) <= 2)
        .collect();
    for ends in [
        [(-1_000_000, -1_000_000), (1_000_000, 1_000_000)],
        [(i32::MIN, i32::MIN), (i32::MAX, i32::MAX)],
        [(i32::MAX, i32::MAX), (i32::MIN, i32::MIN)],
    ] {
        let (r, n) = draw(6, 6, &stroke(BLACK, 3, &ends));
        assert_eq!((n, painted(&r)), (24, diagonal.clone()), "{ends:?}");
    }
    // (i32::MIN, 0) -> (i32::MAX, 1): n = 2^32 - 1 steps, d = 1; y = floor((2i + n) / 2n) is 0
    // while 2i + n < 2n, i.e. i <= 2^31 - 1, x = i32::MIN + i <= -1. So from x = 0 on, the
    // spine is on row 1: width 1 paints row 1 and nothing of row 0.
    let (r, n) = draw(8, 3, &stroke(BLACK, 1, &[(i32::MIN, 0), (i32::MAX, 1)]));
    assert_eq!((n, painted(&r)), (8, (0..8).map(|x| (x, 1)).collect()));
}

#[test]
fn wide_strokes_whose_spine_is_outside() {
    // Width 256 (radius 128) centred 128 left of (0, 0): 4*128^2 = 65536 <= 65536 covers (0, 0)
    // only; (1, 0) has 4*129^2 > 65536, (0, 1) has 4*(128^2 + 1) > 65536.
    let (r, n) = draw(4, 4, &stroke(BLACK, 256, &[(-128, 0)]));
    assert_eq!((n, painted(&r)), (1, set(&[(0, 0)])));
    // One more pixel away: nothing.
    let (r, n) = draw(4, 4, &stroke(BLACK, 256, &[(-129, 0)]));
    assert_eq!((n, painted(&r).len()), (0, 0));
    // Width 255 has radius 127.5, so column 0 is in reach of (-127, 0): on row y,
    // 4*(127^2 + y^2) <= 65025 holds up to y^2 <= 127.25 (all four rows), while column 1 has
    // 4*128^2 = 65536 > 65025.
    let (r, n) = draw(4, 4, &stroke(BLACK, 255, &[(-127, 0)]));
    assert_eq!((n, painted(&r)), (4, (0..4).map(|y| (0, y)).collect()));
    let (_, n) = draw(4, 4, &stroke(BLACK, 255, &[(-128, 0)]));
    assert_eq!(n, 0);
}

#[test]
fn strokes_wider_than_the_distance_transform_reaches() {
    // `--max-stroke-width` may be raised past 256; the distance transform counts distances in
    // u8 and once gave these wrong (fuzzing found it; see DT_MAX_REACH). Width 600 (radius
    // 300) centred 300 above (0, 0): 4*(x^2 + 300^2) <= 360000 holds for x = 0 only, and row 1
    // has 4*301^2 > 360000.
    let (r, n) = draw(4, 4, &stroke(BLACK, 600, &[(0, -300)]));
    assert_eq!((n, painted(&r)), (1, set(&[(0, 0)])));
    // Width 509 (reach 254, the first stamped): from (0, -254), row 0 has
    // 4*(x^2 + 254^2) <= 259081 up to x^2 <= 254.25 (all four columns); row 1 has
    // 4*255^2 = 260100 > 259081.
    let (r, n) = draw(4, 4, &stroke(BLACK, 509, &[(0, -254)]));
    assert_eq!((n, painted(&r)), (4, (0..4).map(|x| (x, 0)).collect()));
    // Width 507 (reach 253, the widest transformed): from (0, -253), row 0 has
    // 4*(x^2 + 253^2) <= 257049 up to x^2 <= 253.25; row 1 has 4*254^2 = 258064 > 257049.
    let (r, n) = draw(4, 4, &stroke(BLACK, 507, &[(0, -253)]));
    assert_eq!((n, painted(&r)), (4, (0..4).map(|x| (x, 0)).collect()));
}

#[test]
fn clear_sets_without_blending() {
    let mut r = Raster::new(2, 2);
    assert_eq!(
        r.apply(&Op::Clear {
            color: [1, 2, 3, 4]
        }),
        4
    );
    assert_eq!(r.pixels(), [1, 2, 3, 4].repeat(4).as_slice());
}
