//! Encode and decode of typical frames: one drawn stroke, an `Updates` frame of 64 strokes,
//! and a `Welcome` carrying a 1 MiB PNG. Throughput is in frame bytes.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests and benches may unwrap (common brief)

use std::time::Duration;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use protocol::codec::{decode_client, decode_server, encode, encode_sequenced, updates_frame};
use protocol::{ClientMsg, Op, Point, Sequenced, ServerMsg};

fn stroke(i: u64) -> Op {
    Op::Stroke {
        color: [200, 30, 40, 180],
        width: 8,
        points: (0..8)
            .map(|k| Point::new(100 + 13 * k + i as i32, 200 + 7 * k))
            .collect(),
    }
}

fn updates(n: u64) -> Vec<Sequenced> {
    (0..n)
        .map(|i| Sequenced {
            seq: 1_000 + i,
            client_id: i % 7,
            client_seq: i,
            op: stroke(i),
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("codec");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1));

    let draw = ClientMsg::Draw {
        client_seq: 42,
        op: stroke(0),
    };
    let frame = encode(&draw);
    g.throughput(Throughput::Bytes(frame.len() as u64));
    g.bench_function("encode/draw_stroke_8", |b| b.iter(|| encode(&draw)));
    g.bench_function("decode/draw_stroke_8", |b| {
        b.iter(|| decode_client(&frame).unwrap())
    });

    let batch = ServerMsg::Updates(updates(64));
    let frame = encode(&batch);
    g.throughput(Throughput::Bytes(frame.len() as u64));
    g.bench_function("encode/updates_64", |b| b.iter(|| encode(&batch)));
    let entries: Vec<Bytes> = updates(64).iter().map(encode_sequenced).collect();
    g.bench_function("splice/updates_64", |b| {
        b.iter(|| updates_frame(entries.iter()))
    });
    g.bench_function("decode/updates_64", |b| {
        b.iter(|| decode_server(&frame).unwrap())
    });

    // Incompressible-looking bytes: the size, not the content, is what costs.
    let png: Vec<u8> = (0..1u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    let welcome = ServerMsg::Welcome {
        client_id: 1,
        width: 1024,
        height: 1024,
        snapshot_seq: 99,
        snapshot_png: png.into(),
        pending: updates(16),
    };
    let frame = encode(&welcome);
    g.throughput(Throughput::Bytes(frame.len() as u64));
    g.bench_with_input(
        BenchmarkId::new("encode", "welcome_1mib"),
        &welcome,
        |b, w| b.iter(|| encode(w)),
    );
    g.bench_with_input(
        BenchmarkId::new("decode", "welcome_1mib"),
        &frame,
        |b, f| b.iter(|| decode_server(f).unwrap()),
    );
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
