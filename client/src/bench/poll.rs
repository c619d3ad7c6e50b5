//! `raster bench poll`: what polling `snapshot.png` costs the service (PROTOCOL.md §16).
//! `CONNECTIONS` kept-alive HTTP connections together send `RATE` requests a second to one
//! picture for `--duration`; `conditional` requests carry the `ETag` of the picture's last PNG
//! (`If-None-Match`: a `304` while it does not change), `unconditional` ones fetch the PNG
//! every time. The service's CPU time over the run, read from `/proc/PID/stat`
//! (`--server-pid`), is reported per 10,000 polls: the A/B of BENCHMARKS.md.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use hdrhistogram::Histogram;
use rand::SeedableRng;
use raster_client::{random_op, Client, ConnectOptions, Profile};
use serde::Serialize;
use tokio::time::Instant;

use super::proc_stats::ProcSampler;
use super::{lock, picture_id, CommonArgs, Latency};

/// Whether the polls are conditional.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum PollMode {
    /// `If-None-Match` with the picture's `ETag`: `304 Not Modified`.
    Conditional,
    /// No validator: the PNG every time.
    Unconditional,
}

/// `raster bench poll`'s report.
#[derive(Debug, Serialize)]
pub(super) struct PollReport {
    pub workload: &'static str,
    pub mode: PollMode,
    /// Asked polls per second, and achieved.
    pub rate: f64,
    pub achieved_per_s: f64,
    pub connections: usize,
    pub duration_s: f64,
    /// Bytes of the PNG polled.
    pub png_bytes: usize,
    pub not_modified: u64,
    pub ok: u64,
    pub errors: u64,
    pub latency_ms: Latency,
    /// The service's CPU over the run, in percent of one core.
    pub server_cpu_percent: Option<f64>,
    /// The service's CPU seconds per 10,000 polls.
    pub server_cpu_s_per_10k: Option<f64>,
}

#[allow(clippy::too_many_arguments)]
pub(super) async fn run_poll(
    url: &str,
    common: &CommonArgs,
    mode: PollMode,
    rate: f64,
    connections: usize,
    strokes: usize,
) -> anyhow::Result<PollReport> {
    let picture = picture_id(&common.picture, rand::random(), 0);
    // The picture, with some history, kept open by this client (its room answers the 304s).
    let options = ConnectOptions {
        size: Some(common.size),
        keep_raster: false,
        ..ConnectOptions::default()
    };
    let mut client = Client::connect_with(url, &picture, options)
        .await
        .context("creating the picture")?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(common.seed);
    let (width, height) = common.size;
    let mut last = 0;
    for i in 0..strokes {
        last = client
            .draw(random_op(&mut rng, width, height, Profile::Mixed))
            .await?;
        if i % 500 == 499 {
            // Stay under the service's rate limit (1,000 ops/s by default).
            client
                .wait_own(last, Instant::now() + Duration::from_secs(30))
                .await?;
        }
    }
    if last > 0 {
        client
            .wait_own(last, Instant::now() + Duration::from_secs(30))
            .await?;
    }
    let http = raster_client::http_base(url);
    let target = format!("{http}/pictures/{picture}/snapshot.png");
    let first = reqwest::get(&target).await?;
    anyhow::ensure!(
        first.status().is_success(),
        "snapshot.png: {}",
        first.status()
    );
    let etag = first
        .headers()
        .get("etag")
        .and_then(|v| v.to_str().ok())
        .context("snapshot.png without an ETag")?
        .to_string();
    let png_bytes = first.bytes().await?.len();
    eprintln!(
        "poll {mode:?}: picture {picture} ({png_bytes} bytes of PNG, etag {etag}), {rate}/s over {connections} connections for {} s",
        common.duration
    );

    let connections = connections.max(1);
    let per_connection = rate / connections as f64;
    let counts = Arc::new([
        AtomicU64::new(0), // 304
        AtomicU64::new(0), // 200
        AtomicU64::new(0), // errors
    ]);
    let latency = Arc::new(std::sync::Mutex::new(Histogram::<u64>::new(3)?));
    let sampler = match common.server_pid.first() {
        Some(&pid) => Some(ProcSampler::start(pid)?),
        None => None,
    };
    let started = Instant::now();
    let end = started + Duration::from_secs_f64(common.duration);
    let mut tasks = Vec::new();
    for c in 0..connections {
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(1)
            .build()?;
        let (target, etag) = (target.clone(), etag.clone());
        let (counts, latency) = (counts.clone(), latency.clone());
        tasks.push(tokio::spawn(async move {
            let period = Duration::from_secs_f64(1.0 / per_connection.max(1e-3));
            // Spread the connections' ticks over one period.
            let offset = period.mul_f64(c as f64 / connections as f64);
            let mut ticks = tokio::time::interval_at(Instant::now() + offset, period);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                let at = ticks.tick().await;
                if at >= end {
                    return;
                }
                let mut request = http.get(&target);
                if mode == PollMode::Conditional {
                    request = request.header("if-none-match", &etag);
                }
                let sent = Instant::now();
                let slot = match request.send().await {
                    Ok(response) => {
                        let status = response.status().as_u16();
                        match (status, response.bytes().await) {
                            (304, Ok(_)) => 0,
                            (200, Ok(_)) => 1,
                            _ => 2,
                        }
                    }
                    Err(_) => 2,
                };
                counts[slot].fetch_add(1, Ordering::Relaxed);
                let micros = sent.elapsed().as_micros() as u64;
                let _ = lock(&latency).record(micros.max(1));
            }
        }));
    }
    for task in tasks {
        task.await?;
    }
    let wall = started.elapsed().as_secs_f64();
    let stats = match sampler {
        Some(sampler) => Some(sampler.finish()?),
        None => None,
    };
    let (not_modified, ok, errors) = (
        counts[0].load(Ordering::Relaxed),
        counts[1].load(Ordering::Relaxed),
        counts[2].load(Ordering::Relaxed),
    );
    let polls = not_modified + ok;
    let cpu_percent = stats.map(|s| s.cpu_percent);
    let per_10k = cpu_percent
        .filter(|_| polls > 0)
        .map(|cpu| cpu / 100.0 * wall / polls as f64 * 10_000.0);
    let report = PollReport {
        workload: "poll",
        mode,
        rate,
        achieved_per_s: polls as f64 / wall,
        connections,
        duration_s: wall,
        png_bytes,
        not_modified,
        ok,
        errors,
        latency_ms: Latency::from_micros(&lock(&latency)),
        server_cpu_percent: cpu_percent,
        server_cpu_s_per_10k: per_10k,
    };
    if !common.json {
        println!(
            "poll {:?}: {:.0} polls/s ({} x 304, {} x 200, {} errors), p50 {:.2} ms p99 {:.2} ms",
            mode,
            report.achieved_per_s,
            not_modified,
            ok,
            errors,
            report.latency_ms.p50,
            report.latency_ms.p99
        );
        if let (Some(cpu), Some(per_10k)) = (cpu_percent, per_10k) {
            println!("server CPU {cpu:.1}% of a core: {per_10k:.3} CPU-seconds per 10,000 polls");
        }
    }
    client
        .close(Instant::now() + Duration::from_secs(5))
        .await?;
    Ok(report)
}
