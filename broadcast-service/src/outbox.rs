//! One client's outbound side: WebSocket frames for its socket, written straight away when the
//! socket takes them and queued for the client's writer task when it does not.
//!
//! Frames are [`Bytes`] framed once ([`crate::frame::binary_frame`]) and shared by every client of
//! a picture: sending one to a client costs a reference count and, in the common case, one
//! non-blocking `write` from the sequencer itself, with no task to wake and no copy. Only when
//! the socket is full (or a frame is already waiting) does a frame join the queue, which the
//! writer task drains as the socket becomes writable, many frames per `writev`.
//!
//! The queue is accounted in bytes: the sequencer checks [`Outbox::queued_bytes`] before it
//! sends and treats a client over its budget as slow (PROTOCOL.md §3.5), so the sequencer never
//! waits for a client.
//!
//! A resync bumps the client's *generation*: the writer then drops every queued frame of an
//! older generation without writing it (never one it has started), and the fresh `Welcome` (of
//! the new generation) goes out next.

use std::collections::VecDeque;
use std::future::{poll_fn, Future};
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use tokio::io::{AsyncWrite, WriteHalf};
use tokio::sync::Notify;

use crate::frame;
use crate::socket::Socket;

/// A frame that is never dropped by a resync (answers to the client's own messages).
const ANY_GENERATION: u64 = u64::MAX;

/// Most queued frames handed to one `writev`.
const MAX_IOV: usize = 64;

struct Item {
    generation: u64,
    bytes: Bytes,
    /// Counted in the queue's bytes (everything but a `Welcome`, which may legitimately be
    /// larger than a slow client's whole budget, and the frames tungstenite writes).
    counted: bool,
    /// Part of it is on the wire already: it is finished whatever its generation.
    started: bool,
    /// A close frame: nothing is written after it.
    close: bool,
}

struct State {
    socket: WriteHalf<Socket>,
    queue: VecDeque<Item>,
    /// The writer task holds frames taken off the queue: new frames wait behind them.
    writing: bool,
    /// A close frame is queued or written: later frames are dropped.
    closing: bool,
    /// The socket failed: every frame is dropped.
    dead: bool,
}

struct Shared {
    state: Mutex<State>,
    /// Bytes of counted frames queued and not yet written or dropped: the slow-client test.
    queued: AtomicUsize,
    /// Frames of an older generation than this are stale (see the module doc).
    generation: AtomicU64,
    /// Live [`Outbox`] handles; the writer ends when none is left and the queue is empty.
    senders: AtomicUsize,
    wake: Notify,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the queue inconsistent (every update of
        // it is a single push or drain), so a poisoned lock is still usable.
        protocol::sync::lock(&self.state)
    }
}

/// The sending end of a client's frames; cheap to clone (the sequencer and the reader each hold
/// one).
pub(crate) struct Outbox {
    shared: Arc<Shared>,
}

impl Clone for Outbox {
    fn clone(&self) -> Self {
        self.shared.senders.fetch_add(1, Ordering::Relaxed);
        Outbox {
            shared: self.shared.clone(),
        }
    }
}

impl Drop for Outbox {
    fn drop(&mut self) {
        if self.shared.senders.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.shared.wake.notify_one();
        }
    }
}

impl Outbox {
    /// Creates the outbox of `socket` and spawns its writer.
    pub(crate) fn spawn(socket: WriteHalf<Socket>) -> Outbox {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                socket,
                queue: VecDeque::new(),
                writing: false,
                closing: false,
                dead: false,
            }),
            queued: AtomicUsize::new(0),
            generation: AtomicU64::new(0),
            senders: AtomicUsize::new(1),
            wake: Notify::new(),
        });
        tokio::spawn(write_loop(shared.clone()));
        Outbox { shared }
    }

    pub(crate) fn queued_bytes(&self) -> usize {
        self.shared.queued.load(Ordering::Relaxed)
    }

    /// Sends a frame ([`frame::binary_frame`]) of the current generation (sequencer side). False
    /// when the connection is gone.
    pub(crate) fn send(&self, frame: Bytes) -> bool {
        let generation = self.shared.generation.load(Ordering::Relaxed);
        self.push(generation, frame, true, false)
    }

    /// Sends a `Welcome` frame of the current generation, outside the slow-client byte budget.
    pub(crate) fn send_welcome(&self, frame: Bytes) -> bool {
        let generation = self.shared.generation.load(Ordering::Relaxed);
        self.push(generation, frame, false, false)
    }

    /// Sends a message that survives resyncs (reader side: `Pong`, `Rejected`, `Error`).
    pub(crate) fn send_direct(&self, message: &[u8]) -> bool {
        self.push(ANY_GENERATION, frame::binary_frame(message), true, false)
    }

    /// Sends frames tungstenite wrote (pongs, the reply to a client's close).
    pub(crate) fn send_raw(&self, frames: Bytes) -> bool {
        let close = frame::has_close_frame(&frames);
        self.push(ANY_GENERATION, frames, false, close)
    }

    /// Sends a WebSocket ping (its answer shows the client is alive, `--ws-idle-timeout`).
    pub(crate) fn ping(&self, payload: &[u8]) -> bool {
        self.push(ANY_GENERATION, frame::ping_frame(payload), false, false)
    }

    /// Makes every frame queued so far stale; frames sent from now on are written.
    pub(crate) fn start_new_generation(&self) {
        self.shared.generation.fetch_add(1, Ordering::Relaxed);
    }

    /// Sends `Error { code, message }` (where it still can) and closes with `close_code`.
    pub(crate) fn error_and_close(&self, code: u16, message: &str, close_code: u16) {
        let error = protocol::codec::encode(&protocol::ServerMsg::Error {
            code,
            message: message.to_string(),
        });
        self.send_direct(&error);
        self.close(close_code, message);
    }

    /// Sends a close frame; the socket's sending side is shut once it is written.
    pub(crate) fn close(&self, code: u16, reason: &str) {
        self.push(
            ANY_GENERATION,
            frame::close_frame(code, reason),
            false,
            true,
        );
    }

    fn push(&self, generation: u64, mut bytes: Bytes, counted: bool, close: bool) -> bool {
        let shared = &*self.shared;
        let mut state = shared.state();
        if state.dead || state.closing {
            return false;
        }
        let mut started = false;
        if !state.writing && state.queue.is_empty() {
            // Nothing ahead of it: straight to the socket, without waking anyone. Polled with a
            // waker that does nothing (when the socket is full, the writer task polls it again
            // with its own before it waits) and outside tokio's per-task budget, which would
            // otherwise turn every write after the 128th of one turn of the sequencer into
            // "not ready" (half of the frames of a 256-client room went the slow way).
            let mut cx = Context::from_waker(futures::task::noop_waker_ref());
            let attempt = {
                let socket = &mut state.socket;
                let write = poll_fn(|cx| Pin::new(&mut *socket).poll_write(cx, &bytes));
                std::pin::pin!(tokio::task::unconstrained(write)).poll(&mut cx)
            };
            match attempt {
                Poll::Ready(Ok(n)) if n == bytes.len() => {
                    if close {
                        state.closing = true;
                        let _ = Pin::new(&mut state.socket).poll_shutdown(&mut cx);
                    }
                    return true;
                }
                Poll::Ready(Ok(n)) if n > 0 => {
                    bytes.advance(n);
                    started = true;
                }
                Poll::Pending => {}
                Poll::Ready(result) => {
                    let error = result
                        .err()
                        .unwrap_or_else(|| io::ErrorKind::WriteZero.into());
                    tracing::debug!(%error, "client socket failed");
                    state.dead = true;
                    return false;
                }
            }
        }
        if counted {
            shared.queued.fetch_add(bytes.len(), Ordering::Relaxed);
        }
        metrics::counter!("bs_frames_queued_total").increment(1);
        state.closing |= close;
        state.queue.push_back(Item {
            generation,
            bytes,
            counted,
            started,
            close,
        });
        drop(state);
        shared.wake.notify_one();
        true
    }
}

/// Drains the queue into the socket whenever the sequencer could not write directly.
async fn write_loop(shared: Arc<Shared>) {
    let mut batch: VecDeque<Item> = VecDeque::new();
    loop {
        let woken = shared.wake.notified();
        let idle = {
            let mut state = shared.state();
            if state.queue.is_empty() {
                state.writing = false;
                if state.dead || state.closing || shared.senders.load(Ordering::Acquire) == 0 {
                    state.dead = true;
                    return;
                }
                true
            } else {
                state.writing = true;
                batch.extend(state.queue.drain(..));
                false
            }
        };
        if idle {
            woken.await;
            continue;
        }
        let current = shared.generation.load(Ordering::Relaxed);
        batch.retain(|item| {
            let stale =
                !item.started && item.generation != ANY_GENERATION && item.generation < current;
            if stale {
                metrics::counter!("bs_frames_dropped_stale_total").increment(1);
                if item.counted {
                    shared.queued.fetch_sub(item.bytes.len(), Ordering::Relaxed);
                }
            }
            !stale
        });
        if let Err(error) = write_batch(&shared, &mut batch).await {
            tracing::debug!(%error, "client socket failed");
            let mut state = shared.state();
            state.dead = true;
            state.writing = false;
            let dropped = state.queue.drain(..).chain(batch.drain(..));
            let lost: usize = dropped.filter(|i| i.counted).map(|i| i.bytes.len()).sum();
            shared.queued.fetch_sub(lost, Ordering::Relaxed);
            return;
        }
    }
}

/// Writes every frame of `batch` (emptying it), many per `writev`; a close frame ends the
/// writing and shuts the socket.
async fn write_batch(shared: &Shared, batch: &mut VecDeque<Item>) -> io::Result<()> {
    while !batch.is_empty() {
        // Up to and including the first close frame.
        let take = batch
            .iter()
            .position(|i| i.close)
            .map_or(batch.len(), |p| p + 1)
            .min(MAX_IOV);
        let slices: Vec<IoSlice<'_>> = batch
            .iter()
            .take(take)
            .map(|i| IoSlice::new(&i.bytes))
            .collect();
        let mut written =
            poll_fn(|cx| Pin::new(&mut shared.state().socket).poll_write_vectored(cx, &slices))
                .await?;
        if written == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        drop(slices);
        while written > 0 {
            let Some(item) = batch.front_mut() else { break };
            let n = written.min(item.bytes.len());
            item.bytes.advance(n);
            item.started = true;
            written -= n;
            if item.counted {
                shared.queued.fetch_sub(n, Ordering::Relaxed);
            }
            if item.bytes.is_empty() {
                let close = item.close;
                batch.pop_front();
                if close {
                    poll_fn(|cx| Pin::new(&mut shared.state().socket).poll_shutdown(cx)).await?;
                    let dropped: usize = batch
                        .drain(..)
                        .filter(|i| i.counted)
                        .map(|i| i.bytes.len())
                        .sum();
                    shared.queued.fetch_sub(dropped, Ordering::Relaxed);
                }
            }
        }
    }
    Ok(())
}
