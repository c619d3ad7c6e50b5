//! `raster`: the command-line client of the collaborative raster service.
//!
//! - `raster draw PICTURE --random N | --script FILE [--rate OPS/S]`: draws, waits for every
//!   echo, prints a summary.
//! - `raster snapshot PICTURE -o FILE.png`: saves the server's picture, prints its seq.
//! - `raster timelapse PICTURE -o FILE.png [--width W] [--frames N] [--delay MS]`: saves the
//!   picture's history as an animated PNG (PROTOCOL.md §15), with a progress bar on stderr.
//! - `raster watch PICTURE`: prints every update and presence change; `--http` follows over
//!   plain HTTP instead (`snapshot.png`, then long-polls of `updates`, PROTOCOL.md §16).
//! - `raster bench w1|w2|w3|pictures ...`: the load generator (see [`mod@bench`]).
//! - `raster token --secret S --picture P --role draw|view --ttl 1h`: mints a token for a
//!   service started with `--token-secret` (PROTOCOL.md §13); `draw`, `snapshot` and `watch`
//!   pass one with `--token` (`RASTER_TOKEN`).
//!
//! Every flag has an environment variable (`RASTER_*`); `--url` defaults to
//! `ws://127.0.0.1:8080`.

mod bench;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use protocol::Op;
use rand::SeedableRng;
use raster_client::ops::bounding_box;
use raster_client::{random_op, script, token, Client, ConnectOptions, Event, Profile};
use tokio::time::Instant;

#[derive(Parser, Debug)]
#[command(
    name = "raster",
    version,
    about = "Client of the collaborative raster service"
)]
struct Cli {
    /// Base URL of the broadcast service (`ws://` or `http://`).
    #[arg(
        long,
        env = "RASTER_URL",
        default_value = "ws://127.0.0.1:8080",
        global = true
    )]
    url: String,
    /// Worker threads of the tokio runtime (default: one per core).
    #[arg(long, env = "RASTER_THREADS", global = true)]
    threads: Option<usize>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Draw ops on a picture and wait until the server has sequenced them all.
    Draw {
        picture: String,
        /// Draw N random ops (mostly translucent, every kind).
        #[arg(long, env = "RASTER_RANDOM", conflicts_with = "script")]
        random: Option<usize>,
        /// Draw the ops of a file of JSON lines, one op per line in the test vectors' form.
        #[arg(long, env = "RASTER_SCRIPT")]
        script: Option<PathBuf>,
        /// Ops per second (0: as fast as possible; the server rate-limits at 1,000/s by default).
        #[arg(long, env = "RASTER_RATE", default_value_t = 200.0, value_parser = bench::rate_arg)]
        rate: f64,
        /// Size of the picture if it does not exist yet, `WIDTHxHEIGHT`.
        #[arg(long, env = "RASTER_SIZE", value_parser = bench::size_arg)]
        size: Option<(u32, u32)>,
        /// Which mix of random ops.
        #[arg(long, env = "RASTER_PROFILE", value_enum, default_value_t = Profile::Mixed)]
        profile: Profile,
        #[arg(long, env = "RASTER_SEED", default_value_t = 1)]
        seed: u64,
        /// Seconds to wait for the last echo after the last op was sent.
        #[arg(long, env = "RASTER_TIMEOUT", default_value_t = 30.0, value_parser = bench::seconds_arg)]
        timeout: f64,
        /// Token for a service that asks for one (PROTOCOL.md §13; `raster token` mints one).
        #[arg(long, env = "RASTER_TOKEN")]
        token: Option<String>,
    },
    /// Save the server's picture as PNG and print the seq it includes.
    Snapshot {
        picture: String,
        #[arg(short, long, env = "RASTER_OUTPUT")]
        output: PathBuf,
        /// Token for a service that asks for one (PROTOCOL.md §13; `raster token` mints one).
        #[arg(long, env = "RASTER_TOKEN")]
        token: Option<String>,
    },
    /// Save the picture's history as an animated PNG (PROTOCOL.md §15), showing progress.
    Timelapse {
        picture: String,
        #[arg(short, long, env = "RASTER_OUTPUT")]
        output: PathBuf,
        /// Width in pixels (nearest-neighbour scaling; default: the picture's, within the
        /// server's `--timelapse-max-width`).
        #[arg(long, env = "RASTER_TIMELAPSE_WIDTH")]
        width: Option<u32>,
        /// Most frames, sampled evenly over the history (default: the server's, 100).
        #[arg(long, env = "RASTER_TIMELAPSE_FRAMES")]
        frames: Option<u32>,
        /// Milliseconds per frame (default: the server's, 200).
        #[arg(long, env = "RASTER_TIMELAPSE_DELAY")]
        delay: Option<u32>,
        /// Token for a service that asks for one (PROTOCOL.md §13; `raster token` mints one).
        #[arg(long, env = "RASTER_TOKEN")]
        token: Option<String>,
    },
    /// Print every update (seq, client, op kind, bounding box) and presence change.
    Watch {
        picture: String,
        /// Size of the picture if it does not exist yet, `WIDTHxHEIGHT`.
        #[arg(long, env = "RASTER_SIZE", value_parser = bench::size_arg)]
        size: Option<(u32, u32)>,
        /// Token for a service that asks for one (PROTOCOL.md §13; `raster token` mints one).
        #[arg(long, env = "RASTER_TOKEN")]
        token: Option<String>,
        /// Follow over plain HTTP (long-polls of `GET /pictures/{id}/updates`, PROTOCOL.md
        /// §16) instead of a WebSocket: no presence, and the picture must exist.
        #[arg(long, env = "RASTER_HTTP")]
        http: bool,
        /// With `--http`: seconds each long-poll may wait for the next update.
        #[arg(long, env = "RASTER_WAIT", default_value_t = 25.0, value_parser = bench::seconds_arg)]
        wait: f64,
        /// Stop once the picture includes this seq (for scripts and tests).
        #[arg(long, env = "RASTER_UNTIL_SEQ", requires = "http")]
        until_seq: Option<u64>,
        /// With `--until-seq`: save the picture as PNG when stopping.
        #[arg(short, long, env = "RASTER_OUTPUT", requires = "until_seq")]
        output: Option<PathBuf>,
    },
    /// Mint a token (an HS256 JWT) for a service started with `--token-secret`, and print it.
    /// For development: an application issues its tokens from its own backend.
    Token {
        /// The service's `--token-secret`.
        #[arg(long, env = "BS_TOKEN_SECRET", hide_env_values = true)]
        secret: String,
        /// A picture id, or a prefix ending in `*` (`team-a-*`; `*`: every picture).
        #[arg(long, env = "RASTER_TOKEN_PICTURE")]
        picture: String,
        #[arg(long, env = "RASTER_TOKEN_ROLE", value_enum, default_value_t = TokenRole::Draw)]
        role: TokenRole,
        /// How long it is valid: `90s`, `30m`, `1h`, `7d` or plain seconds.
        #[arg(long, env = "RASTER_TOKEN_TTL", default_value = "1h", value_parser = ttl_arg)]
        ttl: Duration,
    },
    /// Load generator.
    Bench {
        #[command(flatten)]
        common: bench::CommonArgs,
        #[command(subcommand)]
        workload: bench::Workload,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    runtime.enable_all();
    if let Some(threads) = cli.threads {
        runtime.worker_threads(threads.max(1));
    }
    runtime.build()?.block_on(run(cli))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Draw {
            picture,
            random,
            script,
            rate,
            size,
            profile,
            seed,
            timeout,
            token,
        } => {
            let source = match (random, script) {
                (Some(n), None) => Source::Random { n, profile, seed },
                (None, Some(path)) => {
                    let text = std::fs::read_to_string(&path)
                        .with_context(|| format!("reading {}", path.display()))?;
                    Source::Script(script::parse_script(&text)?)
                }
                _ => bail!("give exactly one of --random N and --script FILE"),
            };
            draw(&cli.url, &picture, size, source, rate, timeout, token).await
        }
        Command::Snapshot {
            picture,
            output,
            token,
        } => {
            let (seq, png) =
                raster_client::snapshot_with_token(&cli.url, &picture, token.as_deref()).await?;
            std::fs::write(&output, &png)
                .with_context(|| format!("writing {}", output.display()))?;
            println!("seq {seq} ({} bytes) -> {}", png.len(), output.display());
            Ok(())
        }
        Command::Timelapse {
            picture,
            output,
            width,
            frames,
            delay,
            token,
        } => {
            let options = raster_client::TimelapseOptions {
                width,
                frames,
                delay_ms: delay,
                token,
            };
            timelapse(&cli.url, &picture, &options, &output).await
        }
        Command::Watch {
            picture,
            size,
            token,
            http,
            wait,
            until_seq,
            output,
        } => {
            if http {
                let wait = Duration::from_secs_f64(wait);
                watch_http(&cli.url, &picture, token, wait, until_seq, output).await
            } else {
                watch(&cli.url, &picture, size, token).await
            }
        }
        Command::Token {
            secret,
            picture,
            role,
            ttl,
        } => {
            let role = match role {
                TokenRole::Draw => token::Role::Draw,
                TokenRole::View => token::Role::View,
            };
            println!("{}", token::mint(&secret, &picture, role, ttl)?);
            Ok(())
        }
        Command::Bench { common, workload } => bench::run(&cli.url, common, workload).await,
    }
}

/// `raster timelapse`: streams the animation into `OUTPUT.part`, renamed to `OUTPUT` once
/// whole (an interrupted download leaves no truncated file under the name asked for).
async fn timelapse(
    url: &str,
    picture: &str,
    options: &raster_client::TimelapseOptions,
    output: &std::path::Path,
) -> anyhow::Result<()> {
    use std::io::Write;
    let mut part = output.as_os_str().to_owned();
    part.push(".part");
    let part = PathBuf::from(part);
    let file =
        std::fs::File::create(&part).with_context(|| format!("creating {}", part.display()))?;
    let mut out = std::io::BufWriter::new(file);
    let mut bar = ProgressBar::default();
    let result = raster_client::timelapse(url, picture, options, &mut out, |p| bar.show(p)).await;
    bar.finish();
    let done = match result.map_err(anyhow::Error::from).and_then(|done| {
        out.flush()?;
        Ok(done)
    }) {
        Ok(done) => done,
        Err(error) => {
            let _ = std::fs::remove_file(&part);
            return Err(error.context(format!("timelapse of {picture}")));
        }
    };
    drop(out);
    std::fs::rename(&part, output).with_context(|| format!("writing {}", output.display()))?;
    println!(
        "{} frames ({} bytes) -> {}",
        done.frames,
        done.bytes,
        output.display()
    );
    Ok(())
}

/// A one-line progress bar on stderr, redrawn when the frame count moves.
#[derive(Default)]
struct ProgressBar {
    /// What was drawn last (frames, total): a new chunk of the same frame draws nothing.
    last: Option<(u64, u64)>,
}

impl ProgressBar {
    const WIDTH: u64 = 30;

    fn show(&mut self, p: raster_client::TimelapseProgress) {
        if self.last == Some((p.frames, p.total)) {
            return;
        }
        self.last = Some((p.frames, p.total));
        let filled = (p.frames * Self::WIDTH).checked_div(p.total).unwrap_or(0);
        eprint!(
            "\r[{}{}] {}/{} frames, {} KiB",
            "#".repeat(filled as usize),
            "-".repeat((Self::WIDTH - filled.min(Self::WIDTH)) as usize),
            p.frames,
            p.total,
            p.bytes / 1024
        );
    }

    fn finish(&self) {
        if self.last.is_some() {
            eprintln!();
        }
    }
}

/// The role of `raster token`.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum TokenRole {
    Draw,
    View,
}

/// A token lifetime: `90s`, `30m`, `1h`, `7d` or plain seconds; more than zero.
fn ttl_arg(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = match text.char_indices().last() {
        Some((i, c @ ('s' | 'm' | 'h' | 'd'))) => (&text[..i], c),
        _ => (text, 's'),
    };
    let scale = match unit {
        'm' => 60,
        'h' => 3600,
        'd' => 86_400,
        _ => 1,
    };
    number
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(scale))
        .filter(|&secs| secs > 0)
        .map(Duration::from_secs)
        .ok_or_else(|| format!("invalid duration {text:?}: expected e.g. 90s, 30m, 1h or 7d"))
}

/// Where the ops of `raster draw` come from.
enum Source {
    /// Random ops sized for the picture (known only once joined).
    Random {
        n: usize,
        profile: Profile,
        seed: u64,
    },
    Script(Vec<Op>),
}

/// Sends the ops at `rate` from one task while another counts echoes and rejections.
async fn draw(
    url: &str,
    picture: &str,
    size: Option<(u32, u32)>,
    source: Source,
    rate: f64,
    timeout: f64,
    token: Option<String>,
) -> anyhow::Result<()> {
    let options = ConnectOptions {
        size,
        keep_raster: false,
        token,
        ..ConnectOptions::default()
    };
    let client = Client::connect_with(url, picture, options).await?;
    let first_seq = client.last_seq() + 1;
    eprintln!(
        "joined {picture} as client {} ({}x{}, seq {})",
        client.client_id(),
        client.receiver().width(),
        client.receiver().height(),
        client.last_seq()
    );
    let ops: Vec<Op> = match source {
        Source::Script(ops) => ops,
        Source::Random { n, profile, seed } => {
            let (w, h) = (client.receiver().width(), client.receiver().height());
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            (0..n).map(|_| random_op(&mut rng, w, h, profile)).collect()
        }
    };
    let total = ops.len() as u64;
    let (mut sender, mut receiver) = client.into_split();
    let start = Instant::now();
    let sending = tokio::spawn(async move {
        let mut interval = (rate > 0.0).then(|| {
            let mut i = tokio::time::interval(Duration::from_secs_f64(1.0 / rate.max(1e-3)));
            i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            i
        });
        for op in ops {
            if let Some(interval) = interval.as_mut() {
                interval.tick().await;
                sender.draw(op).await?;
            } else {
                sender.feed_draw(op).await?;
            }
        }
        sender.flush().await?;
        anyhow::Ok(sender)
    });
    let mut rejected = Vec::new();
    let mut last_rejected = 0;
    let mut deadline = Instant::now() + Duration::from_secs(3600);
    let mut sender = None;
    let mut sending = Some(sending);
    while receiver.own_acked().max(last_rejected) < total {
        if let Some(handle) = sending.as_mut().filter(|h| h.is_finished()) {
            sender = Some(handle.await??);
            sending = None;
            deadline = Instant::now() + Duration::from_secs_f64(timeout);
        }
        // Wake up now and then to notice the sender finishing, which starts the deadline.
        let wait = (Instant::now() + Duration::from_millis(200)).min(deadline);
        match tokio::time::timeout_at(wait, receiver.next_event()).await {
            Err(_) if Instant::now() >= deadline => bail!("timed out waiting for echoes"),
            Err(_) => {}
            Ok(Ok(Event::Rejected { client_seq, reason })) => {
                last_rejected = last_rejected.max(client_seq);
                rejected.push((client_seq, reason));
            }
            Ok(Ok(Event::Closed { code, reason })) => bail!("server closed ({code:?}): {reason}"),
            Ok(Ok(Event::Error { code, message })) => eprintln!("server error {code}: {message}"),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(e.into()),
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    let mut sender = match (sender, sending) {
        (Some(sender), _) => sender,
        (None, Some(handle)) => handle.await??,
        (None, None) => bail!("sender lost"),
    };
    println!(
        "{} ops sent, {} accepted, {} rejected in {elapsed:.2} s ({:.0} ops/s); seqs {first_seq}..={}",
        total,
        total - rejected.len() as u64,
        rejected.len(),
        total as f64 / elapsed.max(1e-9),
        receiver.last_seq()
    );
    for (client_seq, reason) in rejected.iter().take(10) {
        println!("  rejected op {client_seq}: {reason}");
    }
    sender.close().await?;
    receiver
        .wait_closed(Instant::now() + Duration::from_secs(5))
        .await?;
    Ok(())
}

/// What `watch` prints of each update, over WebSocket or HTTP: one line, with the op's kind
/// and bounding box.
fn print_updates(updates: &[protocol::Sequenced]) {
    for u in updates {
        let bbox = match bounding_box(&u.op) {
            Some((x0, y0, x1, y1)) => format!("({x0},{y0})-({x1},{y1})"),
            None => "whole picture".into(),
        };
        println!(
            "seq {} client {} #{} {} {bbox}",
            u.seq,
            u.client_id,
            u.client_seq,
            u.op.kind()
        );
    }
}

/// `watch --http`: follows the picture with long-polls (PROTOCOL.md §16) and prints each
/// update, until ctrl-c or, with `until_seq`, until the picture includes that seq (then saves
/// it to `output`).
async fn watch_http(
    url: &str,
    picture: &str,
    token: Option<String>,
    wait: Duration,
    until_seq: Option<u64>,
    output: Option<PathBuf>,
) -> anyhow::Result<()> {
    let mut follower = raster_client::Follower::start(url, picture, token).await?;
    println!(
        "snapshot: {}x{} seq {}",
        follower.raster().width(),
        follower.raster().height(),
        follower.seq()
    );
    loop {
        if until_seq.is_some_and(|until| follower.seq() >= until) {
            break;
        }
        let step = tokio::select! {
            _ = tokio::signal::ctrl_c() => return Ok(()),
            step = follower.step(wait) => step?,
        };
        match step {
            raster_client::http::Step::Updates(updates) => {
                print_updates(&updates);
            }
            raster_client::http::Step::Resynced { seq } => {
                println!("gone: resynced from snapshot.png at seq {seq}")
            }
        }
    }
    println!("at seq {}", follower.seq());
    if let Some(output) = output {
        let png = protocol::snapshot::encode_png(
            follower.raster(),
            follower.seq(),
            protocol::snapshot::Compression::Fast,
        )?;
        std::fs::write(&output, png).with_context(|| format!("writing {}", output.display()))?;
    }
    Ok(())
}

/// Prints everything that happens on a picture until the connection ends or ctrl-c.
async fn watch(
    url: &str,
    picture: &str,
    size: Option<(u32, u32)>,
    token: Option<String>,
) -> anyhow::Result<()> {
    let options = ConnectOptions {
        size,
        keep_raster: false,
        token,
        ..ConnectOptions::default()
    };
    let mut client = Client::connect_with(url, picture, options).await?;
    let r = client.receiver();
    println!(
        "welcome: client {} {}x{} snapshot seq {} pending up to {}",
        r.client_id(),
        r.width(),
        r.height(),
        r.snapshot_seq(),
        r.last_seq()
    );
    loop {
        let event = tokio::select! {
            _ = tokio::signal::ctrl_c() => return Ok(()),
            event = client.next_event() => event?,
        };
        match event {
            Event::Updates(updates) => {
                print_updates(&updates);
            }
            Event::Headers(headers) => {
                for h in headers {
                    println!("seq {} client {} #{}", h.seq, h.client_id, h.client_seq);
                }
            }
            Event::Presence(n) => println!("presence {n}"),
            Event::Resynced => println!("resynced at seq {}", client.last_seq()),
            Event::Error { code, message } => println!("error {code}: {message}"),
            Event::Closed { code, reason } => {
                println!("closed {code:?} {reason}");
                return Ok(());
            }
            Event::Durable(seq) => println!("durable up to seq {seq}"),
            Event::Session { last_client_seq } => {
                println!("session: last client_seq {last_client_seq}")
            }
            Event::Rejected { .. } | Event::Pong(_) => {}
        }
    }
}
