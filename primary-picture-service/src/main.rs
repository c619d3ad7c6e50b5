//! The picture service as its own server (services mode): parses the configuration, sets up
//! logs and metrics, serves `GET /bs` until SIGTERM or ctrl-c, then flushes every dirty picture.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use primary_picture_service::config::{StoreArgs, TuningArgs, DEFAULT_MAX_SIDE};
use primary_picture_service::server::{serve_with, ServeOptions};
use primary_picture_service::Pps;
use process::flags::parse_duration;
use process::{init_logs, install_metrics, shutdown_signal};
use tokio::net::TcpListener;

#[derive(Debug, Parser)]
#[command(
    name = "primary-picture-service",
    version,
    about = "The primary picture service"
)]
struct Config {
    /// Address to listen on for broadcast services, probes and metrics.
    #[arg(long, env = "PPS_LISTEN", default_value = "0.0.0.0:9090")]
    listen: SocketAddr,
    /// Log as JSON lines (for production log collectors).
    #[arg(long, env = "LOG_JSON", default_value_t = false)]
    log_json: bool,
    /// How broadcast services reach this service (`ws://pps-0.pps:9090/bs`): it signs the
    /// pictures it owns with it, and broadcast services follow it to the owner. Default:
    /// `ws://127.0.0.1:PORT/bs` (a cluster on one machine).
    #[arg(long, env = "PPS_ADVERTISE_URL")]
    advertise_url: Option<String>,
    /// How long a broadcast service whose connection broke keeps its sequencer leases (and may
    /// echo updates on its own), and how long a picture taken from a picture service that did
    /// not release it waits for its last sequencer (docs/scaling.md). `0s`: echoes always wait
    /// for this service, and leases change hands as soon as a connection breaks.
    #[arg(long, env = "PPS_LEASE_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    lease_timeout: Duration,
    /// A broadcast service's connection that delivers nothing for this long (they ping every
    /// second) is closed.
    #[arg(long, env = "PPS_LINK_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    link_timeout: Duration,
    /// Largest picture side accepted (creating pictures, decoding stored PNGs).
    #[arg(long, env = "PPS_MAX_SIDE", default_value_t = DEFAULT_MAX_SIDE)]
    max_side: u32,
    /// Largest WebSocket message from a broadcast service, in bytes.
    #[arg(long, env = "PPS_MAX_MESSAGE_SIZE", default_value_t = link::DEFAULT_MAX_MESSAGE_SIZE)]
    max_message_size: usize,
    #[command(flatten, next_help_heading = "Store")]
    store: StoreArgs,
    #[command(flatten, next_help_heading = "Picture tuning")]
    tuning: TuningArgs,
}

fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    // Outside the runtime: the trace exporter's blocking HTTP client must be neither built
    // nor dropped on a runtime thread. Dropped last, it exports the last spans.
    let _telemetry = init_logs(config.log_json, "primary-picture-service");
    tokio::runtime::Runtime::new()?.block_on(run(config))
}

async fn run(config: Config) -> anyhow::Result<()> {
    let metrics = install_metrics().map_err(anyhow::Error::msg)?;

    let store = config
        .store
        .open()
        .await
        .context("opening the picture store")?;
    let advertise_url = config.advertise_url.clone().unwrap_or_else(|| {
        let host = match config.listen.ip() {
            ip if ip.is_unspecified() => "127.0.0.1".to_string(),
            std::net::IpAddr::V6(ip) => format!("[{ip}]"),
            ip => ip.to_string(),
        };
        format!("ws://{host}:{}/bs", config.listen.port())
    });
    tracing::info!(%advertise_url, node = %protocol::snapshot::owner_text(protocol::placement::node_id(&advertise_url)), "advertising");
    let pps_config = primary_picture_service::PpsConfig {
        advertise_url,
        lease_timeout: config.lease_timeout,
        ..config.tuning.to_config(config.max_side, config.store.wal())
    };
    let pps = Pps::open(pps_config, store).context("opening the write-ahead log")?;
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    let options = ServeOptions {
        max_message_size: config.max_message_size,
        metrics: Some(metrics),
        silence_timeout: config.link_timeout,
    };
    serve_with(listener, pps.clone(), options, shutdown_signal()).await?;
    let summary = pps.shutdown(config.tuning.shutdown_timeout).await;
    if summary.failed > 0 {
        tracing::error!(failed = summary.failed, "exiting with pictures not flushed");
    }
    Ok(())
}
