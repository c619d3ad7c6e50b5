//! Relaying (docs/scaling.md): when another broadcast service holds the picture's lease, this
//! room links to it, sends its clients' draws up the link, and gives its clients the
//! sequencer's frames unchanged, keeping a copy of the pending log for its own joins. When the
//! link breaks, the room asks for the lease again (it may become the sequencer itself).
//!
//! Touches the role, the log (as a copy: relayed updates are published at once and never
//! handed to the picture service), and the clients; opens the link.

use protocol::codec;

use super::{Opened, Role, Room};
use crate::upstream::{Relayed, Upstream, UpstreamEvent};
use crate::ws;

impl Room {
    /// Another broadcast service (`holder`, its advertise URL) sequences the picture: link to
    /// it. If this room sequenced before, what it sequenced alone is settled first: the updates
    /// the owner confirmed are the picture's history (the new sequencer continues after them);
    /// of the others, some may be in it too (their confirmation was lost) and some not: their
    /// drawers cannot be told which, so every client is resynced (a fresh `Welcome` says what
    /// is in the picture). Updates echoed here and lost are counted.
    pub(super) fn relay_to(&mut self, holder: String) {
        if self.claim_lease.take().is_some() {
            let (published, accepted) = (self.log.published(), self.log.acked());
            if published > accepted {
                let lost = published - accepted;
                tracing::error!(picture = %self.id, lost, "updates echoed while the picture service was unreachable were never confirmed: they may be lost");
                metrics::counter!("bs_echoed_updates_lost_total").increment(lost);
            }
            let unconfirmed = self.log.last() > accepted;
            // What was sequenced after that point is not the picture's: a session's resend
            // of it must be taken.
            self.sessions.forget_after(published.min(accepted));
            self.reopen_log(published.min(accepted));
            if unconfirmed {
                self.resync_all("this room's updates went to another sequencer unconfirmed");
            }
        }
        self.forwarded.clear();
        self.generations += 1;
        let generation = self.generations;
        let since = self.opened.map(|_| self.log.published());
        let url = relay_url(&holder, &self.id, since);
        tracing::info!(picture = %self.id, %holder, ?since, "relaying to the picture's sequencer");
        let mailbox = self.ctl_tx.clone();
        let upstream = Upstream::connect(
            url,
            self.settings.max_relay_message,
            self.settings.relay_connect_timeout,
            move |event| {
                let _ = mailbox.send(super::Ctl::Upstream { generation, event });
            },
        );
        self.role = Role::Relay {
            holder,
            upstream,
            generation,
            started: false,
        };
    }

    pub(super) fn on_upstream(&mut self, generation: u64, event: UpstreamEvent) {
        let Role::Relay {
            generation: current,
            started,
            ..
        } = &mut self.role
        else {
            return;
        };
        if *current != generation {
            return; // an event of a link this room has replaced
        }
        match event {
            UpstreamEvent::Started {
                width,
                height,
                since,
                pending,
            } => {
                *started = true;
                self.backoff.reset();
                let continues = self.opened.is_some() && since == self.log.published();
                if !continues {
                    if self.opened.is_some() {
                        tracing::info!(picture = %self.id, since, had = self.log.published(), "the sequencer does not continue what this relay has");
                    }
                    self.opened = Some(Opened { width, height });
                    self.sessions.forget_after(since.min(self.log.published()));
                    self.reopen_log(since);
                    self.resync_all("the sequencer changed");
                }
                for update in pending {
                    self.echoed(&update);
                    if !self.log.push_relayed(update.seq, update.entry) {
                        return self.relay_broken("the relay link's start skipped seqs");
                    }
                }
                if self.log.last() > since {
                    // Updates this relay's clients have not had: one frame of our own.
                    let frame = ws::binary_frame_in(codec::updates_frame_after(
                        ws::HEADROOM,
                        self.log.after(since),
                    ));
                    self.deliver_all(&frame);
                }
                self.clients_changed();
                self.request_pending_snapshots();
                self.welcome_ready_joins();
                self.answer_waiting_sessions();
            }
            UpstreamEvent::Updates { payload, entries } => {
                for update in entries {
                    self.echoed(&update);
                    if !self.log.push_relayed(update.seq, update.entry) {
                        return self.relay_broken("the sequencer sent a gap");
                    }
                }
                self.deliver_all(&ws::binary_frame(&payload));
                self.welcome_ready_joins();
            }
            UpstreamEvent::Frame(payload) => self.deliver_all(&ws::binary_frame(&payload)),
            UpstreamEvent::Durable(seq) => self.stored(seq),
            UpstreamEvent::Session { session, payload } => {
                self.on_session_answer(session, &payload)
            }
            UpstreamEvent::Lost(reason) => self.relay_broken(&reason),
        }
    }

    /// A relayed update: if it is the echo of a draw this room forwarded, that draw is settled.
    fn echoed(&mut self, update: &Relayed) {
        if let Some(&last) = self.forwarded.get(&update.client_id) {
            if update.client_seq >= last {
                self.forwarded.remove(&update.client_id);
            }
        }
    }

    /// The link to the sequencer is gone: ask for the lease again (this room may become the
    /// sequencer, or relink to whoever is). Clients whose forwarded draws were not echoed
    /// cannot know whether they were sequenced: they are resynced (a fresh `Welcome` says).
    fn relay_broken(&mut self, reason: &str) {
        if let Role::Relay { holder, .. } = &self.role {
            tracing::warn!(picture = %self.id, %holder, reason, "relay link lost");
            metrics::counter!("bs_relay_links_lost_total").increment(1);
        }
        self.role = Role::Acquiring { in_flight: None };
        for client_id in std::mem::take(&mut self.forwarded).into_keys() {
            if let Some(client) = self.clients.remove(&client_id) {
                self.resync(client_id, client);
            }
        }
        if self.nobody() {
            return;
        }
        self.back_off();
    }
}

/// The relay link's URL on the sequencer's advertise URL (`http://host:port` or
/// `ws://host:port`).
fn relay_url(holder: &str, picture: &str, since: Option<u64>) -> String {
    let base = holder.trim_end_matches('/');
    let base = if let Some(rest) = base.strip_prefix("http://") {
        format!("ws://{rest}")
    } else if let Some(rest) = base.strip_prefix("https://") {
        format!("wss://{rest}")
    } else {
        base.to_string()
    };
    match since {
        Some(since) => format!("{base}/pictures/{picture}/relay?since={since}"),
        None => format!("{base}/pictures/{picture}/relay"),
    }
}
