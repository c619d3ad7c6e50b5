//! The relay's end of a relay link (docs/scaling.md, PROTOCOL.md §9): one WebSocket to the
//! broadcast service that holds a picture's sequencer lease, carrying this service's clients'
//! draws up and the sequencer's frames down.
//!
//! The task here only moves bytes and parses just enough of them: the first message must be
//! the `Welcome` without a snapshot that starts the link; every `Updates` frame is split into
//! its encoded updates (slices of the frame, no copy) for the relay's own copy of the pending
//! log, and passed on whole so the room can send it to its clients unchanged. Everything goes
//! to the room through `post`, tagged by the room with the link's generation so that the events
//! of a link it has replaced are ignored.

use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use link::remote::describe_ws_error;
use protocol::codec;
use protocol::ServerMsg;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

/// How many draws may wait for the socket before the link counts as stalled.
const UP_QUEUE: usize = 4096;

/// What the link tells its room.
#[derive(Debug)]
pub(crate) enum UpstreamEvent {
    /// The link is up: the sequencer continues after `seq` (everything in `pending` is after
    /// `since` and up to `seq`).
    Started {
        width: u32,
        height: u32,
        /// The seq the `Welcome` starts after (the `since` asked for, or the sequencer's
        /// current seq when its log no longer holds `since + 1`).
        since: u64,
        /// The updates `since + 1 ..`.
        pending: Vec<Relayed>,
    },
    /// An `Updates` frame: its payload, to forward, and its updates.
    Updates {
        payload: Bytes,
        entries: Vec<Relayed>,
    },
    /// Any other frame for the clients (`Presence`).
    Frame(Bytes),
    /// Storage has every update up to this seq (PROTOCOL.md §10).
    Durable(u64),
    /// The `Session` message of one of the relay's clients (PROTOCOL.md §11): its payload,
    /// for that client alone.
    Session { session: u64, payload: Bytes },
    /// The link is gone (the reason, for logs).
    Lost(String),
}

/// One update of an `Updates` frame, for the relay's log and its clients' echoes.
#[derive(Debug)]
pub(crate) struct Relayed {
    pub seq: u64,
    pub client_id: u64,
    pub client_seq: u64,
    /// Its encoding (a slice of the frame).
    pub entry: Bytes,
}

/// A relay link (counted in `bs_relays_upstream` while it lives); dropping it closes the
/// socket.
pub(crate) struct Upstream {
    up: mpsc::Sender<Bytes>,
    task: JoinHandle<()>,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
        metrics::gauge!("bs_relays_upstream").decrement(1.0);
    }
}

/// Why a frame could not be queued for the sequencer.
#[derive(Debug)]
pub(crate) enum SendError {
    /// The link is down.
    Closed,
    /// The sequencer does not keep up with this relay.
    Full,
}

impl Upstream {
    /// Connects to `url` (`ws://host:port/pictures/{id}/relay?since=N`) in the background.
    pub(crate) fn connect(
        url: String,
        max_message_size: usize,
        connect_timeout: Duration,
        post: impl Fn(UpstreamEvent) + Send + Sync + 'static,
    ) -> Upstream {
        let (up, up_rx) = mpsc::channel(UP_QUEUE);
        metrics::gauge!("bs_relays_upstream").increment(1.0);
        let task = tokio::spawn(async move {
            let reason = run(&url, max_message_size, connect_timeout, up_rx, &post).await;
            post(UpstreamEvent::Lost(reason));
        });
        Upstream { up, task }
    }

    /// Queues one encoded `RelayUp` message.
    pub(crate) fn send(&self, frame: Bytes) -> Result<(), SendError> {
        self.up.try_send(frame).map_err(|error| match error {
            mpsc::error::TrySendError::Full(_) => SendError::Full,
            mpsc::error::TrySendError::Closed(_) => SendError::Closed,
        })
    }
}

/// Serves the link until it fails; returns why.
async fn run(
    url: &str,
    max_message_size: usize,
    connect_timeout: Duration,
    mut up: mpsc::Receiver<Bytes>,
    post: &impl Fn(UpstreamEvent),
) -> String {
    // Frames are a few KB; tungstenite's default read buffer (128 KiB, allocated up front)
    // would be most of what a relayed picture costs here.
    let config = WebSocketConfig::default()
        .max_message_size(Some(max_message_size))
        .max_frame_size(Some(max_message_size))
        .read_buffer_size(16 * 1024);
    let connect = tokio_tungstenite::connect_async_with_config(url, Some(config), true);
    let socket = match tokio::time::timeout(connect_timeout, connect).await {
        Ok(Ok((socket, _))) => socket,
        Ok(Err(error)) => return describe_ws_error(&error).0,
        Err(_) => return format!("no answer within {connect_timeout:?}"),
    };
    let (mut sink, mut stream) = socket.split();
    let mut started = false;
    loop {
        tokio::select! {
            message = stream.next() => {
                let payload = match message {
                    Some(Ok(Message::Binary(payload))) => payload,
                    Some(Ok(Message::Close(frame))) => {
                        return match frame {
                            Some(frame) => format!("closed by the sequencer ({}: {})", u16::from(frame.code), frame.reason),
                            None => "closed by the sequencer".to_string(),
                        };
                    }
                    Some(Ok(_)) => continue,
                    Some(Err(error)) => return describe_ws_error(&error).0,
                    None => return "connection closed".to_string(),
                };
                let event = if started {
                    parse_frame(payload)
                } else {
                    started = true;
                    parse_start(&payload)
                };
                match event {
                    Ok(event) => post(event),
                    Err(reason) => return reason,
                }
            }
            frame = up.recv() => {
                let Some(frame) = frame else {
                    return "closed by the relay".to_string();
                };
                if let Err(error) = sink.send(Message::Binary(frame)).await {
                    return describe_ws_error(&error).0;
                }
            }
        }
    }
}

/// The first message: a `Welcome` without a snapshot.
fn parse_start(payload: &[u8]) -> Result<UpstreamEvent, String> {
    match codec::decode_server(payload) {
        Ok(ServerMsg::Welcome {
            width,
            height,
            snapshot_seq,
            snapshot_png,
            pending,
            ..
        }) if snapshot_png.is_empty() => Ok(UpstreamEvent::Started {
            width,
            height,
            since: snapshot_seq,
            pending: pending
                .iter()
                .map(|update| Relayed {
                    seq: update.seq,
                    client_id: update.client_id,
                    client_seq: update.client_seq,
                    entry: codec::encode_sequenced(update),
                })
                .collect(),
        }),
        Ok(ServerMsg::Error { code, message }) => {
            Err(format!("refused by the sequencer ({code}: {message})"))
        }
        Ok(other) => Err(format!(
            "the sequencer started the link with {}",
            message_name(&other)
        )),
        Err(error) => Err(format!("undecodable start of the link: {error}")),
    }
}

/// A frame after the start: `Updates` (split into its updates) or another message to pass on.
fn parse_frame(payload: Bytes) -> Result<UpstreamEvent, String> {
    match codec::scan_updates(&payload) {
        Ok(Some(headers)) => {
            // An update's encoding is its three u64 fields, then its op.
            let entries = headers
                .iter()
                .map(|h| Relayed {
                    seq: h.seq,
                    client_id: h.client_id,
                    client_seq: h.client_seq,
                    entry: payload.slice(h.entry.0..h.entry.1),
                })
                .collect();
            Ok(UpstreamEvent::Updates { payload, entries })
        }
        Ok(None) => match codec::decode_server(&payload) {
            Ok(ServerMsg::Presence { .. }) => Ok(UpstreamEvent::Frame(payload)),
            Ok(ServerMsg::Durable { seq }) => Ok(UpstreamEvent::Durable(seq)),
            Ok(ServerMsg::Session { session, .. }) => {
                Ok(UpstreamEvent::Session { session, payload })
            }
            Ok(ServerMsg::Error { code, message }) => {
                Err(format!("the sequencer reported {code}: {message}"))
            }
            Ok(other) => Err(format!(
                "unexpected {} on the relay link",
                message_name(&other)
            )),
            Err(error) => Err(format!("undecodable frame on the relay link: {error}")),
        },
        Err(error) => Err(format!("undecodable updates on the relay link: {error}")),
    }
}

fn message_name(message: &ServerMsg) -> &'static str {
    match message {
        ServerMsg::Welcome { .. } => "a Welcome",
        ServerMsg::Updates(_) => "Updates",
        ServerMsg::Rejected { .. } => "a Rejected",
        ServerMsg::Error { .. } => "an Error",
        ServerMsg::Pong { .. } => "a Pong",
        ServerMsg::Presence { .. } => "a Presence",
        ServerMsg::WelcomeLz4 { .. } => "a WelcomeLz4",
        ServerMsg::Durable { .. } => "a Durable",
        ServerMsg::Session { .. } => "a Session",
    }
}
