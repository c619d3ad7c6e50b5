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
    for width in [1, 4, 8, 16, 64] {
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
