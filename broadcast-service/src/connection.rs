//! One drawing client's connection: the reader (decode, validate, rate-limit, forward to the
//! room in order) and, through [`Outbox`](crate::outbox::Outbox), the writer.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use protocol::{codec, ClientMsg, Limits, ServerMsg};
use tungstenite::Message;

use crate::admission::Permit;
use crate::auth::{Grant, Role, EXPIRED_CLOSE};
use crate::registry::JoinError;
use crate::room::{Input, Wants};
use crate::ws::{self, Socket};
use crate::AppState;

/// A token bucket: `rate` tokens per second, at most `burst` saved up.
struct Bucket {
    tokens: f64,
    rate: f64,
    burst: f64,
    at: Instant,
}

impl Bucket {
    fn new(rate: f64, burst: f64) -> Self {
        Self {
            tokens: burst,
            rate,
            burst,
            at: Instant::now(),
        }
    }

    fn take(&mut self, n: f64) -> bool {
        let now = Instant::now();
        self.tokens =
            (self.tokens + now.duration_since(self.at).as_secs_f64() * self.rate).min(self.burst);
        self.at = now;
        if self.tokens >= n {
            self.tokens -= n;
            true
        } else {
            false
        }
    }
}

/// Serves one client until it leaves. `session`: its session key (PROTOCOL.md §11), which is
/// then its client id on every connection. `grant`: what its token allows (PROTOCOL.md §13;
/// `None` when tokens are off): a `view` client's draws are rejected, and the connection is
/// closed with 4401 when the token expires.
pub(crate) async fn serve(
    socket: Socket,
    state: Arc<AppState>,
    picture: String,
    wants: Wants,
    session: Option<u64>,
    grant: Option<Grant>,
    permit: Permit,
) {
    let (outbox, mut stream) = ws::server_stream(socket, state.config.max_message_bytes).await;
    // Connection ids and client ids come from one counter: unique in this process.
    let conn = state.next_client_id();
    let client_id = session.unwrap_or(conn);
    let (input, joined) =
        match state
            .registry
            .join(&picture, client_id, conn, wants, outbox.clone())
        {
            Ok(joined) => joined,
            Err(JoinError::ShuttingDown) => {
                outbox.error_and_close(503, "service is shutting down", 1012);
                return;
            }
        };
    metrics::gauge!("bs_clients").increment(1.0);
    let _connected = scopeguard(|| metrics::gauge!("bs_clients").decrement(1.0));
    // One span per join, until the `Welcome` is queued (exported over OTLP when configured).
    let span =
        tracing::info_span!("join", picture = %picture, client = client_id, since = ?wants.since);
    let Ok(Ok((width, height))) = tracing::Instrument::instrument(joined, span).await else {
        return; // the room told the client why and closed it
    };
    if let Err(refused) = permit.confirm_size(width, height) {
        // The picture turned out bigger than its joiner asked for (PROTOCOL.md §12).
        outbox.error_and_close(refused.status().as_u16(), refused.message(), 1013);
        let _ = input.send(Input::Leave { client_id, conn }).await;
        return;
    }
    tracing::debug!(picture = %picture, client = client_id, "client joined");

    let limits: &Limits = &state.limits;
    let config = &state.config;
    let mut ops = Bucket::new(f64::from(config.rate_ops), f64::from(config.rate_burst));
    let bytes_rate = config.rate_bytes as f64;
    let mut bytes = Bucket::new(bytes_rate, bytes_rate);

    // Keepalive: a ping every `--ws-ping-interval`; a client not heard from (no frame, no
    // pong) for `--ws-idle-timeout` is closed with 1001.
    let mut next_ping = Instant::now() + config.ws_ping_interval;
    let mut heard = Instant::now();
    let view_only = grant.is_some_and(|grant| grant.role == Role::View);
    let expires_at = grant.map(|grant| grant.expires_at());
    loop {
        let idle_at = heard + config.ws_idle_timeout;
        let expired = async {
            match expires_at {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        let message = tokio::select! {
            message = stream.next() => message,
            () = expired => {
                metrics::counter!("bs_tokens_expired_total").increment(1);
                tracing::debug!(picture = %picture, client = client_id, "token expired; closing");
                outbox.close(EXPIRED_CLOSE, "token expired");
                break;
            }
            () = tokio::time::sleep_until(next_ping.min(idle_at).into()) => {
                let now = Instant::now();
                if now >= idle_at {
                    metrics::counter!("bs_idle_clients_closed_total").increment(1);
                    tracing::debug!(picture = %picture, client = client_id, "client idle; closing");
                    outbox.close(IDLE_CLOSE, "idle timeout: no frame or pong received");
                    break;
                }
                outbox.ping(b"keepalive");
                next_ping = now + config.ws_ping_interval;
                continue;
            }
        };
        let Some(message) = message else { break };
        heard = Instant::now();
        let frame: Bytes = match message {
            Ok(Message::Binary(frame)) => frame,
            Ok(Message::Text(_)) => {
                outbox.error_and_close(400, "text frames are not part of the protocol", 1003);
                break;
            }
            Ok(Message::Close(_)) => {
                // The client closes: tungstenite has queued the answer (the same code, RFC 6455
                // §5.5.1); flushing hands it to the outbox, which shuts the socket after it.
                let _ = stream.flush().await;
                break;
            }
            Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_)) => continue,
            Err(error) => {
                if is_too_big(&error) {
                    let message = format!(
                        "message larger than the limit of {} bytes",
                        config.max_message_bytes
                    );
                    outbox.error_and_close(413, &message, 1009);
                }
                break;
            }
        };
        let within_bytes = bytes.take(frame.len() as f64);
        match codec::decode_client(&frame) {
            Err(error) => {
                metrics::counter!("bs_undecodable_frames_total").increment(1);
                outbox.error_and_close(400, &error.to_string(), 1007);
                break;
            }
            Ok(ClientMsg::Ping { nonce }) => {
                outbox.send_direct(&codec::encode(&ServerMsg::Pong { nonce }));
            }
            Ok(ClientMsg::Draw { client_seq, op }) => {
                let verdict = if view_only {
                    // Consumes no seq, and no op of the rate budget: nothing is drawn.
                    Err("view-only token: this connection may not draw".to_string())
                } else if !within_bytes || !ops.take(1.0) {
                    Err(format!(
                        "rate limit exceeded (allowed {} ops/s, bursts of {}, {} bytes/s)",
                        config.rate_ops, config.rate_burst, config.rate_bytes
                    ))
                } else {
                    limits.check(&op).map_err(|e| e.to_string())
                };
                match verdict {
                    Ok(()) => {
                        let op = codec::draw_op(&frame);
                        let draw = Input::Draw {
                            client_id,
                            client_seq,
                            op,
                            via: None,
                            conn,
                            session: wants.session,
                        };
                        if input.send(draw).await.is_err() {
                            break;
                        }
                    }
                    Err(reason) => {
                        metrics::counter!("bs_rejected_total").increment(1);
                        let rejected = ServerMsg::Rejected { client_seq, reason };
                        outbox.send_direct(&codec::encode(&rejected));
                    }
                }
            }
        }
    }
    let _ = input.send(Input::Leave { client_id, conn }).await;
    drop(permit);
    tracing::debug!(picture = %picture, client = client_id, "client left");
}

/// The close code of a client that stopped answering (`--ws-idle-timeout`): going away.
pub(crate) const IDLE_CLOSE: u16 = 1001;

/// Whether a read failed because the message was over the size limit.
fn is_too_big(error: &tungstenite::Error) -> bool {
    matches!(error, tungstenite::Error::Capacity(_))
}

/// Runs `f` when dropped.
fn scopeguard(f: impl FnOnce()) -> impl Drop {
    struct Guard<F: FnOnce()>(Option<F>);
    impl<F: FnOnce()> Drop for Guard<F> {
        fn drop(&mut self) {
            if let Some(f) = self.0.take() {
                f();
            }
        }
    }
    Guard(Some(f))
}
