//! The sequencer's end of a relay link (docs/scaling.md, PROTOCOL.md §9): another broadcast
//! service relays this picture's clients through this one. The link's writer is an ordinary
//! [`Outbox`](crate::outbox::Outbox): the room sends it the very frames its clients get. Its
//! reader turns the relay's [`RelayUp`] messages into the room's input, in order (so each
//! relayed client keeps its own order).

use std::sync::Arc;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use protocol::codec;
use protocol::relay::RelayUp;
use tungstenite::Message;

use crate::admission::Permit;
use crate::room::Input;
use crate::ws::{self, Socket};
use crate::AppState;

/// Serves one relay link until it closes.
pub(crate) async fn serve(
    socket: Socket,
    state: Arc<AppState>,
    picture: String,
    since: Option<u64>,
    permit: Permit,
) {
    // A relayed draw is a client's draw with 16 bytes more.
    let (outbox, mut stream) = ws::server_stream(socket, state.config.max_message_bytes + 64).await;
    let relay = state.next_client_id();
    let (input, joined) = match state
        .registry
        .join_relay(&picture, relay, since, outbox.clone())
    {
        Ok(joined) => joined,
        Err(why) => {
            outbox.error_and_close(409, &why, 1013);
            return;
        }
    };
    match joined.await {
        Ok(Ok(())) => {}
        Ok(Err(why)) => {
            tracing::debug!(%picture, relay, %why, "relay link refused");
            outbox.error_and_close(409, &why, 1013);
            return;
        }
        Err(_) => {
            outbox.error_and_close(503, "the picture's room closed", 1013);
            return;
        }
    }
    while let Some(message) = stream.next().await {
        let frame: Bytes = match message {
            Ok(Message::Binary(frame)) => frame,
            Ok(Message::Close(_)) => {
                // Answer it (RFC 6455 §5.5.1): tungstenite queued the reply, the flush sends it.
                let _ = stream.flush().await;
                break;
            }
            Ok(Message::Text(_)) => {
                outbox.error_and_close(400, "text frames are not part of the relay link", 1003);
                break;
            }
            Ok(_) => continue,
            Err(error) => {
                tracing::debug!(%picture, relay, %error, "relay link failed");
                break;
            }
        };
        let event = match codec::decode::<RelayUp>(&frame) {
            Ok(up @ (RelayUp::Draw { .. } | RelayUp::SessionDraw { .. })) => {
                let (session, client_id, client_seq, op) = match up {
                    RelayUp::SessionDraw {
                        client_id,
                        client_seq,
                        op,
                    } => (true, client_id, client_seq, op),
                    RelayUp::Draw {
                        client_id,
                        client_seq,
                        op,
                    } => (false, client_id, client_seq, op),
                    _ => continue,
                };
                if let Err(error) = state.limits.check(&op) {
                    // The relay checks the same limits; one configured otherwise is told.
                    metrics::counter!("bs_relayed_draws_refused_total").increment(1);
                    tracing::warn!(%picture, relay, %error, "relayed draw over this service's limits; dropped");
                    continue;
                }
                Input::Draw {
                    client_id,
                    client_seq,
                    op: codec::relay_draw_op(&frame),
                    via: Some(relay),
                    conn: 0,
                    session,
                }
            }
            Ok(RelayUp::Clients { count }) => Input::RelayClients { relay, count },
            Ok(RelayUp::SessionQuery { session }) => Input::SessionQuery { relay, session },
            Err(error) => {
                outbox.error_and_close(400, &error.to_string(), 1007);
                break;
            }
        };
        if input.send(event).await.is_err() {
            break;
        }
    }
    let _ = input.send(Input::RelayLeave { relay }).await;
    drop(permit);
}
