//! One client's outbound side: a queue of shared, already-encoded frames and the writer task
//! that drains it into the socket, many frames per flush.
//!
//! The queue is unbounded as a channel but accounted in bytes: the sequencer checks
//! [`Outbox::queued_bytes`] before it enqueues and treats a client over its budget as slow
//! (PROTOCOL.md §3.5), so the sequencer never waits for a client. Frames are `Bytes` shared by
//! every client of a picture: queueing one costs a reference count, not a copy.
//!
//! A resync bumps the client's *generation*: the writer then drops every frame queued before
//! the bump without writing it, and the fresh `Welcome` (of the new generation) goes out next.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use bytes::Bytes;
use futures::stream::SplitSink;
use futures::SinkExt;
use tokio::sync::mpsc;

/// A frame that is never dropped by a resync (answers to the client's own messages).
const ANY_GENERATION: u64 = u64::MAX;

/// How many queued messages the writer feeds before it flushes the socket.
const MAX_FEED: usize = 512;

pub(crate) enum Outgoing {
    Frame {
        generation: u64,
        bytes: Bytes,
        /// Counted in the queue's bytes (everything but a `Welcome`, which may legitimately be
        /// larger than a slow client's whole budget).
        counted: bool,
    },
    Close {
        code: u16,
        reason: String,
    },
}

/// The sending end of a client's queue; cheap to clone (the sequencer and the reader each hold one).
#[derive(Clone)]
pub(crate) struct Outbox {
    tx: mpsc::UnboundedSender<Outgoing>,
    /// Bytes enqueued and not yet written or dropped: the slow-client test.
    queued: Arc<AtomicUsize>,
    /// Frames of an older generation than this are stale (see the module doc).
    generation: Arc<AtomicU64>,
}

impl Outbox {
    /// Creates the queue and spawns its writer on `sink`.
    pub(crate) fn spawn(sink: SplitSink<WebSocket, Message>) -> Outbox {
        let (tx, rx) = mpsc::unbounded_channel();
        let outbox = Outbox {
            tx,
            queued: Arc::new(AtomicUsize::new(0)),
            generation: Arc::new(AtomicU64::new(0)),
        };
        tokio::spawn(write_loop(
            sink,
            rx,
            outbox.queued.clone(),
            outbox.generation.clone(),
        ));
        outbox
    }

    pub(crate) fn queued_bytes(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }

    /// Queues a frame of the current generation (sequencer side). False when the writer is gone.
    pub(crate) fn send(&self, bytes: Bytes) -> bool {
        let generation = self.generation.load(Ordering::Relaxed);
        self.enqueue(generation, bytes, true)
    }

    /// Queues a `Welcome` of the current generation, outside the slow-client byte budget.
    pub(crate) fn send_welcome(&self, bytes: Bytes) -> bool {
        let generation = self.generation.load(Ordering::Relaxed);
        self.enqueue(generation, bytes, false)
    }

    /// Queues a frame that survives resyncs (reader side: `Pong`, `Rejected`, `Error`).
    pub(crate) fn send_direct(&self, bytes: Bytes) -> bool {
        self.enqueue(ANY_GENERATION, bytes, true)
    }

    fn enqueue(&self, generation: u64, bytes: Bytes, counted: bool) -> bool {
        let len = if counted { bytes.len() } else { 0 };
        self.queued.fetch_add(len, Ordering::Relaxed);
        let frame = Outgoing::Frame {
            generation,
            bytes,
            counted,
        };
        if self.tx.send(frame).is_err() {
            self.queued.fetch_sub(len, Ordering::Relaxed);
            return false;
        }
        true
    }

    /// Makes every frame queued so far stale; frames sent from now on are written.
    pub(crate) fn start_new_generation(&self) {
        self.generation.fetch_add(1, Ordering::Relaxed);
    }

    /// Sends `Error { code, message }` (where it still can) and closes with `close_code`.
    pub(crate) fn error_and_close(&self, code: u16, message: &str, close_code: u16) {
        let error = protocol::codec::encode(&protocol::ServerMsg::Error {
            code,
            message: message.to_string(),
        });
        self.send_direct(Bytes::from(error));
        self.close(close_code, message);
    }

    pub(crate) fn close(&self, code: u16, reason: &str) {
        // A close reason must fit a control frame (125 bytes including the code).
        let mut reason = reason.to_string();
        while reason.len() > 120 {
            reason.pop();
        }
        let _ = self.tx.send(Outgoing::Close { code, reason });
    }
}

async fn write_loop(
    mut sink: SplitSink<WebSocket, Message>,
    mut rx: mpsc::UnboundedReceiver<Outgoing>,
    queued: Arc<AtomicUsize>,
    generation: Arc<AtomicU64>,
) {
    let mut batch = Vec::with_capacity(MAX_FEED);
    loop {
        if rx.recv_many(&mut batch, MAX_FEED).await == 0 {
            // Every sender is gone: the client left and the sequencer let go of it.
            let _ = sink.close().await;
            return;
        }
        let current = generation.load(Ordering::Relaxed);
        let mut fed = 0;
        for item in batch.drain(..) {
            match item {
                Outgoing::Frame {
                    generation: g,
                    bytes,
                    counted,
                } => {
                    if counted {
                        queued.fetch_sub(bytes.len(), Ordering::Relaxed);
                    }
                    if g != ANY_GENERATION && g < current {
                        metrics::counter!("bs_frames_dropped_stale").increment(1);
                        continue;
                    }
                    if sink.feed(Message::Binary(bytes)).await.is_err() {
                        // Usually the client closed first: let its close be answered.
                        let _ = sink.close().await;
                        return;
                    }
                    fed += 1;
                }
                Outgoing::Close { code, reason } => {
                    let frame = CloseFrame {
                        code,
                        reason: reason.into(),
                    };
                    let _ = sink.send(Message::Close(Some(frame))).await;
                    let _ = sink.close().await;
                    return;
                }
            }
        }
        if fed > 0 {
            metrics::counter!("bs_frames_sent").increment(fed);
            if sink.flush().await.is_err() {
                let _ = sink.close().await;
                return;
            }
        }
    }
}
