//! Each op kind on a 2048x2048 picture, throughput in covered pixels, including the worst
//! strokes the limits allow and both stroke strategies.

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use protocol::raster::StrokeStrategy;
use protocol::{Op, Point, Raster};

const SIDE: u32 = 2048;

/// A typical stroke: 8 points over a few hundred pixels.
fn typical_stroke(width: u16, alpha: u8) -> Op {
    Op::Stroke {
        color: [200, 30, 40, alpha],
        width,
        points: [
            (300, 300),
            (420, 340),
            (500, 460),
            (480, 600),
            (380, 680),
            (260, 640),
            (220, 520),
            (300, 420),
        ]
        .iter()
        .map(|&(x, y)| Point::new(x, y))
        .collect(),
    }
}

/// Strokes drawn like `pps_bench`'s and the load generator's: 8-point random walks with steps
/// of up to 32 px, widths `widths`, mostly translucent colours, starting up to an eighth of a
/// side outside the picture, all over it (so, unlike one stroke redrawn, their pixels are
/// rarely in cache). A fixed xorshift stands in for `rand`, which this crate does not use.
fn random_walks(count: usize, widths: std::ops::RangeInclusive<u16>) -> Vec<Op> {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move |below: u64| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state % below
    };
    let side = i64::from(SIDE);
    let margin = side / 8 + 1;
    (0..count)
        .map(|_| {
            let mut x = next((side + 2 * margin) as u64) as i64 - margin;
            let mut y = next((side + 2 * margin) as u64) as i64 - margin;
            let points = (0..8)
                .map(|_| {
                    let p = Point::new(x as i32, y as i32);
                    x += next(65) as i64 - 32;
                    y += next(65) as i64 - 32;
                    p
                })
                .collect();
            let alpha = match next(8) {
                0 => 0,
                1 => 255,
                _ => 1 + next(254) as u8,
            };
            let rgb = next(1 << 24) as u32;
            let (lo, hi) = (*widths.start(), *widths.end());
            Op::Stroke {
                color: [rgb as u8, (rgb >> 8) as u8, (rgb >> 16) as u8, alpha],
                width: lo + next(u64::from(hi - lo) + 1) as u16,
                points,
            }
        })
        .collect()
}

fn zigzag(a: Point, b: Point) -> Op {
    Op::Stroke {
        color: [10, 20, 30, 128],
        width: 256,
        points: (0..4096).map(|i| if i % 2 == 0 { a } else { b }).collect(),
    }
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("raster");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1));
    let mut cases: Vec<(String, Op, Vec<StrokeStrategy>)> = Vec::new();
    let auto = vec![StrokeStrategy::Auto];
    let both = vec![
        StrokeStrategy::Auto,
        StrokeStrategy::Stamp,
        StrokeStrategy::DistanceTransform,
    ];
    for width in [1, 2, 4, 8, 12, 16, 32, 64] {
        cases.push((
            format!("stroke_8pt_w{width}_translucent"),
            typical_stroke(width, 128),
            both.clone(),
        ));
    }
    cases.push((
        "stroke_8pt_w16_opaque".into(),
        typical_stroke(16, 255),
        auto.clone(),
    ));
    cases.push((
        "stroke_zigzag_far_corners_w256".into(),
        zigzag(
            Point::new(-1_000_000, -1_000_000),
            Point::new(1_000_000, 1_000_000),
        ),
        vec![StrokeStrategy::Auto],
    ));
    cases.push((
        "stroke_zigzag_across_w256".into(),
        Op::Stroke {
            color: [0, 0, 0, 200],
            width: 256,
            points: (0..4096)
                .map(|i| {
                    if i % 2 == 0 {
                        Point::new(-200, i / 2)
                    } else {
                        Point::new(2300, 2047 - i / 2)
                    }
                })
                .collect(),
        },
        vec![StrokeStrategy::Auto],
    ));
    cases.push((
        "pixels_4096".into(),
        Op::Pixels {
            color: [1, 2, 3, 128],
            points: (0..4096)
                .map(|i| Point::new(i * 37 % 2048, i * 91 % 2048))
                .collect(),
        },
        auto.clone(),
    ));
    cases.push((
        "rect_512x512_translucent".into(),
        Op::Rect {
            x: 100,
            y: 100,
            w: 512,
            h: 512,
            color: [1, 2, 3, 128],
        },
        auto.clone(),
    ));
    cases.push((
        "rect_whole_picture_opaque".into(),
        Op::Rect {
            x: -10,
            y: -10,
            w: 4096,
            h: 4096,
            color: [1, 2, 3, 255],
        },
        auto.clone(),
    ));
    cases.push((
        "patch_512x512".into(),
        Op::Patch {
            x: 700,
            y: 700,
            w: 512,
            h: 512,
            rgba: (0..512 * 512 * 4)
                .map(|i| (i * 7 % 251) as u8)
                .collect::<Vec<u8>>()
                .into(),
        },
        auto.clone(),
    ));
    cases.push((
        "clear".into(),
        Op::Clear {
            color: [5, 6, 7, 255],
        },
        auto,
    ));

    let mut raster = Raster::new(SIDE, SIDE);
    // Many strokes per iteration, all over the picture: what `pps_bench` measures.
    for (name, widths) in [
        ("strokes_random_walks_w1to12", 1..=12),
        ("strokes_random_walks_w1", 1..=1),
        ("strokes_random_walks_w4", 4..=4),
    ] {
        let ops = random_walks(20_000, widths);
        let covered = ops.iter().map(|op| raster.apply(op)).sum();
        g.throughput(Throughput::Elements(covered));
        g.bench_function(name, |b| {
            b.iter(|| ops.iter().map(|op| raster.apply(op)).sum::<u64>())
        });
    }
    for (name, op, strategies) in &cases {
        for &strategy in strategies {
            let covered = raster.apply_with(op, strategy);
            g.throughput(Throughput::Elements(covered));
            let id = if strategies.len() == 1 {
                name.clone()
            } else {
                format!("{name}/{strategy:?}")
            };
            g.bench_function(id, |b| b.iter(|| raster.apply_with(op, strategy)));
        }
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
