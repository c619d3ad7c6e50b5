//! Configuration of the picture service as flags with environment-variable equivalents, in
//! two groups that both binaries flatten (`#[command(flatten)]`) into their own clap struct:
//!
//! - [`StoreArgs`]: where pictures and the write-ahead log live (`--data-dir`, `--store`,
//!   `--s3-*`, `--wal*`);
//! - [`TuningArgs`]: how the picture service works (flushes, snapshots, memory, retries,
//!   history, its shutdown deadline).
//!
//! The picture service's binary takes both; the broadcast service takes both in embedded mode
//! only (with `--pps-url` they would do nothing, so it refuses them). Every flag is prefixed
//! `PPS_` in the environment so the two binaries' variables never clash. The defaults are the
//! flags' own: [`PpsConfig::default`] and [`crate::store::s3::S3Options::default`] are read off
//! these definitions ([`flag_defaults`]), so the library and the command line cannot disagree.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use process::flags::{parse_duration, parse_on_off};

use crate::store::fs::FsStore;
use crate::store::{Store, StoreError};
use crate::wal::WalConfig;

pub use link::DEFAULT_MAX_SIDE;

/// Tuning of the picture service. Most fields are flags of [`TuningArgs`].
#[derive(Clone, Debug)]
pub struct PpsConfig {
    /// Slots of the priority job queue: how many CPU/IO jobs (decode, apply, encode) run at once.
    pub workers: usize,
    /// A dirty picture is flushed this long after it became dirty.
    pub flush_interval: Duration,
    /// A periodic flush waiting longer than this for a slot is served as high priority.
    pub aging: Duration,
    /// A snapshot request reuses the last PNG encoding while it is younger than this...
    pub snapshot_reuse: Duration,
    /// ... and at most this many updates behind the picture (a joiner applies those itself,
    /// so a stale encoding makes joins slow after bursts of drawing).
    pub snapshot_reuse_updates: u64,
    /// How long a snapshot waits for `min_seq` to arrive before failing with `Unavailable`.
    pub snapshot_wait: Duration,
    /// A clean picture with no activity for this long is dropped from memory.
    pub idle_unload: Duration,
    /// Largest accepted picture side, for creating pictures and decoding stored PNGs.
    pub max_side: u32,
    /// Pictures are loaded or created only while those in memory take less than this many
    /// raster bytes (`--max-loaded-bytes`).
    pub max_loaded_bytes: u64,
    /// Upper bound of the exponential backoff of failed loads and flushes.
    pub max_backoff: Duration,
    /// First delay of that backoff.
    pub min_backoff: Duration,
    /// Batches applied per job, so that a long queue does not hold a slot for too long.
    pub apply_chunk: usize,
    /// Capacity of the event channel; a receiver lagging further must resync.
    pub event_capacity: usize,
    /// Test knob: sleep this long per applied batch, to make PPS lag far behind.
    pub apply_delay: Option<Duration>,
    /// Test knob: sleep this long before decoding a loaded picture, to make a cold load slow.
    pub decode_delay: Option<Duration>,
    /// How broadcast services reach this service; its hash ([`protocol::placement::node_id`])
    /// is the owner id written into every picture it owns (docs/scaling.md).
    pub advertise_url: String,
    /// How long a sequencer whose connection broke keeps its lease, and how long a picture
    /// taken from an owner that did not release it waits for its last sequencer's claim.
    /// Zero in process (embedded mode): there is no other sequencer to wait for.
    pub lease_timeout: Duration,
    /// The write-ahead log ([`crate::wal`]): every accepted batch is on disk before it is
    /// confirmed. `None`: confirmed as soon as queued (a crash loses what storage lacks).
    pub wal: Option<WalConfig>,
    /// Clients per picture whose highest `client_seq` a lease grant carries
    /// ([`protocol::pps::Acquired::Granted::sessions`]).
    pub session_trail: usize,
    /// History (PROTOCOL.md §15): a flush stores a version when the newest stored one is at
    /// least this old (zero: every flush); a release always stores one.
    pub history_interval: Duration,
    /// Versions kept per picture (the oldest beyond are pruned); zero: no history at all.
    pub history_keep: usize,
}

impl Default for PpsConfig {
    /// The flags' defaults ([`TuningArgs`]), pictures up to [`DEFAULT_MAX_SIDE`], no
    /// write-ahead log, one node.
    fn default() -> Self {
        flag_defaults::<TuningArgs>().to_config(DEFAULT_MAX_SIDE, None)
    }
}

impl PpsConfig {
    /// This service's owner id ([`protocol::placement::node_id`] of its advertise URL).
    pub fn node(&self) -> u64 {
        protocol::placement::node_id(&self.advertise_url)
    }
}

/// Where the picture service keeps pictures and its write-ahead log.
#[derive(Clone, Debug, clap::Args)]
pub struct StoreArgs {
    /// Where the filesystem store keeps pictures (`{data_dir}/pictures/{id}.png`), and the
    /// default home of the write-ahead log.
    #[arg(long = "data-dir", env = "PPS_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// `file` (the data directory) or `s3://BUCKET/PREFIX`. S3 credentials, region and endpoint
    /// come from the usual AWS environment variables (`AWS_ENDPOINT_URL` for LocalStack).
    #[arg(long = "store", env = "PPS_STORE", default_value = "file")]
    pub store: String,
    /// S3 client settings (used with `--store s3://...`).
    #[command(flatten)]
    pub s3: crate::store::s3::S3Options,
    /// The write-ahead log: `on` (every accepted update is on disk before anyone sees it echoed,
    /// so a crash loses none) or `off` (a little less latency; a crash loses what storage
    /// lacked, up to `--flush-interval` of drawing). See docs/durability.md.
    #[arg(long = "wal", env = "PPS_WAL", default_value = "on", value_parser = parse_on_off, action = clap::ArgAction::Set)]
    pub wal: bool,
    /// Where the write-ahead log lives (default `{data_dir}/wal`). It must survive the process:
    /// with `--store s3://...`, put it on a persistent volume. One process per directory (it
    /// is locked).
    #[arg(long = "wal-dir", env = "PPS_WAL_DIR")]
    pub wal_dir: Option<PathBuf>,
    /// The most the log may hold of updates storage does not have yet, in bytes; beyond it,
    /// batches are refused (the broadcast service retries) until flushes free it.
    #[arg(long = "wal-max-bytes", env = "PPS_WAL_MAX_BYTES", default_value_t = 1 << 30)]
    pub wal_max_bytes: u64,
    /// The log is written in segment files of about this size; a segment is deleted once
    /// storage holds every update in it.
    #[arg(
        long = "wal-segment-bytes",
        env = "PPS_WAL_SEGMENT_BYTES",
        default_value_t = 16 << 20
    )]
    pub wal_segment_bytes: u64,
}

impl StoreArgs {
    /// The write-ahead log these flags ask for (`None`: `--wal off`).
    pub fn wal(&self) -> Option<WalConfig> {
        self.wal.then(|| WalConfig {
            dir: self
                .wal_dir
                .clone()
                .unwrap_or_else(|| self.data_dir.join("wal")),
            segment_bytes: self.wal_segment_bytes.max(1),
            max_bytes: self.wal_max_bytes,
        })
    }

    /// Opens the store that `--store` names.
    pub async fn open(&self) -> Result<Arc<dyn Store>, StoreError> {
        if self.store == "file" {
            return Ok(Arc::new(FsStore::new(self.data_dir.clone())));
        }
        if self.store.starts_with("s3://") {
            let store = crate::store::s3::S3Store::from_url_with(&self.store, &self.s3).await?;
            return Ok(Arc::new(store));
        }
        Err(StoreError::Refused(format!(
            "unknown store {:?}: expected `file` or `s3://BUCKET/PREFIX`",
            self.store
        )))
    }
}

/// How the picture service works: flushes, snapshots, memory, retries, history (see
/// [`PpsConfig`] for what each one tunes).
#[derive(Clone, Debug, clap::Args)]
pub struct TuningArgs {
    /// CPU/IO job slots (default: the number of cores).
    #[arg(long = "workers", env = "PPS_WORKERS")]
    pub workers: Option<usize>,
    /// How long a picture may stay dirty before a periodic flush (e.g. `5s`, `500ms`).
    #[arg(long = "flush-interval", env = "PPS_FLUSH_INTERVAL", default_value = "5s", value_parser = parse_duration)]
    pub flush_interval: Duration,
    /// A periodic flush waiting longer than this for a slot runs at high priority.
    #[arg(long = "flush-aging", env = "PPS_FLUSH_AGING", default_value = "2s", value_parser = parse_duration)]
    pub aging: Duration,
    /// Snapshots reuse the last PNG encoding while it is younger than this.
    #[arg(long = "snapshot-reuse", env = "PPS_SNAPSHOT_REUSE", default_value = "2s", value_parser = parse_duration)]
    pub snapshot_reuse: Duration,
    /// ... and at most this many updates behind the picture.
    #[arg(
        long = "snapshot-reuse-updates",
        env = "PPS_SNAPSHOT_REUSE_UPDATES",
        default_value_t = 256
    )]
    pub snapshot_reuse_updates: u64,
    /// How long a snapshot waits for its `min_seq` to arrive.
    #[arg(long = "snapshot-wait", env = "PPS_SNAPSHOT_WAIT", default_value = "10s", value_parser = parse_duration)]
    pub snapshot_wait: Duration,
    /// A clean picture idle for this long is dropped from memory.
    #[arg(long = "idle-unload", env = "PPS_IDLE_UNLOAD", default_value = "60s", value_parser = parse_duration)]
    pub idle_unload: Duration,
    /// Memory budget of the pictures in memory (`width*height*4` each, in bytes): a picture is
    /// loaded or created only while those in memory take less than this; otherwise its
    /// requests fail with `Unavailable` (joiners get 503 after the broadcast service's
    /// retries) until others are unloaded. Updates recovered from the write-ahead log are
    /// always loaded. Counted in `pps_loads_refused_total`.
    #[arg(long = "max-loaded-bytes", env = "PPS_MAX_LOADED_BYTES", default_value_t = 16 << 30)]
    pub max_loaded_bytes: u64,
    /// Cap of the retry backoff of failed loads and flushes.
    #[arg(long = "max-backoff", env = "PPS_MAX_BACKOFF", default_value = "5s", value_parser = parse_duration)]
    pub max_backoff: Duration,
    /// First delay of that backoff (it doubles up to `--max-backoff`).
    #[arg(long = "min-backoff", env = "PPS_MIN_BACKOFF", default_value = "100ms", value_parser = parse_duration)]
    pub min_backoff: Duration,
    /// Flush events buffered per subscriber (a broadcast service's connection, or the embedded
    /// broadcast service); one lagging further is closed and resyncs.
    #[arg(
        long = "event-capacity",
        env = "PPS_EVENT_CAPACITY",
        default_value_t = 4096
    )]
    pub event_capacity: usize,
    /// Batches applied per job.
    #[arg(long = "apply-chunk", env = "PPS_APPLY_CHUNK", default_value_t = 16)]
    pub apply_chunk: usize,
    /// Per picture, how many clients' highest `client_seq` the picture service keeps and hands
    /// to every new sequencer (so a session resuming after its broadcast service crashed is
    /// not drawn twice, PROTOCOL.md §11); about 40 bytes each. 0: none.
    #[arg(
        long = "session-trail",
        env = "PPS_SESSION_TRAIL",
        default_value_t = 4096
    )]
    pub session_trail: usize,
    /// History (PROTOCOL.md §15): a version of a changing picture is stored when the newest one
    /// is at least this old (checked at each flush; `0s`: at every flush), and one at release.
    #[arg(long = "history-interval", env = "PPS_HISTORY_INTERVAL", default_value = "10m", value_parser = parse_duration)]
    pub history_interval: Duration,
    /// Versions kept per picture; the oldest beyond are deleted. `0` turns history off.
    #[arg(long = "history-keep", env = "PPS_HISTORY_KEEP", default_value_t = 144)]
    pub history_keep: usize,
    /// How long SIGTERM waits for dirty pictures to reach storage.
    #[arg(long = "shutdown-timeout", env = "PPS_SHUTDOWN_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub shutdown_timeout: Duration,
}

impl TuningArgs {
    /// The picture service's configuration with this tuning, pictures up to `max_side` and the
    /// given write-ahead log. The fields no flag sets keep their one-node values (no lease
    /// timeout, advertised as `embedded`, no test knobs): the binaries set their own.
    pub fn to_config(&self, max_side: u32, wal: Option<WalConfig>) -> PpsConfig {
        PpsConfig {
            workers: self
                .workers
                .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()))
                .max(1),
            flush_interval: self.flush_interval,
            aging: self.aging,
            snapshot_reuse: self.snapshot_reuse,
            snapshot_reuse_updates: self.snapshot_reuse_updates,
            snapshot_wait: self.snapshot_wait,
            idle_unload: self.idle_unload,
            max_side,
            max_loaded_bytes: self.max_loaded_bytes,
            max_backoff: self.max_backoff,
            min_backoff: self.min_backoff,
            apply_chunk: self.apply_chunk.max(1),
            event_capacity: self.event_capacity.max(1),
            apply_delay: None,
            decode_delay: None,
            advertise_url: "embedded".to_string(),
            lease_timeout: Duration::ZERO,
            wal,
            session_trail: self.session_trail,
            history_interval: self.history_interval,
            history_keep: self.history_keep,
        }
    }
}

impl Default for crate::store::s3::S3Options {
    /// The flags' defaults.
    fn default() -> Self {
        flag_defaults()
    }
}

/// The defaults of a group of flags as written in its definition, whatever the environment
/// says (the `PPS_*` variables of this process are not read).
pub fn flag_defaults<T: clap::Args + clap::FromArgMatches>() -> T {
    let command = T::augment_args(clap::Command::new("defaults")).mut_args(|arg| arg.env(None));
    let parsed = command
        .try_get_matches_from(["defaults"])
        .and_then(|matches| T::from_arg_matches(&matches));
    match parsed {
        Ok(defaults) => defaults,
        // Every flag of these groups has a default or is optional: parsing no arguments cannot
        // fail, whatever the input, so this is a bug in a definition (the unit tests hit it).
        Err(error) => panic!("a flag group without defaults: {error}"),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        store: StoreArgs,
        #[command(flatten)]
        tuning: TuningArgs,
    }

    fn parse(args: &[&str]) -> Cli {
        Cli::try_parse_from(std::iter::once("pps").chain(args.iter().copied())).unwrap()
    }

    #[test]
    fn the_library_defaults_are_the_flag_defaults() {
        let cli = parse(&[]);
        let from_flags = cli.tuning.to_config(DEFAULT_MAX_SIDE, None);
        let defaults = PpsConfig::default();
        assert_eq!(format!("{from_flags:?}"), format!("{defaults:?}"));
        assert_eq!(defaults.flush_interval, Duration::from_secs(5));
        assert_eq!(defaults.max_side, 4096);
        assert_eq!(defaults.history_keep, 144);
        assert!(defaults.wal.is_none(), "the library default has no log");
        assert_eq!(
            format!("{:?}", cli.store.s3),
            format!("{:?}", crate::store::s3::S3Options::default())
        );
    }

    #[test]
    fn the_environment_does_not_change_the_library_defaults() {
        // `flag_defaults` strips the variables: a PPS_FLUSH_INTERVAL of this process reaches
        // the flags, never `PpsConfig::default()`.
        let command = <TuningArgs as clap::Args>::augment_args(clap::Command::new("t"));
        let env = command
            .get_arguments()
            .find(|a| a.get_id() == "flush_interval")
            .and_then(|a| a.get_env())
            .map(|e| e.to_string_lossy().into_owned());
        assert_eq!(env.as_deref(), Some("PPS_FLUSH_INTERVAL"));
        let defaults: TuningArgs = flag_defaults();
        assert_eq!(defaults.flush_interval, Duration::from_secs(5));
    }

    #[test]
    fn flags_override() {
        let cli = parse(&["--flush-interval", "250ms", "--workers", "3"]);
        let config = cli.tuning.to_config(100, None);
        assert_eq!(config.flush_interval, Duration::from_millis(250));
        assert_eq!(config.workers, 3);
        assert_eq!(config.max_side, 100);
    }

    #[test]
    fn the_write_ahead_log_is_on_by_default_under_the_data_dir() {
        let wal = parse(&["--data-dir", "/srv/raster"]).store.wal().unwrap();
        assert_eq!(wal.dir, std::path::Path::new("/srv/raster/wal"));
        assert_eq!((wal.max_bytes, wal.segment_bytes), (1 << 30, 16 << 20));
        assert!(parse(&["--wal", "off"]).store.wal().is_none());
        let wal = parse(&["--wal-dir", "/wal", "--wal-max-bytes", "1000"])
            .store
            .wal()
            .unwrap();
        assert_eq!(
            (wal.dir.as_path(), wal.max_bytes),
            (std::path::Path::new("/wal"), 1000)
        );
        let error = Cli::try_parse_from(["pps", "--wal", "maybe"])
            .err()
            .unwrap();
        assert!(
            error.to_string().contains("expected `on` or `off`"),
            "{error}"
        );
    }

    #[tokio::test]
    async fn stores_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let mut cli = parse(&[]);
        cli.store.data_dir = dir.path().to_path_buf();
        let store = cli.store.open().await.unwrap();
        assert_eq!(store.describe(), format!("file://{}", dir.path().display()));
        cli.store.store = "ftp://nope".to_string();
        assert!(matches!(
            cli.store.open().await,
            Err(StoreError::Refused(_))
        ));
    }
}
