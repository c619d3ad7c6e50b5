//! One drawing client's connection to one picture.
//!
//! [`Client::connect`] opens `/pictures/{id}/ws`, waits for `Welcome` and rebuilds the picture
//! from its snapshot and `pending`; every later `Updates` is checked and applied. The checks are
//! the point: a seq seen twice, out of order or skipped, or an own echo out of `client_seq`
//! order, is a [`ClientError::Protocol`], never silently absorbed, because applying an update
//! twice or not at all gives a different picture (blending is not idempotent).
//!
//! [`Client::into_split`] gives a [`Sender`] and a [`Receiver`] so a load generator can draw
//! from one task while another reads; the two halves share only the highest `client_seq` sent,
//! which lets the receiver refuse an echo of an op that was never sent (and, for a session
//! client, the ops not yet echoed).
//!
//! Extensions, both opt-in: `Durable` acknowledgements (PROTOCOL.md §10,
//! [`ConnectOptions::durable`], [`Client::durable_seq`]) and resuming a dropped connection
//! without losing or doubling an op (§11: [`ConnectOptions::session`], [`Client::resume`]).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt, StreamExt};
use protocol::codec::UpdateHeader;
use protocol::pps::SnapshotImage;
use protocol::snapshot::{decode_lz4, decode_png};
use protocol::{codec, ClientMsg, Op, Raster, Sequenced, ServerMsg};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::error::ClientError;

type WsStream = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// How many recent rejections a receiver remembers for [`Client::wait_own`]; bounded so a
/// client rejected all day does not grow without limit.
const REMEMBERED_REJECTIONS: usize = 1024;

/// How to connect and what to keep.
#[derive(Clone, Debug)]
pub struct ConnectOptions {
    /// Size asked for (`?width=&height=`) in case the picture does not exist yet.
    pub size: Option<(u32, u32)>,
    /// Keep a local raster. Tests compare pixels; a load generator running hundreds of clients
    /// in one process skips the rasterizing (the ordering checks still run).
    pub keep_raster: bool,
    /// Record every received `(seq, client_id, client_seq)`. Memory grows with every update, so
    /// it is for tests, not long benchmarks.
    pub keep_log: bool,
    /// Largest picture side accepted from a snapshot: bounds the memory a server can make us
    /// allocate.
    pub max_side: u32,
    /// Largest WebSocket message accepted from the server (a `Welcome` carries a whole PNG).
    pub max_message_size: usize,
    /// Do not decode the ops of `Updates`: they arrive as [`Event::Headers`] (seq, sender,
    /// ordering checked all the same). For load generators receiving millions of updates a
    /// second; needs `keep_raster: false`.
    pub headers_only: bool,
    /// Most bytes one socket read asks for. tungstenite zero-fills this much spare buffer
    /// before every read, so its default (128 KiB) made zero-filling a quarter of a load
    /// generator's CPU when frames are a few KB (`raster bench w1`, perf). Big messages
    /// (a `Welcome`) are still read whole, in reads of this size.
    pub read_buffer_size: usize,
    /// Ask for `WelcomeLz4` (`?snapshot=lz4`, the extension of PROTOCOL.md §8): the snapshot
    /// as LZ4-compressed RGBA, which decodes in about a third of the PNG's time. The server
    /// may still send a PNG `Welcome` (a picture just loaded, or its LZ4 form not made yet);
    /// both are accepted either way.
    pub snapshot_lz4: bool,
    /// Ask for `Durable` acknowledgements (`?durable=1`, PROTOCOL.md §10): how far the
    /// picture is in the object store ([`Event::Durable`], [`Client::durable_seq`]).
    pub durable: bool,
    /// Connect under a session key (`?session=K`, PROTOCOL.md §11): `K` is then our
    /// `client_id` on every connection, the ops not yet echoed are kept, and
    /// [`Client::resume`] reconnects without losing or doubling any of them.
    /// [`ConnectOptions::resumable`] picks a random key.
    pub session: Option<u64>,
    /// A token for a service that asks for one (`?token=`, PROTOCOL.md §13): a JWT granting
    /// `draw` or `view` on the picture. With a `view` token every draw is answered
    /// `Rejected`. [`crate::token::mint`] makes one from a shared secret.
    pub token: Option<String>,
}

impl ConnectOptions {
    /// These options with a random session key (unless one is set): the client can then
    /// [`Client::resume`].
    pub fn resumable(mut self) -> Self {
        if self.session.is_none() {
            self.session = Some(rand::random::<u64>().max(1));
        }
        self
    }
}

impl Default for ConnectOptions {
    fn default() -> Self {
        Self {
            size: None,
            keep_raster: true,
            keep_log: false,
            max_side: 4096,
            max_message_size: 256 << 20,
            headers_only: false,
            read_buffer_size: 16 * 1024,
            snapshot_lz4: true,
            durable: false,
            session: None,
            token: None,
        }
    }
}

/// Something the server told us, already checked and (for updates) applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// Consecutive updates, already applied to the local raster.
    Updates(Vec<Sequenced>),
    /// Consecutive updates with their ops left encoded (`ConnectOptions::headers_only`).
    Headers(Vec<UpdateHeader>),
    /// One of our ops was refused; it has no seq and nobody else saw it.
    Rejected {
        /// The refused op's `client_seq`.
        client_seq: u64,
        /// The server's reason (the broken limit and its bound, PROTOCOL.md §7).
        reason: String,
    },
    /// The number of clients on the picture changed.
    Presence(u32),
    /// The answer to a ping, carrying its nonce.
    Pong(u64),
    /// A fresh `Welcome` replaced the picture (we could not keep up).
    Resynced,
    /// The server reported an error; a close usually follows.
    Error {
        /// HTTP-like code: 400, 413, 429, 500 or 503 (PROTOCOL.md §5), 409 for a session
        /// clash (§11).
        code: u16,
        /// The server's message.
        message: String,
    },
    /// Every update up to this seq is in the object store (`ConnectOptions::durable`).
    Durable(u64),
    /// After a `Welcome`, for a session client: the highest `client_seq` of the session the
    /// picture has sequenced. Our ops up to it are in the picture; the ones above it that saw
    /// no echo are to be sent again ([`Client::resume`] does).
    Session {
        /// Highest `client_seq` of the session sequenced; 0 when none is remembered.
        last_client_seq: u64,
    },
    /// The connection ended. Reading again after this is an error.
    Closed {
        /// The WebSocket close code; `None` when the connection ended without a close frame.
        code: Option<u16>,
        /// The close frame's reason, or what ended the connection.
        reason: String,
    },
}

/// One received update, for tests that check who saw what.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogEntry {
    /// Position in the picture's total order.
    pub seq: u64,
    /// Who drew it.
    pub client_id: u64,
    /// The drawer's own numbering, to check each drawer's order.
    pub client_seq: u64,
}

/// State both halves of a split client need.
#[derive(Debug, Default)]
struct Shared {
    /// The highest `client_seq` handed to the socket: an echo or rejection above it is a lie.
    sent: AtomicU64,
    /// A session client's ops sent and not yet settled (echoed, rejected, or covered by a
    /// `Session` message), in `client_seq` order: what a resume sends again. Always empty
    /// without a session.
    unacked: Mutex<VecDeque<(u64, Op)>>,
}

impl Shared {
    fn unacked(&self) -> MutexGuard<'_, VecDeque<(u64, Op)>> {
        // Every change is one push or a drain from the front: a poisoned lock is consistent.
        protocol::sync::lock(&self.unacked)
    }

    /// Our ops up to `client_seq` are settled.
    fn settle_through(&self, client_seq: u64) {
        let mut unacked = self.unacked();
        while unacked.front().is_some_and(|(c, _)| *c <= client_seq) {
            unacked.pop_front();
        }
    }
}

/// The drawing half: sends ops and pings.
pub struct Sender {
    /// Write half of the socket.
    sink: SplitSink<WsStream, Message>,
    /// Shared with the receiver, which checks echoes against it.
    shared: Arc<Shared>,
    /// Keep what is sent in `shared.unacked` (a session client).
    keep_unacked: bool,
}

/// The reading half: receives, checks and applies everything the server sends.
pub struct Receiver {
    /// Read half of the socket.
    stream: SplitStream<WsStream>,
    /// Shared with the sender (highest `client_seq` sent).
    shared: Arc<Shared>,
    /// What to keep (raster, log) and how much to accept.
    options: ConnectOptions,
    /// Our id on this picture, from the latest `Welcome`: tells our echoes from others' ops.
    client_id: u64,
    /// Picture size from the latest `Welcome`, kept even without a raster (random ops, display).
    width: u32,
    height: u32,
    /// The picture as of `last_seq`, when `options.keep_raster`.
    raster: Option<Raster>,
    /// `snapshot_seq` of the latest `Welcome`.
    snapshot_seq: u64,
    /// The last seq applied: the next update must be exactly `last_seq + 1`.
    last_seq: u64,
    /// Latest `Presence` count.
    presence: u32,
    /// Last own `client_seq` echoed since the latest `Welcome`: echoes must increase.
    own_last: u64,
    /// Highest own `client_seq` ever echoed: what [`Client::wait_own`] waits on.
    own_acked: u64,
    /// Recent rejections, so waiting for a rejected op's echo ends with its reason.
    rejected: VecDeque<(u64, String)>,
    /// Every received update, when `options.keep_log`.
    log: Vec<LogEntry>,
    /// Whether the latest `Welcome` was a `WelcomeLz4`.
    welcome_lz4: bool,
    /// How many times the server resynced us with a fresh `Welcome`.
    resyncs: u64,
    /// Set once the connection ended, so a later read fails instead of blocking.
    closed: Option<(Option<u16>, String)>,
    /// The highest seq the server said is in storage (over every connection).
    durable: u64,
    /// The highest `Durable` seq of this connection: each must advance it.
    durable_here: u64,
    /// The `Session` message since the latest `Welcome` (its `last_client_seq`).
    session_last: Option<u64>,
}

/// What [`Client::resume`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resumed {
    /// The `Welcome` carried no snapshot: the picture was kept, and `pending` applied on it.
    pub kept_picture: bool,
    /// The new `Welcome`'s `snapshot_seq` (the resumed seq when `kept_picture`).
    pub snapshot_seq: u64,
    /// Updates in the new `Welcome`'s `pending`.
    pub pending: usize,
    /// The session's highest `client_seq` the picture had sequenced (its `Session` message).
    pub last_client_seq: u64,
    /// The `client_seq`s sent again, in order: the ops with no echo above `last_client_seq`.
    pub resent: Vec<u64>,
}

/// A connected client: a [`Sender`] and a [`Receiver`] used from one task.
pub struct Client {
    /// Writes; shares only the highest sent `client_seq` with the receiver.
    sender: Sender,
    /// Reads, checks and applies.
    receiver: Receiver,
}

impl Client {
    /// Joins `picture` at `base_url` (`ws://host:port` or `http://host:port`), keeping a local
    /// raster. `size` applies only if the picture does not exist yet. The id is put in the path
    /// as given (the server answers HTTP 400, as [`ClientError::Http`], to an invalid one).
    pub async fn connect(
        base_url: &str,
        picture: &str,
        size: Option<(u32, u32)>,
    ) -> Result<Client, ClientError> {
        let options = ConnectOptions {
            size,
            ..ConnectOptions::default()
        };
        Self::connect_with(base_url, picture, options).await
    }

    /// Joins `picture` with explicit options. Returns once `Welcome` has been received, its
    /// snapshot decoded and its `pending` applied.
    pub async fn connect_with(
        base_url: &str,
        picture: &str,
        options: ConnectOptions,
    ) -> Result<Client, ClientError> {
        let (sink, stream) = open(base_url, picture, &options, None).await?;
        let shared = Arc::new(Shared::default());
        let keep_unacked = options.session.is_some();
        let mut receiver = Receiver {
            stream,
            shared: shared.clone(),
            options,
            client_id: 0,
            width: 0,
            height: 0,
            raster: None,
            snapshot_seq: 0,
            last_seq: 0,
            presence: 0,
            own_last: 0,
            own_acked: 0,
            rejected: VecDeque::new(),
            log: Vec::new(),
            resyncs: 0,
            welcome_lz4: false,
            closed: None,
            durable: 0,
            durable_here: 0,
            session_last: None,
        };
        receiver.read_welcome(None).await?;
        Ok(Client {
            sender: Sender {
                sink,
                shared,
                keep_unacked,
            },
            receiver,
        })
    }

    /// Reconnects a session client (connected with [`ConnectOptions::session`]) after its
    /// connection dropped, or to leave a connection it no longer trusts to deliver (the server
    /// closes the old one when the new one joins): asks to resume after the last seq we
    /// applied (`?since=`), keeps our picture if the `Welcome` carries none (else takes the
    /// fresh one), waits for the `Session` message, and sends again, once and in order, every
    /// op that saw no echo and that it does not cover. Events read meanwhile are applied (not
    /// returned). Not for a client split into halves.
    pub async fn resume(
        &mut self,
        base_url: &str,
        picture: &str,
        deadline: Instant,
    ) -> Result<Resumed, ClientError> {
        let Some(session) = self.receiver.options.session else {
            return Err(ClientError::Protocol(
                "resume needs a client connected with a session key (ConnectOptions::session)"
                    .into(),
            ));
        };
        let since = self.receiver.last_seq;
        let connect = open(base_url, picture, &self.receiver.options, Some(since));
        let (sink, stream) = match tokio::time::timeout_at(deadline, connect).await {
            Err(_) => return Err(ClientError::Timeout("the resumed connection".into())),
            Ok(result) => result?,
        };
        self.sender.sink = sink;
        self.receiver.stream = stream;
        self.receiver.closed = None;
        self.receiver.durable_here = 0;
        let welcome = tokio::time::timeout_at(deadline, self.receiver.read_welcome(Some(since)));
        let (kept_picture, pending) = match welcome.await {
            Err(_) => return Err(ClientError::Timeout("the resumed welcome".into())),
            Ok(result) => result?,
        };
        let snapshot_seq = self.receiver.snapshot_seq;
        let last_client_seq = loop {
            if let Some(last) = self.receiver.session_last {
                break last;
            }
            let what = || format!("the Session message of session {session}");
            if let Event::Closed { code, reason } =
                self.receiver.next_before(deadline, what).await?
            {
                return Err(ClientError::Closed { code, reason });
            }
        };
        let resend: Vec<(u64, Op)> = self.sender.shared.unacked().iter().cloned().collect();
        let mut resent = Vec::with_capacity(resend.len());
        for (client_seq, op) in resend {
            let frame = codec::encode(&ClientMsg::Draw { client_seq, op });
            self.sender
                .sink
                .feed(Message::Binary(Bytes::from(frame)))
                .await?;
            resent.push(client_seq);
        }
        self.sender.sink.flush().await?;
        Ok(Resumed {
            kept_picture,
            snapshot_seq,
            pending,
            last_client_seq,
            resent,
        })
    }

    /// Splits into a drawing half and a reading half.
    pub fn into_split(self) -> (Sender, Receiver) {
        (self.sender, self.receiver)
    }

    /// Puts split halves back together. They must come from the same [`Client::into_split`]:
    /// halves of different connections would check echoes against the wrong sender.
    pub fn from_split(sender: Sender, receiver: Receiver) -> Client {
        Client { sender, receiver }
    }

    /// Sends one op; returns its `client_seq` (1, 2, ...).
    pub async fn draw(&mut self, op: Op) -> Result<u64, ClientError> {
        self.sender.draw(op).await
    }

    /// Sends `Ping { nonce }`; the server answers [`Event::Pong`] with the same nonce.
    pub async fn ping(&mut self, nonce: u64) -> Result<(), ClientError> {
        self.sender.ping(nonce).await
    }

    /// The next event; see [`Receiver::next_event`].
    pub async fn next_event(&mut self) -> Result<Event, ClientError> {
        self.receiver.next_event().await
    }

    /// Reads until the local picture includes `seq`.
    pub async fn sync_to(&mut self, seq: u64, deadline: Instant) -> Result<(), ClientError> {
        self.receiver.sync_to(seq, deadline).await
    }

    /// Reads until our own op `client_seq` has been echoed (sequenced and applied).
    pub async fn wait_own(
        &mut self,
        client_seq: u64,
        deadline: Instant,
    ) -> Result<(), ClientError> {
        self.receiver.wait_own(client_seq, deadline).await
    }

    /// Says goodbye (close frame) and reads until the server closes, at most until `deadline`.
    pub async fn close(mut self, deadline: Instant) -> Result<(), ClientError> {
        self.sender.close().await?;
        self.receiver.wait_closed(deadline).await
    }

    /// Says goodbye with a close `code` and `reason`, reads until the server closes (at most
    /// until `deadline`) and returns the code of the server's answering close frame (`None`:
    /// it had none, or the connection just ended).
    pub async fn close_with(
        mut self,
        code: u16,
        reason: &str,
        deadline: Instant,
    ) -> Result<Option<u16>, ClientError> {
        self.sender.close_with(code, reason).await?;
        self.receiver.wait_closed(deadline).await?;
        Ok(self.receiver.close_code())
    }

    /// The highest `client_seq` sent so far.
    pub fn last_client_seq(&self) -> u64 {
        self.sender.last_client_seq()
    }

    /// The reading half, for its accessors (raster, seqs, log).
    pub fn receiver(&self) -> &Receiver {
        &self.receiver
    }

    /// Our id on the picture, from the latest `Welcome` (the session key, for a session).
    pub fn client_id(&self) -> u64 {
        self.receiver.client_id
    }

    /// The last seq applied to the local picture.
    pub fn last_seq(&self) -> u64 {
        self.receiver.last_seq
    }

    /// The local picture as of [`Client::last_seq`]; `None` without
    /// [`ConnectOptions::keep_raster`].
    pub fn raster(&self) -> Option<&Raster> {
        self.receiver.raster.as_ref()
    }

    /// The latest `Presence` count: clients on the picture.
    pub fn presence(&self) -> u32 {
        self.receiver.presence
    }

    /// Every update received, in order; empty without [`ConnectOptions::keep_log`].
    pub fn log(&self) -> &[LogEntry] {
        &self.receiver.log
    }

    /// The highest seq the server said is in the object store (0: none yet, or not asked).
    pub fn durable_seq(&self) -> u64 {
        self.receiver.durable
    }

    /// Our session key (our `client_id` on every connection), if we connected with one.
    pub fn session(&self) -> Option<u64> {
        self.receiver.options.session
    }

    /// The `client_seq`s sent and not yet settled (echoed, rejected, or covered by a `Session`
    /// message): what [`Client::resume`] would send again. Empty without a session.
    pub fn unacked(&self) -> Vec<u64> {
        self.sender
            .shared
            .unacked()
            .iter()
            .map(|(c, _)| *c)
            .collect()
    }
}

/// Opens the WebSocket of `picture` with `options` (and `?since=` when resuming).
async fn open(
    base_url: &str,
    picture: &str,
    options: &ConnectOptions,
    since: Option<u64>,
) -> Result<(SplitSink<WsStream, Message>, SplitStream<WsStream>), ClientError> {
    let mut url = format!("{}/pictures/{picture}/ws", crate::ws_base(base_url));
    let mut query = Vec::new();
    if let Some((width, height)) = options.size {
        query.push(format!("width={width}&height={height}"));
    }
    if options.snapshot_lz4 {
        query.push("snapshot=lz4".to_string());
    }
    if options.durable {
        query.push("durable=1".to_string());
    }
    if let Some(session) = options.session {
        query.push(format!("session={session}"));
    }
    if let Some(since) = since {
        query.push(format!("since={since}"));
    }
    if let Some(token) = &options.token {
        query.push(format!("token={}", crate::token::query_escape(token)));
    }
    if !query.is_empty() {
        url.push('?');
        url.push_str(&query.join("&"));
    }
    let config = WebSocketConfig::default()
        .max_message_size(Some(options.max_message_size))
        .max_frame_size(Some(options.max_message_size))
        .read_buffer_size(options.read_buffer_size);
    let (socket, _response) =
        tokio_tungstenite::connect_async_with_config(url.as_str(), Some(config), true).await?;
    Ok(socket.split())
}

impl Sender {
    /// Sends one op and flushes; returns its `client_seq`.
    pub async fn draw(&mut self, op: Op) -> Result<u64, ClientError> {
        let client_seq = self.feed_draw(op).await?;
        self.sink.flush().await?;
        Ok(client_seq)
    }

    /// Queues one op without flushing (call [`Sender::flush`]), to send many per write.
    pub async fn feed_draw(&mut self, op: Op) -> Result<u64, ClientError> {
        // Counted as sent before it leaves, so the receiver can never see an echo above `sent`.
        let client_seq = self.shared.sent.fetch_add(1, Ordering::AcqRel) + 1;
        if self.keep_unacked {
            self.shared.unacked().push_back((client_seq, op.clone()));
        }
        let frame = codec::encode(&ClientMsg::Draw { client_seq, op });
        self.sink.feed(Message::Binary(Bytes::from(frame))).await?;
        Ok(client_seq)
    }

    /// Sends what [`Sender::feed_draw`] queued.
    pub async fn flush(&mut self) -> Result<(), ClientError> {
        self.sink.flush().await?;
        Ok(())
    }

    /// Sends `Ping { nonce }` (and whatever was queued); the server answers `Pong` with the
    /// same nonce, which the receiver reports as [`Event::Pong`].
    pub async fn ping(&mut self, nonce: u64) -> Result<(), ClientError> {
        let frame = codec::encode(&ClientMsg::Ping { nonce });
        self.sink.send(Message::Binary(Bytes::from(frame))).await?;
        Ok(())
    }

    /// Sends a close frame; the receiver then sees the server's close.
    pub async fn close(&mut self) -> Result<(), ClientError> {
        self.send_close(None).await
    }

    /// Sends a close frame with `code` and `reason` (the server answers with the same code).
    pub async fn close_with(&mut self, code: u16, reason: &str) -> Result<(), ClientError> {
        self.send_close(Some(CloseFrame {
            code: code.into(),
            reason: reason.into(),
        }))
        .await
    }

    async fn send_close(&mut self, frame: Option<CloseFrame>) -> Result<(), ClientError> {
        match self.sink.send(Message::Close(frame)).await {
            Ok(()) => Ok(()),
            // The server closed first: nothing left to say.
            Err(e) if ends_connection(&e) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// The highest `client_seq` sent so far.
    pub fn last_client_seq(&self) -> u64 {
        self.shared.sent.load(Ordering::Acquire)
    }
}

impl Receiver {
    /// Reads the first message, which must be `Welcome`. `since`: we asked to resume after
    /// that seq, and a `Welcome` at it without a snapshot keeps our picture. Returns whether
    /// it did, and the number of pending updates.
    async fn read_welcome(&mut self, since: Option<u64>) -> Result<(bool, usize), ClientError> {
        let frame = loop {
            match self.stream.next().await {
                None => {
                    return Err(ClientError::Closed {
                        code: None,
                        reason: "connection ended before welcome".into(),
                    })
                }
                Some(Err(e)) => return Err(e.into()),
                Some(Ok(Message::Binary(frame))) => break frame,
                Some(Ok(Message::Close(frame))) => {
                    let (code, reason) = close_parts(frame);
                    return Err(ClientError::Closed { code, reason });
                }
                Some(Ok(Message::Text(_))) => {
                    return Err(ClientError::Protocol("text frame from server".into()))
                }
                Some(Ok(_)) => continue,
            }
        };
        match codec::decode_server(&frame)? {
            ServerMsg::Welcome {
                client_id,
                width,
                height,
                snapshot_seq,
                snapshot_png,
                pending,
            } if snapshot_png.is_empty() => {
                // PROTOCOL.md §11: keep the picture we have up to `since`.
                let fits = since == Some(snapshot_seq)
                    && snapshot_seq == self.last_seq
                    && (width, height) == (self.width, self.height)
                    && (self.raster.is_some() || !self.options.keep_raster);
                if !fits {
                    return Err(ClientError::Protocol(format!(
                        "welcome without a snapshot at seq {snapshot_seq} ({width}x{height}); we \
                         asked to resume after {since:?} and have {} ({}x{})",
                        self.last_seq, self.width, self.height
                    )));
                }
                self.client_id = client_id;
                self.snapshot_seq = snapshot_seq;
                self.own_last = 0;
                self.session_last = None;
                self.apply_updates(&pending, "resumed welcome pending")?;
                Ok((true, pending.len()))
            }
            welcome @ (ServerMsg::Welcome { .. } | ServerMsg::WelcomeLz4 { .. }) => {
                let pending = match &welcome {
                    ServerMsg::Welcome { pending, .. } | ServerMsg::WelcomeLz4 { pending, .. } => {
                        pending.len()
                    }
                    _ => 0,
                };
                self.accept_welcome(welcome)?;
                Ok((false, pending))
            }
            ServerMsg::Error { code, message } => Err(ClientError::Server { code, message }),
            other => Err(ClientError::Protocol(format!(
                "first message is {other:?}, expected welcome"
            ))),
        }
    }

    /// Replaces the picture with a `Welcome`'s (or `WelcomeLz4`'s) snapshot and pending updates.
    fn accept_welcome(&mut self, welcome: ServerMsg) -> Result<(), ClientError> {
        let (client_id, width, height, snapshot_seq, snapshot, pending) = match welcome {
            ServerMsg::Welcome {
                client_id,
                width,
                height,
                snapshot_seq,
                snapshot_png,
                pending,
            } => (
                client_id,
                width,
                height,
                snapshot_seq,
                SnapshotImage::Png(snapshot_png),
                pending,
            ),
            ServerMsg::WelcomeLz4 {
                client_id,
                width,
                height,
                snapshot_seq,
                snapshot_lz4,
                pending,
            } => (
                client_id,
                width,
                height,
                snapshot_seq,
                SnapshotImage::Lz4(snapshot_lz4),
                pending,
            ),
            other => {
                return Err(ClientError::Protocol(format!(
                    "expected a welcome, got {other:?}"
                )))
            }
        };
        if width == 0
            || height == 0
            || width > self.options.max_side
            || height > self.options.max_side
        {
            return Err(ClientError::Protocol(format!(
                "welcome size {width}x{height} outside 1..={}",
                self.options.max_side
            )));
        }
        self.raster = match (self.options.keep_raster, &snapshot) {
            (false, _) => None,
            (true, SnapshotImage::Png(png)) => {
                let decoded = decode_png(png, self.options.max_side)?;
                if (decoded.raster.width(), decoded.raster.height()) != (width, height) {
                    return Err(ClientError::Protocol(format!(
                        "welcome says {width}x{height}, snapshot png is {}x{}",
                        decoded.raster.width(),
                        decoded.raster.height()
                    )));
                }
                Some(decoded.raster)
            }
            (true, SnapshotImage::Lz4(lz4)) => {
                Some(decode_lz4(lz4, width, height, self.options.max_side)?)
            }
        };
        self.welcome_lz4 = matches!(snapshot, SnapshotImage::Lz4(_));
        self.client_id = client_id;
        self.width = width;
        self.height = height;
        self.snapshot_seq = snapshot_seq;
        self.last_seq = snapshot_seq;
        self.own_last = 0;
        self.session_last = None;
        self.apply_updates(&pending, "welcome pending")?;
        Ok(())
    }

    /// Checks and applies consecutive updates.
    fn apply_updates(&mut self, updates: &[Sequenced], what: &str) -> Result<(), ClientError> {
        for update in updates {
            self.check_next(update.seq, update.client_id, update.client_seq, what)?;
            if let Some(raster) = self.raster.as_mut() {
                raster.apply(&update.op);
            }
        }
        Ok(())
    }

    fn accept_headers(&mut self, headers: Vec<UpdateHeader>) -> Result<Event, ClientError> {
        if headers.is_empty() {
            return Err(ClientError::Protocol("empty updates".into()));
        }
        for h in &headers {
            self.check_next(h.seq, h.client_id, h.client_seq, "updates")?;
        }
        Ok(Event::Headers(headers))
    }

    /// The ordering guarantees of PROTOCOL.md §3 for the next update; records it as seen.
    fn check_next(
        &mut self,
        seq: u64,
        client_id: u64,
        client_seq: u64,
        what: &str,
    ) -> Result<(), ClientError> {
        // `last_seq` comes from the server (a Welcome's `snapshot_seq`): u64::MAX has no next.
        let expected = self.last_seq.checked_add(1);
        if Some(seq) != expected {
            let expected = expected.map_or_else(|| "none".to_string(), |e| e.to_string());
            return Err(ClientError::Protocol(format!(
                "{what}: seq {seq} after {} (expected {expected})",
                self.last_seq
            )));
        }
        if client_id == self.client_id {
            let sent = self.shared.sent.load(Ordering::Acquire);
            if client_seq <= self.own_last || client_seq > sent {
                return Err(ClientError::Protocol(format!(
                    "{what}: own echo client_seq {client_seq} at seq {seq} after own {} (sent up to {sent})",
                    self.own_last
                )));
            }
            self.own_last = client_seq;
            self.own_acked = self.own_acked.max(client_seq);
            if self.options.session.is_some() {
                // The session's order is kept: every earlier op of ours was sequenced, dropped
                // as a copy of one that was, or rejected.
                self.shared.settle_through(client_seq);
            }
        }
        if self.options.keep_log {
            self.log.push(LogEntry {
                seq,
                client_id,
                client_seq,
            });
        }
        self.last_seq = seq;
        Ok(())
    }

    /// The next event from the server, checked and applied. `Ping`/`Pong` frames of the
    /// WebSocket layer are handled underneath and never show up.
    pub async fn next_event(&mut self) -> Result<Event, ClientError> {
        if let Some((code, reason)) = &self.closed {
            return Err(ClientError::Closed {
                code: *code,
                reason: reason.clone(),
            });
        }
        loop {
            let message = match self.stream.next().await {
                None => return Ok(self.mark_closed(None, "connection ended".into())),
                Some(Err(e)) => return Err(e.into()),
                Some(Ok(message)) => message,
            };
            match message {
                Message::Binary(frame) => {
                    if self.options.headers_only && self.raster.is_none() {
                        if let Some(headers) = codec::scan_updates(&frame)? {
                            return self.accept_headers(headers);
                        }
                    }
                    return self.handle(codec::decode_server(&frame)?);
                }
                Message::Text(_) => {
                    return Err(ClientError::Protocol("text frame from server".into()))
                }
                Message::Close(frame) => {
                    let (code, reason) = close_parts(frame);
                    return Ok(self.mark_closed(code, reason));
                }
                Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => continue,
            }
        }
    }

    fn mark_closed(&mut self, code: Option<u16>, reason: String) -> Event {
        self.closed = Some((code, reason.clone()));
        Event::Closed { code, reason }
    }

    fn handle(&mut self, message: ServerMsg) -> Result<Event, ClientError> {
        match message {
            ServerMsg::Updates(updates) => {
                if updates.is_empty() {
                    return Err(ClientError::Protocol("empty updates".into()));
                }
                self.apply_updates(&updates, "updates")?;
                Ok(Event::Updates(updates))
            }
            welcome @ (ServerMsg::Welcome { .. } | ServerMsg::WelcomeLz4 { .. }) => {
                self.accept_welcome(welcome)?;
                self.resyncs += 1;
                Ok(Event::Resynced)
            }
            ServerMsg::Rejected { client_seq, reason } => {
                let sent = self.shared.sent.load(Ordering::Acquire);
                if client_seq > sent {
                    return Err(ClientError::Protocol(format!(
                        "rejection of client_seq {client_seq}, sent only up to {sent}"
                    )));
                }
                if self.options.session.is_some() {
                    self.shared.unacked().retain(|(c, _)| *c != client_seq);
                }
                if self.rejected.len() == REMEMBERED_REJECTIONS {
                    self.rejected.pop_front();
                }
                self.rejected.push_back((client_seq, reason.clone()));
                Ok(Event::Rejected { client_seq, reason })
            }
            ServerMsg::Error { code, message } => Ok(Event::Error { code, message }),
            ServerMsg::Pong { nonce } => Ok(Event::Pong(nonce)),
            ServerMsg::Presence { clients } => {
                self.presence = clients;
                Ok(Event::Presence(clients))
            }
            ServerMsg::Durable { seq } => {
                // PROTOCOL.md §10: only when asked, never beyond what we were sent, always
                // advancing on a connection.
                if !self.options.durable {
                    return Err(ClientError::Protocol(format!(
                        "Durable {{ seq: {seq} }} sent to a client that did not ask"
                    )));
                }
                if seq > self.last_seq || seq <= self.durable_here {
                    return Err(ClientError::Protocol(format!(
                        "Durable {{ seq: {seq} }} with seq {} applied and {} told before",
                        self.last_seq, self.durable_here
                    )));
                }
                self.durable_here = seq;
                self.durable = self.durable.max(seq);
                Ok(Event::Durable(seq))
            }
            ServerMsg::Session {
                session,
                last_client_seq,
            } => {
                if self.options.session != Some(session) {
                    return Err(ClientError::Protocol(format!(
                        "Session message for session {session}, ours is {:?}",
                        self.options.session
                    )));
                }
                let sent = self.shared.sent.load(Ordering::Acquire);
                if last_client_seq > sent {
                    return Err(ClientError::Protocol(format!(
                        "session's last client_seq {last_client_seq}, sent only up to {sent}"
                    )));
                }
                self.session_last = Some(last_client_seq);
                self.shared.settle_through(last_client_seq);
                Ok(Event::Session { last_client_seq })
            }
        }
    }

    /// Reads until the local picture includes `seq`.
    pub async fn sync_to(&mut self, seq: u64, deadline: Instant) -> Result<(), ClientError> {
        while self.last_seq < seq {
            let event = self.next_before(deadline, || format!("seq {seq}")).await?;
            if let Event::Closed { code, reason } = event {
                return Err(ClientError::Closed { code, reason });
            }
        }
        Ok(())
    }

    /// Reads until our own op `client_seq` has been echoed. A rejection of that op ends the
    /// wait with [`ClientError::Rejected`], a resync with [`ClientError::Resynced`].
    pub async fn wait_own(
        &mut self,
        client_seq: u64,
        deadline: Instant,
    ) -> Result<(), ClientError> {
        loop {
            if let Some((_, reason)) = self.rejected.iter().find(|(c, _)| *c == client_seq) {
                return Err(ClientError::Rejected {
                    client_seq,
                    reason: reason.clone(),
                });
            }
            if self.own_acked >= client_seq {
                return Ok(());
            }
            let what = || format!("own echo of client_seq {client_seq}");
            match self.next_before(deadline, what).await? {
                Event::Closed { code, reason } => return Err(ClientError::Closed { code, reason }),
                Event::Resynced if self.own_acked < client_seq => {
                    return Err(ClientError::Resynced(what()))
                }
                _ => {}
            }
        }
    }

    /// The code of the server's close frame, once the connection has ended (`None` before,
    /// or when it ended without a code).
    pub fn close_code(&self) -> Option<u16> {
        self.closed.as_ref().and_then(|(code, _)| *code)
    }

    /// Reads (discarding events) until the connection ends, at most until `deadline`.
    pub async fn wait_closed(&mut self, deadline: Instant) -> Result<(), ClientError> {
        while self.closed.is_none() {
            match tokio::time::timeout_at(deadline, self.next_event()).await {
                Err(_) => return Err(ClientError::Timeout("the server's close".into())),
                // Once we said goodbye, a connection that just ends is as good as a close.
                Ok(Err(ClientError::WebSocket(e))) if ends_connection(&e) => return Ok(()),
                Ok(Err(e)) => return Err(e),
                Ok(Ok(_)) => {}
            }
        }
        Ok(())
    }

    async fn next_before(
        &mut self,
        deadline: Instant,
        what: impl Fn() -> String,
    ) -> Result<Event, ClientError> {
        match tokio::time::timeout_at(deadline, self.next_event()).await {
            Err(_) => Err(ClientError::Timeout(what())),
            Ok(result) => result,
        }
    }

    /// Our id on the picture, from the latest `Welcome` (the session key, for a session).
    pub fn client_id(&self) -> u64 {
        self.client_id
    }

    /// Picture width in pixels, from the latest `Welcome`.
    pub fn width(&self) -> u32 {
        self.width
    }

    /// Picture height in pixels, from the latest `Welcome`.
    pub fn height(&self) -> u32 {
        self.height
    }

    /// `snapshot_seq` of the latest `Welcome`.
    pub fn snapshot_seq(&self) -> u64 {
        self.snapshot_seq
    }

    /// The last seq applied to the local picture.
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// The highest own `client_seq` echoed so far.
    pub fn own_acked(&self) -> u64 {
        self.own_acked
    }

    /// The latest `Presence` count: clients on the picture.
    pub fn presence(&self) -> u32 {
        self.presence
    }

    /// How many times the server resynced us with a fresh `Welcome`.
    pub fn resyncs(&self) -> u64 {
        self.resyncs
    }

    /// The highest seq the server said is in the object store (0: none yet, or not asked).
    pub fn durable_seq(&self) -> u64 {
        self.durable
    }

    /// The `Session` message's `last_client_seq` since the latest `Welcome`, if it came.
    pub fn session_last(&self) -> Option<u64> {
        self.session_last
    }

    /// Whether the latest `Welcome` carried its snapshot as LZ4 (`WelcomeLz4`) rather than PNG.
    pub fn welcome_was_lz4(&self) -> bool {
        self.welcome_lz4
    }

    /// The local picture, when kept.
    pub fn raster(&self) -> Option<&Raster> {
        self.raster.as_ref()
    }

    /// Every received update, when `keep_log` was set.
    pub fn log(&self) -> &[LogEntry] {
        &self.log
    }
}

/// Errors that only say the connection is gone (no close frame, or a reset).
fn ends_connection(error: &tokio_tungstenite::tungstenite::Error) -> bool {
    use tokio_tungstenite::tungstenite::error::ProtocolError;
    use tokio_tungstenite::tungstenite::Error;
    match error {
        Error::ConnectionClosed
        | Error::AlreadyClosed
        | Error::Protocol(ProtocolError::ResetWithoutClosingHandshake) => true,
        Error::Io(io) => matches!(
            io.kind(),
            std::io::ErrorKind::ConnectionReset
                | std::io::ErrorKind::BrokenPipe
                | std::io::ErrorKind::UnexpectedEof
        ),
        _ => false,
    }
}

fn close_parts(frame: Option<CloseFrame>) -> (Option<u16>, String) {
    match frame {
        Some(frame) => (Some(u16::from(frame.code)), frame.reason.to_string()),
        None => (None, String::new()),
    }
}

impl std::fmt::Debug for Receiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Receiver")
            .field("client_id", &self.client_id)
            .field("width", &self.width)
            .field("height", &self.height)
            .field("snapshot_seq", &self.snapshot_seq)
            .field("last_seq", &self.last_seq)
            .field("own_acked", &self.own_acked)
            .field("presence", &self.presence)
            .field("resyncs", &self.resyncs)
            .field("closed", &self.closed)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for Sender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sender")
            .field("last_client_seq", &self.last_client_seq())
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("sender", &self.sender)
            .field("receiver", &self.receiver)
            .finish()
    }
}
