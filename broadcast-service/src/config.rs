//! Configuration: every flag has an environment-variable equivalent, and the defaults run on
//! a laptop (embedded mode, filesystem store under `./data`).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use clap::{Args, Parser, ValueEnum};
use link::remote::RemoteOptions;
use link::DEFAULT_MAX_SIDE;
#[cfg(feature = "embedded")]
use primary_picture_service::config::{StoreArgs, TuningArgs};
use process::flags::{parse_bytes, parse_duration};
use protocol::Limits;

/// What to do with a client whose outbound queue is over its limit (PROTOCOL.md §3.5).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum SlowClientPolicy {
    /// Drop what is queued and bring it back in sync with a fresh `Welcome`.
    Resync,
    /// Close the connection with 1013 (try again later).
    Disconnect,
}

/// Everything the service is configured with: the binary's flags, each with its environment
/// variable (`--listen` or `BS_LISTEN`). clap refuses a bad value by its flag's name;
/// [`Config::validate`] checks what one flag alone cannot, and [`run_with`](crate::run_with)
/// (so [`run`](crate::run) too) refuses a config that fails it or whose `default_side` is not
/// within `1..=max_side`. [`Config::defaults`] is a start with no flags.
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

    /// How other broadcast services reach this one (`http://bs-1.example:8080`): relays of a
    /// picture this service sequences connect to it. Default: `http://127.0.0.1:PORT` (a
    /// cluster on one machine).
    #[arg(long, env = "BS_ADVERTISE_URL")]
    pub advertise_url: Option<String>,

    /// Largest picture side accepted (`?width=`, `?height=`, `--default-side`); in embedded
    /// mode also the picture service's (creating pictures, decoding stored PNGs).
    #[arg(long, env = "BS_MAX_SIDE", default_value_t = DEFAULT_MAX_SIDE)]
    pub max_side: u32,

    /// Size of a picture created without `?width=&height=`.
    #[arg(long, env = "BS_DEFAULT_SIDE", default_value_t = 1024)]
    pub default_side: u32,

    /// Largest message a client may send, in bytes (bigger: close 1009).
    #[arg(long, env = "BS_MAX_MESSAGE_BYTES", default_value_t = 2 * 1024 * 1024)]
    pub max_message_bytes: usize,

    /// The per-op limits (PROTOCOL.md §5), checked on every `Draw` before it is sequenced.
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
    /// `--tick`; 256 clients get 10.75 ms; BENCHMARKS.md has the measured trade-off). `0s`:
    /// every room uses `--tick`.
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

    /// Timelapse (PROTOCOL.md §15): the most frames one animation may have (`?frames=` is
    /// capped to it; the history is sampled evenly down to it).
    #[arg(long, env = "BS_TIMELAPSE_MAX_FRAMES", default_value_t = 300)]
    pub timelapse_max_frames: u32,

    /// Timelapse: the widest animation (`?width=`, in pixels), and the width of one asked
    /// without `?width=` of a picture wider than this.
    #[arg(long, env = "BS_TIMELAPSE_MAX_WIDTH", default_value_t = 1024)]
    pub timelapse_max_width: u32,

    /// Timelapse: how many may be rendered at once (each takes a thread and a few decoded
    /// frames); one more is answered 503 with `Retry-After`.
    #[arg(long, env = "BS_TIMELAPSE_CONCURRENCY", default_value_t = 2)]
    pub timelapse_concurrency: usize,

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

    /// `snapshot.png` (PROTOCOL.md §16): how long a cache (a CDN, a browser) may serve a copy
    /// without asking again, as `Cache-Control: max-age`. `0s` (the default): every use is
    /// revalidated (`no-cache`), which costs a `304` while the picture has not changed; a longer
    /// age spares those requests but a cached copy may then lack up to that long of drawing.
    #[arg(long, env = "BS_SNAPSHOT_MAX_AGE", default_value = "0s", value_parser = parse_duration)]
    pub snapshot_max_age: Duration,

    /// Long-poll follow (`GET /pictures/{id}/updates`, PROTOCOL.md §16): the longest `wait` a
    /// request may ask for; a longer one is cut to it. Keep it below the idle timeouts of the
    /// proxies in front (a request that waits sends nothing until it answers).
    #[arg(long, env = "BS_FOLLOW_MAX_WAIT", default_value = "30s", value_parser = parse_duration)]
    pub follow_max_wait: Duration,

    /// Long-poll follow: most `updates` requests this service answers at once (waiting or not);
    /// one beyond it is answered 503 with `Retry-After`. Each costs a few hundred bytes in its
    /// picture's room besides its HTTP connection.
    #[arg(long, env = "BS_MAX_FOLLOWERS", default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_followers: u32,

    /// Long-poll follow: how long a picture's room stays open on this service after its last
    /// `updates` request when no WebSocket client holds it (so a follower's next request finds
    /// the log it continues from). `updates` opens the room of a picture that is not open here,
    /// as a joining viewer would.
    #[arg(long, env = "BS_FOLLOW_LINGER", default_value = "30s", value_parser = parse_duration)]
    pub follow_linger: Duration,

    /// How long SIGTERM waits for every picture's log to be handed to the picture service and
    /// made durable before exiting.
    #[arg(long, env = "BS_DRAIN_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub drain_timeout: Duration,

    /// An HTTP request whose headers have not all arrived this long after the connection
    /// became ready for it (a new connection, or an idle kept-alive one) is answered by closing
    /// the connection: a client trickling its headers (slowloris) holds a socket this long at
    /// most. Idle kept-alive HTTP connections are closed after it too.
    #[arg(long, visible_alias = "header-timeout", env = "BS_HEADER_READ_TIMEOUT", default_value = "10s", value_parser = positive_duration)]
    pub header_read_timeout: Duration,

    /// How often the service sends each WebSocket client a ping (the browser and the Rust client
    /// answer by themselves); an answer, or any other frame, shows the client is alive.
    #[arg(long, env = "BS_WS_PING_INTERVAL", default_value = "20s", value_parser = positive_duration)]
    pub ws_ping_interval: Duration,

    /// A WebSocket client from which nothing (no pong, no frame) has arrived for this long is
    /// closed with 1001. Must be longer than `--ws-ping-interval`.
    #[arg(long, visible_alias = "idle-timeout", env = "BS_WS_IDLE_TIMEOUT", default_value = "60s", value_parser = positive_duration)]
    pub ws_idle_timeout: Duration,

    /// Most WebSocket connections (clients and relay links) this service holds at once; an
    /// upgrade beyond it is answered 503 with `Retry-After`.
    #[arg(long, env = "BS_MAX_CONNECTIONS", default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,

    /// Most client WebSocket connections from one IP address; an upgrade beyond it is answered
    /// 429 with `Retry-After`. The address is the TCP peer's, or the client's from
    /// `X-Forwarded-For` when the peer is one of `--trust-forwarded-for`.
    #[arg(long, env = "BS_MAX_CONNECTIONS_PER_IP", default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections_per_ip: u32,

    /// The reverse proxies (IP addresses, comma-separated) whose `X-Forwarded-For` is believed:
    /// a connection from one of them counts towards the address it names (the last one in the
    /// header that is not itself a listed proxy). Default: none, every connection counts
    /// towards its TCP peer.
    #[arg(long, env = "BS_TRUST_FORWARDED_FOR", value_delimiter = ',')]
    pub trust_forwarded_for: Vec<IpAddr>,

    /// Web pages of other origins (`https://app.example.com`, comma-separated; `*` for any)
    /// allowed to open WebSockets here, besides the service's own pages (an `Origin` whose host
    /// and port are the request's `Host`). A browser's upgrade from any other origin is
    /// answered 403. Requests without an `Origin` (programs, the CLI) are not affected.
    #[arg(long, env = "BS_ALLOWED_ORIGINS", value_delimiter = ',', value_parser = crate::origin::parse_origin)]
    pub allowed_origins: Vec<String>,

    /// Most clients of one picture on this service; a join beyond it is answered 503 with
    /// `Retry-After`.
    #[arg(long, env = "BS_MAX_CLIENTS_PER_PICTURE", default_value_t = 1_000, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_clients_per_picture: u32,

    /// Most pictures with clients on this service at once; a join that would open one more is
    /// answered 503 with `Retry-After`.
    #[arg(long, env = "BS_MAX_OPEN_PICTURES", default_value_t = 1_000, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_open_pictures: u32,

    /// Most raster bytes (width * height * 4, summed over the pictures with clients on this
    /// service); a join that would open a picture beyond it is answered 503 with `Retry-After`
    /// (an existing picture bigger than its joiner asked for: `Error{503}` and close 1013 after
    /// the `Welcome`). Accepts a plain number of bytes or a suffix `K`, `M`, `G` (powers of 1024).
    #[arg(long, env = "BS_MAX_RASTER_BYTES", default_value = "4G", value_parser = parse_bytes)]
    pub max_raster_bytes: u64,

    /// Most pictures one IP address may have opened on this service at once (a picture counts
    /// towards the address of the client that opened it, until it closes); a join that would
    /// open one more is answered 429 with `Retry-After`.
    #[arg(long, env = "BS_MAX_OPEN_PICTURES_PER_IP", default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_open_pictures_per_ip: u32,

    /// Most raster bytes of the pictures one IP address opened (as `--max-open-pictures-per-ip`
    /// counts them): one address cannot take the whole `--max-raster-bytes`. Over it: 429
    /// with `Retry-After` (a picture found bigger than its opener asked for: `Error{429}` and
    /// close 1013). Same suffixes as `--max-raster-bytes`.
    #[arg(long, env = "BS_MAX_RASTER_BYTES_PER_IP", default_value = "1G", value_parser = parse_bytes)]
    pub max_raster_bytes_per_ip: u64,

    /// Tokens (PROTOCOL.md §13): the shared secret of HS256-signed JWTs. When set (or
    /// `--token-public-key`), every WebSocket join and `snapshot.png` needs a token
    /// (`?token=` or `Authorization: Bearer`) granting the picture; `view` tokens cannot draw.
    /// Absent (and no public key): no token is asked for.
    #[arg(
        long,
        env = "BS_TOKEN_SECRET",
        hide_env_values = true,
        conflicts_with = "token_public_key"
    )]
    pub token_secret: Option<String>,

    /// Tokens (PROTOCOL.md §13) signed with RS256 or ES256: the PEM file of the issuer's public
    /// key (`-----BEGIN PUBLIC KEY-----`, RSA or EC P-256). Like `--token-secret`, it makes
    /// every join and `snapshot.png` need a token.
    #[arg(long, env = "BS_TOKEN_PUBLIC_KEY")]
    pub token_public_key: Option<std::path::PathBuf>,

    /// The admin API (`/admin/...`, PROTOCOL.md §14): the bearer token it asks for
    /// (`Authorization: Bearer TOKEN`), at least 16 characters. Absent: the admin API is off
    /// (404).
    #[arg(long, env = "BS_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,

    /// Log as JSON lines (for production log pipelines).
    #[arg(long, env = "LOG_JSON", default_value_t = false)]
    pub log_json: bool,

    // The groups last: a help heading applies to every flag after it.
    /// Services mode: the picture services and the link to them.
    #[command(flatten, next_help_heading = "Picture services (services mode)")]
    pub link: LinkArgs,

    /// Embedded mode: where the in-process picture service keeps pictures and its log.
    #[cfg(feature = "embedded")]
    #[command(flatten, next_help_heading = "Store (embedded mode)")]
    pub store: StoreArgs,

    /// Embedded mode: how the in-process picture service works.
    #[cfg(feature = "embedded")]
    #[command(flatten, next_help_heading = "Picture tuning (embedded mode)")]
    pub tuning: TuningArgs,
}

/// Services mode: which picture services hold the pictures, and how the link to each behaves.
/// Every flag but `--pps-url` needs `--pps-url`; with it, the embedded mode's store and tuning
/// flags are refused (each picture service has its own).
#[derive(Clone, Debug, Args)]
pub struct LinkArgs {
    /// The picture services (`ws://host:9090/bs`), comma-separated; each picture goes to one
    /// of them by rendezvous hashing (docs/scaling.md). Every broadcast service of a cluster
    /// must list the same URLs. Absent: embedded mode, the picture service runs in this
    /// process.
    #[arg(long, env = "BS_PPS_URL", value_delimiter = ',')]
    #[cfg_attr(
        feature = "embedded",
        // Each flag by name, not the groups: clap leaves the group of a struct with a flattened
        // field (StoreArgs) empty, and a group conflict would name every member, not the one
        // given. A unit test checks that this names every flag of the three groups.
        arg(conflicts_with_all = [
            // StoreArgs
            "data_dir", "store", "wal", "wal_dir", "wal_max_bytes", "wal_segment_bytes",
            // S3Options
            "force_path_style", "max_attempts", "connect_timeout_ms", "operation_timeout_ms",
            "max_object_bytes",
            // TuningArgs
            "workers", "flush_interval", "aging", "snapshot_reuse", "snapshot_reuse_updates",
            "snapshot_wait", "idle_unload", "max_loaded_bytes", "max_backoff", "min_backoff",
            "event_capacity", "apply_chunk", "session_trail", "history_interval",
            "history_keep", "shutdown_timeout",
        ])
    )]
    pub pps_url: Vec<String>,

    /// How often the link to each picture service is pinged (the answers keep this service's
    /// leases confirmed).
    #[arg(long, env = "BS_PPS_PING_INTERVAL", default_value = "1s", value_parser = parse_duration, requires = "pps_url")]
    pub pps_ping_interval: Duration,

    /// A picture service silent this long (or that takes this long to accept a connection) is
    /// considered unreachable, and its pictures go to the next one. Also how long a relay
    /// link to another broadcast service may take to connect.
    #[arg(long, env = "BS_PPS_TIMEOUT", default_value = "3s", value_parser = parse_duration, requires = "pps_url")]
    pub pps_timeout: Duration,

    /// First delay before reconnecting a lost link (it doubles up to `--pps-max-backoff`,
    /// give or take a quarter).
    #[arg(long, env = "BS_PPS_MIN_BACKOFF", default_value = "100ms", value_parser = parse_duration, requires = "pps_url")]
    pub pps_min_backoff: Duration,

    /// Longest delay between reconnection attempts of a link.
    #[arg(long, env = "BS_PPS_MAX_BACKOFF", default_value = "5s", value_parser = parse_duration, requires = "pps_url")]
    pub pps_max_backoff: Duration,

    /// Events (flush reports) of one picture service buffered for this service; a longer lag
    /// is treated as a reconnection (every picture's log is sent again).
    #[arg(long, env = "BS_PPS_EVENT_CAPACITY", default_value_t = 4096, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..), requires = "pps_url")]
    pub pps_event_capacity: usize,

    /// Largest WebSocket message accepted on a link, in bytes: from a picture service (a
    /// snapshot), and between broadcast services relaying a picture.
    #[arg(long, env = "BS_PPS_MAX_MESSAGE_SIZE", default_value_t = link::DEFAULT_MAX_MESSAGE_SIZE, requires = "pps_url")]
    pub pps_max_message_size: usize,
}

impl LinkArgs {
    /// The settings of the link to each picture service.
    pub fn remote_options(&self) -> RemoteOptions {
        RemoteOptions {
            max_message_size: self.pps_max_message_size,
            min_backoff: self.pps_min_backoff,
            max_backoff: self.pps_max_backoff,
            event_capacity: self.pps_event_capacity.max(1),
            ping_interval: self.pps_ping_interval,
            timeout: self.pps_timeout,
        }
    }
}

/// The per-op limits of PROTOCOL.md §5. A client's `Draw` that breaks one is answered
/// `Rejected` (§3.4) and never sequenced; a draw relayed from another broadcast service (§9)
/// that breaks one is dropped and logged; an admin clear that breaks one is answered 400 (§14).
#[derive(Clone, Debug, Args)]
pub struct LimitArgs {
    /// Most points in one `Pixels` op.
    #[arg(long, env = "BS_MAX_PIXELS_POINTS", default_value_t = 65_536)]
    pub max_pixels_points: usize,
    /// Largest `w` and `h` of a `Rect`, in pixels.
    #[arg(long, env = "BS_MAX_RECT_SIDE", default_value_t = 65_536)]
    pub max_rect_side: u32,
    /// Most points in one `Stroke`.
    #[arg(long, env = "BS_MAX_STROKE_POINTS", default_value_t = 4_096)]
    pub max_stroke_points: usize,
    /// Widest `Stroke`: its `width`, the pen's diameter in pixels (a width of 0 is always
    /// rejected).
    #[arg(long, env = "BS_MAX_STROKE_WIDTH", default_value_t = 256)]
    pub max_stroke_width: u16,
    /// Largest `w` and `h` of a `Patch`, in pixels; the admin API's revert draws tiles of at
    /// most this side (and at most 256).
    #[arg(long, env = "BS_MAX_PATCH_SIDE", default_value_t = 512)]
    pub max_patch_side: u32,
    /// Largest absolute value of every coordinate an op carries (`x`, `y`, each point).
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

/// A duration that is more than zero.
fn positive_duration(text: &str) -> Result<Duration, String> {
    let duration = parse_duration(text)?;
    if duration.is_zero() {
        return Err(format!(
            "{text:?} is zero: give a positive duration, e.g. 10s"
        ));
    }
    Ok(duration)
}

impl Config {
    /// Checks what one flag alone cannot.
    pub fn validate(&self) -> Result<(), String> {
        if self.admin_token.as_ref().is_some_and(|t| t.len() < 16) {
            return Err(
                "--admin-token must be at least 16 characters (e.g. `openssl rand -hex 32`)"
                    .to_string(),
            );
        }
        if self.ws_idle_timeout <= self.ws_ping_interval {
            return Err(format!(
                "--ws-idle-timeout ({:?}) must be longer than --ws-ping-interval ({:?}): a client answering every ping would be closed",
                self.ws_idle_timeout, self.ws_ping_interval
            ));
        }
        Ok(())
    }

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
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    /// The config the binary would parse from `args`, or clap's message.
    fn parse(args: &[&str]) -> Result<Config, String> {
        let mut argv = vec!["broadcast-service"];
        argv.extend_from_slice(args);
        Config::try_parse_from(argv).map_err(|e| e.to_string())
    }

    #[test]
    fn flags_are_consistent() {
        Config::command().debug_assert();
        // `--help` shows each group under its heading and nothing else there: a heading applies
        // to every flag after it, so the groups come last.
        let command = Config::command();
        let heading = |long: &str| {
            command
                .get_arguments()
                .find(|a| a.get_long() == Some(long))
                .map(|a| a.get_help_heading().map(str::to_string))
        };
        assert_eq!(heading("tick"), Some(None));
        assert_eq!(heading("log-json"), Some(None));
        assert_eq!(heading("max-side"), Some(None));
        assert_eq!(
            heading("pps-timeout"),
            Some(Some("Picture services (services mode)".to_string()))
        );
        #[cfg(feature = "embedded")]
        {
            assert_eq!(
                heading("wal-dir"),
                Some(Some("Store (embedded mode)".to_string()))
            );
            assert_eq!(
                heading("flush-interval"),
                Some(Some("Picture tuning (embedded mode)".to_string()))
            );
        }
        let config = Config::defaults();
        assert_eq!(config.listen.port(), 8080);
        assert_eq!(config.max_message_bytes, 2 * 1024 * 1024);
        assert_eq!(Limits::from(&config.limits), Limits::default());
        assert_eq!(config.max_side, 4096);
        assert_eq!(config.max_raster_bytes, 4 << 30);
        // The link's library defaults are the flags' (what `RemotePps::connect` uses).
        let services = Config::parse_from(["broadcast-service", "--pps-url", "ws://pps:9090/bs"]);
        assert_eq!(
            format!("{:?}", services.link.remote_options()),
            format!("{:?}", RemoteOptions::default())
        );
        assert!(config.validate().is_ok());
    }

    /// A flag that would do nothing in the mode the service runs in is refused (issue 15:
    /// honest configuration): the embedded picture service's store and tuning with
    /// `--pps-url`, the link's settings without it.
    #[test]
    fn flags_of_the_other_mode_are_refused() {
        let url = "ws://127.0.0.1:9090/bs";
        // Every flag of the embedded picture service's groups, with a value it accepts.
        #[cfg(feature = "embedded")]
        for group in [
            StoreArgs::augment_args(clap::Command::new("store")),
            TuningArgs::augment_args(clap::Command::new("tuning")),
        ] {
            for arg in group.get_arguments() {
                let flag = format!("--{}", arg.get_long().unwrap_or_default());
                let value = arg
                    .get_default_values()
                    .first()
                    .map_or("1".to_string(), |v| v.to_string_lossy().into_owned());
                let mut embedded_only = vec![flag.as_str()];
                if arg.get_action().takes_values() {
                    embedded_only.push(&value);
                }
                assert!(parse(&embedded_only).is_ok(), "{embedded_only:?} refused");
                let mut args = vec!["--pps-url", url];
                args.extend_from_slice(&embedded_only);
                let error = parse(&args).expect_err(&format!("{args:?} accepted"));
                assert!(
                    error.contains(&flag) && error.contains("--pps-url"),
                    "{args:?}: {error}"
                );
            }
        }
        for link_only in [
            &["--pps-ping-interval", "2s"][..],
            &["--pps-timeout", "2s"],
            &["--pps-min-backoff", "10ms"],
            &["--pps-max-backoff", "1s"],
            &["--pps-event-capacity", "10"],
            &["--pps-max-message-size", "1000"],
        ] {
            let error = parse(link_only).expect_err(&format!("{link_only:?} accepted"));
            assert!(error.contains("--pps-url"), "{link_only:?}: {error}");
            let mut args = vec!["--pps-url", url];
            args.extend_from_slice(link_only);
            assert!(parse(&args).is_ok(), "{args:?} refused");
        }
        let config = parse(&[
            "--pps-url",
            url,
            "--pps-event-capacity",
            "7",
            "--max-side",
            "100",
        ])
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(config.link.pps_event_capacity, 7);
        assert_eq!(config.max_side, 100);
        assert!(parse(&["--pps-url", url, "--pps-event-capacity", "0"]).is_err());
    }

    #[test]
    fn bad_limits_are_refused_clearly() {
        for bad in [
            &["--max-connections", "0"][..],
            &["--max-connections-per-ip=-1"],
            &["--max-clients-per-picture", "lots"],
            &["--max-open-pictures", "0"],
            &["--max-followers", "0"],
            &["--follow-max-wait", "forever"],
            &["--max-raster-bytes", "0"],
            &["--max-raster-bytes", "4X"],
            &["--header-read-timeout", "0s"],
            &["--ws-ping-interval", "soon"],
            &["--trust-forwarded-for", "proxy.example"],
            &["--allowed-origins", "app.example.com"],
        ] {
            let error = parse(bad).expect_err(&format!("{bad:?} accepted"));
            let flag = bad[0].split('=').next().unwrap_or_default();
            assert!(error.contains(flag), "{bad:?}: {error}");
        }
        let config = parse(&["--ws-ping-interval", "30s", "--ws-idle-timeout", "30s"])
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(config.validate().unwrap_err().contains("--ws-idle-timeout"));
        let config =
            parse(&["--trust-forwarded-for", "10.0.0.1,::1"]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(config.trust_forwarded_for.len(), 2);
    }
}
