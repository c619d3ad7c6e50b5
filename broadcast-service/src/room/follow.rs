//! Long-poll followers (`GET /pictures/{id}/updates?since=SEQ&wait=SECONDS`, PROTOCOL.md §16):
//! a follower is a resuming client (PROTOCOL.md §11) that takes what the log holds after its
//! `since` and leaves. It is answered at once when the log has published updates after `since`,
//! with `Gone` when the log no longer holds them, or else waits in the room (no task of its own)
//! until the next publish or the end of its `wait`.
//!
//! A room opened by followers alone (no WebSocket client) acquires the lease or relays like any
//! other, and stays open `--follow-linger` after the last follower's request, so the next one
//! finds the log it continues from.
//!
//! Touches the followers and the linger; reads the log.

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use protocol::codec;
use protocol::pps::PpsError;
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::{Role, Room};

/// A follower's request, as the HTTP handler hands it to the room.
pub(crate) struct FollowRequest {
    /// The follower has every update up to this seq.
    pub since: u64,
    /// How long it may wait for the next update (already cut to `--follow-max-wait`).
    pub wait: Duration,
    pub reply: oneshot::Sender<FollowAnswer>,
}

/// The room's answer to a follower.
#[derive(Debug)]
pub(crate) enum FollowAnswer {
    /// The published updates `since + 1 ..= last` as one bincode `ServerMsg::Updates` (no
    /// updates, `last == since`, when the wait ran out).
    Updates { last: u64, body: Bytes },
    /// The log does not hold every update after `since` (it starts after `from`), or `since` is
    /// beyond what the picture has: the follower starts again from `snapshot.png`.
    Gone { from: u64, published: u64 },
    /// The picture cannot be followed here now (missing, unavailable, shutting down).
    Failed(PpsError),
}

/// What decides the answers to the waiting followers, as of the room's last look at them
/// (forgotten whenever a follower arrives).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct FollowState {
    serving: bool,
    sequencer: bool,
    trimmed: u64,
    published: u64,
    last: u64,
}

/// A follower waiting in the room.
pub(super) struct Follower {
    since: u64,
    reply: oneshot::Sender<FollowAnswer>,
    arrived: Instant,
    wait: Duration,
}

impl Follower {
    /// When it is answered whatever happens: the end of its wait, or, while the room cannot
    /// serve it yet (asking for the lease, linking to the sequencer), the join timeout.
    fn deadline(&self, serving: bool, join_timeout: Duration) -> Instant {
        if serving {
            self.arrived + self.wait
        } else {
            self.arrived + self.wait.max(join_timeout)
        }
    }
}

impl Room {
    pub(super) fn on_follow(&mut self, request: FollowRequest) {
        if self.shutting_down {
            let _ = request
                .reply
                .send(FollowAnswer::Failed(PpsError::ShuttingDown));
            return;
        }
        let now = Instant::now();
        self.follow_until = Some(now + self.settings.follow_linger);
        self.follow_state = None;
        self.followers.push(Follower {
            since: request.since,
            reply: request.reply,
            arrived: now,
            wait: request.wait,
        });
        // A room opened by a follower asks for the lease as a joiner's would; the answer, or
        // this turn's end (`after_turn`), answers the follower.
        if let Role::Acquiring { in_flight: None } = self.role {
            if self.retry_at.is_none() {
                self.acquire();
            }
        }
    }

    /// Answers the followers that can be: updates were published after their `since`, their
    /// `since` is out of the log, or their wait is over. Ends the followers' linger once it has
    /// passed. Called after every turn; each distinct `since` is encoded once.
    pub(super) fn answer_followers(&mut self) {
        let now = Instant::now();
        if self.follow_until.is_some_and(|until| until <= now) {
            // Followers still waiting keep the room open by themselves (`nobody`).
            self.follow_until = None;
        }
        if self.followers.is_empty() {
            return;
        }
        let serving = self.serving() && self.opened.is_some();
        let join_timeout = self.settings.join_timeout;
        let sequencer = matches!(self.role, Role::Sequencer { .. });
        let (trimmed, published, last) =
            (self.log.trimmed(), self.log.published(), self.log.last());
        // Most turns (a draw sequenced, not yet published) change nothing for the followers:
        // with thousands waiting, looking at each on every turn would cost the sequencer.
        let state = FollowState {
            serving,
            sequencer,
            trimmed,
            published,
            last,
        };
        if self.follow_state == Some(state) && self.follow_wake().is_some_and(|at| now < at) {
            return;
        }
        let mut encoded: HashMap<u64, Bytes> = HashMap::new();
        let mut waiting = Vec::with_capacity(self.followers.len());
        for follower in std::mem::take(&mut self.followers) {
            if follower.reply.is_closed() {
                continue; // its request is gone (the client hung up)
            }
            let over = follower.deadline(serving, join_timeout) <= now;
            let answer = if !serving {
                over.then(|| {
                    FollowAnswer::Failed(PpsError::Unavailable(
                        "the picture could not be opened in time".into(),
                    ))
                })
            } else if follower.since < trimmed || (sequencer && follower.since > last) {
                // Behind the log; or beyond every seq the sequencer has (the picture went
                // back, or a made-up seq): never answered with updates that would not continue
                // the follower's picture.
                Some(FollowAnswer::Gone {
                    from: trimmed,
                    published,
                })
            } else if follower.since < published || over {
                let since = follower.since.min(published);
                let body = encoded
                    .entry(since)
                    .or_insert_with(|| match self.log.welcome(since) {
                        Ok(entries) => codec::updates_frame(entries),
                        // `trimmed <= since <= published`: the log holds them.
                        Err(_) => codec::updates_frame(std::iter::empty::<&Bytes>()),
                    })
                    .clone();
                // A follower ahead of this service (a relay a little behind the node it came
                // from) whose wait ran out gets no updates at its own `since`.
                let last = if follower.since > published {
                    follower.since
                } else {
                    published
                };
                Some(FollowAnswer::Updates { last, body })
            } else {
                None
            };
            match answer {
                Some(answer) => {
                    let _ = follower.reply.send(answer);
                    // Its next request comes right after this answer: keep the log for it.
                    self.follow_until = Some(now + self.settings.follow_linger);
                }
                None => waiting.push(follower),
            }
        }
        self.followers = waiting;
        self.follow_state = Some(state);
    }

    /// When the room must look at its followers again (a wait or the linger ending).
    pub(super) fn follow_wake(&self) -> Option<Instant> {
        let serving = self.serving() && self.opened.is_some();
        let join_timeout = self.settings.join_timeout;
        self.followers
            .iter()
            .map(|f| f.deadline(serving, join_timeout))
            .chain(self.follow_until)
            .min()
    }

    /// Answers every follower with `error` and ends the linger (the picture is missing, or
    /// this service is shutting down).
    pub(super) fn fail_followers(&mut self, error: &PpsError) {
        for follower in std::mem::take(&mut self.followers) {
            let _ = follower.reply.send(FollowAnswer::Failed(error.clone()));
        }
        self.follow_until = None;
    }

    /// The log restarted at `seq`: a follower waiting after a later seq has updates the picture
    /// no longer has, and starts again from the snapshot.
    pub(super) fn followers_gone_after(&mut self, seq: u64) {
        let published = self.log.published();
        let (gone, waiting): (Vec<Follower>, Vec<Follower>) = std::mem::take(&mut self.followers)
            .into_iter()
            .partition(|f| f.since > seq);
        for follower in gone {
            let _ = follower.reply.send(FollowAnswer::Gone {
                from: self.log.trimmed(),
                published,
            });
        }
        self.followers = waiting;
    }
}
