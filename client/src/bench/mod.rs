//! `raster bench`: the load generator. Many real WebSocket clients in one process (one tokio
//! runtime) drive a running service and measure what every client receives.
//!
//! # Workloads
//!
//! - `w1`: N clients on one picture, each drawing an 8-point stroke at a fixed rate.
//! - `w2`: N clients each keeping W ops in flight (sent, own echo not yet seen); `--sweep`
//!   tries W = 1, 2, 4, ... and reports the best throughput whose p99 stays under 100 ms.
//! - `w3`: how long a join takes (TCP connect to Welcome decoded and pending applied) on a big
//!   picture with history, warm (picture open) and cold (picture released to storage).
//! - `pictures`: many pictures at once, W1-style rate on each.
//! - `durable`, `resume`: echo to durable, and resume against a full join ([`durability`]).
//! - `poll`: `snapshot.png` polled at a fixed rate, conditionally or not: the service's CPU per
//!   10,000 polls ([`poll`]).
//!
//! # What is measured
//!
//! Delivered updates: every `Sequenced` received by every client, own echoes included (the
//! ideal for W1 is N·N·rate per second). Latency: from the moment the sender handed the op to
//! its socket to the moment a receiver read it, for every (receiver, update) pair, in an HDR
//! histogram shared by every client of the run (one histogram stays in cache where one per
//! client did not: recording was 19 % of the load generator in W1 N=256, perf); the send time
//! is kept per (client, client_seq) in a lock-free ring. Server CPU
//! and memory come from `/proc` of `--server-pid`. The client checks the protocol's ordering
//! guarantees on every update, so a benchmark run is also a conformance run: a violation ends
//! that client and is counted in `errors`.

mod durability;
mod poll;
mod proc_stats;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use futures::StreamExt;
use hdrhistogram::Histogram;
use protocol::sync::lock;
use rand::{Rng, SeedableRng};
use raster_client::{random_op, Client, ConnectOptions, Event, Profile, Receiver, Sender};
use serde::Serialize;
use tokio::sync::{watch, Semaphore};
use tokio::time::Instant;

use proc_stats::{ProcSampler, ServerStats};

/// Flags shared by every workload (accepted before or after the workload's name).
#[derive(clap::Args, Clone, Debug)]
pub(crate) struct CommonArgs {
    /// Prefix of the picture ids the benchmark creates (a random suffix keeps runs apart).
    #[arg(
        long,
        global = true,
        env = "RASTER_BENCH_PICTURE",
        default_value = "bench"
    )]
    pub picture: String,
    /// How long the clients draw, in seconds.
    #[arg(long, global = true, env = "RASTER_BENCH_DURATION", default_value_t = 10.0, value_parser = seconds_arg)]
    pub duration: f64,
    /// After drawing stops, how long to wait at most for the last deliveries, in seconds.
    #[arg(long, global = true, env = "RASTER_BENCH_DRAIN", default_value_t = 5.0, value_parser = seconds_arg)]
    pub drain: f64,
    /// Picture size for new pictures, `WIDTHxHEIGHT`.
    #[arg(long, global = true, env = "RASTER_BENCH_SIZE", default_value = "1024x1024", value_parser = parse_size)]
    pub size: (u32, u32),
    /// How many clients connect at the same time while the benchmark sets up.
    #[arg(
        long,
        global = true,
        env = "RASTER_BENCH_CONNECT_CONCURRENCY",
        default_value_t = 32
    )]
    pub connect_concurrency: usize,
    /// Pid of the server, to report its CPU use and peak memory from /proc (comma-separated
    /// for several processes: each is reported; the first is `server` in the JSON report).
    #[arg(
        long,
        global = true,
        env = "RASTER_BENCH_SERVER_PID",
        value_delimiter = ','
    )]
    pub server_pid: Vec<u32>,
    /// Before the measured clients connect, one idle client joins every picture at this URL
    /// and stays until the end: the broadcast service there sequences the pictures, so the
    /// measured clients (on `--url`) go through it as relays (docs/scaling.md).
    #[arg(long, global = true, env = "RASTER_BENCH_ANCHOR_URL")]
    pub anchor_url: Option<String>,
    /// Print the report as JSON on stdout (progress stays on stderr).
    #[arg(long, global = true, env = "RASTER_BENCH_JSON")]
    pub json: bool,
    /// Seed of the random ops (and of the start jitter).
    #[arg(long, global = true, env = "RASTER_BENCH_SEED", default_value_t = 1)]
    pub seed: u64,
}

/// The workloads.
#[derive(clap::Subcommand, Clone, Debug)]
pub(crate) enum Workload {
    /// N clients on one picture, each drawing an 8-point stroke RATE times a second.
    W1 {
        #[arg(long, env = "RASTER_BENCH_CLIENTS", default_value_t = 16)]
        clients: usize,
        /// Ops per second per client.
        #[arg(long, env = "RASTER_BENCH_RATE", default_value_t = 20.0, value_parser = rate_arg)]
        rate: f64,
        /// Only the first DRAWERS clients draw; the others watch (a hot picture). Default: all.
        #[arg(long, env = "RASTER_BENCH_DRAWERS")]
        drawers: Option<usize>,
    },
    /// N clients each keeping WINDOW ops in flight.
    W2 {
        #[arg(long, env = "RASTER_BENCH_CLIENTS", default_value_t = 64)]
        clients: usize,
        /// Ops in flight per client (sent, own echo not seen yet).
        #[arg(long, env = "RASTER_BENCH_WINDOW", default_value_t = 4)]
        window: usize,
        /// Try windows 1, 2, 4, ... up to --max-window and report the best one whose p99
        /// latency stays under --p99-limit-ms.
        #[arg(long, env = "RASTER_BENCH_SWEEP")]
        sweep: bool,
        #[arg(long, env = "RASTER_BENCH_MAX_WINDOW", default_value_t = 64)]
        max_window: usize,
        #[arg(long, env = "RASTER_BENCH_P99_LIMIT_MS", default_value_t = 100.0)]
        p99_limit_ms: f64,
        /// Most ops a client writes at once: when echoes free several window slots together,
        /// it sends that many ops in one write. 1: one write per op.
        #[arg(long, env = "RASTER_BENCH_OPS_PER_WRITE", default_value_t = 64)]
        ops_per_write: usize,
    },
    /// Join time on a big picture with history, warm and cold.
    W3 {
        /// Strokes drawn before measuring.
        #[arg(long, env = "RASTER_BENCH_STROKES", default_value_t = 1000)]
        strokes: usize,
        /// Side of the (square) picture.
        #[arg(long, env = "RASTER_BENCH_SIDE", default_value_t = 2048)]
        side: u32,
        /// Joins measured, warm and cold each.
        #[arg(long, env = "RASTER_BENCH_REPEATS", default_value_t = 5)]
        repeats: usize,
        /// Ops per second while drawing the history (stay under the server's rate limit).
        #[arg(long, env = "RASTER_BENCH_DRAW_RATE", default_value_t = 800.0, value_parser = rate_arg)]
        draw_rate: f64,
        /// Seconds to wait after the last client left before a cold join, so the service
        /// has released the picture to storage.
        #[arg(long, env = "RASTER_BENCH_COLD_WAIT", default_value_t = 3.0, value_parser = seconds_arg)]
        cold_wait: f64,
        /// The snapshot form joiners ask for: `lz4` (`?snapshot=lz4`, PROTOCOL.md §8; the
        /// server still sends a PNG where it has no LZ4 form at hand) or `png`.
        #[arg(long, env = "RASTER_BENCH_SNAPSHOT", default_value = "lz4", value_parser = ["lz4", "png"])]
        snapshot: String,
    },
    /// Many pictures at once, each with a few clients drawing at a fixed rate.
    Pictures {
        #[arg(long, env = "RASTER_BENCH_PICTURES", default_value_t = 200)]
        pictures: usize,
        /// Clients per picture.
        #[arg(long, env = "RASTER_BENCH_CLIENTS", default_value_t = 8)]
        clients: usize,
        #[arg(long, env = "RASTER_BENCH_RATE", default_value_t = 20.0, value_parser = rate_arg)]
        rate: f64,
    },
    /// Clients drawing at a fixed rate with `?durable=1`: how long from an op's echo until a
    /// `Durable` says the object store holds it (the service's `--flush-interval` decides).
    Durable {
        #[arg(long, env = "RASTER_BENCH_CLIENTS", default_value_t = 4)]
        clients: usize,
        /// Ops per second per client.
        #[arg(long, env = "RASTER_BENCH_RATE", default_value_t = 20.0, value_parser = rate_arg)]
        rate: f64,
    },
    /// A client that missed GAP updates resumes (`?since=`) against a full join, on a big
    /// picture with history: bytes of the `Welcome` and milliseconds until the picture is ready.
    Resume {
        /// Side of the (square) picture.
        #[arg(long, env = "RASTER_BENCH_SIDE", default_value_t = 2048)]
        side: u32,
        /// Strokes drawn before measuring.
        #[arg(long, env = "RASTER_BENCH_STROKES", default_value_t = 1000)]
        strokes: usize,
        /// Updates missed before each resume.
        #[arg(long, env = "RASTER_BENCH_GAP", default_value_t = 100)]
        gap: usize,
        #[arg(long, env = "RASTER_BENCH_REPEATS", default_value_t = 5)]
        repeats: usize,
        /// Ops per second while drawing (stay under the server's rate limit).
        #[arg(long, env = "RASTER_BENCH_DRAW_RATE", default_value_t = 800.0, value_parser = rate_arg)]
        draw_rate: f64,
    },
    /// `snapshot.png` polled RATE times a second over CONNECTIONS kept-alive connections,
    /// conditionally (`If-None-Match`, answered 304) or not: the service's CPU per 10,000
    /// polls (with `--server-pid`), PROTOCOL.md §16.
    Poll {
        #[arg(long, env = "RASTER_BENCH_MODE", value_enum, default_value_t = poll::PollMode::Conditional)]
        mode: poll::PollMode,
        /// Polls per second, all connections together.
        #[arg(long, env = "RASTER_BENCH_RATE", default_value_t = 10_000.0, value_parser = rate_arg)]
        rate: f64,
        #[arg(long, env = "RASTER_BENCH_CONNECTIONS", default_value_t = 32)]
        connections: usize,
        /// Random ops drawn on the picture before polling.
        #[arg(long, env = "RASTER_BENCH_STROKES", default_value_t = 1000)]
        strokes: usize,
    },
}

fn parse_size(text: &str) -> Result<(u32, u32), String> {
    let (w, h) = text
        .split_once(['x', 'X'])
        .ok_or_else(|| format!("{text:?} is not WIDTHxHEIGHT"))?;
    let parse = |s: &str| s.trim().parse::<u32>().map_err(|e| format!("{s:?}: {e}"));
    Ok((parse(w)?, parse(h)?))
}

/// A number of seconds: finite, 0 ..= 10^6 (so it always makes a valid `Duration`).
pub(crate) fn seconds_arg(text: &str) -> Result<f64, String> {
    let v: f64 = text.trim().parse().map_err(|e| format!("{text:?}: {e}"))?;
    if v.is_finite() && (0.0..=1e6).contains(&v) {
        Ok(v)
    } else {
        Err(format!("{text:?} is not within 0..=1000000 seconds"))
    }
}

/// A rate per second: finite, 0 ..= 10^7 (0 where it means "idle").
pub(crate) fn rate_arg(text: &str) -> Result<f64, String> {
    let v: f64 = text.trim().parse().map_err(|e| format!("{text:?}: {e}"))?;
    if v.is_finite() && (0.0..=1e7).contains(&v) {
        Ok(v)
    } else {
        Err(format!("{text:?} is not within 0..=10000000 per second"))
    }
}

pub(crate) fn size_arg(text: &str) -> Result<(u32, u32), String> {
    parse_size(text)
}

/// Runs one workload and prints its report.
pub(crate) async fn run(url: &str, common: CommonArgs, workload: Workload) -> anyhow::Result<()> {
    let report = match workload {
        Workload::W1 {
            clients,
            rate,
            drawers,
        } => {
            let plan = Plan {
                name: "w1",
                pictures: 1,
                clients,
                drawers: drawers.unwrap_or(clients).min(clients),
                mode: Mode::Rate(rate),
            };
            serde_json::to_value(run_load(url, &common, &plan).await?)?
        }
        Workload::Pictures {
            pictures,
            clients,
            rate,
        } => {
            let plan = Plan {
                name: "pictures",
                pictures,
                clients,
                drawers: clients,
                mode: Mode::Rate(rate),
            };
            serde_json::to_value(run_load(url, &common, &plan).await?)?
        }
        Workload::W2 {
            clients,
            window,
            sweep,
            max_window,
            p99_limit_ms,
            ops_per_write,
        } => {
            let windows: Vec<usize> = if sweep {
                std::iter::successors(Some(1usize), |w| w.checked_mul(2))
                    .take_while(|w| *w <= max_window.max(1))
                    .collect()
            } else {
                vec![window.max(1)]
            };
            let mut runs = Vec::new();
            for window in windows {
                let plan = Plan {
                    name: "w2",
                    pictures: 1,
                    clients,
                    drawers: clients,
                    mode: Mode::Window {
                        window,
                        per_write: ops_per_write.max(1),
                    },
                };
                runs.push(run_load(url, &common, &plan).await?);
            }
            let best = runs
                .iter()
                .filter(|r| r.latency_ms.p99 < p99_limit_ms && r.errors == 0)
                .max_by(|a, b| a.delivered_per_s.total_cmp(&b.delivered_per_s))
                .map(|r| (r.window, r.delivered_per_s, r.latency_ms.p99));
            if !common.json {
                match best {
                    Some((Some(w), d, p99)) => println!(
                        "best: window {w}: {d:.0} delivered/s with p99 {p99:.1} ms (< {p99_limit_ms} ms)"
                    ),
                    _ => println!("best: no window kept p99 under {p99_limit_ms} ms"),
                }
            }
            let best = best.map(|(window, delivered_per_s, p99_ms)| {
                serde_json::json!({
                    "window": window,
                    "delivered_per_s": delivered_per_s,
                    "p99_ms": p99_ms,
                })
            });
            serde_json::json!({
                "workload": "w2",
                "runs": runs,
                "p99_limit_ms": p99_limit_ms,
                "best": best,
            })
        }
        Workload::W3 {
            strokes,
            side,
            repeats,
            draw_rate,
            cold_wait,
            snapshot,
        } => {
            let join = JoinForm {
                side,
                lz4: snapshot == "lz4",
            };
            serde_json::to_value(
                run_w3(url, &common, strokes, join, repeats, draw_rate, cold_wait).await?,
            )?
        }
        Workload::Durable { clients, rate } => {
            serde_json::to_value(durability::run_durable(url, &common, clients, rate).await?)?
        }
        Workload::Resume {
            side,
            strokes,
            gap,
            repeats,
            draw_rate,
        } => serde_json::to_value(
            durability::run_resume(url, &common, side, strokes, gap, repeats, draw_rate).await?,
        )?,
        Workload::Poll {
            mode,
            rate,
            connections,
            strokes,
        } => serde_json::to_value(
            poll::run_poll(url, &common, mode, rate, connections, strokes).await?,
        )?,
    };
    if common.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    }
    Ok(())
}

/// What a load run does.
struct Plan {
    /// Workload name for the report.
    name: &'static str,
    /// Pictures drawn on at once, each with its own clients.
    pictures: usize,
    /// Clients per picture.
    clients: usize,
    /// Clients per picture that draw (the first ones); the others only watch.
    drawers: usize,
    /// How each client paces its drawing.
    mode: Mode,
}

/// How a client paces its drawing.
#[derive(Clone, Copy)]
enum Mode {
    /// Ops per second per client.
    Rate(f64),
    /// Ops in flight per client, and most ops per write.
    Window { window: usize, per_write: usize },
}

/// Latency percentiles in milliseconds.
#[derive(Clone, Debug, Default, Serialize)]
pub(crate) struct Latency {
    /// (receiver, update) pairs measured.
    pub count: u64,
    pub p50: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

impl Latency {
    fn from_micros(h: &Histogram<u64>) -> Self {
        let ms = |v: u64| v as f64 / 1000.0;
        Self {
            count: h.len(),
            p50: ms(h.value_at_quantile(0.5)),
            p99: ms(h.value_at_quantile(0.99)),
            p999: ms(h.value_at_quantile(0.999)),
            max: ms(h.max()),
        }
    }
}

/// The result of one load run (w1, w2, pictures).
#[derive(Clone, Debug, Serialize)]
pub(crate) struct LoadReport {
    pub workload: &'static str,
    pub pictures: usize,
    pub clients_per_picture: usize,
    /// Ops per second per client (rate workloads).
    pub rate_per_client: Option<f64>,
    /// Ops in flight per client (w2).
    pub window: Option<usize>,
    /// Length of the drawing window.
    pub duration_s: f64,
    /// How long connecting every client took.
    pub connect_s: f64,
    pub sent: u64,
    pub rejected: u64,
    /// Clients that ended with an error (including protocol violations) or were closed.
    pub errors: u64,
    pub resyncs: u64,
    /// Updates received during the drawing window, summed over all clients.
    pub delivered_in_window: u64,
    /// Every update received, drain included.
    pub delivered_total: u64,
    /// What `delivered_total` should be: accepted ops × clients of their picture.
    pub expected_deliveries: u64,
    /// `delivered_in_window / duration_s`: the headline number.
    pub delivered_per_s: f64,
    /// N·N·rate per picture, for the rate workloads.
    pub ideal_delivered_per_s: Option<f64>,
    /// Send-to-receive latency over every (receiver, update) pair.
    pub latency_ms: Latency,
    /// CPU and memory of the first `--server-pid`, when given.
    pub server: Option<ServerStats>,
    /// CPU and memory of every `--server-pid`, in their order.
    pub servers: Vec<ServerStats>,
}

/// Counters every task updates, read by the progress line.
#[derive(Default)]
struct Counters {
    /// Ops handed to sockets.
    sent: AtomicU64,
    /// `Rejected` answers (rate limit, mostly).
    rejected: AtomicU64,
    /// Clients that failed or were closed.
    errors: AtomicU64,
    /// Fresh `Welcome`s: clients that could not keep up.
    resyncs: AtomicU64,
    /// Updates received by all clients, drain included.
    delivered: AtomicU64,
    /// Updates received before drawing stopped: the throughput numerator.
    delivered_in_window: AtomicU64,
    /// Accepted ops per picture (sent − rejected), for the expected deliveries.
    accepted_per_picture: Vec<AtomicU64>,
}

/// Send times of one client's ops, indexed by `client_seq` modulo the ring size. Nanoseconds
/// since the run's epoch, plus one so zero means "not recorded".
struct SendTimes {
    /// A power-of-two ring: old entries are overwritten, which is harmless because an op is
    /// received long before `slots.len()` newer ops of the same client are sent.
    slots: Box<[AtomicU64]>,
    /// `slots.len() - 1`.
    mask: u64,
}

impl SendTimes {
    fn new(capacity: usize) -> Self {
        let capacity = capacity.next_power_of_two();
        Self {
            slots: (0..capacity).map(|_| AtomicU64::new(0)).collect(),
            mask: capacity as u64 - 1,
        }
    }

    fn record(&self, client_seq: u64, nanos: u64) {
        self.slots[(client_seq & self.mask) as usize].store(nanos + 1, Ordering::Relaxed);
    }

    fn get(&self, client_seq: u64) -> Option<u64> {
        match self.slots[(client_seq & self.mask) as usize].load(Ordering::Relaxed) {
            0 => None,
            t => Some(t - 1),
        }
    }
}

fn picture_id(prefix: &str, run: u32, picture: usize) -> String {
    format!("{prefix}-{run:08x}-{picture}")
}

#[allow(
    clippy::expect_used,
    reason = "the bounds are constants that are known valid"
)]
fn new_histogram() -> Histogram<u64> {
    // 1 µs .. 10 min at 3 significant digits.
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("constant histogram bounds are valid")
}

async fn run_load(url: &str, common: &CommonArgs, plan: &Plan) -> anyhow::Result<LoadReport> {
    let run_id: u32 = rand::thread_rng().gen();
    let total = plan.pictures * plan.clients;
    let options = ConnectOptions {
        size: Some(common.size),
        keep_raster: false,
        keep_log: false,
        headers_only: true,
        // Frames here are a few KB: tungstenite zero-fills the whole read size before every
        // read (including the one that finds the socket empty), so keep it small.
        read_buffer_size: 4 * 1024,
        ..ConnectOptions::default()
    };
    // Anchors first: the broadcast service at the anchor URL sequences every picture.
    let mut anchors = Vec::new();
    if let Some(anchor) = &common.anchor_url {
        for picture in 0..plan.pictures {
            let picture = picture_id(&common.picture, run_id, picture);
            let client = Client::connect_with(anchor, &picture, options.clone())
                .await
                .context("connecting an anchor client")?;
            anchors.push(client);
        }
    }
    // `--url` may list several broadcast services: clients take them in turn, each picture's
    // first client on the next one (so that the pictures' sequencers spread too).
    let urls: Vec<&str> = url.split(',').map(str::trim).collect();
    let connect_start = Instant::now();
    let clients: Vec<Client> = futures::stream::iter(0..total)
        .map(|i| {
            let picture = picture_id(&common.picture, run_id, i / plan.clients);
            let options = options.clone();
            let url = urls[(i + i / plan.clients) % urls.len()];
            async move { Client::connect_with(url, &picture, options).await }
        })
        .buffered(common.connect_concurrency.max(1))
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<_, _>>()
        .context("connecting the clients")?;
    let connect_s = connect_start.elapsed().as_secs_f64();
    eprintln!(
        "connected {total} clients to {} picture(s) in {connect_s:.2} s",
        plan.pictures
    );

    let mut ids: Vec<HashMap<u64, usize>> = vec![HashMap::default(); plan.pictures];
    for (i, client) in clients.iter().enumerate() {
        ids[i / plan.clients].insert(client.client_id(), i);
    }
    let ids = Arc::new(ids);
    let capacity = match plan.mode {
        Mode::Rate(rate) => ((common.duration + 2.0) * rate * 1.5) as usize + 16,
        Mode::Window { .. } => 1 << 16,
    };
    let times: Arc<Vec<SendTimes>> =
        Arc::new((0..total).map(|_| SendTimes::new(capacity)).collect());
    let counters = Arc::new(Counters {
        accepted_per_picture: (0..plan.pictures).map(|_| AtomicU64::new(0)).collect(),
        ..Counters::default()
    });
    let latencies = Arc::new(Mutex::new(new_histogram()));
    let mut samplers = common
        .server_pid
        .iter()
        .map(|&pid| ProcSampler::start(pid))
        .collect::<Result<Vec<_>, _>>()?;

    let epoch = Instant::now();
    let send_end = epoch + Duration::from_secs_f64(common.duration);
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut senders = Vec::with_capacity(total);
    let mut receivers = Vec::with_capacity(total);
    for (i, client) in clients.into_iter().enumerate() {
        let (sender, receiver) = client.into_split();
        let window = match plan.mode {
            Mode::Window { window, .. } => {
                Some(Arc::new(Semaphore::new(window.min(Semaphore::MAX_PERMITS))))
            }
            Mode::Rate(_) => None,
        };
        let ctx = TaskContext {
            index: i,
            picture: i / plan.clients,
            epoch,
            send_end,
            times: times.clone(),
            counters: counters.clone(),
            latencies: latencies.clone(),
            window,
        };
        let rx_ctx = ctx.clone();
        let ids = ids.clone();
        let stop = stop_rx.clone();
        receivers.push(tokio::spawn(receive_loop(receiver, rx_ctx, ids, stop)));
        let seed = common.seed.wrapping_mul(1_000_003).wrapping_add(i as u64);
        let (width, height) = common.size;
        // Watchers draw nothing (rate 0).
        let mode = if i % plan.clients < plan.drawers {
            plan.mode
        } else {
            Mode::Rate(0.0)
        };
        senders.push(tokio::spawn(send_loop(
            sender, ctx, mode, seed, width, height,
        )));
    }

    let progress = tokio::spawn(progress_loop(counters.clone(), epoch));
    let mut live_senders = Vec::new();
    while Instant::now() < send_end {
        tokio::time::sleep_until((Instant::now() + Duration::from_secs(1)).min(send_end)).await;
        for s in samplers.iter_mut() {
            s.sample();
        }
    }
    for sender in senders {
        if let Ok(Some(sender)) = sender.await {
            live_senders.push(sender);
        }
    }
    let accepted_total = |c: &Counters| -> u64 {
        c.accepted_per_picture
            .iter()
            .map(|a| a.load(Ordering::Relaxed) * plan.clients as u64)
            .sum()
    };
    let drain_end = Instant::now() + Duration::from_secs_f64(common.drain);
    while Instant::now() < drain_end
        && counters.delivered.load(Ordering::Relaxed) < accepted_total(&counters)
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = stop_tx.send(true);
    for receiver in receivers {
        let _ = receiver.await;
    }
    let histogram = std::mem::replace(&mut *lock(&latencies), new_histogram());
    progress.abort();
    let deadline = Instant::now() + Duration::from_secs(2);
    for mut sender in live_senders {
        let _ = tokio::time::timeout_at(deadline, sender.close()).await;
    }
    let servers = samplers
        .into_iter()
        .map(ProcSampler::finish)
        .collect::<Result<Vec<_>, _>>()?;
    drop(anchors);

    let c = &counters;
    let delivered_in_window = c.delivered_in_window.load(Ordering::Relaxed);
    let report = LoadReport {
        workload: plan.name,
        pictures: plan.pictures,
        clients_per_picture: plan.clients,
        rate_per_client: match plan.mode {
            Mode::Rate(r) => Some(r),
            Mode::Window { .. } => None,
        },
        window: match plan.mode {
            Mode::Window { window, .. } => Some(window),
            Mode::Rate(_) => None,
        },
        duration_s: common.duration,
        connect_s,
        sent: c.sent.load(Ordering::Relaxed),
        rejected: c.rejected.load(Ordering::Relaxed),
        errors: c.errors.load(Ordering::Relaxed),
        resyncs: c.resyncs.load(Ordering::Relaxed),
        delivered_in_window,
        delivered_total: c.delivered.load(Ordering::Relaxed),
        expected_deliveries: accepted_total(c),
        delivered_per_s: delivered_in_window as f64 / common.duration.max(1e-9),
        ideal_delivered_per_s: match plan.mode {
            Mode::Rate(r) => Some((plan.pictures * plan.drawers * plan.clients) as f64 * r),
            Mode::Window { .. } => None,
        },
        latency_ms: Latency::from_micros(&histogram),
        server: servers.first().cloned(),
        servers,
    };
    if !common.json {
        print_load(&report);
    }
    Ok(report)
}

fn print_load(r: &LoadReport) {
    let mode = match (r.rate_per_client, r.window) {
        (Some(rate), _) => format!("rate {rate}/s"),
        (_, Some(w)) => format!("window {w}"),
        _ => String::new(),
    };
    println!(
        "{}: {} picture(s) x {} clients, {mode}, {:.1} s (connect {:.2} s)",
        r.workload, r.pictures, r.clients_per_picture, r.duration_s, r.connect_s
    );
    let ideal = r
        .ideal_delivered_per_s
        .map(|i| format!(" (ideal {i:.0})"))
        .unwrap_or_default();
    println!("  delivered/s  {:.0}{ideal}", r.delivered_per_s);
    println!(
        "  deliveries   {} of {} expected; sent {}, rejected {}, errors {}, resyncs {}",
        r.delivered_total, r.expected_deliveries, r.sent, r.rejected, r.errors, r.resyncs
    );
    let l = &r.latency_ms;
    println!(
        "  latency ms   p50 {:.2}  p99 {:.2}  p999 {:.2}  max {:.2}  ({} samples)",
        l.p50, l.p99, l.p999, l.max, l.count
    );
    for s in &r.servers {
        println!(
            "  server {:>6} cpu {:.0}%  peak rss {} MiB  (max sampled {} MiB)",
            s.pid,
            s.cpu_percent,
            s.peak_rss_kib / 1024,
            s.max_sampled_rss_kib / 1024
        );
    }
}

/// What one client's two tasks share with the run.
#[derive(Clone)]
struct TaskContext {
    /// This client's index in `times`.
    index: usize,
    /// Index of its picture, for the expected deliveries and the client-id map.
    picture: usize,
    /// Zero of the send-time clock.
    epoch: Instant,
    /// When drawing stops.
    send_end: Instant,
    /// Send times of every client of the run (receivers look up other clients' ops).
    times: Arc<Vec<SendTimes>>,
    /// Run-wide counters, for the progress line and the report.
    counters: Arc<Counters>,
    /// Latencies (µs) of every delivery of the run.
    latencies: Arc<Mutex<Histogram<u64>>>,
    /// In window mode, one permit per op allowed in flight; the receiver returns a permit for
    /// each own echo or rejection.
    window: Option<Arc<Semaphore>>,
}

/// Sender ids to client indexes, looked up once per delivered update: foldhash instead of
/// SipHash, which was 4 % of the load generator in W2 (perf).
type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// Draws until `send_end`; returns the sender for a clean close, or `None` after an error.
async fn send_loop(
    mut sender: Sender,
    ctx: TaskContext,
    mode: Mode,
    seed: u64,
    width: u32,
    height: u32,
) -> Option<Sender> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut interval = match mode {
        // Rate 0: idle clients (memory per connection), connected but silent.
        Mode::Rate(rate) if rate <= 0.0 => {
            tokio::time::sleep_until(ctx.send_end).await;
            return Some(sender);
        }
        Mode::Rate(rate) => {
            let period = Duration::from_secs_f64(1.0 / rate.max(1e-3));
            let jitter = period.mul_f64(rng.gen_range(0.0..1.0));
            let mut interval = tokio::time::interval_at(ctx.epoch + jitter, period);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            Some(interval)
        }
        Mode::Window { .. } => None,
    };
    loop {
        if let Some(interval) = interval.as_mut() {
            if tokio::time::timeout_at(ctx.send_end, interval.tick())
                .await
                .is_err()
            {
                break;
            }
        }
        // Ops to send in this write: one at a fixed rate; in window mode every permit free
        // now (echoes come back a tick's worth at a time), so that a window costs one write per
        // tick rather than one per op, on this side and on the server's reading side.
        let mut ops = 1;
        let per_write = match mode {
            Mode::Window { per_write, .. } => per_write,
            Mode::Rate(_) => 1,
        };
        if let Some(window) = &ctx.window {
            match tokio::time::timeout_at(ctx.send_end, window.acquire()).await {
                Ok(Ok(permit)) => permit.forget(),
                _ => break,
            }
            while ops < per_write {
                match window.try_acquire() {
                    Ok(permit) => permit.forget(),
                    Err(_) => break,
                }
                ops += 1;
            }
        }
        if Instant::now() >= ctx.send_end {
            break;
        }
        for _ in 0..ops {
            let op = random_op(&mut rng, width, height, Profile::Strokes);
            let client_seq = sender.last_client_seq() + 1;
            let now = ctx.epoch.elapsed().as_nanos() as u64;
            ctx.times[ctx.index].record(client_seq, now);
            if let Err(error) = sender.feed_draw(op).await {
                tracing::warn!(client = ctx.index, %error, "send failed");
                ctx.counters.errors.fetch_add(1, Ordering::Relaxed);
                return None;
            }
            ctx.counters.sent.fetch_add(1, Ordering::Relaxed);
            ctx.counters.accepted_per_picture[ctx.picture].fetch_add(1, Ordering::Relaxed);
        }
        if let Err(error) = sender.flush().await {
            tracing::warn!(client = ctx.index, %error, "send failed");
            ctx.counters.errors.fetch_add(1, Ordering::Relaxed);
            return None;
        }
    }
    Some(sender)
}

/// Reads until told to stop, recording latencies (µs) into `latencies`.
async fn receive_loop(
    mut receiver: Receiver,
    ctx: TaskContext,
    ids: Arc<Vec<HashMap<u64, usize>>>,
    mut stop: watch::Receiver<bool>,
) {
    let mut batch: Vec<u64> = Vec::new();
    let own = receiver.client_id();
    let picture_ids = &ids[ctx.picture];
    loop {
        let event = tokio::select! {
            _ = stop.changed() => break,
            event = receiver.next_event() => event,
        };
        match event {
            Ok(Event::Headers(updates)) => {
                let now = Instant::now();
                let nanos = now.duration_since(ctx.epoch).as_nanos() as u64;
                let in_window = now < ctx.send_end;
                let n = updates.len() as u64;
                ctx.counters.delivered.fetch_add(n, Ordering::Relaxed);
                if in_window {
                    ctx.counters
                        .delivered_in_window
                        .fetch_add(n, Ordering::Relaxed);
                }
                for update in &updates {
                    let sent = picture_ids
                        .get(&update.client_id)
                        .and_then(|&i| ctx.times[i].get(update.client_seq));
                    if let Some(sent) = sent {
                        batch.push((nanos.saturating_sub(sent) / 1000).max(1));
                    }
                    if update.client_id == own {
                        if let Some(window) = &ctx.window {
                            window.add_permits(1);
                        }
                    }
                }
                if !batch.is_empty() {
                    let mut histogram = lock(&ctx.latencies);
                    for micros in batch.drain(..) {
                        let _ = histogram.record(micros);
                    }
                }
            }
            Ok(Event::Rejected { client_seq, reason }) => {
                tracing::debug!(client = ctx.index, client_seq, %reason, "op rejected");
                ctx.counters.rejected.fetch_add(1, Ordering::Relaxed);
                ctx.counters.accepted_per_picture[ctx.picture].fetch_sub(1, Ordering::Relaxed);
                if let Some(window) = &ctx.window {
                    window.add_permits(1);
                }
            }
            Ok(Event::Resynced) => {
                ctx.counters.resyncs.fetch_add(1, Ordering::Relaxed);
            }
            Ok(Event::Closed { code, reason }) => {
                tracing::warn!(client = ctx.index, ?code, %reason, "connection closed");
                ctx.counters.errors.fetch_add(1, Ordering::Relaxed);
                break;
            }
            Ok(_) => {}
            Err(error) => {
                tracing::warn!(client = ctx.index, %error, "receive failed");
                ctx.counters.errors.fetch_add(1, Ordering::Relaxed);
                break;
            }
        }
    }
}

/// One progress line a second on stderr.
async fn progress_loop(counters: Arc<Counters>, epoch: Instant) {
    let mut tick = tokio::time::interval_at(epoch + Duration::from_secs(1), Duration::from_secs(1));
    let (mut sent, mut delivered) = (0, 0);
    loop {
        tick.tick().await;
        let s = counters.sent.load(Ordering::Relaxed);
        let d = counters.delivered.load(Ordering::Relaxed);
        eprintln!(
            "[{:>4.0} s] sent {}/s  delivered {}/s  rejected {}  errors {}  resyncs {}",
            epoch.elapsed().as_secs_f64(),
            s - sent,
            d - delivered,
            counters.rejected.load(Ordering::Relaxed),
            counters.errors.load(Ordering::Relaxed),
            counters.resyncs.load(Ordering::Relaxed),
        );
        (sent, delivered) = (s, d);
    }
}

/// Join-time statistics in milliseconds.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct JoinTimes {
    /// Every measured join, sorted.
    pub samples_ms: Vec<f64>,
    /// Median (the lower one for an even count).
    pub p50: f64,
    pub max: f64,
}

impl JoinTimes {
    fn from(mut samples_ms: Vec<f64>) -> Self {
        samples_ms.sort_by(f64::total_cmp);
        let p50 = samples_ms
            .get(samples_ms.len().saturating_sub(1) / 2)
            .copied()
            .unwrap_or(0.0);
        let max = samples_ms.last().copied().unwrap_or(0.0);
        Self {
            samples_ms,
            p50,
            max,
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub(crate) struct W3Report {
    pub workload: &'static str,
    /// The picture created for the run.
    pub picture: String,
    pub side: u32,
    /// Strokes drawn as history before measuring.
    pub strokes: usize,
    /// Strokes the server refused (rate limit): they are not in the history.
    pub rejected: u64,
    /// Seconds to draw the history and see the last echo.
    pub draw_s: f64,
    /// Seq of the last stroke.
    pub last_seq: u64,
    /// Joins while the drawer stays connected (picture open in memory).
    pub warm: JoinTimes,
    /// Joins after everyone left and `--cold-wait` passed (picture released to storage).
    pub cold: JoinTimes,
    /// Pending length of each warm join: how much the joiner had to replay.
    pub warm_pending: Vec<u64>,
    /// The snapshot form the joiners asked for (`lz4` or `png`).
    pub asked: &'static str,
    /// The form each warm / cold join's `Welcome` carried, in join order.
    pub warm_forms: Vec<&'static str>,
    pub cold_forms: Vec<&'static str>,
    pub server: Option<ServerStats>,
}

/// How W3's joiners join.
#[derive(Clone, Copy, Debug)]
struct JoinForm {
    side: u32,
    /// Ask for `WelcomeLz4`.
    lz4: bool,
}

/// One measured join.
struct TimedJoin {
    ms: f64,
    pending: u64,
    /// The `Welcome` carried LZ4 (else PNG).
    lz4: bool,
}

/// Connects once, fully (Welcome + snapshot decode + pending applied), and leaves.
async fn timed_join(url: &str, picture: &str, form: JoinForm) -> anyhow::Result<TimedJoin> {
    let options = ConnectOptions {
        size: Some((form.side, form.side)),
        snapshot_lz4: form.lz4,
        ..ConnectOptions::default()
    };
    let start = Instant::now();
    let client = Client::connect_with(url, picture, options).await?;
    let ms = start.elapsed().as_secs_f64() * 1000.0;
    let joined = TimedJoin {
        ms,
        pending: client.last_seq() - client.receiver().snapshot_seq(),
        lz4: client.receiver().welcome_was_lz4(),
    };
    client
        .close(Instant::now() + Duration::from_secs(5))
        .await?;
    Ok(joined)
}

async fn run_w3(
    url: &str,
    common: &CommonArgs,
    strokes: usize,
    join: JoinForm,
    repeats: usize,
    draw_rate: f64,
    cold_wait: f64,
) -> anyhow::Result<W3Report> {
    anyhow::ensure!(strokes > 0, "w3 needs at least one stroke");
    let side = join.side;
    let run_id: u32 = rand::thread_rng().gen();
    let picture = picture_id(&common.picture, run_id, 0);
    let sampler = common
        .server_pid
        .first()
        .map(|&pid| ProcSampler::start(pid))
        .transpose()?;
    let options = ConnectOptions {
        size: Some((side, side)),
        keep_raster: false,
        ..ConnectOptions::default()
    };
    let drawer = Client::connect_with(url, &picture, options).await?;
    let (mut sender, mut receiver) = drawer.into_split();
    let start = Instant::now();
    let reading = tokio::spawn(async move {
        let mut rejected = 0u64;
        let mut last_rejected = 0u64;
        let deadline = Instant::now() + Duration::from_secs(600);
        loop {
            match tokio::time::timeout_at(deadline, receiver.next_event()).await {
                Ok(Ok(Event::Rejected { client_seq, .. })) => {
                    rejected += 1;
                    last_rejected = last_rejected.max(client_seq);
                }
                Ok(Ok(Event::Closed { code, reason })) => {
                    anyhow::bail!("drawer closed ({code:?}): {reason}")
                }
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(e.into()),
                Err(_) => anyhow::bail!("drawer timed out"),
            }
            // Each client's echoes and rejections come in client_seq order.
            if receiver.own_acked().max(last_rejected) >= strokes as u64 {
                return Ok((receiver, rejected));
            }
        }
    });
    let mut rng = rand::rngs::StdRng::seed_from_u64(common.seed);
    let period = Duration::from_secs_f64(1.0 / draw_rate.max(1e-3));
    let mut interval = tokio::time::interval(period);
    for _ in 0..strokes {
        interval.tick().await;
        let mut op = random_op(&mut rng, side, side, Profile::Strokes);
        if let protocol::Op::Stroke { width, .. } = &mut op {
            *width = rng.gen_range(4..=32);
        }
        sender.draw(op).await?;
    }
    let (receiver, rejected) = reading.await??;
    let draw_s = start.elapsed().as_secs_f64();
    let last_seq = receiver.last_seq();
    eprintln!("drew {strokes} strokes ({rejected} rejected) in {draw_s:.2} s, last seq {last_seq}");

    let form = |lz4: bool| if lz4 { "lz4" } else { "png" };
    let mut warm = Vec::new();
    let mut warm_pending = Vec::new();
    let mut warm_forms = Vec::new();
    for i in 0..repeats {
        let joined = timed_join(url, &picture, join).await?;
        eprintln!(
            "warm join {}: {:.1} ms ({} pending, {})",
            i + 1,
            joined.ms,
            joined.pending,
            form(joined.lz4)
        );
        warm.push(joined.ms);
        warm_pending.push(joined.pending);
        warm_forms.push(form(joined.lz4));
    }
    // Leaving makes the service release the picture to storage: the cold joins start from it.
    let mut receiver = receiver;
    sender.close().await?;
    receiver
        .wait_closed(Instant::now() + Duration::from_secs(5))
        .await?;
    let mut cold = Vec::new();
    let mut cold_forms = Vec::new();
    for i in 0..repeats {
        tokio::time::sleep(Duration::from_secs_f64(cold_wait)).await;
        let joined = timed_join(url, &picture, join).await?;
        eprintln!(
            "cold join {}: {:.1} ms ({} pending, {})",
            i + 1,
            joined.ms,
            joined.pending,
            form(joined.lz4)
        );
        cold.push(joined.ms);
        cold_forms.push(form(joined.lz4));
    }
    let report = W3Report {
        workload: "w3",
        picture,
        side,
        strokes,
        rejected,
        draw_s,
        last_seq,
        warm: JoinTimes::from(warm),
        cold: JoinTimes::from(cold),
        warm_pending,
        asked: form(join.lz4),
        warm_forms,
        cold_forms,
        server: sampler.map(ProcSampler::finish).transpose()?,
    };
    if !common.json {
        println!(
            "w3: {side}x{side}, {strokes} strokes drawn in {:.2} s (last seq {last_seq})",
            report.draw_s
        );
        println!(
            "  warm join ms  p50 {:.1}  max {:.1}   cold join ms  p50 {:.1}  max {:.1}",
            report.warm.p50, report.warm.max, report.cold.p50, report.cold.max
        );
        if let Some(s) = &report.server {
            println!(
                "  server        cpu {:.0}%  peak rss {} MiB",
                s.cpu_percent,
                s.peak_rss_kib / 1024
            );
        }
    }
    Ok(report)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn send_time_ring() {
        let times = SendTimes::new(5);
        assert_eq!(times.slots.len(), 8);
        assert_eq!(times.get(3), None);
        times.record(3, 0);
        times.record(12, 77);
        assert_eq!(times.get(3), Some(0));
        assert_eq!(times.get(4), Some(77));
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("640x480"), Ok((640, 480)));
        assert!(parse_size("640").is_err());
        assert_eq!(JoinTimes::from(vec![3.0, 1.0, 2.0]).p50, 2.0);
    }
}
