//! Durable acknowledgements (PROTOCOL.md §10) and session answers (§11): what the clients that
//! asked are told, and when.
//!
//! A client that asked for `Durable` is told `min(durable, published)`, the highest seq that
//! is both in storage and sent to it, whenever that advances for it: right after its
//! `Welcome`, when the picture service reports a flush, and when a publish catches up with a
//! flush it had not been told. A sequencer tells its relays the same (always: they pass it on
//! to their own clients that asked, capped again by what they sent them).
//!
//! Touches `durable`, the clients' and relays' `durable` and `session_answered`; reads the log
//! and the session memory.

use bytes::Bytes;
use protocol::codec;
use protocol::relay::RelayUp;
use protocol::ServerMsg;

use super::{Client, Downstream, Role, Room};
use crate::ws;

impl Room {
    /// Storage holds every update up to `seq` (a `Flushed` event, a release, or the
    /// sequencer's word on a relay link).
    pub(super) fn stored(&mut self, seq: u64) {
        if seq > self.durable {
            self.durable = seq;
            self.durable_at = Some(std::time::SystemTime::now());
        }
    }

    /// The seq clients may be told durable now: in storage, and sent to them.
    fn durable_target(&self) -> u64 {
        self.durable.min(self.log.published())
    }

    /// Tells every client that asked, and every relay, how far storage has what they were
    /// sent, where that advanced (after every turn).
    pub(super) fn announce_durable(&mut self) {
        let target = self.durable_target();
        if target <= self.durable_announced {
            return;
        }
        self.durable_announced = target;
        let frame = durable_frame(target);
        let mut told = 0;
        for client in self.clients.values_mut() {
            if client.durable.is_some_and(|t| t < target) {
                client.durable = Some(target);
                client.outbox.send(frame.clone());
                told += 1;
            }
        }
        for relay in self.relays.values_mut() {
            if relay.durable < target {
                relay.durable = target;
                relay.outbox.send(frame.clone());
            }
        }
        metrics::counter!("bs_durable_sent_total").increment(told);
    }

    /// Tells a client just welcomed how far storage has what it was sent (if it asked and
    /// that is news to it).
    pub(super) fn tell_durable(&self, client: &mut Client) {
        let target = self.durable_target();
        if client.durable.is_some_and(|t| t < target) {
            client.durable = Some(target);
            client.outbox.send(durable_frame(target));
            metrics::counter!("bs_durable_sent_total").increment(1);
        }
    }

    /// [`Room::tell_durable`] for a relay whose link just started.
    pub(super) fn tell_relay_durable(&self, relay: &mut Downstream) {
        let target = self.durable_target();
        if relay.durable < target {
            relay.durable = target;
            relay.outbox.send(durable_frame(target));
        }
    }

    /// Sends a session client just welcomed its `Session` message: at once if this room
    /// sequences the picture; a relay asks the sequencer, whose answer it passes on
    /// ([`Room::on_session_answer`]). Until then the client holds its draws.
    pub(super) fn answer_session(&self, session: u64, client: &mut Client) {
        match &self.role {
            Role::Sequencer { .. } => {
                let answer = ServerMsg::Session {
                    session,
                    last_client_seq: self.sessions.last(session),
                };
                client
                    .outbox
                    .send(ws::binary_frame(&codec::encode(&answer)));
                client.session_answered = true;
            }
            Role::Relay {
                upstream,
                started: true,
                ..
            } => {
                let query = RelayUp::SessionQuery { session };
                if upstream.send(Bytes::from(codec::encode(&query))).is_err() {
                    // The link is going: the next one (or the lease) answers.
                    tracing::debug!(picture = %self.id, session, "relay link cannot take a session query");
                }
            }
            // Answered when this room serves again (`answer_waiting_sessions`).
            _ => {}
        }
    }

    /// A relay asks for the `Session` message of one of its clients (at the sequencer).
    pub(super) fn answer_relay_session(&mut self, relay: u64, session: u64) {
        if !matches!(self.role, Role::Sequencer { .. }) {
            // The relay relinks (its link is closed when the lease goes) and asks again.
            return;
        }
        let Some(downstream) = self.relays.get(&relay) else {
            return;
        };
        let answer = ServerMsg::Session {
            session,
            last_client_seq: self.sessions.last(session),
        };
        downstream
            .outbox
            .send(ws::binary_frame(&codec::encode(&answer)));
    }

    /// The sequencer's answer for session client `session` of this relay: passed on to it.
    pub(super) fn on_session_answer(&mut self, session: u64, payload: &[u8]) {
        if let Some(client) = self.clients.get_mut(&session) {
            if client.session && !client.session_answered {
                client.session_answered = true;
                client.outbox.send(ws::binary_frame(payload));
            }
        }
    }
}

fn durable_frame(seq: u64) -> Bytes {
    ws::binary_frame(&codec::encode(&ServerMsg::Durable { seq }))
}
