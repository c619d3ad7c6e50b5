//! Random ops for tests and benchmarks, and the bounding box of an op for display.
//!
//! The generated ops stay within the default limits of PROTOCOL.md §5, are mostly translucent
//! (alpha strictly between 0 and 255) because blending is what makes a duplicated or lost
//! update visible in the pixels, and reach past the picture's edges now and then so clipping is
//! exercised too.

use bytes::Bytes;
use protocol::{Op, Point, Rgba};
use rand::Rng;

/// What mix of ops to generate.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    /// Every kind of op (strokes, pixels, rects, patches, rarely a clear), small sizes.
    #[default]
    Mixed,
    /// Only 8-point strokes of modest width: the drawing of the W1 benchmark.
    Strokes,
}

/// One random op for a `width × height` picture.
pub fn random_op<R: Rng + ?Sized>(rng: &mut R, width: u32, height: u32, profile: Profile) -> Op {
    match profile {
        Profile::Strokes => stroke(rng, width, height, 8),
        Profile::Mixed => match rng.gen_range(0..200) {
            0 => Op::Clear { color: color(rng) },
            1..=80 => {
                let n = rng.gen_range(1..=16);
                stroke(rng, width, height, n)
            }
            81..=120 => pixels(rng, width, height),
            121..=160 => {
                let (x, y) = coord(rng, width, height);
                Op::Rect {
                    x,
                    y,
                    w: rng.gen_range(1..=(width / 4).max(1)),
                    h: rng.gen_range(1..=(height / 4).max(1)),
                    color: color(rng),
                }
            }
            _ => patch(rng, width, height),
        },
    }
}

/// Mostly translucent: 90% strictly between 0 and 255, the rest the two special cases.
fn color<R: Rng + ?Sized>(rng: &mut R) -> Rgba {
    let a = match rng.gen_range(0..20) {
        0 => 0,
        1 => 255,
        _ => rng.gen_range(1..=254),
    };
    [rng.gen(), rng.gen(), rng.gen(), a]
}

/// A coordinate mostly inside the picture, sometimes up to an eighth of a side outside.
fn coord<R: Rng + ?Sized>(rng: &mut R, width: u32, height: u32) -> (i32, i32) {
    let span = |side: u32| {
        let side = i32::try_from(side).unwrap_or(i32::MAX / 2);
        let margin = side / 8 + 1;
        (-margin, side + margin)
    };
    let (x0, x1) = span(width);
    let (y0, y1) = span(height);
    (rng.gen_range(x0..x1), rng.gen_range(y0..y1))
}

/// A random walk of `n` points with steps of up to 32 pixels.
fn stroke<R: Rng + ?Sized>(rng: &mut R, width: u32, height: u32, n: usize) -> Op {
    let (mut x, mut y) = coord(rng, width, height);
    let mut points = Vec::with_capacity(n);
    for _ in 0..n {
        points.push(Point::new(x, y));
        x += rng.gen_range(-32..=32);
        y += rng.gen_range(-32..=32);
    }
    Op::Stroke {
        color: color(rng),
        width: rng.gen_range(1..=12),
        points,
    }
}

/// Up to 64 points in a small area, with repeats (a repeated point is blended once).
fn pixels<R: Rng + ?Sized>(rng: &mut R, width: u32, height: u32) -> Op {
    let (x, y) = coord(rng, width, height);
    let n = rng.gen_range(1..=64);
    let points = (0..n)
        .map(|_| Point::new(x + rng.gen_range(-8..=8), y + rng.gen_range(-8..=8)))
        .collect();
    Op::Pixels {
        color: color(rng),
        points,
    }
}

/// A patch of up to 24×24 pixels, each with its own translucent colour.
fn patch<R: Rng + ?Sized>(rng: &mut R, width: u32, height: u32) -> Op {
    let (x, y) = coord(rng, width, height);
    let (w, h) = (rng.gen_range(1..=24u32), rng.gen_range(1..=24u32));
    let mut rgba = Vec::with_capacity((w * h * 4) as usize);
    for _ in 0..w * h {
        rgba.extend_from_slice(&color(rng));
    }
    Op::Patch {
        x,
        y,
        w,
        h,
        rgba: Bytes::from(rgba),
    }
}

/// The unclipped bounding box `(x0, y0, x1, y1)` (inclusive) of the pixels an op may cover;
/// `None` for `Clear` (the whole picture) and for ops without points.
pub fn bounding_box(op: &Op) -> Option<(i64, i64, i64, i64)> {
    let of_points = |points: &[Point], pad: i64| {
        let xs = points.iter().map(|p| i64::from(p.x));
        let ys = points.iter().map(|p| i64::from(p.y));
        Some((
            xs.clone().min()? - pad,
            ys.clone().min()? - pad,
            xs.max()? + pad,
            ys.max()? + pad,
        ))
    };
    match op {
        Op::Pixels { points, .. } => of_points(points, 0),
        Op::Stroke { points, width, .. } => of_points(points, i64::from(*width) / 2),
        Op::Rect { x, y, w, h, .. } | Op::Patch { x, y, w, h, .. } => Some((
            i64::from(*x),
            i64::from(*y),
            i64::from(*x) + i64::from(*w) - 1,
            i64::from(*y) + i64::from(*h) - 1,
        )),
        Op::Clear { .. } => None,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use protocol::Limits;
    use rand::SeedableRng;

    #[test]
    fn random_ops_are_within_limits_and_mostly_translucent() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let limits = Limits::default();
        let mut translucent = 0;
        let mut kinds = std::collections::BTreeSet::new();
        for profile in [Profile::Mixed, Profile::Strokes] {
            for _ in 0..2000 {
                let op = random_op(&mut rng, 64, 48, profile);
                limits.check(&op).unwrap();
                kinds.insert(op.kind());
                if let Op::Stroke { color, .. } | Op::Rect { color, .. } = &op {
                    translucent += usize::from(color[3] > 0 && color[3] < 255);
                }
            }
        }
        assert_eq!(kinds.len(), 5, "{kinds:?}");
        assert!(translucent > 2000, "{translucent}");
    }

    #[test]
    fn bounding_boxes() {
        let op = Op::Stroke {
            color: [0; 4],
            width: 4,
            points: vec![Point::new(1, 5), Point::new(-3, 9)],
        };
        assert_eq!(bounding_box(&op), Some((-5, 3, 3, 11)));
        let op = Op::Rect {
            x: 2,
            y: 3,
            w: 4,
            h: 1,
            color: [0; 4],
        };
        assert_eq!(bounding_box(&op), Some((2, 3, 5, 3)));
        assert_eq!(bounding_box(&Op::Clear { color: [0; 4] }), None);
    }
}
