//! The broadcast service (BS): the front door of the collaborative raster service.
//!
//! Drawing clients connect over WebSocket (PROTOCOL.md); each picture has one sequencer
//! that orders every update, appends it to the picture's pending log and publishes it to
//! every client as one shared frame; the log is handed to the primary picture service (PPS),
//! which keeps the picture and stores it, and is trimmed once PPS reports it durable.
//!
//! # Layout
//!
//! - [`config`]: flags and their environment variables.
//! - `http`: routes (WebSocket upgrade, `snapshot.png`, the browser client, probes, metrics)
//!   and the HTTP/1.1 server under them (header-read timeout); the history endpoints
//!   (`history`, `history/{seq}.png`, PROTOCOL.md §15).
//! - `edge`: what every HTTP handler checks and answers alike (picture ids, read access,
//!   storage questions, error responses).
//! - `timelapse`: the history as an animated PNG, rendered and streamed a frame at a time.
//! - `auth`: tokens (JWTs granting `draw` or `view` on pictures), checked before an upgrade.
//! - `admin`: the admin API behind `--admin-token` (list, flush, close, moderation ops).
//! - `admission`: connection, picture and raster-byte limits checked before an upgrade.
//! - `origin`: which web pages may open a WebSocket here.
//! - `connection`: one client's reader (decode, limits, rate limit) feeding its room.
//! - `outbox`: one client's bounded, byte-accounted outbound queue and its batching writer.
//! - `pending`: the pending log as a plain state machine (the join rule lives here).
//! - `session`: what a sequencer remembers of client sessions (exactly-once resends), as a
//!   plain state machine.
//! - `room`: one picture's sequencer: turns messages into pending-log steps, joins, release.
//! - `registry`: the open pictures, and race-free creation and removal of rooms.
//! - `cluster`: the picture services, and which one a picture goes to (rendezvous hashing).
//! - `upstream` / `downstream`: the two ends of a relay link between broadcast services, for a
//!   picture another service sequences (docs/scaling.md).
//!
//! Two ways to run: [`run`] decides from the config (embedded PPS with a filesystem or S3
//! store, or remote picture services at `--pps-url`); [`run_with`] takes any
//! [`PictureService`]s.

#![warn(missing_docs)]

mod admin;
mod admission;
mod auth;
mod cluster;
pub mod config;
mod connection;
mod downstream;
mod edge;
mod frame;
mod http;
mod origin;
mod outbox;
mod pending;
mod registry;
mod room;
mod session;
mod socket;
mod timelapse;
mod upstream;
mod ws;

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use link::remote::RemotePps;
use link::PictureService;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;

pub use config::Config;

use cluster::{Cluster, Link};
use registry::Registry;
use room::RoomSettings;

/// What every request handler shares.
pub(crate) struct AppState {
    config: Config,
    limits: protocol::Limits,
    registry: Arc<Registry>,
    /// Limits on connections, clients per picture, open pictures and raster bytes.
    admission: Arc<admission::Admission>,
    /// `--allowed-origins`, for browsers' upgrades.
    origins: origin::AllowedOrigins,
    /// Renders `GET /metrics`; `None`: 404 (the binary installs the recorder, not this
    /// library: `process::install_metrics`).
    metrics: Option<PrometheusHandle>,
    /// Checks tokens (`--token-secret`, `--token-public-key`); `None`: tokens are off.
    tokens: Option<auth::Verifier>,
    /// Client ids are unique within this process and unlikely to repeat across restarts
    /// (they start at a random point), so a reconnecting client never mistakes another
    /// client's update in a late `Welcome` for its own.
    next_client_id: AtomicU64,
    /// Long-poll `updates` requests in progress, against `--max-followers`.
    followers: std::sync::atomic::AtomicU32,
    /// Timelapses being rendered (PROTOCOL.md §15): each holds a render thread and a few
    /// frames, so `--timelapse-concurrency` bounds them; over it a request gets 503.
    timelapses: Arc<tokio::sync::Semaphore>,
}

impl AppState {
    fn next_client_id(&self) -> u64 {
        self.next_client_id.fetch_add(1, Ordering::Relaxed)
    }
}

/// Runs the service until `shutdown` resolves, then drains: closes clients (1012), hands
/// every pending log to the picture service and waits until it is durable. `metrics` is the
/// recorder `GET /metrics` renders (`main` installs it: `process::install_metrics`); `None`
/// answers 404. Without `--pps-url`, embedded mode (which needs the default `embedded`
/// feature: without it, an error says to give `--pps-url`).
pub async fn run(
    config: Config,
    listener: TcpListener,
    metrics: Option<PrometheusHandle>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    if !config.link.pps_url.is_empty() {
        let link = &config.link;
        let options = link.remote_options();
        let links: Vec<(String, Arc<dyn PictureService>)> = link
            .pps_url
            .iter()
            .map(|url| {
                let pps: Arc<dyn PictureService> = RemotePps::connect_with(url, options.clone());
                (url.clone(), pps)
            })
            .collect();
        tracing::info!(picture_services = ?link.pps_url, "services mode");
        return run_with(config, listener, links, metrics, shutdown).await;
    }
    run_embedded(config, listener, metrics, shutdown).await
}

/// Embedded mode: the picture service in this process, on the store `--store` names.
#[cfg(feature = "embedded")]
async fn run_embedded(
    config: Config,
    listener: TcpListener,
    metrics: Option<PrometheusHandle>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    use anyhow::Context;
    use primary_picture_service::service::Pps;

    let store = config
        .store
        .open()
        .await
        .with_context(|| format!("opening store {}", config.store.store))?;
    tracing::info!(store = %store.describe(), "embedded mode: picture service in process");
    let deadline = config.tuning.shutdown_timeout;
    let advertise_url = config.advertise_url(listener.local_addr()?);
    let pps = Pps::open(
        primary_picture_service::PpsConfig {
            advertise_url,
            // One node: no sequencer elsewhere to wait for (the default, said here because it
            // matters).
            lease_timeout: std::time::Duration::ZERO,
            ..config.tuning.to_config(config.max_side, config.store.wal())
        },
        store,
    )
    .context("opening the write-ahead log")?;
    let links: Vec<(String, Arc<dyn PictureService>)> = vec![("embedded".to_string(), pps.clone())];
    let result = run_with(config, listener, links, metrics, shutdown).await;
    let summary = pps.shutdown(deadline).await;
    tracing::info!(?summary, "picture service stopped");
    result
}

/// Built without the `embedded` feature: only services mode.
#[cfg(not(feature = "embedded"))]
async fn run_embedded(
    _config: Config,
    _listener: TcpListener,
    _metrics: Option<PrometheusHandle>,
    _shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    anyhow::bail!(
        "this broadcast service was built without embedded mode (the `embedded` feature): \
         give the picture services with --pps-url"
    )
}

/// Runs the service with the given picture services (by URL, in `--pps-url` order) until
/// `shutdown` resolves, then drains; `metrics` as for [`run`].
pub async fn run_with(
    config: Config,
    listener: TcpListener,
    pps: Vec<(String, Arc<dyn PictureService>)>,
    metrics: Option<PrometheusHandle>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    anyhow::ensure!(
        (1..=config.max_side).contains(&config.default_side),
        "--default-side must be within 1..=--max-side ({})",
        config.max_side
    );
    anyhow::ensure!(!pps.is_empty(), "no picture service");
    config.validate().map_err(anyhow::Error::msg)?;
    let tokens = auth::Verifier::from_config(&config)?;
    if tokens.is_some() {
        tracing::info!("tokens required for joins and snapshots");
    }
    let advertise_url = config.advertise_url(listener.local_addr()?);
    let links = pps
        .into_iter()
        .map(|(url, pps)| Link { url, pps })
        .collect();
    let cluster = Arc::new(Cluster::new(advertise_url.clone(), links));
    let registry = Registry::new(cluster.clone(), RoomSettings::from_config(&config));
    for (link, pps) in cluster.links().iter().enumerate() {
        tokio::spawn(registry.clone().route_events(link, pps.pps.events()));
    }
    let state = Arc::new(AppState {
        limits: protocol::Limits::from(&config.limits),
        registry: registry.clone(),
        admission: admission::Admission::new(&config),
        origins: origin::AllowedOrigins::new(&config.allowed_origins),
        metrics,
        tokens,
        next_client_id: AtomicU64::new((rand::random::<u64>() >> 16) + 1),
        followers: std::sync::atomic::AtomicU32::new(0),
        timelapses: Arc::new(tokio::sync::Semaphore::new(
            config.timelapse_concurrency.max(1),
        )),
        config,
    });
    let addr = listener.local_addr()?;
    tracing::info!(%addr, %advertise_url, "broadcast service listening");
    let drain = registry.clone();
    let deadline = state.config.drain_timeout;
    let header_read_timeout = state.config.header_read_timeout;
    http::serve(
        listener,
        http::router(state),
        header_read_timeout,
        async move {
            shutdown.await;
            tracing::info!(
                "shutting down: closing clients and handing logs to the picture service"
            );
            // Upgraded WebSocket connections are not tracked by the HTTP server: close them here.
            tokio::spawn(async move { drain.shutdown(deadline).await });
        },
    )
    .await;
    let left = registry.shutdown(deadline).await;
    if left > 0 {
        tracing::error!(
            pictures = left,
            "shutdown deadline passed with pictures not yet durable"
        );
    } else {
        tracing::info!("every picture handed to storage");
    }
    Ok(())
}
