//! Configuration: every flag has an environment-variable equivalent, and the defaults run on
//! a laptop (embedded mode, filesystem store under `./data`).

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Args, Parser, ValueEnum};
use primary_picture_service::config::{parse_duration, PpsArgs};
use protocol::Limits;

/// What to do with a client whose outbound queue is over its limit (PROTOCOL.md §3.5).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum SlowClientPolicy {
    /// Drop what is queued and bring it back in sync with a fresh `Welcome`.
    Resync,
    /// Close the connection with 1013 (try again later).
    Disconnect,
}

#[derive(Clone, Debug, Parser)]
#[command(
    name = "broadcast-service",
    version,
    about = "Collaborative raster broadcast service"
)]
pub struct Config {
    /// Address to serve HTTP and WebSocket on.
    #[arg(long, env = "BS_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,

    /// Services mode: the picture services (`ws://host:9090/bs`), comma-separated; each picture
    /// goes to one of them by rendezvous hashing (docs/scaling.md). Every broadcast service of
    /// a cluster must list the same URLs. Absent: embedded mode, the picture service runs in
    /// this process.
    #[arg(long, env = "BS_PPS_URL", value_delimiter = ',')]
    pub pps_url: Vec<String>,

    /// How other broadcast services reach this one (`http://bs-1.example:8080`): relays of a
    /// picture this service sequences connect to it. Default: `http://127.0.0.1:PORT` (a
    /// cluster on one machine).
    #[arg(long, env = "BS_ADVERTISE_URL")]
    pub advertise_url: Option<String>,

    /// Services mode: how often the link to each picture service is pinged (the answers keep
    /// this service's leases confirmed).
    #[arg(long, env = "BS_PPS_PING_INTERVAL", default_value = "1s", value_parser = parse_duration)]
    pub pps_ping_interval: Duration,

    /// Services mode: a picture service silent this long (or that takes this long to accept a
    /// connection) is considered unreachable, and its pictures go to the next one.
    #[arg(long, env = "BS_PPS_TIMEOUT", default_value = "3s", value_parser = parse_duration)]
    pub pps_timeout: Duration,

    /// The picture service's settings. In embedded mode they configure the in-process picture
    /// service (`--data-dir`, `--store`, `--flush-interval`, ...); `--max-side` bounds picture
    /// sizes in both modes.
    #[command(flatten)]
    pub pps: PpsArgs,

    /// Size of a picture created without `?width=&height=`.
    #[arg(long, env = "BS_DEFAULT_SIDE", default_value_t = 1024)]
    pub default_side: u32,

    /// Largest message a client may send, in bytes (bigger: close 1009).
    #[arg(long, env = "BS_MAX_MESSAGE_BYTES", default_value_t = 2 * 1024 * 1024)]
    pub max_message_bytes: usize,

    #[command(flatten)]
    pub limits: LimitArgs,

    /// Sustained ops per second one connection may send.
    #[arg(long, env = "BS_RATE_OPS", default_value_t = 1_000)]
    pub rate_ops: u32,

    /// Ops one connection may send in a burst.
    #[arg(long, env = "BS_RATE_BURST", default_value_t = 2_000)]
    pub rate_burst: u32,

    /// Sustained bytes per second one connection may send (the burst is one second's worth).
    #[arg(long, env = "BS_RATE_BYTES", default_value_t = 8 * 1024 * 1024)]
    pub rate_bytes: u64,

    /// Bytes that may wait in one client's outbound queue before it counts as slow.
    #[arg(long, env = "BS_CLIENT_QUEUE_BYTES", default_value_t = 16 * 1024 * 1024)]
    pub client_queue_bytes: usize,

    /// What to do with a slow client.
    #[arg(long, env = "BS_SLOW_CLIENT", value_enum, default_value_t = SlowClientPolicy::Resync)]
    pub slow_client: SlowClientPolicy,

    /// Resyncs a client may need within a minute before it is disconnected instead (1013).
    #[arg(long, env = "BS_MAX_RESYNCS_PER_MINUTE", default_value_t = 3)]
    pub max_resyncs_per_minute: u32,

    /// Coalescing tick of a picture's sequencer: updates sequenced within one tick go out as
    /// one `Updates` frame shared by every client. `0s`: publish after each turn.
    #[arg(long, env = "BS_TICK", default_value = "5ms", value_parser = parse_duration)]
    pub tick: Duration,

    /// Tick added per subscribed client: a room's tick is `max(--tick, clients *
    /// --tick-per-client)`, at most `--tick-max`. Every tick costs one frame (one write) per
    /// client, so big rooms coalesce longer and their fan-out stays near
    /// 1 / tick-per-client frames a second (by default rooms of up to 119 clients keep
    /// `--tick`; 256 clients get 10.75 ms: W1 N=256 takes about a quarter of a core at p99
    /// 17.5 ms, against half a core at 5 ms, BENCHMARKS.md). `0s`: every room uses `--tick`.
    #[arg(long, env = "BS_TICK_PER_CLIENT", default_value = "42us", value_parser = parse_duration)]
    pub tick_per_client: Duration,

    /// Longest tick `--tick-per-client` may give a room (its added latency is up to a tick).
    #[arg(long, env = "BS_TICK_MAX", default_value = "11ms", value_parser = parse_duration)]
    pub tick_max: Duration,

    /// Most updates in one batch sent to the picture service.
    #[arg(long, env = "BS_PPS_BATCH_UPDATES", default_value_t = 1_024)]
    pub pps_batch_updates: usize,

    /// Batches of one picture in flight to the picture service (sent, not yet accepted).
    #[arg(long, env = "BS_PPS_INFLIGHT_BATCHES", default_value_t = 4)]
    pub pps_inflight_batches: usize,

    /// Serve `WelcomeLz4` to joiners that ask for it with `?snapshot=lz4` (PROTOCOL.md §8).
    /// `false`: every joiner gets the PNG `Welcome`, and the picture service never spends the
    /// encode time and memory on the LZ4 form; the parameter is still accepted.
    #[arg(long, env = "BS_SNAPSHOT_LZ4", default_value_t = true, action = clap::ArgAction::Set)]
    pub snapshot_lz4: bool,

    /// How long a joining client may wait for its snapshot before it gets an error.
    #[arg(long, env = "BS_JOIN_TIMEOUT", default_value = "15s", value_parser = parse_duration)]
    pub join_timeout: Duration,

    /// Sessions (PROTOCOL.md §11) whose highest `client_seq` a picture's sequencer remembers,
    /// per picture; the least recently used is forgotten first. A forgotten session's resumed
    /// client is told 0 and sends again every op it saw no echo of, so an op of it that was
    /// sequenced (its echo lost with the connection) is drawn twice. About 50 bytes a session.
    /// `0`: sessions are accepted but nothing is remembered.
    #[arg(long, env = "BS_SESSION_MEMORY", default_value_t = 4096)]
    pub session_memory: usize,

    /// How long the session memory of a picture whose room closed here (its last client left
    /// and the picture was released) is kept for the picture's next room on this broadcast
    /// service. `0s`: dropped with the room.
    #[arg(long, env = "BS_SESSION_LINGER", default_value = "10m", value_parser = parse_duration)]
    pub session_linger: Duration,

    /// How long SIGTERM waits for every picture's log to be handed to the picture service and
    /// made durable before exiting.
    #[arg(long, env = "BS_DRAIN_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub drain_timeout: Duration,

    /// Log as JSON lines (for production log pipelines).
    #[arg(long, env = "LOG_JSON", default_value_t = false)]
    pub log_json: bool,
}

/// The per-op limits of PROTOCOL.md §5.
#[derive(Clone, Debug, Args)]
pub struct LimitArgs {
    #[arg(long, env = "BS_MAX_PIXELS_POINTS", default_value_t = 65_536)]
    pub max_pixels_points: usize,
    #[arg(long, env = "BS_MAX_RECT_SIDE", default_value_t = 65_536)]
    pub max_rect_side: u32,
    #[arg(long, env = "BS_MAX_STROKE_POINTS", default_value_t = 4_096)]
    pub max_stroke_points: usize,
    #[arg(long, env = "BS_MAX_STROKE_WIDTH", default_value_t = 256)]
    pub max_stroke_width: u16,
    #[arg(long, env = "BS_MAX_PATCH_SIDE", default_value_t = 512)]
    pub max_patch_side: u32,
    #[arg(long, env = "BS_MAX_COORD", default_value_t = 1_000_000)]
    pub max_coord: i32,
}

impl From<&LimitArgs> for Limits {
    fn from(a: &LimitArgs) -> Self {
        Limits {
            max_pixels_points: a.max_pixels_points,
            max_rect_side: a.max_rect_side,
            max_stroke_points: a.max_stroke_points,
            max_stroke_width: a.max_stroke_width,
            max_patch_side: a.max_patch_side,
            max_coord: a.max_coord,
        }
    }
}

impl Config {
    /// The defaults, as if started with no flags and no environment (tests start from here).
    pub fn defaults() -> Self {
        Config::parse_from(["broadcast-service"])
    }

    /// `--advertise-url`, or `http://127.0.0.1:PORT` from the address actually listened on.
    pub fn advertise_url(&self, listening: SocketAddr) -> String {
        self.advertise_url.clone().unwrap_or_else(|| {
            let host = match listening.ip() {
                ip if ip.is_unspecified() => "127.0.0.1".to_string(),
                std::net::IpAddr::V6(ip) => format!("[{ip}]"),
                ip => ip.to_string(),
            };
            format!("http://{host}:{}", listening.port())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn flags_are_consistent() {
        Config::command().debug_assert();
        let config = Config::defaults();
        assert_eq!(config.listen.port(), 8080);
        assert_eq!(config.max_message_bytes, 2 * 1024 * 1024);
        assert_eq!(Limits::from(&config.limits), Limits::default());
        assert_eq!(config.pps.max_side, 4096);
    }
}
