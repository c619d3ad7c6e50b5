//! The cases of `vectors/raster-extra.json`: the project's own raster vectors for other
//! implementations (the browser client's JavaScript rasterizer first). Written out by
//! `examples/gen_vectors.rs`; `tests/vectors.rs` regenerates them in memory and compares with
//! the committed file, so the file cannot drift from the rasterizer.
//!
//! Every op is within the default §5 limits, like the shared vectors.

#![allow(dead_code)]

use protocol::{Op, Point, Raster, Rgba};
use sha2::{Digest, Sha256};

use super::json::op_text;

pub(crate) struct Case {
    pub name: &'static str,
    pub note: &'static str,
    pub width: u32,
    pub height: u32,
    pub ops: Vec<Op>,
}

/// A small deterministic generator (64-bit LCG, high bits): the file must not change between
/// runs, and no random crate is needed for that.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u32 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) as u32
    }

    fn range(&mut self, lo: i32, hi: i32) -> i32 {
        lo + (self.next() % (hi - lo + 1) as u32) as i32
    }

    fn byte(&mut self) -> u8 {
        self.next() as u8
    }

    fn color(&mut self) -> Rgba {
        let alphas = [0, 1, 127, 128, 254, 255];
        let a = if self.next().is_multiple_of(3) {
            alphas[self.next() as usize % alphas.len()]
        } else {
            self.byte()
        };
        [self.byte(), self.byte(), self.byte(), a]
    }

    fn point(&mut self, lo: i32, hi: i32) -> Point {
        Point::new(self.range(lo, hi), self.range(lo, hi))
    }

    fn op(&mut self, w: i32, h: i32) -> Op {
        let (lo, hi) = (-w.max(h) / 2, w.max(h) * 3 / 2);
        match self.next() % 10 {
            0 | 1 => Op::Pixels {
                color: self.color(),
                points: (0..self.range(1, 12)).map(|_| self.point(lo, hi)).collect(),
            },
            2 | 3 => Op::Rect {
                x: self.range(lo, hi),
                y: self.range(lo, hi),
                w: self.range(1, w) as u32,
                h: self.range(1, h) as u32,
                color: self.color(),
            },
            4..=7 => Op::Stroke {
                color: self.color(),
                width: if self.next().is_multiple_of(4) {
                    self.range(1, 256) as u16
                } else {
                    self.range(1, 16) as u16
                },
                points: (0..self.range(1, 7)).map(|_| self.point(lo, hi)).collect(),
            },
            8 => {
                let (pw, ph) = (self.range(1, 9) as u32, self.range(1, 9) as u32);
                Op::Patch {
                    x: self.range(lo, hi),
                    y: self.range(lo, hi),
                    w: pw,
                    h: ph,
                    rgba: (0..pw * ph * 4)
                        .map(|_| self.byte())
                        .collect::<Vec<u8>>()
                        .into(),
                }
            }
            _ => Op::Clear {
                color: self.color(),
            },
        }
    }
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

fn case(name: &'static str, note: &'static str, width: u32, height: u32, ops: Vec<Op>) -> Case {
    Case {
        name,
        note,
        width,
        height,
        ops,
    }
}

const HALF: Rgba = [20, 40, 200, 128];
const M: i32 = 1_000_000;

pub(crate) fn cases() -> Vec<Case> {
    let mut rng = Lcg(0x5eed_f7a5_7e00);
    let mut out = vec![
        case(
            "x_blend_every_alpha",
            "Pixels of (250, 10, 130, a) for every a in 0..=255, one per pixel, after Clear to (30, 200, 90, 160)",
            16,
            16,
            std::iter::once(Op::Clear { color: [30, 200, 90, 160] })
                .chain((0..256).map(|a| Op::Pixels {
                    color: [250, 10, 130, a as u8],
                    points: vec![Point::new(a % 16, a / 16)],
                }))
                .collect(),
        ),
        case(
            "x_pixels_duplicates_translucent",
            "one Pixels op listing points up to 4 times, some outside: each covered pixel blended once",
            6,
            4,
            vec![Op::Pixels {
                color: HALF,
                points: pts(&[(0, 0), (0, 0), (5, 3), (2, 1), (5, 3), (2, 1), (2, 1), (2, 1), (-1, 0), (6, 3), (0, 4)]),
            }],
        ),
        case(
            "x_pixels_at_the_coordinate_limits",
            "points at +-1,000,000 and just outside each edge are ignored",
            5,
            5,
            vec![Op::Pixels {
                color: [0, 0, 0, 255],
                points: pts(&[(M, M), (-M, -M), (M, 0), (0, -M), (-1, 2), (5, 2), (2, -1), (2, 5), (4, 4)]),
            }],
        ),
        case(
            "x_rect_translucent_stack",
            "three overlapping translucent rects: the overlap is blended three times, once per op",
            8,
            8,
            vec![
                Op::Rect { x: 0, y: 0, w: 5, h: 5, color: [255, 0, 0, 100] },
                Op::Rect { x: 2, y: 2, w: 5, h: 5, color: [0, 255, 0, 150] },
                Op::Rect { x: 1, y: 3, w: 6, h: 2, color: [0, 0, 255, 1] },
            ],
        ),
        case(
            "x_rect_largest",
            "65536x65536 rects from far outside: one covers the whole picture, one ends before it",
            7,
            6,
            vec![
                Op::Rect { x: -30_000, y: -60_000, w: 65_536, h: 65_536, color: [9, 99, 199, 99] },
                Op::Rect { x: -M, y: -M, w: 65_536, h: 65_536, color: [0, 0, 0, 255] },
                Op::Rect { x: 6, y: -M, w: 65_536, h: 65_536, color: [0, 0, 0, 255] },
            ],
        ),
        case(
            "x_stroke_widths_1_to_16",
            "one-point strokes of every width 1..=16 side by side, translucent: the disc shapes",
            80,
            20,
            (1..=16)
                .map(|w| stroke([(w * 15) as u8, 0, 255 - (w * 15) as u8, 140], w as u16, &[(4 + (w - 1) * 5, 10)]))
                .collect(),
        ),
        case(
            "x_stroke_segments_widths_1_to_9",
            "a shallow segment (0,0)->(9,3) drawn with widths 1..=9 on separate rows",
            16,
            70,
            (1..=9)
                .map(|w| stroke([0, 0, 0, 200], w as u16, &[(2, 3 + (w - 1) * 7), (11, 6 + (w - 1) * 7)]))
                .collect(),
        ),
    ];
    for (name, note, width) in [
        (
            "x_stroke_width_31",
            "width 31 polyline with a sharp turn",
            31u16,
        ),
        (
            "x_stroke_width_32",
            "width 32 polyline with a sharp turn",
            32,
        ),
        (
            "x_stroke_width_33",
            "width 33 polyline with a sharp turn",
            33,
        ),
        (
            "x_stroke_width_100",
            "width 100 polyline with a sharp turn",
            100,
        ),
        (
            "x_stroke_width_255",
            "width 255 (radius 127.5) polyline with a sharp turn",
            255,
        ),
    ] {
        out.push(case(
            name,
            note,
            64,
            48,
            vec![stroke(
                [200, 100, 0, 77],
                width,
                &[(-20, 10), (50, 30), (5, 44)],
            )],
        ));
    }
    out.extend([
        case(
            "x_stroke_width_256_edges",
            "width 256 (radius 128) centred 128 outside each edge: exactly the edge's middle pixel; 129 outside: nothing",
            9,
            7,
            vec![
                stroke([255, 0, 0, 255], 256, &[(-128, 3)]),
                stroke([0, 255, 0, 255], 256, &[(136, 3)]),
                stroke([0, 0, 255, 255], 256, &[(4, -128)]),
                stroke([0, 0, 0, 255], 256, &[(4, 134)]),
                stroke([0, 0, 0, 255], 256, &[(-129, 3), (4, -129), (137, 3), (4, 135)]),
            ],
        ),
        case(
            "x_stroke_far_shallow",
            "segments between x = -1,000,000 and 1,000,000 with small slopes: where line puts its steps inside the picture",
            40,
            12,
            vec![
                stroke([0, 0, 0, 255], 1, &[(-M, 2), (M, 9)]),
                stroke([255, 0, 0, 128], 1, &[(M, 3), (-M, 10)]),
                stroke([0, 0, 255, 128], 3, &[(-M, -3), (M, 14)]),
            ],
        ),
        case(
            "x_stroke_far_steep",
            "segments between y = -1,000,000 and 1,000,000 with small slopes, both directions",
            12,
            40,
            vec![
                stroke([0, 0, 0, 255], 1, &[(2, -M), (9, M)]),
                stroke([255, 0, 0, 128], 1, &[(3, M), (10, -M)]),
                stroke([0, 0, 255, 128], 4, &[(-3, -M), (14, M)]),
            ],
        ),
        case(
            "x_stroke_far_diagonals",
            "corner-to-corner segments at +-1,000,000 and nearly diagonal ones, width 2 and 5",
            31,
            23,
            vec![
                stroke([0, 0, 0, 128], 2, &[(-M, -M), (M, M)]),
                stroke([200, 0, 0, 128], 5, &[(-M, M), (M, -M)]),
                stroke([0, 200, 0, 128], 1, &[(-M, -M + 7), (M, M - 3)]),
            ],
        ),
        case(
            "x_stroke_fully_outside_far",
            "wide strokes whose spines pass far outside, including one between +-1,000,000 that misses by 129",
            20,
            20,
            vec![
                stroke([0, 0, 0, 255], 256, &[(-M, -129), (M, -129)]),
                stroke([0, 0, 0, 255], 256, &[(-129, M), (-129, -M), (M, -M)]),
                stroke([0, 0, 0, 255], 16, &[(-M, M), (-M, -M)]),
            ],
        ),
        case(
            "x_stroke_self_crossing_star",
            "a translucent width-5 five-pointed star: the spine crosses itself five times, every pixel blended once",
            40,
            40,
            vec![stroke(HALF, 5, &[(20, 2), (31, 36), (2, 14), (38, 14), (9, 36), (20, 2)])],
        ),
        case(
            "x_stroke_retrace_zigzag",
            "64 points alternating between two ends, width 7, translucent: blended once",
            32,
            24,
            vec![Op::Stroke {
                color: [90, 10, 200, 60],
                width: 7,
                points: (0..64).map(|i| if i % 2 == 0 { Point::new(3, 4) } else { Point::new(28, 19) }).collect(),
            }],
        ),
        case(
            "x_stroke_zigzag_far_corners_w256",
            "4096 points alternating between (-1e6,-1e6) and (1e6,1e6), width 256: the worst-case stroke",
            64,
            48,
            vec![Op::Stroke {
                color: [10, 20, 30, 128],
                width: 256,
                points: (0..4096).map(|i| if i % 2 == 0 { Point::new(-M, -M) } else { Point::new(M, M) }).collect(),
            }],
        ),
        case(
            "x_stroke_random_walk_many_points",
            "a 600-point random walk (steps of -3..=3), width 2, translucent, partly outside",
            48,
            48,
            vec![Op::Stroke {
                color: [0, 120, 0, 90],
                width: 2,
                points: {
                    let mut p = Point::new(24, 24);
                    (0..600)
                        .map(|_| {
                            p = Point::new(p.x + rng.range(-3, 3), p.y + rng.range(-3, 3));
                            p
                        })
                        .collect()
                },
            }],
        ),
        case(
            "x_stroke_direction",
            "line(a, b) and line(b, a) differ: (0,0)->(7,2) and back, (0,3)->(2,10) and back, width 1",
            8,
            8,
            vec![
                stroke([255, 0, 0, 255], 1, &[(0, 0), (7, 2)]),
                stroke([0, 0, 255, 128], 1, &[(7, 2), (0, 0)]),
                stroke([0, 255, 0, 255], 1, &[(0, 3), (2, 10)]),
                stroke([0, 0, 0, 128], 1, &[(2, 10), (0, 3)]),
            ],
        ),
        case(
            "x_stroke_repeated_points",
            "consecutive equal points and zero-length segments, width 3 and 6, translucent",
            8,
            8,
            vec![
                stroke(HALF, 3, &[(2, 2), (2, 2), (2, 2), (5, 2), (5, 2)]),
                stroke([255, 0, 0, 30], 6, &[(4, 5), (4, 5)]),
            ],
        ),
        case(
            "x_one_by_one_wide",
            "a 1x1 picture and wide strokes near it, one just in reach",
            1,
            1,
            vec![
                stroke([0, 0, 255, 128], 200, &[(100, 0)]),
                stroke([255, 0, 0, 128], 200, &[(101, 0)]),
                stroke([0, 255, 0, 128], 256, &[(-M, 128), (M, 128)]),
            ],
        ),
        case(
            "x_patch_mixed_alpha",
            "an 8x8 patch of random bytes (every alpha kind) onto a translucent picture",
            8,
            8,
            vec![
                Op::Clear { color: [120, 130, 140, 100] },
                Op::Patch { x: 0, y: 0, w: 8, h: 8, rgba: (0..256).map(|_| rng.byte()).collect::<Vec<u8>>().into() },
            ],
        ),
        case(
            "x_patch_clipped_corners",
            "3x3 patches of random bytes over each corner, and one larger than the picture",
            6,
            5,
            {
                let mut ops: Vec<Op> = [(-1, -1), (4, -2), (-2, 3), (5, 4)]
                    .iter()
                    .map(|&(x, y)| Op::Patch { x, y, w: 3, h: 3, rgba: (0..36).map(|_| rng.byte()).collect::<Vec<u8>>().into() })
                    .collect();
                ops.push(Op::Patch {
                    x: -2,
                    y: -3,
                    w: 10,
                    h: 9,
                    rgba: (0..360).map(|i| if i % 4 == 3 { (i % 3) as u8 * 100 } else { rng.byte() }).collect::<Vec<u8>>().into(),
                });
                ops
            },
        ),
        case(
            "x_patch_largest",
            "a 512x3 patch at (-500, 5): only its last 12 columns of its first 2 rows are inside",
            12,
            7,
            vec![Op::Patch {
                x: -500,
                y: 5,
                w: 512,
                h: 3,
                rgba: (0..512 * 3 * 4).map(|i: u32| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect::<Vec<u8>>().into(),
            }],
        ),
        case(
            "x_clear_transparent_then_blend",
            "Clear to (0,0,0,0), then translucent ops of every kind: blending onto alpha 0",
            8,
            6,
            vec![
                Op::Clear { color: [0, 0, 0, 0] },
                Op::Rect { x: 1, y: 1, w: 4, h: 3, color: [200, 100, 50, 128] },
                stroke([10, 250, 10, 77], 3, &[(0, 5), (7, 0)]),
                Op::Pixels { color: [255, 255, 255, 1], points: pts(&[(0, 0), (7, 5)]) },
                Op::Patch { x: 5, y: 3, w: 2, h: 2, rgba: vec![255, 0, 0, 254, 0, 255, 0, 1, 0, 0, 255, 127, 9, 9, 9, 0].into() },
            ],
        ),
    ]);
    let mut random = |name, note, w: u32, h: u32, n: usize| {
        let ops = (0..n).map(|_| rng.op(w as i32, h as i32)).collect();
        case(name, note, w, h, ops)
    };
    out.push(random(
        "x_random_8x8",
        "60 random ops of every kind on an 8x8 picture (with rgba_hex)",
        8,
        8,
        60,
    ));
    out.push(random(
        "x_random_1x9",
        "30 random ops on a one-column picture",
        1,
        9,
        30,
    ));
    out.push(random("x_random_37x29", "150 random ops (every kind, mostly translucent, often partly outside) on an odd-sized picture", 37, 29, 150));
    out.push(random(
        "x_random_96x64",
        "150 random ops on a larger picture, wide strokes included",
        96,
        64,
        150,
    ));
    out
}

/// The final picture of a case.
pub(crate) fn render(case: &Case) -> Raster {
    let mut raster = Raster::new(case.width, case.height);
    for op in &case.ops {
        raster.apply(op);
    }
    raster
}

/// The whole vector file, laid out like the shared `raster.json`.
pub(crate) fn file_text() -> String {
    let cases = cases();
    let mut out = String::from("[\n");
    for (i, case) in cases.iter().enumerate() {
        let raster = render(case);
        out.push_str(" {\n");
        out.push_str(&format!(
            "  \"name\": {},\n",
            serde_json::Value::from(case.name)
        ));
        out.push_str(&format!(
            "  \"note\": {},\n",
            serde_json::Value::from(case.note)
        ));
        out.push_str(&format!(
            "  \"width\": {},\n  \"height\": {},\n",
            case.width, case.height
        ));
        out.push_str("  \"ops\": [\n");
        let ops: Vec<String> = case
            .ops
            .iter()
            .map(|op| format!("   {}", op_text(op)))
            .collect();
        out.push_str(&ops.join(",\n"));
        out.push_str("\n  ],\n");
        out.push_str(&format!(
            "  \"rgba_sha256\": \"{}\"",
            hex::encode(Sha256::digest(raster.pixels()))
        ));
        if case.width <= 8 && case.height <= 8 {
            out.push_str(&format!(
                ",\n  \"rgba_hex\": \"{}\"",
                hex::encode(raster.pixels())
            ));
        }
        out.push_str(if i + 1 == cases.len() {
            "\n }\n"
        } else {
            "\n },\n"
        });
    }
    out.push_str("]\n");
    out
}
