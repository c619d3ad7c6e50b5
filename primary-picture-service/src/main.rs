//! The picture service as its own server (services mode): parses the configuration, sets up
//! logs and metrics, serves `GET /bs` until SIGTERM or ctrl-c, then flushes every dirty picture.

use std::net::SocketAddr;

use anyhow::Context;
use clap::Parser;
use primary_picture_service::config::{make_store, PpsArgs};
use primary_picture_service::process::{init_logs, shutdown_signal};
use primary_picture_service::server::{serve_with, ServeOptions};
use primary_picture_service::Pps;
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
    #[command(flatten)]
    pps: PpsArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    init_logs(config.log_json);
    let metrics = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .context("installing the metrics recorder")?;

    let store = make_store(&config.pps)
        .await
        .context("opening the picture store")?;
    let pps = Pps::new(config.pps.to_config(), store);
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    let options = ServeOptions {
        max_message_size: config.pps.max_message_size,
        metrics: Some(metrics),
    };
    serve_with(listener, pps.clone(), options, shutdown_signal()).await?;
    let summary = pps.shutdown(config.pps.shutdown_timeout).await;
    if summary.failed > 0 {
        tracing::error!(failed = summary.failed, "exiting with pictures not flushed");
    }
    Ok(())
}
