//! The durability workloads (docs/durability.md):
//!
//! - `durable`: clients drawing at a fixed rate with `?durable=1` (PROTOCOL.md §10); for every
//!   own op, the time from its echo to the first `Durable { seq }` covering it, i.e. until the
//!   object store holds it.
//! - `resume`: on a big picture with history, a session client that missed `gap` updates comes
//!   back with `?since=` (PROTOCOL.md §11, [`Client::resume`]) against a full join; bytes of the
//!   `Welcome` frame and milliseconds until the picture is ready, alternated.

use std::collections::VecDeque;
use std::time::Duration;

use anyhow::Context;
use futures::StreamExt;
use hdrhistogram::Histogram;
use rand::{Rng, SeedableRng};
use raster_client::{random_op, Client, ConnectOptions, Event, Profile};
use serde::Serialize;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use super::{picture_id, CommonArgs, Latency};

/// `raster bench durable`'s report.
#[derive(Debug, Serialize)]
pub(super) struct DurableReport {
    pub workload: &'static str,
    pub clients: usize,
    pub rate: f64,
    pub duration_s: f64,
    /// Own ops echoed.
    pub echoed: u64,
    /// Of those, ops a `Durable` covered before the run ended.
    pub durable: u64,
    /// From an op's echo to the `Durable` that covered it.
    pub echo_to_durable_ms: Latency,
}

/// Clients drawing `rate` ops/s each with `?durable=1`; every echo waits for its `Durable`.
pub(super) async fn run_durable(
    url: &str,
    common: &CommonArgs,
    clients: usize,
    rate: f64,
) -> anyhow::Result<DurableReport> {
    anyhow::ensure!(
        clients > 0 && rate > 0.0,
        "durable needs clients and a rate"
    );
    let run_id: u32 = rand::thread_rng().gen();
    let picture = picture_id(&common.picture, run_id, 0);
    let (side_w, side_h) = common.size;
    let options = ConnectOptions {
        size: Some(common.size),
        keep_raster: false,
        durable: true,
        ..ConnectOptions::default()
    };
    let draw_for = Duration::from_secs_f64(common.duration);
    // Echoes wait at most the service's flush interval and a flush: `--drain` on top.
    let end_at = Instant::now() + draw_for + Duration::from_secs_f64(common.drain);
    let mut tasks = Vec::new();
    for i in 0..clients {
        let client = Client::connect_with(url, &picture, options.clone())
            .await
            .with_context(|| format!("client {i} joining {picture}"))?;
        let seed = common.seed.wrapping_add(i as u64);
        tasks.push(tokio::spawn(durable_client(
            client, seed, rate, draw_for, end_at, side_w, side_h,
        )));
    }
    let mut histogram = Histogram::<u64>::new(3)?;
    let (mut echoed, mut durable) = (0, 0);
    for task in tasks {
        let (h, e, d) = task.await??;
        histogram.add(h)?;
        echoed += e;
        durable += d;
    }
    let report = DurableReport {
        workload: "durable",
        clients,
        rate,
        duration_s: common.duration,
        echoed,
        durable,
        echo_to_durable_ms: Latency::from_micros(&histogram),
    };
    if !common.json {
        let l = &report.echo_to_durable_ms;
        println!(
            "durable: {echoed} ops echoed, {durable} made durable; echo to durable p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
            l.p50, l.p99, l.max
        );
    }
    Ok(report)
}

/// One drawing client: draws until `draw_for` passed, reads until every echo is durable or
/// `end_at`. Returns the echo-to-durable histogram (µs), ops echoed and ops made durable.
async fn durable_client(
    client: Client,
    seed: u64,
    rate: f64,
    draw_for: Duration,
    end_at: Instant,
    width: u32,
    height: u32,
) -> anyhow::Result<(Histogram<u64>, u64, u64)> {
    let me = client.client_id();
    let (mut sender, mut receiver) = client.into_split();
    let drawing = tokio::spawn(async move {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut interval = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
        let stop = Instant::now() + draw_for;
        let mut sent = 0u64;
        while Instant::now() < stop {
            interval.tick().await;
            sender
                .draw(random_op(&mut rng, width, height, Profile::Strokes))
                .await?;
            sent += 1;
        }
        anyhow::Ok(sent)
    });
    let mut histogram = Histogram::<u64>::new(3)?;
    // Own echoes not yet durable: (seq, when echoed).
    let mut waiting: VecDeque<(u64, Instant)> = VecDeque::new();
    let (mut echoed, mut durable) = (0u64, 0u64);
    let mut sent: Option<u64> = None;
    let mut drawing = Some(drawing);
    loop {
        if drawing.as_ref().is_some_and(|d| d.is_finished()) {
            if let Some(task) = drawing.take() {
                sent = Some(task.await??);
            }
        }
        if sent.is_some_and(|s| durable == s) {
            break;
        }
        let event = match tokio::time::timeout_at(end_at, receiver.next_event()).await {
            Err(_) => break,
            Ok(event) => event?,
        };
        match event {
            Event::Updates(updates) => {
                let now = Instant::now();
                for u in updates.iter().filter(|u| u.client_id == me) {
                    waiting.push_back((u.seq, now));
                    echoed += 1;
                }
            }
            Event::Durable(seq) => {
                let now = Instant::now();
                while let Some(&(s, at)) = waiting.front() {
                    if s > seq {
                        break;
                    }
                    waiting.pop_front();
                    durable += 1;
                    histogram.record((now - at).as_micros().max(1) as u64)?;
                }
            }
            Event::Closed { code, reason } => anyhow::bail!("closed ({code:?}): {reason}"),
            Event::Rejected { client_seq, reason } => {
                anyhow::bail!("op {client_seq} rejected: {reason}")
            }
            _ => {}
        }
    }
    if let Some(task) = drawing {
        task.abort();
    }
    Ok((histogram, echoed, durable))
}

/// `raster bench resume`'s report.
#[derive(Debug, Serialize)]
pub(super) struct ResumeReport {
    pub workload: &'static str,
    pub side: u32,
    pub strokes: usize,
    /// Updates the resuming client missed each time.
    pub gap: usize,
    pub repeats: usize,
    /// The `Welcome` frame's bytes: a full join asking for LZ4, a full PNG join, a resume.
    pub welcome_bytes_full_lz4: usize,
    pub welcome_bytes_full_png: usize,
    pub welcome_bytes_resume: usize,
    /// Milliseconds from connecting to the picture being ready, each repeat.
    pub full_lz4_ms: Vec<f64>,
    pub full_png_ms: Vec<f64>,
    pub resume_ms: Vec<f64>,
    /// Every resume kept its picture (a snapshot-less `Welcome`).
    pub resumes_kept_picture: bool,
}

/// History on a `side`² picture, then `repeats` rounds of: `gap` updates a session client
/// misses, its resume, a full LZ4 join and a full PNG join (timed alternately), and the bytes
/// of each kind of `Welcome`.
pub(super) async fn run_resume(
    url: &str,
    common: &CommonArgs,
    side: u32,
    strokes: usize,
    gap: usize,
    repeats: usize,
    draw_rate: f64,
) -> anyhow::Result<ResumeReport> {
    anyhow::ensure!(repeats > 0, "resume needs at least one repeat");
    let run_id: u32 = rand::thread_rng().gen();
    let picture = picture_id(&common.picture, run_id, 0);
    let mut drawer = Client::connect_with(
        url,
        &picture,
        ConnectOptions {
            size: Some((side, side)),
            keep_raster: false,
            ..ConnectOptions::default()
        },
    )
    .await?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(common.seed);
    let deadline = || Instant::now() + Duration::from_secs(600);
    let mut draw = async |drawer: &mut Client, n: usize| -> anyhow::Result<()> {
        let mut interval = tokio::time::interval(Duration::from_secs_f64(1.0 / draw_rate));
        let mut last = 0;
        for _ in 0..n {
            interval.tick().await;
            let mut op = random_op(&mut rng, side, side, Profile::Strokes);
            if let protocol::Op::Stroke { width, .. } = &mut op {
                *width = rng.gen_range(4..=32);
            }
            last = drawer.draw(op).await?;
        }
        if last > 0 {
            drawer.wait_own(last, deadline()).await?;
        }
        Ok(())
    };
    draw(&mut drawer, strokes).await?;
    eprintln!("drew {strokes} strokes on {side}x{side}");

    let session_options = ConnectOptions::default().resumable();
    let mut watcher = Client::connect_with(url, &picture, session_options).await?;
    watcher.sync_to(drawer.last_seq(), deadline()).await?;
    let mut report = ResumeReport {
        workload: "resume",
        side,
        strokes,
        gap,
        repeats,
        welcome_bytes_full_lz4: 0,
        welcome_bytes_full_png: 0,
        welcome_bytes_resume: 0,
        full_lz4_ms: Vec::new(),
        full_png_ms: Vec::new(),
        resume_ms: Vec::new(),
        resumes_kept_picture: true,
    };
    for i in 0..repeats {
        // The watcher reads nothing meanwhile: it resumes from the seq it has applied.
        let since = watcher.last_seq();
        draw(&mut drawer, gap).await?;
        let start = Instant::now();
        let resumed = watcher.resume(url, &picture, deadline()).await?;
        let resume_ms = start.elapsed().as_secs_f64() * 1000.0;
        report.resumes_kept_picture &= resumed.kept_picture;
        let full_lz4_ms = timed_full_join(url, &picture, true).await?;
        let full_png_ms = timed_full_join(url, &picture, false).await?;
        eprintln!(
            "round {}: resume {resume_ms:.1} ms ({} missed, kept picture: {}), full join lz4 {full_lz4_ms:.1} ms, png {full_png_ms:.1} ms",
            i + 1,
            resumed.pending,
            resumed.kept_picture
        );
        report.resume_ms.push(resume_ms);
        report.full_lz4_ms.push(full_lz4_ms);
        report.full_png_ms.push(full_png_ms);
        if i == 0 {
            let base = raster_client::ws_base(url);
            let ws = format!("{base}/pictures/{picture}/ws");
            report.welcome_bytes_resume = welcome_bytes(&format!("{ws}?since={since}")).await?;
            report.welcome_bytes_full_lz4 = welcome_bytes(&format!("{ws}?snapshot=lz4")).await?;
            report.welcome_bytes_full_png = welcome_bytes(&ws).await?;
        }
    }
    if !common.json {
        let median = |v: &[f64]| {
            let mut v = v.to_vec();
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        println!(
            "resume after {gap} missed updates on {side}x{side}: {} bytes, {:.1} ms (median); full join: lz4 {} bytes, {:.1} ms; png {} bytes, {:.1} ms",
            report.welcome_bytes_resume,
            median(&report.resume_ms),
            report.welcome_bytes_full_lz4,
            median(&report.full_lz4_ms),
            report.welcome_bytes_full_png,
            median(&report.full_png_ms),
        );
    }
    let close_by = Instant::now() + Duration::from_secs(5);
    watcher.close(close_by).await?;
    drawer.close(close_by).await?;
    Ok(report)
}

/// Milliseconds of a full join (snapshot decoded, pending applied).
async fn timed_full_join(url: &str, picture: &str, lz4: bool) -> anyhow::Result<f64> {
    let options = ConnectOptions {
        snapshot_lz4: lz4,
        ..ConnectOptions::default()
    };
    let start = Instant::now();
    let client = Client::connect_with(url, picture, options).await?;
    let ms = start.elapsed().as_secs_f64() * 1000.0;
    client
        .close(Instant::now() + Duration::from_secs(5))
        .await?;
    Ok(ms)
}

/// The size of the first message `ws_url` sends (the `Welcome`).
async fn welcome_bytes(ws_url: &str) -> anyhow::Result<usize> {
    let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
        .max_message_size(Some(1 << 30))
        .max_frame_size(Some(1 << 30));
    let (mut socket, _) = tokio_tungstenite::connect_async_with_config(ws_url, Some(config), false)
        .await
        .with_context(|| format!("connecting to {ws_url}"))?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match tokio::time::timeout_at(deadline, socket.next()).await {
            Err(_) => anyhow::bail!("no Welcome from {ws_url}"),
            Ok(None) => anyhow::bail!("{ws_url} closed before its Welcome"),
            Ok(Some(message)) => {
                if let Message::Binary(bytes) = message? {
                    let _ = socket.close(None).await;
                    return Ok(bytes.len());
                }
            }
        }
    }
}
