//! The rasterizer against a naive reference written straight from PROTOCOL.md §4, and the
//! closed-form clipped line against the literal `line` loop, on random input (proptest).

mod common;

use proptest::prelude::*;
use protocol::raster::{line_reference, Bounds, ClippedLine, StrokeStrategy};
use protocol::{Op, Point, Raster, Rgba};

/// §4's blend, transcribed without any precomputation.
fn naive_blend(dst: [u8; 4], src: Rgba) -> [u8; 4] {
    let a = u32::from(src[3]);
    if a == 255 {
        return src;
    }
    if a == 0 {
        return dst;
    }
    let c = |s: u8, d: u8| ((u32::from(s) * a + u32::from(d) * (255 - a) + 127) / 255) as u8;
    [
        c(src[0], dst[0]),
        c(src[1], dst[1]),
        c(src[2], dst[2]),
        (a + (u32::from(dst[3]) * (255 - a) + 127) / 255) as u8,
    ]
}

/// A picture as one `[u8; 4]` per pixel, the naive way.
struct Naive {
    w: i64,
    h: i64,
    px: Vec<[u8; 4]>,
}

impl Naive {
    fn new(w: u32, h: u32) -> Self {
        Self {
            w: i64::from(w),
            h: i64::from(h),
            px: vec![[255; 4]; (w * h) as usize],
        }
    }

    /// Blends `color(x, y)` onto every pixel `covered(x, y)` says; returns how many.
    fn each(
        &mut self,
        covered: impl Fn(i64, i64) -> bool,
        color: impl Fn(i64, i64) -> Rgba,
    ) -> u64 {
        let mut n = 0;
        for y in 0..self.h {
            for x in 0..self.w {
                if covered(x, y) {
                    let i = (y * self.w + x) as usize;
                    self.px[i] = naive_blend(self.px[i], color(x, y));
                    n += 1;
                }
            }
        }
        n
    }

    fn apply(&mut self, op: &Op) -> u64 {
        match op {
            Op::Pixels { color, points } => self.each(
                |x, y| {
                    points
                        .iter()
                        .any(|p| i64::from(p.x) == x && i64::from(p.y) == y)
                },
                |_, _| *color,
            ),
            Op::Rect { x, y, w, h, color } => {
                let (x0, y0) = (i64::from(*x), i64::from(*y));
                let (x1, y1) = (x0 + i64::from(*w), y0 + i64::from(*h));
                self.each(
                    |px, py| px >= x0 && px < x1 && py >= y0 && py < y1,
                    |_, _| *color,
                )
            }
            Op::Stroke {
                color,
                width,
                points,
            } => {
                let r2 = i64::from(*width) * i64::from(*width);
                let mut spine: Vec<Point> = if points.len() == 1 {
                    points.clone()
                } else {
                    points
                        .windows(2)
                        .flat_map(|p| line_reference(p[0], p[1]))
                        .collect()
                };
                // Only a shortcut for speed: points farther than the radius from the picture
                // cannot cover it.
                let reach = i64::from(*width);
                spine.retain(|p| {
                    let (x, y) = (i64::from(p.x), i64::from(p.y));
                    x >= -reach && y >= -reach && x < self.w + reach && y < self.h + reach
                });
                self.each(
                    |px, py| {
                        spine.iter().any(|c| {
                            let (dx, dy) = (px - i64::from(c.x), py - i64::from(c.y));
                            4 * (dx * dx + dy * dy) <= r2
                        })
                    },
                    |_, _| *color,
                )
            }
            Op::Patch { x, y, w, h, rgba } => {
                let (x0, y0, w, h) = (i64::from(*x), i64::from(*y), i64::from(*w), i64::from(*h));
                self.each(
                    |px, py| px >= x0 && px < x0 + w && py >= y0 && py < y0 + h,
                    |px, py| {
                        let s = (((py - y0) * w + (px - x0)) * 4) as usize;
                        [rgba[s], rgba[s + 1], rgba[s + 2], rgba[s + 3]]
                    },
                )
            }
            Op::Clear { color } => {
                self.px.fill(*color);
                (self.w * self.h) as u64
            }
        }
    }

    fn bytes(&self) -> Vec<u8> {
        self.px.iter().flatten().copied().collect()
    }
}

fn color() -> impl Strategy<Value = Rgba> {
    let alpha = prop_oneof![
        Just(0u8),
        Just(1),
        Just(127),
        Just(128),
        Just(254),
        Just(255),
        any::<u8>()
    ];
    (any::<u8>(), any::<u8>(), any::<u8>(), alpha).prop_map(|(r, g, b, a)| [r, g, b, a])
}

/// Coordinates around a picture of at most 24x24, often outside it.
fn coord() -> impl Strategy<Value = i32> {
    prop_oneof![8 => -40..64i32, 1 => -300..300i32]
}

fn point() -> impl Strategy<Value = Point> {
    (coord(), coord()).prop_map(|(x, y)| Point::new(x, y))
}

fn stroke_width() -> impl Strategy<Value = u16> {
    prop_oneof![6 => 1..=20u16, 1 => 20..=80u16, 1 => Just(256u16), 1 => Just(0u16)]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => (color(), prop::collection::vec(point(), 1..20))
            .prop_map(|(color, points)| Op::Pixels { color, points }),
        2 => (coord(), coord(), 1..40u32, 1..40u32, color())
            .prop_map(|(x, y, w, h, color)| Op::Rect { x, y, w, h, color }),
        6 => (color(), stroke_width(), prop::collection::vec(point(), 1..8))
            .prop_map(|(color, width, points)| Op::Stroke { color, width, points }),
        2 => (coord(), coord(), 1..12u32, 1..12u32)
            .prop_flat_map(|(x, y, w, h)| {
                prop::collection::vec(any::<u8>(), (w * h * 4) as usize)
                    .prop_map(move |rgba| Op::Patch { x, y, w, h, rgba: rgba.into() })
            }),
        1 => color().prop_map(|color| Op::Clear { color }),
    ]
}

const STRATEGIES: [StrokeStrategy; 3] = [
    StrokeStrategy::Auto,
    StrokeStrategy::Stamp,
    StrokeStrategy::DistanceTransform,
];

fn check_against_naive(w: u32, h: u32, ops: &[Op]) -> Result<(), TestCaseError> {
    let mut naive = Naive::new(w, h);
    let mut rasters = STRATEGIES.map(|_| Raster::new(w, h));
    for (k, op) in ops.iter().enumerate() {
        let want = naive.apply(op);
        for (raster, strategy) in rasters.iter_mut().zip(STRATEGIES) {
            let got = raster.apply_with(op, strategy);
            prop_assert_eq!(
                got,
                want,
                "covered count of op {} {:?} ({:?})",
                k,
                op,
                strategy
            );
            prop_assert!(
                raster.pixels() == naive.bytes().as_slice(),
                "pixels after op {} {:?} ({:?})",
                k,
                op,
                strategy
            );
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn rasterizer_equals_naive_reference(
        w in 1..=24u32,
        h in 1..=24u32,
        ops in prop::collection::vec(op(), 1..6),
    ) {
        check_against_naive(w, h, &ops)?;
    }

    #[test]
    fn clipped_line_equals_reference_loop(
        a in (-70..70i32, -70..70i32),
        b in (-70..70i32, -70..70i32),
        x0 in -80..80i64, y0 in -80..80i64, bw in 0..100i64, bh in 0..100i64,
    ) {
        let (a, b) = (Point::new(a.0, a.1), Point::new(b.0, b.1));
        let bounds = Bounds { x0, y0, x1: x0 + bw, y1: y0 + bh };
        let want: Vec<(i64, i64)> = line_reference(a, b)
            .into_iter()
            .map(|p| (i64::from(p.x), i64::from(p.y)))
            .filter(|&(x, y)| bounds.contains(x, y))
            .collect();
        let got: Vec<(i64, i64)> = ClippedLine::new(a, b, &bounds).into_iter().flatten().collect();
        prop_assert_eq!(got, want);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Long lines (up to ±1,000,000 on each axis, the §5 coordinate limit) through a window.
    #[test]
    fn long_clipped_line_equals_reference_loop(
        a in (-1_000_000..=1_000_000i32, -1_000_000..=1_000_000i32),
        b in (-1_000_000..=1_000_000i32, -1_000_000..=1_000_000i32),
        through in (-1_000i64..1_000, -1_000i64..1_000),
        size in 1..3_000i64,
    ) {
        let (a, b) = (Point::new(a.0, a.1), Point::new(b.0, b.1));
        let reference = line_reference(a, b);
        // A window around a point of the line, so the clip is not trivially empty.
        let mid = reference[reference.len() / 2];
        let (cx, cy) = (i64::from(mid.x) + through.0, i64::from(mid.y) + through.1);
        for bounds in [
            Bounds { x0: cx - size, y0: cy - size, x1: cx + size, y1: cy + size },
            Bounds { x0: i64::MIN / 4, y0: i64::MIN / 4, x1: i64::MAX / 4, y1: i64::MAX / 4 },
        ] {
            let want: Vec<(i64, i64)> = reference
                .iter()
                .map(|p| (i64::from(p.x), i64::from(p.y)))
                .filter(|&(x, y)| bounds.contains(x, y))
                .collect();
            let got: Vec<(i64, i64)> =
                ClippedLine::new(a, b, &bounds).into_iter().flatten().collect();
            prop_assert_eq!(got, want);
        }
    }

    /// Strokes whose points lie far outside small pictures (±1,000,000), crossing them or not.
    #[test]
    fn far_strokes_equal_naive_reference(
        w in 1..=16u32,
        h in 1..=16u32,
        color in color(),
        width in stroke_width(),
        points in prop::collection::vec(
            prop_oneof![
                (-1_000_000..=1_000_000i32, -1_000_000..=1_000_000i32),
                (-20..36i32, -20..36i32),
                Just((-1_000_000, -1_000_000)),
                Just((1_000_000, 1_000_000)),
                Just((-1_000_000, 1_000_000)),
            ].prop_map(|(x, y)| Point::new(x, y)),
            1..5,
        ),
    ) {
        check_against_naive(w, h, &[Op::Stroke { color, width, points }])?;
    }
}

/// Around the places where the fast paths of thin strokes have edges: the picture's sides
/// and the `u64` word boundaries of the coverage bitmap (x = 63/64, 127/128, 191/192).
fn boundary_x() -> impl Strategy<Value = i32> {
    prop_oneof![-8..8i32, 56..72i32, 120..136i32, 184..200i32, -60..260i32]
}

/// Thin (and a few wide) strokes: the widths of most real strokes, where runs are 1 to 3
/// pixels long and a segment's rows are few.
fn thin_stroke() -> impl Strategy<Value = Op> {
    let width = prop_oneof![4 => 0..=4u16, 2 => 5..=12u16, 1 => 13..=70u16];
    let point = (boundary_x(), -8..28i32).prop_map(|(x, y)| Point::new(x, y));
    (color(), width, prop::collection::vec(point, 1..9)).prop_map(|(color, width, points)| {
        Op::Stroke {
            color,
            width,
            points,
        }
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// Pictures wider than one bitmap word, so covered runs start, end and cross at word
    /// boundaries and at the picture's right side.
    #[test]
    fn thin_strokes_across_words_equal_naive_reference(
        w in prop_oneof![60..=72u32, 120..=136u32, 184..=200u32],
        h in 1..=20u32,
        ops in prop::collection::vec(thin_stroke(), 1..6),
    ) {
        check_against_naive(w, h, &ops)?;
    }

    /// Strokes on two pictures of different sizes in turn, on one thread: the rasterizer's
    /// per-thread buffers, sized for one picture's box, must leave the other's exact.
    #[test]
    fn strokes_on_alternating_pictures_equal_naive_reference(
        big in (150..=200u32, 12..=24u32),
        small in (1..=12u32, 1..=12u32),
        ops in prop::collection::vec(thin_stroke(), 2..8),
    ) {
        let sizes = [big, small];
        let mut naive = sizes.map(|(w, h)| Naive::new(w, h));
        let mut rasters = sizes.map(|(w, h)| STRATEGIES.map(|_| Raster::new(w, h)));
        for (k, op) in ops.iter().enumerate() {
            let which = k % 2;
            let want = naive[which].apply(op);
            for (raster, strategy) in rasters[which].iter_mut().zip(STRATEGIES) {
                prop_assert_eq!(raster.apply_with(op, strategy), want, "op {} {:?}", k, strategy);
                prop_assert!(
                    raster.pixels() == naive[which].bytes().as_slice(),
                    "pixels after op {} {:?} ({:?})",
                    k,
                    op,
                    strategy
                );
            }
        }
    }
}
