//! The services-mode server: broadcast services connect to `GET /bs` (a WebSocket carrying
//! bincode [`ToPps`] requests and [`FromPps`] replies and events), plus `GET /livez` (alias
//! `GET /healthz`), `GET /readyz` and `GET /metrics` for Kubernetes and Prometheus.
//!
//! Requests of one connection are handed to the [`Pps`] in arrival order, in the read loop
//! itself (enqueueing does not block), so batches of a picture keep their order; each reply is
//! awaited by its own task and sent back through the connection's writer task.
//!
//! Each connection is a [`Session`]: the leases its broadcast service acquires are held over
//! it. The first message says who this service is (`FromPps::Hello`); a connection silent for
//! `silence_timeout` (the broadcast service pings every second or so) is closed, and its
//! leases run out one lease timeout after it was last heard.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use futures::future::BoxFuture;
use futures::{SinkExt, StreamExt};
use metrics_exporter_prometheus::PrometheusHandle;
use protocol::pps::{FromPps, PpsError, PpsReply, PpsRequest, ToPps};
use tokio::net::TcpListener;
use tokio::sync::{broadcast, mpsc, watch};

use crate::service::{Pps, Session};
use link::{PictureService, PpsEvent};

/// Server settings beyond the listener.
#[derive(Clone)]
pub struct ServeOptions {
    /// Largest WebSocket message accepted from a broadcast service.
    pub max_message_size: usize,
    /// Renders `GET /metrics`; `None` answers 404 (the binary installs the recorder, not the
    /// library, so tests can run many servers in one process).
    pub metrics: Option<PrometheusHandle>,
    /// A broadcast service's connection that delivers nothing for this long is closed.
    pub silence_timeout: Duration,
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self {
            max_message_size: link::DEFAULT_MAX_MESSAGE_SIZE,
            metrics: None,
            silence_timeout: Duration::from_secs(5),
        }
    }
}

#[derive(Clone)]
struct AppState {
    pps: Arc<Pps>,
    options: ServeOptions,
    /// Turns true when the server shuts down, so WebSocket connections (which graceful
    /// shutdown does not track once upgraded) close too.
    closing: watch::Receiver<bool>,
}

/// Serves until `shutdown` resolves, with default [`ServeOptions`].
pub async fn serve(
    listener: TcpListener,
    pps: Arc<Pps>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    serve_with(listener, pps, ServeOptions::default(), shutdown).await
}

/// Serves until `shutdown` resolves; then closes every broadcast-service connection and returns.
/// It does not shut the [`Pps`] down: the caller does that (it may want to flush first).
pub async fn serve_with(
    listener: TcpListener,
    pps: Arc<Pps>,
    options: ServeOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let (closing_tx, closing) = watch::channel(false);
    let state = AppState {
        pps,
        options,
        closing,
    };
    let app = Router::new()
        .route("/bs", get(bs_socket))
        // Liveness; `/healthz` is its older name, kept.
        .route("/livez", get(|| async { "ok" }))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_page))
        .with_state(state);
    tracing::info!(addr = ?listener.local_addr().ok(), "picture service listening");
    // Replies and flush events are small: no Nagle delay on broadcast-service connections.
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        if let Err(error) = tcp.set_nodelay(true) {
            tracing::debug!(%error, "cannot set TCP_NODELAY");
        }
    });
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            shutdown.await;
            let _ = closing_tx.send(true);
        })
        .await?;
    Ok(())
}

async fn readyz(State(state): State<AppState>) -> Response {
    if state.pps.is_ready() {
        (StatusCode::OK, "ready").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "shutting down").into_response()
    }
}

async fn metrics_page(State(state): State<AppState>) -> Response {
    match &state.options.metrics {
        Some(handle) => handle.render().into_response(),
        None => (StatusCode::NOT_FOUND, "metrics are not enabled").into_response(),
    }
}

async fn bs_socket(State(state): State<AppState>, ws: WebSocketUpgrade) -> Response {
    let max = state.options.max_message_size;
    ws.max_message_size(max)
        .max_frame_size(max)
        .on_upgrade(move |socket| connection(socket, state))
}

fn frame(msg: &FromPps) -> Message {
    Message::Binary(Bytes::from(protocol::codec::encode(msg)))
}

async fn connection(socket: WebSocket, state: AppState) {
    metrics::gauge!("pps_bs_connections").increment(1.0);
    tracing::info!("broadcast service connected");
    let session = Arc::new(state.pps.session());
    let (mut sink, mut stream) = socket.split();
    let (out, mut out_rx) = mpsc::unbounded_channel::<Message>();
    let config = state.pps.config();
    let _ = out.send(frame(&FromPps::Hello {
        node: config.node(),
        url: config.advertise_url.clone(),
        lease_timeout_ms: config.lease_timeout.as_millis() as u64,
    }));
    let writer = tokio::spawn(async move {
        while let Some(msg) = out_rx.recv().await {
            if sink.send(msg).await.is_err() {
                break;
            }
        }
        let _ = sink.close().await;
    });
    let mut events = tokio::spawn(forward_events(state.pps.events(), out.clone()));
    let mut closing = state.closing.clone();
    let silence = state.options.silence_timeout;
    loop {
        let msg = tokio::select! {
            msg = tokio::time::timeout(silence, stream.next()) => match msg {
                Ok(msg) => msg,
                Err(_) => {
                    tracing::warn!(silent_ms = silence.as_millis() as u64, "broadcast service silent; closing its connection");
                    break;
                }
            },
            _ = closing.changed() => break,
            _ = &mut events => {
                tracing::warn!("event forwarding stopped (lagged); closing so the broadcast service resyncs");
                break;
            }
        };
        session.heard();
        let bytes = match msg {
            Some(Ok(Message::Binary(bytes))) => bytes,
            Some(Ok(Message::Close(_))) | None => break,
            Some(Ok(_)) => continue,
            Some(Err(error)) => {
                tracing::debug!(%error, "broadcast service connection failed");
                break;
            }
        };
        let ToPps::Request { id, request } = match protocol::codec::decode::<ToPps>(&bytes) {
            Ok(request) => request,
            Err(error) => {
                tracing::warn!(%error, "undecodable request from broadcast service; closing");
                break;
            }
        };
        // Enqueue now (keeps arrival order), await the reply elsewhere.
        let reply = dispatch(&session, request);
        let out = out.clone();
        tokio::spawn(async move {
            let reply = reply.await;
            let _ = out.send(frame(&FromPps::Reply { id, reply }));
        });
    }
    events.abort();
    drop(out);
    // Its leases start running out (see `Session`).
    drop(session);
    // Replies still being computed would keep the writer alive; the peer is gone or we are
    // closing, so stop it now.
    writer.abort();
    metrics::gauge!("pps_bs_connections").decrement(1.0);
    tracing::info!("broadcast service disconnected");
}

fn dispatch(pps: &Session, request: PpsRequest) -> BoxFuture<'static, PpsReply> {
    fn or_error<T>(result: Result<T, PpsError>, ok: impl FnOnce(T) -> PpsReply) -> PpsReply {
        match result {
            Ok(value) => ok(value),
            Err(error) => PpsReply::Error(error),
        }
    }
    match request {
        PpsRequest::Snapshot(request) => {
            let reply = pps.snapshot(request);
            Box::pin(async move { or_error(reply.await, PpsReply::Snapshot) })
        }
        PpsRequest::Apply(batch) => {
            let reply = pps.apply(batch);
            Box::pin(
                async move { or_error(reply.await, |last_seq| PpsReply::Accepted { last_seq }) },
            )
        }
        PpsRequest::Release(request) => {
            let reply = pps.release(request);
            Box::pin(async move {
                or_error(reply.await, |flushed_seq| PpsReply::Released {
                    flushed_seq,
                })
            })
        }
        PpsRequest::Acquire(request) => {
            let reply = pps.acquire(request);
            Box::pin(async move { or_error(reply.await, PpsReply::Acquired) })
        }
        PpsRequest::Ping => Box::pin(async { PpsReply::Pong }),
        PpsRequest::Flush { picture } => {
            let reply = pps.flush(picture);
            Box::pin(async move {
                or_error(reply.await, |flushed_seq| PpsReply::Flushed { flushed_seq })
            })
        }
        PpsRequest::History { picture } => {
            let reply = pps.history(picture);
            Box::pin(async move { or_error(reply.await, PpsReply::History) })
        }
        PpsRequest::Version { picture, seq } => {
            let reply = pps.version(picture, seq);
            Box::pin(async move { or_error(reply.await, PpsReply::Version) })
        }
    }
}

/// Forwards `Flushed` events to one connection; returns when the receiver lagged (events were
/// lost, so the connection must be dropped for the client to resync) or the service is gone.
async fn forward_events(
    mut events: broadcast::Receiver<PpsEvent>,
    out: mpsc::UnboundedSender<Message>,
) {
    loop {
        match events.recv().await {
            Ok(PpsEvent::Flushed { picture, seq }) => {
                if out.send(frame(&FromPps::Flushed { picture, seq })).is_err() {
                    return;
                }
            }
            Ok(PpsEvent::Reconnected) => {}
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                tracing::warn!(
                    missed,
                    "broadcast service connection lagged behind flush events"
                );
                return;
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}
