//! [`RemotePps`]: the [`PictureService`] of a picture service across the network (services
//! mode), over one multiplexed WebSocket connection to its `GET /bs`.
//!
//! Requests carry ids; their replies are matched through a map of pending requests. Requests are
//! enqueued to the connection's writer synchronously, so their order is the call order. When the
//! connection is lost every pending request fails with [`PpsError::Unavailable`], new requests
//! fail fast until it is back, and a background task reconnects with jittered exponential
//! backoff, announcing [`PpsEvent::Reconnected`] once it succeeds.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use futures::future::{self, BoxFuture, FutureExt};
use futures::{SinkExt, StreamExt};
use protocol::pps::{
    ApplyBatch, FromPps, PpsError, PpsReply, PpsRequest, ReleaseRequest, Snapshot, SnapshotRequest,
    ToPps,
};
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

use crate::api::{PictureService, PpsEvent};

/// Connection settings.
#[derive(Clone, Debug)]
pub struct RemoteOptions {
    /// Largest WebSocket message accepted from the picture service (snapshots can be big).
    pub max_message_size: usize,
    /// First reconnect delay.
    pub min_backoff: Duration,
    /// Largest reconnect delay.
    pub max_backoff: Duration,
    /// Capacity of the event channel.
    pub event_capacity: usize,
    /// A ping is sent this often; a connection silent for three times this long is considered
    /// dead (a peer that vanished without closing TCP would otherwise hang every request).
    pub keepalive: Duration,
}

impl Default for RemoteOptions {
    fn default() -> Self {
        Self {
            max_message_size: 64 << 20,
            min_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            event_capacity: 4096,
            keepalive: Duration::from_secs(10),
        }
    }
}

type Pending = oneshot::Sender<Result<PpsReply, PpsError>>;

/// A picture service reached over the network.
pub struct RemotePps {
    shared: Arc<ClientShared>,
    /// Dropped with the client, which stops the connection task.
    _stop: watch::Sender<()>,
}

struct ClientShared {
    /// Fan-out of events (`Flushed` from the server, `Reconnected` from us).
    events: broadcast::Sender<PpsEvent>,
    /// std Mutex: held for a few lines, never across `.await`.
    state: Mutex<ClientState>,
}

struct ClientState {
    /// The connection's writer queue; `None` while disconnected (requests fail fast).
    writer: Option<mpsc::UnboundedSender<Message>>,
    /// Requests sent on the current connection and not answered yet.
    pending: HashMap<u64, Pending>,
    /// Id of the next request.
    next_id: u64,
}

impl RemotePps {
    /// Starts connecting to `url` (e.g. `ws://pps:9090/bs`) in the background; never fails,
    /// requests fail with `Unavailable` until connected.
    pub fn connect(url: &str) -> Arc<RemotePps> {
        Self::connect_with(url, RemoteOptions::default())
    }

    pub fn connect_with(url: &str, options: RemoteOptions) -> Arc<RemotePps> {
        let (events, _) = broadcast::channel(options.event_capacity.max(1));
        let shared = Arc::new(ClientShared {
            events,
            state: Mutex::new(ClientState {
                writer: None,
                pending: HashMap::new(),
                next_id: 1,
            }),
        });
        let (stop, stopped) = watch::channel(());
        tokio::spawn(run(shared.clone(), url.to_string(), options, stopped));
        Arc::new(RemotePps {
            shared,
            _stop: stop,
        })
    }

    fn call(&self, request: PpsRequest) -> BoxFuture<'static, Result<PpsReply, PpsError>> {
        let (tx, rx) = oneshot::channel();
        {
            let mut state = self.shared.lock();
            let Some(writer) = state.writer.clone() else {
                return future::ready(Err(not_connected())).boxed();
            };
            let id = state.next_id;
            state.next_id += 1;
            let bytes = protocol::codec::encode(&ToPps::Request { id, request });
            if writer.send(Message::Binary(Bytes::from(bytes))).is_err() {
                return future::ready(Err(not_connected())).boxed();
            }
            state.pending.insert(id, tx);
        }
        async move { rx.await.unwrap_or_else(|_| Err(connection_lost())) }.boxed()
    }
}

fn not_connected() -> PpsError {
    PpsError::Unavailable("not connected to the picture service".to_string())
}

fn connection_lost() -> PpsError {
    PpsError::Unavailable("connection to the picture service lost".to_string())
}

fn unexpected(reply: PpsReply) -> PpsError {
    PpsError::Unavailable(format!(
        "unexpected reply from the picture service: {reply:?}"
    ))
}

impl ClientShared {
    fn lock(&self) -> MutexGuard<'_, ClientState> {
        // Critical sections are map operations and channel sends: consistent even on panic.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Marks the connection gone and fails every request still waiting on it.
    fn disconnected(&self) {
        let pending = {
            let mut state = self.lock();
            state.writer = None;
            std::mem::take(&mut state.pending)
        };
        for (_, reply) in pending {
            let _ = reply.send(Err(connection_lost()));
        }
    }
}

/// Connects, serves the connection until it fails, and reconnects, until the client is dropped.
async fn run(
    shared: Arc<ClientShared>,
    url: String,
    options: RemoteOptions,
    mut stop: watch::Receiver<()>,
) {
    let mut backoff = options.min_backoff;
    let mut connected_before = false;
    loop {
        let config = WebSocketConfig::default()
            .max_message_size(Some(options.max_message_size))
            .max_frame_size(Some(options.max_message_size));
        let attempt = tokio::select! {
            attempt = tokio_tungstenite::connect_async_with_config(url.as_str(), Some(config), true) => attempt,
            _ = stop.changed() => return,
        };
        match attempt {
            Ok((socket, _)) => {
                backoff = options.min_backoff;
                let (mut sink, mut stream) = socket.split();
                let (writer_tx, mut writer_rx) = mpsc::unbounded_channel::<Message>();
                shared.lock().writer = Some(writer_tx);
                tracing::info!(%url, "connected to the picture service");
                if connected_before {
                    let _ = shared.events.send(PpsEvent::Reconnected);
                }
                connected_before = true;
                let pinger = shared.lock().writer.clone();
                let mut last_heard = tokio::time::Instant::now();
                let mut keepalive = tokio::time::interval(options.keepalive);
                keepalive.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                let mut writer = tokio::spawn(async move {
                    while let Some(msg) = writer_rx.recv().await {
                        if sink.send(msg).await.is_err() {
                            return;
                        }
                    }
                });
                let stopping = loop {
                    let msg = tokio::select! {
                        msg = stream.next() => msg,
                        _ = &mut writer => break false,
                        _ = stop.changed() => break true,
                        _ = keepalive.tick() => {
                            if last_heard.elapsed() > options.keepalive * 3 {
                                tracing::warn!(%url, "picture service silent; reconnecting");
                                break false;
                            }
                            if let Some(pinger) = &pinger {
                                let _ = pinger.send(Message::Ping(Bytes::new()));
                            }
                            continue;
                        }
                    };
                    last_heard = tokio::time::Instant::now();
                    let bytes = match msg {
                        Some(Ok(Message::Binary(bytes))) => bytes,
                        Some(Ok(Message::Close(_))) | None => break false,
                        Some(Ok(_)) => continue,
                        Some(Err(error)) => {
                            tracing::debug!(%error, "picture service connection failed");
                            break false;
                        }
                    };
                    match protocol::codec::decode::<FromPps>(&bytes) {
                        Ok(FromPps::Reply { id, reply }) => {
                            if let Some(pending) = shared.lock().pending.remove(&id) {
                                let _ = pending.send(Ok(reply));
                            }
                        }
                        Ok(FromPps::Flushed { picture, seq }) => {
                            let _ = shared.events.send(PpsEvent::Flushed { picture, seq });
                        }
                        Err(error) => {
                            tracing::warn!(%error, "undecodable message from the picture service; reconnecting");
                            break false;
                        }
                    }
                };
                writer.abort();
                shared.disconnected();
                if stopping {
                    return;
                }
                tracing::warn!(%url, "lost the connection to the picture service; reconnecting");
            }
            Err(error) => {
                tracing::debug!(%url, %error, retry_in_ms = backoff.as_millis() as u64, "cannot connect to the picture service");
            }
        }
        let delay = jittered(backoff);
        backoff = (backoff * 2).min(options.max_backoff);
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = stop.changed() => return,
        }
    }
}

/// Between half and all of `base`, so that many broadcast services do not reconnect in lockstep.
fn jittered(base: Duration) -> Duration {
    let millis = base.as_millis() as u64;
    let half = millis / 2;
    Duration::from_millis(half + rand::random::<u64>() % (millis - half + 1))
}

impl PictureService for RemotePps {
    fn snapshot(&self, request: SnapshotRequest) -> BoxFuture<'static, Result<Snapshot, PpsError>> {
        let reply = self.call(PpsRequest::Snapshot(request));
        async move {
            match reply.await? {
                PpsReply::Snapshot(snapshot) => Ok(snapshot),
                PpsReply::Error(error) => Err(error),
                other => Err(unexpected(other)),
            }
        }
        .boxed()
    }

    fn apply(&self, batch: ApplyBatch) -> BoxFuture<'static, Result<u64, PpsError>> {
        let reply = self.call(PpsRequest::Apply(batch));
        async move {
            match reply.await? {
                PpsReply::Accepted { last_seq } => Ok(last_seq),
                PpsReply::Error(error) => Err(error),
                other => Err(unexpected(other)),
            }
        }
        .boxed()
    }

    fn release(&self, request: ReleaseRequest) -> BoxFuture<'static, Result<u64, PpsError>> {
        let reply = self.call(PpsRequest::Release(request));
        async move {
            match reply.await? {
                PpsReply::Released { flushed_seq } => Ok(flushed_seq),
                PpsReply::Error(error) => Err(error),
                other => Err(unexpected(other)),
            }
        }
        .boxed()
    }

    fn events(&self) -> broadcast::Receiver<PpsEvent> {
        self.shared.events.subscribe()
    }

    fn is_ready(&self) -> bool {
        self.shared.lock().writer.is_some()
    }
}
