//! Configuration of the picture service as flags with environment-variable equivalents.
//!
//! [`PpsArgs`] is meant to be flattened (`#[command(flatten)]`) into a binary's own clap struct:
//! the PPS binary does so, and so does the broadcast service for its embedded mode. Every flag
//! is prefixed `PPS_` in the environment so the two never clash.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::service::PpsConfig;
use crate::store::fs::FsStore;
use crate::store::{Store, StoreError};
use crate::wal::WalConfig;

/// Picture service flags (see [`PpsConfig`] for what each one tunes).
#[derive(Clone, Debug, clap::Args)]
pub struct PpsArgs {
    /// Where the filesystem store keeps pictures (`{data_dir}/pictures/{id}.png`).
    #[arg(long = "data-dir", env = "PPS_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// `file` (the data directory) or `s3://BUCKET/PREFIX`. S3 credentials, region and endpoint
    /// come from the usual AWS environment variables (`AWS_ENDPOINT_URL` for LocalStack).
    #[arg(long = "store", env = "PPS_STORE", default_value = "file")]
    pub store: String,
    /// S3 client settings (used with `--store s3://...`).
    #[command(flatten)]
    pub s3: crate::store::s3::S3Options,
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
    /// Largest picture side accepted (creating pictures, decoding stored PNGs).
    #[arg(long = "max-side", env = "PPS_MAX_SIDE", default_value_t = 4096)]
    pub max_side: u32,
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
    /// Flush events buffered per subscriber; a connection lagging further is closed and resyncs.
    #[arg(
        long = "event-capacity",
        env = "PPS_EVENT_CAPACITY",
        default_value_t = 4096
    )]
    pub event_capacity: usize,
    /// Batches applied per job.
    #[arg(long = "apply-chunk", env = "PPS_APPLY_CHUNK", default_value_t = 16)]
    pub apply_chunk: usize,
    /// Largest WebSocket message between BS and PPS, in bytes (services mode).
    #[arg(long = "max-message-size", env = "PPS_MAX_MESSAGE_SIZE", default_value_t = 64 << 20)]
    pub max_message_size: usize,
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

impl PpsArgs {
    pub fn to_config(&self) -> PpsConfig {
        let defaults = PpsConfig::default();
        PpsConfig {
            workers: self.workers.unwrap_or(defaults.workers).max(1),
            flush_interval: self.flush_interval,
            aging: self.aging,
            snapshot_reuse: self.snapshot_reuse,
            snapshot_reuse_updates: self.snapshot_reuse_updates,
            snapshot_wait: self.snapshot_wait,
            idle_unload: self.idle_unload,
            max_side: self.max_side,
            max_loaded_bytes: self.max_loaded_bytes,
            max_backoff: self.max_backoff,
            min_backoff: self.min_backoff,
            event_capacity: self.event_capacity.max(1),
            apply_chunk: self.apply_chunk.max(1),
            session_trail: self.session_trail,
            history_interval: self.history_interval,
            history_keep: self.history_keep,
            wal: self.wal.then(|| WalConfig {
                dir: self
                    .wal_dir
                    .clone()
                    .unwrap_or_else(|| self.data_dir.join("wal")),
                segment_bytes: self.wal_segment_bytes.max(1),
                max_bytes: self.wal_max_bytes,
            }),
            ..defaults
        }
    }
}

/// Opens the store that `args.store` names.
pub async fn make_store(args: &PpsArgs) -> Result<Arc<dyn Store>, StoreError> {
    if args.store == "file" {
        return Ok(Arc::new(FsStore::new(args.data_dir.clone())));
    }
    if args.store.starts_with("s3://") {
        return open_s3(&args.store, &args.s3).await;
    }
    Err(StoreError::Refused(format!(
        "unknown store {:?}: expected `file` or `s3://BUCKET/PREFIX`",
        args.store
    )))
}

async fn open_s3(
    url: &str,
    options: &crate::store::s3::S3Options,
) -> Result<Arc<dyn Store>, StoreError> {
    let store = crate::store::s3::S3Store::from_url_with(url, options).await?;
    Ok(Arc::new(store))
}

/// Parses `on`/`off` (also `true`/`false`, `1`/`0`).
pub fn parse_on_off(text: &str) -> Result<bool, String> {
    match text.trim() {
        "on" | "true" | "1" => Ok(true),
        "off" | "false" | "0" => Ok(false),
        other => Err(format!("expected `on` or `off`, not {other:?}")),
    }
}

/// Parses `40us`, `500ms`, `5s`, `2m`, `1h` or a plain number of seconds (`1.5`).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("invalid duration {text:?}: expected e.g. 500ms, 5s, 2m"))?;
    let seconds = match unit.trim() {
        "us" | "µs" => value / 1_000_000.0,
        "ms" => value / 1000.0,
        "" | "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        other => return Err(format!("invalid duration unit {other:?} in {text:?}")),
    };
    Duration::try_from_secs_f64(seconds).map_err(|e| format!("invalid duration {text:?}: {e}"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        pps: PpsArgs,
    }

    #[test]
    fn flag_defaults_are_the_config_defaults() {
        let cli = Cli::try_parse_from(["pps"]).unwrap();
        let from_flags = cli.pps.to_config();
        let defaults = PpsConfig::default();
        assert_eq!(from_flags.workers, defaults.workers);
        assert_eq!(from_flags.flush_interval, defaults.flush_interval);
        assert_eq!(from_flags.aging, defaults.aging);
        assert_eq!(from_flags.snapshot_reuse, defaults.snapshot_reuse);
        assert_eq!(from_flags.snapshot_wait, defaults.snapshot_wait);
        assert_eq!(from_flags.idle_unload, defaults.idle_unload);
        assert_eq!(from_flags.max_side, defaults.max_side);
        assert_eq!(from_flags.max_backoff, defaults.max_backoff);
        assert_eq!(from_flags.min_backoff, defaults.min_backoff);
        assert_eq!(from_flags.apply_chunk, defaults.apply_chunk);
        assert_eq!(from_flags.event_capacity, defaults.event_capacity);
        assert_eq!(from_flags.apply_delay, None);
        assert_eq!(from_flags.history_interval, defaults.history_interval);
        assert_eq!(from_flags.history_keep, defaults.history_keep);
    }

    #[test]
    fn flags_override() {
        let cli =
            Cli::try_parse_from(["pps", "--flush-interval", "250ms", "--workers", "3"]).unwrap();
        let config = cli.pps.to_config();
        assert_eq!(config.flush_interval, Duration::from_millis(250));
        assert_eq!(config.workers, 3);
    }

    #[test]
    fn the_write_ahead_log_is_on_by_default_under_the_data_dir() {
        let cli = Cli::try_parse_from(["pps", "--data-dir", "/srv/raster"]).unwrap();
        let wal = cli.pps.to_config().wal.unwrap();
        assert_eq!(wal.dir, std::path::Path::new("/srv/raster/wal"));
        assert_eq!((wal.max_bytes, wal.segment_bytes), (1 << 30, 16 << 20));
        let cli = Cli::try_parse_from(["pps", "--wal", "off"]).unwrap();
        assert!(cli.pps.to_config().wal.is_none());
        let cli =
            Cli::try_parse_from(["pps", "--wal-dir", "/wal", "--wal-max-bytes", "1000"]).unwrap();
        let wal = cli.pps.to_config().wal.unwrap();
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
        let mut cli = Cli::try_parse_from(["pps"]).unwrap();
        cli.pps.data_dir = dir.path().to_path_buf();
        let store = make_store(&cli.pps).await.unwrap();
        assert_eq!(store.describe(), format!("file://{}", dir.path().display()));
        cli.pps.store = "ftp://nope".to_string();
        assert!(matches!(
            make_store(&cli.pps).await,
            Err(StoreError::Refused(_))
        ));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("40us"), Ok(Duration::from_micros(40)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("2"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("").is_err());
    }
}
