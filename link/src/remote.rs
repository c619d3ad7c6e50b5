//! [`RemotePps`]: the [`PictureService`] of a picture service across the network (services
//! mode), over one multiplexed WebSocket connection to its `GET /bs`.
//!
//! Requests carry ids; their replies are matched through a map of pending requests. Requests are
//! enqueued to the connection's writer synchronously, so their order is the call order. When the
//! connection is lost every pending request fails with [`PpsError::Unavailable`], new requests
//! fail fast until it is back, and a background task reconnects with jittered exponential
//! backoff, announcing [`PpsEvent::Reconnected`] once it succeeds.
//!
//! The link explains itself: every failed attempt is logged once, with its cause (an HTTP
//! status, a refusal, a timeout), and counted in `bs_pps_link_failures_total{url, cause}`;
//! `bs_pps_link_up{url}` says whether it is up. It pings the service every `ping_interval` and
//! gives the connection up after `timeout` without a word from it. The send time of the latest
//! request the service answered bounds how long a sequencer holding a lease from it may go on
//! alone when it becomes unreachable ([`PictureService::echo_until`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use futures::future::{self, BoxFuture, FutureExt};
use futures::{SinkExt, StreamExt};
use protocol::backoff::{jittered, Backoff};
use protocol::pps::{
    AcquireRequest, Acquired, ApplyBatch, FromPps, HistoryEntry, PpsError, PpsReply, PpsRequest,
    ReleaseRequest, Snapshot, SnapshotRequest, ToPps, VersionImage,
};
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

use crate::{PictureService, PpsEvent};

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
    /// A ping (a request, answered) is sent this often.
    pub ping_interval: Duration,
    /// A connection silent this long is considered dead (a peer that vanished without closing
    /// TCP, or was paused, would otherwise hang every request), and so is an attempt to
    /// connect that takes longer.
    pub timeout: Duration,
}

impl Default for RemoteOptions {
    fn default() -> Self {
        Self {
            max_message_size: crate::DEFAULT_MAX_MESSAGE_SIZE,
            min_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            event_capacity: 4096,
            ping_interval: Duration::from_secs(1),
            timeout: Duration::from_secs(3),
        }
    }
}

/// A request waiting for its reply, and when it was sent.
type Pending = (Instant, oneshot::Sender<Result<PpsReply, PpsError>>);

/// What the service said of itself when the connection opened.
#[derive(Clone, Debug)]
struct Hello {
    node: u64,
    lease_timeout: Duration,
}

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
    /// From the service's `Hello` (kept while disconnected: it is still the same service).
    hello: Option<Hello>,
    /// The send time of the latest request the service answered.
    confirmed_at: Option<Instant>,
}

impl RemotePps {
    /// Starts connecting to `url` (e.g. `ws://pps:9090/bs`) in the background; never fails,
    /// requests fail with `Unavailable` until connected.
    pub fn connect(url: &str) -> Arc<RemotePps> {
        Self::connect_with(url, RemoteOptions::default())
    }

    /// [`RemotePps::connect`] with these connection settings.
    pub fn connect_with(url: &str, options: RemoteOptions) -> Arc<RemotePps> {
        let (events, _) = broadcast::channel(options.event_capacity.max(1));
        let shared = Arc::new(ClientShared {
            events,
            state: Mutex::new(ClientState {
                writer: None,
                pending: HashMap::new(),
                next_id: 1,
                hello: None,
                confirmed_at: None,
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
        self.shared.call(request)
    }
}

impl ClientShared {
    fn call(&self, request: PpsRequest) -> BoxFuture<'static, Result<PpsReply, PpsError>> {
        let (tx, rx) = oneshot::channel();
        {
            let mut state = self.lock();
            let Some(writer) = state.writer.clone() else {
                return future::ready(Err(not_connected())).boxed();
            };
            let id = state.next_id;
            state.next_id += 1;
            let bytes = protocol::codec::encode(&ToPps::Request { id, request });
            if writer.send(Message::Binary(Bytes::from(bytes))).is_err() {
                return future::ready(Err(not_connected())).boxed();
            }
            state.pending.insert(id, (Instant::now(), tx));
        }
        async move { rx.await.unwrap_or_else(|_| Err(connection_lost())) }.boxed()
    }
}

/// Why a WebSocket connection or attempt failed, in words for a log line and as a short label
/// for a metric: an HTTP status, a refused connection, a timeout, a bad URL, ...
pub fn describe_ws_error(error: &tokio_tungstenite::tungstenite::Error) -> (String, &'static str) {
    use std::io::ErrorKind;
    use tokio_tungstenite::tungstenite::Error;
    match error {
        Error::Http(response) => (
            format!("answered HTTP {} instead of upgrading", response.status()),
            "http_status",
        ),
        Error::Io(e) if e.kind() == ErrorKind::ConnectionRefused => (
            "connection refused (nothing listens there)".to_string(),
            "refused",
        ),
        Error::Io(e) if e.kind() == ErrorKind::TimedOut => ("timed out".to_string(), "timeout"),
        Error::Io(e) if matches!(e.kind(), ErrorKind::ConnectionReset | ErrorKind::BrokenPipe) => {
            (format!("connection broken: {e}"), "reset")
        }
        Error::Io(e) => (format!("network error: {e}"), "io"),
        Error::Url(e) => (format!("bad URL: {e}"), "url"),
        Error::ConnectionClosed | Error::AlreadyClosed => {
            ("connection closed".to_string(), "closed")
        }
        other => (other.to_string(), "other"),
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
        protocol::sync::lock(&self.state)
    }

    /// Marks the connection gone and fails every request still waiting on it.
    fn disconnected(&self) {
        let pending = {
            let mut state = self.lock();
            state.writer = None;
            std::mem::take(&mut state.pending)
        };
        for (_, (_, reply)) in pending {
            let _ = reply.send(Err(connection_lost()));
        }
    }

    /// The reply to request `id` arrived.
    fn answered(&self, id: u64, reply: PpsReply) {
        let pending = {
            let mut state = self.lock();
            let pending = state.pending.remove(&id);
            if let Some((sent_at, _)) = &pending {
                state.confirmed_at = Some(state.confirmed_at.map_or(*sent_at, |c| c.max(*sent_at)));
            }
            pending
        };
        if let Some((_, reply_to)) = pending {
            let _ = reply_to.send(Ok(reply));
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
    let mut backoff = Backoff::new(options.min_backoff, options.max_backoff);
    let mut connected_before = false;
    let up = metrics::gauge!("bs_pps_link_up", "url" => url.clone());
    up.set(0.0);
    loop {
        let config = WebSocketConfig::default()
            .max_message_size(Some(options.max_message_size))
            .max_frame_size(Some(options.max_message_size));
        let connect =
            tokio_tungstenite::connect_async_with_config(url.as_str(), Some(config), true);
        let attempt = tokio::select! {
            attempt = tokio::time::timeout(options.timeout, connect) => attempt,
            _ = stop.changed() => return,
        };
        let failure = match attempt {
            Ok(Ok((socket, _))) => {
                backoff.reset();
                let (mut sink, mut stream) = socket.split();
                let (writer_tx, mut writer_rx) = mpsc::unbounded_channel::<Message>();
                shared.lock().writer = Some(writer_tx);
                up.set(1.0);
                tracing::info!(%url, "connected to the picture service");
                if connected_before {
                    let _ = shared.events.send(PpsEvent::Reconnected);
                }
                connected_before = true;
                let mut last_heard = Instant::now();
                let mut pings = tokio::time::interval(options.ping_interval);
                pings.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                let mut writer = tokio::spawn(async move {
                    while let Some(msg) = writer_rx.recv().await {
                        if sink.send(msg).await.is_err() {
                            return;
                        }
                    }
                });
                let ended = loop {
                    let msg = tokio::select! {
                        msg = stream.next() => msg,
                        _ = &mut writer => break Some(("its connection broke".to_string(), "reset")),
                        _ = stop.changed() => break None,
                        _ = pings.tick() => {
                            if last_heard.elapsed() > options.timeout {
                                break Some((format!("silent for {:?}", options.timeout), "timeout"));
                            }
                            // Answered or not, it keeps the leases held over this connection
                            // alive and (answered) confirms them (see the module doc).
                            drop(shared.call(PpsRequest::Ping));
                            continue;
                        }
                    };
                    last_heard = Instant::now();
                    let bytes = match msg {
                        Some(Ok(Message::Binary(bytes))) => bytes,
                        Some(Ok(Message::Close(_))) | None => {
                            break Some(("it closed the connection".to_string(), "closed"))
                        }
                        Some(Ok(_)) => continue,
                        Some(Err(error)) => {
                            let (cause, label) = describe_ws_error(&error);
                            break Some((cause, label));
                        }
                    };
                    match protocol::codec::decode::<FromPps>(&bytes) {
                        Ok(FromPps::Reply { id, reply }) => shared.answered(id, reply),
                        Ok(FromPps::Flushed { picture, seq }) => {
                            let _ = shared.events.send(PpsEvent::Flushed { picture, seq });
                        }
                        Ok(FromPps::Hello {
                            node,
                            url: advertised,
                            lease_timeout_ms,
                        }) => {
                            tracing::debug!(%url, %advertised, node = %protocol::snapshot::owner_text(node), lease_timeout_ms, "picture service introduced itself");
                            shared.lock().hello = Some(Hello {
                                node,
                                lease_timeout: Duration::from_millis(lease_timeout_ms),
                            });
                        }
                        Err(error) => {
                            break Some((
                                format!("sent an undecodable message: {error}"),
                                "protocol",
                            ));
                        }
                    }
                };
                writer.abort();
                shared.disconnected();
                up.set(0.0);
                match ended {
                    None => return,
                    Some(failure) => {
                        tracing::warn!(%url, cause = %failure.0, "lost the connection to the picture service; reconnecting");
                        metrics::counter!("bs_pps_link_failures_total", "url" => url.clone(), "cause" => failure.1).increment(1);
                        // Reconnect at once the first time.
                        None
                    }
                }
            }
            Ok(Err(error)) => Some(describe_ws_error(&error)),
            Err(_) => Some((format!("no answer within {:?}", options.timeout), "timeout")),
        };
        let delay = match failure {
            Some((cause, label)) => {
                let delay = backoff.next_delay();
                tracing::warn!(%url, %cause, retry_in_ms = delay.as_millis() as u64, "cannot connect to the picture service");
                metrics::counter!("bs_pps_link_failures_total", "url" => url.clone(), "cause" => label)
                    .increment(1);
                delay
            }
            None => jittered(backoff.current()),
        };
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = stop.changed() => return,
        }
    }
}

impl PictureService for RemotePps {
    fn acquire(&self, request: AcquireRequest) -> BoxFuture<'static, Result<Acquired, PpsError>> {
        let reply = self.call(PpsRequest::Acquire(request));
        async move {
            match reply.await? {
                PpsReply::Acquired(acquired) => Ok(acquired),
                PpsReply::Error(error) => Err(error),
                other => Err(unexpected(other)),
            }
        }
        .boxed()
    }

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

    fn flush(&self, picture: String) -> BoxFuture<'static, Result<u64, PpsError>> {
        let reply = self.call(PpsRequest::Flush { picture });
        async move {
            match reply.await? {
                PpsReply::Flushed { flushed_seq } => Ok(flushed_seq),
                PpsReply::Error(error) => Err(error),
                other => Err(unexpected(other)),
            }
        }
        .boxed()
    }

    fn history(&self, picture: String) -> BoxFuture<'static, Result<Vec<HistoryEntry>, PpsError>> {
        let reply = self.call(PpsRequest::History { picture });
        async move {
            match reply.await? {
                PpsReply::History(history) => Ok(history),
                PpsReply::Error(error) => Err(error),
                other => Err(unexpected(other)),
            }
        }
        .boxed()
    }

    fn version(
        &self,
        picture: String,
        seq: u64,
    ) -> BoxFuture<'static, Result<VersionImage, PpsError>> {
        let reply = self.call(PpsRequest::Version { picture, seq });
        async move {
            match reply.await? {
                PpsReply::Version(version) => Ok(version),
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

    fn echo_until(&self) -> Option<Instant> {
        let state = self.shared.lock();
        let lease_timeout = state.hello.as_ref()?.lease_timeout;
        // A fifth of the lease timeout (and a tenth of a second) for clocks that do not run at
        // quite the same rate.
        let margin = lease_timeout / 5 + Duration::from_millis(100);
        let alone = lease_timeout.checked_sub(margin)?;
        Some(state.confirmed_at? + alone)
    }

    fn node(&self) -> Option<u64> {
        self.shared.lock().hello.as_ref().map(|hello| hello.node)
    }
}
