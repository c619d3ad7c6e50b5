//! The picture service alone, in process: how fast it applies strokes and how long flushing a
//! 2048² picture takes, without the broadcast service or any socket in the way.
//!
//! Measures, and prints as one JSON object on stdout (progress on stderr):
//! - `rasterizer`: `Raster::apply` on the benchmark's strokes in a plain loop on this thread,
//!   in covered pixels per second (the rasterizer's ceiling on one core).
//! - `apply`: the same strokes sent through [`Pps`] as [`ApplyBatch`]es (bincode built the
//!   way the broadcast service builds it), timed from the first batch to the snapshot that
//!   proves the last one applied. Includes decoding, the picture actor and the job queue.
//! - `encode`: `encode_png` at `Compression::Fast`, called directly, for a sparse picture
//!   (`--sparse-strokes` strokes on white) and a dense one (random noise, the worst case).
//! - `decode`: `decode_png` of those two encodings: what a cold load costs the service and
//!   what every joiner's client pays for the `Welcome` snapshot.
//! - `lz4`: `encode_lz4` and `decode_lz4` of the same two pictures: the snapshot form of the
//!   `WelcomeLz4` extension (PROTOCOL.md §8), encoded once per encoding by the service and
//!   decoded by every joiner that asked for it.
//! - `flush`: `release` of the same two pictures through [`Pps`] into the store, timed until
//!   storage has them (encode + write), with the PNG size.
//!
//! Strokes are drawn like the load generator's (`raster bench`): 8-point random walks with
//! steps of up to 32 px, widths 1..=12, mostly translucent colours, starting up to an eighth
//! of a side outside the picture. Run it pinned to one core (`taskset -c 1`) so that "per
//! core" means what it says: `scripts/bench.sh` does.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use clap::Parser;
use link::PictureService;
use primary_picture_service::store::fs::FsStore;
use primary_picture_service::store::memory::MemoryStore;
use primary_picture_service::store::{Store, StoredMeta};
use primary_picture_service::{Pps, PpsConfig};
use protocol::codec::{encode_sequenced, sequenced_vec};
use protocol::pps::{AcquireRequest, Acquired, ApplyBatch, Lease, ReleaseRequest, SnapshotRequest};
use protocol::raster::Raster;
use protocol::snapshot::{decode_lz4, decode_png, encode_lz4, encode_png, Compression};
use protocol::PictureId;
use protocol::{Op, Sequenced};
use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};
use raster_client::ops::{random_op, Profile};
use serde::Serialize;

#[derive(Parser, Debug)]
#[command(about = "Benchmark of the primary picture service alone, in process")]
struct Args {
    /// Side of the (square) pictures.
    #[arg(long, env = "PPS_BENCH_SIDE", default_value_t = 2048)]
    side: u32,
    /// Strokes applied for the throughput measurement.
    #[arg(long, env = "PPS_BENCH_STROKES", default_value_t = 200_000)]
    strokes: usize,
    /// Updates per `ApplyBatch` (the broadcast service's `--pps-batch-updates` default).
    #[arg(long, env = "PPS_BENCH_BATCH", default_value_t = 1024)]
    batch: usize,
    /// Strokes on the sparse picture whose encoding and flush are measured.
    #[arg(long, env = "PPS_BENCH_SPARSE_STROKES", default_value_t = 10_000)]
    sparse_strokes: usize,
    /// Encodings and flushes measured per picture (the median and max are reported).
    #[arg(long, env = "PPS_BENCH_REPEATS", default_value_t = 3)]
    repeats: usize,
    /// Where flushes go: `fs` (a fresh temporary directory) or `memory`.
    #[arg(long, env = "PPS_BENCH_STORE", default_value = "fs")]
    store: String,
    /// Slots of the picture service's job queue.
    #[arg(long, env = "PPS_BENCH_WORKERS", default_value_t = 1)]
    workers: usize,
    /// Seed of the random strokes and noise.
    #[arg(long, env = "PPS_BENCH_SEED", default_value_t = 1)]
    seed: u64,
}

/// The whole result, as printed.
#[derive(Serialize)]
struct Report {
    side: u32,
    /// The rasterizer alone, on this thread.
    rasterizer: Throughput,
    /// The same strokes through the picture service.
    apply: Throughput,
    /// `encode_png` called directly.
    encode: Vec<Timing>,
    /// `decode_png` of the same encodings.
    decode: Vec<Timing>,
    /// `encode_lz4` and `decode_lz4` called directly.
    lz4: Vec<Lz4Timing>,
    /// `release` through the picture service into the store.
    flush: Vec<Timing>,
    store: String,
    workers: usize,
}

#[derive(Serialize)]
struct Throughput {
    strokes: usize,
    /// Pixels the strokes covered, as `Raster::apply` counts them.
    covered_pixels: u64,
    seconds: f64,
    covered_pixels_per_s: f64,
    strokes_per_s: f64,
}

impl Throughput {
    /// `strokes` covering `covered_pixels` in `seconds`; says it on stderr as `what`.
    fn measured(what: &str, strokes: usize, covered_pixels: u64, seconds: f64) -> Self {
        let throughput = Self {
            strokes,
            covered_pixels,
            seconds,
            covered_pixels_per_s: covered_pixels as f64 / seconds,
            strokes_per_s: strokes as f64 / seconds,
        };
        eprintln!(
            "{what}: {:.1} M covered px/s ({:.0} strokes/s)",
            throughput.covered_pixels_per_s / 1e6,
            throughput.strokes_per_s
        );
        throughput
    }
}

#[derive(Serialize)]
struct Timing {
    /// `sparse` or `dense`.
    picture: &'static str,
    median_ms: f64,
    max_ms: f64,
    png_bytes: usize,
}

#[derive(Serialize)]
struct Lz4Timing {
    /// `sparse` or `dense`.
    picture: &'static str,
    encode_median_ms: f64,
    encode_max_ms: f64,
    decode_median_ms: f64,
    decode_max_ms: f64,
    lz4_bytes: usize,
}

/// An 8-point random walk, exactly as `raster bench` draws them.
fn stroke(rng: &mut StdRng, side: u32) -> Op {
    random_op(rng, side, side, Profile::Strokes)
}

fn median_max(mut values: Vec<f64>) -> (f64, f64) {
    values.sort_by(f64::total_cmp);
    let median = values.get(values.len() / 2).copied().unwrap_or(0.0);
    let max = values.last().copied().unwrap_or(0.0);
    (median, max)
}

/// Pre-encoded batches of consecutive seqs `first..` under `lease`, as the broadcast service
/// sends them.
fn batches(
    lease: Lease,
    picture: &str,
    side: u32,
    first: u64,
    ops: &[Op],
    per_batch: usize,
) -> Vec<ApplyBatch> {
    let mut seq = first;
    ops.chunks(per_batch.max(1))
        .map(|chunk| {
            let first_seq = seq;
            let entries: Vec<Bytes> = chunk
                .iter()
                .map(|op| {
                    let update = Sequenced {
                        seq,
                        client_id: 1,
                        client_seq: seq,
                        op: op.clone(),
                    };
                    seq += 1;
                    encode_sequenced(&update)
                })
                .collect();
            ApplyBatch {
                picture: picture.to_string(),
                lease,
                width: side,
                height: side,
                first_seq,
                last_seq: seq - 1,
                updates: sequenced_vec(entries.iter()),
            }
        })
        .collect()
}

/// Sends every batch without waiting between them (the contract keeps them in order), then
/// waits for each reply.
async fn apply_all(pps: &Pps, batches: Vec<ApplyBatch>) -> anyhow::Result<u64> {
    let replies: Vec<_> = batches.into_iter().map(|b| pps.apply(b)).collect();
    let mut last = 0;
    for reply in replies {
        last = reply.await?;
    }
    Ok(last)
}

/// Opens (or creates) `picture` and waits until it holds `min_seq`.
async fn snapshot(pps: &Pps, picture: &str, side: u32, min_seq: u64) -> anyhow::Result<u64> {
    let snap = pps
        .snapshot(SnapshotRequest {
            picture: picture.to_string(),
            create: Some((side, side)),
            min_seq,
            lz4: false,
            latest: false,
            force: false,
        })
        .await?;
    Ok(snap.seq)
}

/// Takes `picture`'s sequencer lease (opening or creating it), as the broadcast service does
/// before it sends batches.
async fn acquire(pps: &Pps, picture: &str, side: u32) -> anyhow::Result<Lease> {
    match pps
        .acquire(AcquireRequest {
            picture: picture.to_string(),
            create: Some((side, side)),
            holder: "pps_bench".to_string(),
            claim: None,
            force: false,
        })
        .await?
    {
        Acquired::Granted { lease, .. } => Ok(lease),
        Acquired::Held { holder, .. } => anyhow::bail!("lease held by {holder}"),
    }
}

/// Opens the picture (a previous release dropped it from memory), makes it dirty with one
/// more stroke, then times its release into storage: the flush has to encode afresh.
async fn timed_release(
    pps: &Pps,
    store: &dyn Store,
    picture: &str,
    side: u32,
    seq: &mut u64,
    rng: &mut StdRng,
) -> anyhow::Result<(f64, usize)> {
    let lease = acquire(pps, picture, side).await?;
    *seq += 1;
    let last = apply_all(
        pps,
        batches(lease, picture, side, *seq, &[stroke(rng, side)], 1),
    )
    .await?;
    anyhow::ensure!(last == *seq, "apply ended at {last}, expected {seq}");
    let start = Instant::now();
    let flushed = pps
        .release(ReleaseRequest {
            picture: picture.to_string(),
            lease,
            last_seq: *seq,
        })
        .await?;
    let ms = start.elapsed().as_secs_f64() * 1000.0;
    anyhow::ensure!(flushed == *seq, "flushed {flushed}, expected {seq}");
    let stored = store
        .load(&PictureId::parse(picture)?)
        .await?
        .context("released picture is not in storage")?;
    Ok((ms, stored.png.len()))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let side = args.side;
    let mut rng = StdRng::seed_from_u64(args.seed);
    let _dir;
    let store: Arc<dyn Store> = match args.store.as_str() {
        "memory" => Arc::new(MemoryStore::new()),
        "fs" => {
            let dir = tempfile::tempdir()?;
            let store = Arc::new(FsStore::new(dir.path()));
            _dir = dir;
            store
        }
        other => anyhow::bail!("--store must be fs or memory, not {other:?}"),
    };
    let config = PpsConfig {
        workers: args.workers,
        // Nothing flushes behind the measurement's back: only the timed releases write.
        flush_interval: Duration::from_secs(3600),
        ..PpsConfig::default()
    };
    let pps = Pps::new(config, store.clone());

    // The rasterizer alone; its raster is the sparse picture's reference afterwards.
    let ops: Vec<Op> = (0..args.strokes).map(|_| stroke(&mut rng, side)).collect();
    let mut reference = Raster::new(side, side);
    let start = Instant::now();
    let covered: u64 = ops.iter().map(|op| reference.apply(op)).sum();
    let seconds = start.elapsed().as_secs_f64();
    let rasterizer = Throughput::measured("rasterizer", ops.len(), covered, seconds);

    // Through the picture service, on a fresh picture.
    let lease = acquire(&pps, "apply", side).await?;
    let work = batches(lease, "apply", side, 1, &ops, args.batch);
    let start = Instant::now();
    let last = apply_all(&pps, work).await?;
    let applied = snapshot(&pps, "apply", side, last).await?;
    let seconds = start.elapsed().as_secs_f64();
    anyhow::ensure!(
        applied == ops.len() as u64,
        "applied {applied} of {}",
        ops.len()
    );
    let apply = Throughput::measured("pps apply", ops.len(), covered, seconds);
    pps.release(ReleaseRequest {
        picture: "apply".to_string(),
        lease,
        last_seq: applied,
    })
    .await?;

    // The two pictures whose encoding and flush are measured.
    let sparse_ops: Vec<Op> = (0..args.sparse_strokes)
        .map(|_| stroke(&mut rng, side))
        .collect();
    let mut sparse = Raster::new(side, side);
    for op in &sparse_ops {
        sparse.apply(op);
    }
    let mut noise = vec![0u8; side as usize * side as usize * 4];
    rng.fill_bytes(&mut noise);
    let dense = Raster::from_rgba(side, side, noise).context("noise raster")?;

    let mut encode = Vec::new();
    let mut decode = Vec::new();
    for (name, raster) in [("sparse", &sparse), ("dense", &dense)] {
        let mut times = Vec::new();
        let mut png = Vec::new();
        for _ in 0..args.repeats.max(1) {
            let start = Instant::now();
            png = encode_png(raster, 1, Compression::Fast)?;
            times.push(start.elapsed().as_secs_f64() * 1000.0);
        }
        let size = png.len();
        let mut decode_times = Vec::new();
        for _ in 0..args.repeats.max(1) {
            let start = Instant::now();
            let decoded = decode_png(&png, side)?;
            decode_times.push(start.elapsed().as_secs_f64() * 1000.0);
            anyhow::ensure!(
                decoded.raster.pixels() == raster.pixels(),
                "{name} round trip differs"
            );
        }
        let (median_ms, max_ms) = median_max(decode_times);
        eprintln!("decode {name}: {median_ms:.1} ms median, {max_ms:.1} ms max");
        decode.push(Timing {
            picture: name,
            median_ms,
            max_ms,
            png_bytes: size,
        });
        let (median_ms, max_ms) = median_max(times);
        eprintln!("encode {name}: {median_ms:.1} ms median, {max_ms:.1} ms max, {size} bytes");
        encode.push(Timing {
            picture: name,
            median_ms,
            max_ms,
            png_bytes: size,
        });
    }

    let mut lz4 = Vec::new();
    for (name, raster) in [("sparse", &sparse), ("dense", &dense)] {
        let (mut encode_times, mut decode_times) = (Vec::new(), Vec::new());
        let mut block = Vec::new();
        for _ in 0..args.repeats.max(1) {
            let start = Instant::now();
            block = encode_lz4(raster)?;
            encode_times.push(start.elapsed().as_secs_f64() * 1000.0);
        }
        for _ in 0..args.repeats.max(1) {
            let start = Instant::now();
            let decoded = decode_lz4(&block, side, side, side)?;
            decode_times.push(start.elapsed().as_secs_f64() * 1000.0);
            anyhow::ensure!(
                decoded.pixels() == raster.pixels(),
                "{name} lz4 round trip differs"
            );
        }
        let (encode_median_ms, encode_max_ms) = median_max(encode_times);
        let (decode_median_ms, decode_max_ms) = median_max(decode_times);
        eprintln!(
            "lz4 {name}: encode {encode_median_ms:.1} ms median ({encode_max_ms:.1} max), decode \
             {decode_median_ms:.1} ms median ({decode_max_ms:.1} max), {} bytes",
            block.len()
        );
        lz4.push(Lz4Timing {
            picture: name,
            encode_median_ms,
            encode_max_ms,
            decode_median_ms,
            decode_max_ms,
            lz4_bytes: block.len(),
        });
    }

    // Sparse: drawn through the service. Dense: stored directly, then opened from storage.
    let lease = acquire(&pps, "sparse", side).await?;
    let mut sparse_seq = apply_all(
        &pps,
        batches(lease, "sparse", side, 1, &sparse_ops, args.batch),
    )
    .await?;
    pps.release(ReleaseRequest {
        picture: "sparse".to_string(),
        lease,
        last_seq: sparse_seq,
    })
    .await?;
    let dense_png = encode_png(&dense, 1, Compression::Fast)?;
    let meta = StoredMeta::new(1, side, side);
    store
        .save(
            &PictureId::parse("dense")?,
            Bytes::from(dense_png),
            &meta,
            None,
        )
        .await?;
    let mut dense_seq = 1;

    let mut flush = Vec::new();
    for (name, seq) in [("sparse", &mut sparse_seq), ("dense", &mut dense_seq)] {
        let mut times = Vec::new();
        let mut size = 0;
        for _ in 0..args.repeats.max(1) {
            let (ms, bytes) =
                timed_release(&pps, store.as_ref(), name, side, seq, &mut rng).await?;
            times.push(ms);
            size = bytes;
        }
        let (median_ms, max_ms) = median_max(times);
        eprintln!("flush {name}: {median_ms:.1} ms median, {max_ms:.1} ms max, {size} bytes");
        flush.push(Timing {
            picture: name,
            median_ms,
            max_ms,
            png_bytes: size,
        });
    }

    pps.shutdown(Duration::from_secs(30)).await;
    let report = Report {
        side,
        rasterizer,
        apply,
        encode,
        decode,
        lz4,
        flush,
        store: store.describe(),
        workers: args.workers,
    };
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}
