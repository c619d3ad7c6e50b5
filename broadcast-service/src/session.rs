//! What a picture's sequencer remembers of client sessions (PROTOCOL.md §11), as a plain
//! state machine: no tasks, no clocks.
//!
//! A client that connects with `?session=K` draws under `client_id` K on every connection, and
//! its `client_seq` keeps increasing across them. When its connection drops it cannot know
//! which of its last ops were sequenced; after it reconnects the sequencer tells it the highest
//! `client_seq` of K it sequenced ([`Sessions::last`]), the client sends the ops above it again,
//! and the sequencer drops every draw of K whose `client_seq` is not above that highest one
//! ([`Sessions::admit`]): a late copy from the old connection (through another broadcast
//! service, say) or a resend of an op whose original arrived meanwhile. Every op of a session
//! is then sequenced exactly once and in its order (the proptest below drives random
//! interleavings of late deliveries, losses, resends and reconnects against that).
//!
//! The memory is bounded (`--session-memory` sessions per picture, the least recently used one
//! forgotten first). A forgotten session is answered 0 and its draws are all taken: a resend of
//! an op sequenced before may then be sequenced twice.

use std::collections::{BTreeMap, HashMap};

/// The highest `client_seq` sequenced for one session, and where.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Last {
    client_seq: u64,
    /// The seq it got: forgotten if the log is cut back before it ([`Sessions::forget_after`]).
    seq: u64,
    /// When the session was last used, its key in `lru`.
    stamp: u64,
}

/// What to do with a session's draw.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Admit {
    /// Sequence it (it is recorded as the session's highest).
    New,
    /// Its `client_seq` was sequenced already (or a later one was): drop it.
    Duplicate,
}

#[derive(Debug)]
pub(crate) struct Sessions {
    /// Most sessions remembered; 0 remembers none (every draw is new, every answer 0).
    cap: usize,
    by_session: HashMap<u64, Last>,
    /// Sessions by last use, oldest first: the eviction order.
    lru: BTreeMap<u64, u64>,
    clock: u64,
    /// Sessions forgotten to stay within `cap` (for the metrics).
    evicted: u64,
}

impl Sessions {
    pub(crate) fn new(cap: usize) -> Sessions {
        Sessions {
            cap,
            by_session: HashMap::new(),
            lru: BTreeMap::new(),
            clock: 0,
            evicted: 0,
        }
    }

    /// Sessions remembered.
    pub(crate) fn len(&self) -> usize {
        self.by_session.len()
    }

    /// Sessions forgotten so far to stay within the cap.
    pub(crate) fn evicted(&self) -> u64 {
        self.evicted
    }

    /// A draw of `session` with `client_seq` that would get `seq`: [`Admit::New`] (and
    /// recorded) unless the session's highest sequenced `client_seq` is at least `client_seq`.
    pub(crate) fn admit(&mut self, session: u64, client_seq: u64, seq: u64) -> Admit {
        if let Some(last) = self.by_session.get(&session).copied() {
            if client_seq <= last.client_seq {
                self.touch(session, last);
                return Admit::Duplicate;
            }
        }
        self.record(session, client_seq, seq);
        Admit::New
    }

    /// The highest `client_seq` of `session` sequenced, as far as this memory knows (0: none).
    pub(crate) fn last(&self, session: u64) -> u64 {
        self.by_session.get(&session).map_or(0, |l| l.client_seq)
    }

    /// An update found in a log this sequencer takes over (`client_id` may or may not be a
    /// session: every id is learnt, a draw is checked only if it comes with a session key).
    pub(crate) fn learn(&mut self, client_id: u64, client_seq: u64, seq: u64) {
        match self.by_session.get(&client_id) {
            Some(last) if last.client_seq >= client_seq => {}
            _ => self.record(client_id, client_seq, seq),
        }
    }

    /// The log was cut back to `seq` (updates after it are gone from this sequencer's history):
    /// sessions whose highest op came after it are forgotten, so their resends are taken.
    pub(crate) fn forget_after(&mut self, seq: u64) {
        let gone: Vec<u64> = self
            .by_session
            .iter()
            .filter(|(_, last)| last.seq > seq)
            .map(|(&session, _)| session)
            .collect();
        for session in gone {
            if let Some(last) = self.by_session.remove(&session) {
                self.lru.remove(&last.stamp);
            }
        }
    }

    fn touch(&mut self, session: u64, last: Last) {
        self.lru.remove(&last.stamp);
        self.clock += 1;
        self.lru.insert(self.clock, session);
        self.by_session.insert(
            session,
            Last {
                stamp: self.clock,
                ..last
            },
        );
    }

    fn record(&mut self, session: u64, client_seq: u64, seq: u64) {
        if self.cap == 0 {
            return;
        }
        if let Some(old) = self.by_session.remove(&session) {
            self.lru.remove(&old.stamp);
        }
        while self.by_session.len() >= self.cap {
            let Some((_, oldest)) = self.lru.pop_first() else {
                break;
            };
            self.by_session.remove(&oldest);
            self.evicted += 1;
        }
        self.clock += 1;
        self.lru.insert(self.clock, session);
        self.by_session.insert(
            session,
            Last {
                client_seq,
                seq,
                stamp: self.clock,
            },
        );
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::collections::VecDeque;

    use proptest::prelude::*;

    use super::*;

    #[test]
    fn duplicates_and_older_ops_are_dropped() {
        let mut s = Sessions::new(8);
        assert_eq!(s.last(7), 0);
        assert_eq!(s.admit(7, 1, 10), Admit::New);
        assert_eq!(s.admit(7, 1, 11), Admit::Duplicate);
        assert_eq!(s.admit(7, 3, 11), Admit::New);
        assert_eq!(s.admit(7, 2, 12), Admit::Duplicate);
        assert_eq!(s.last(7), 3);
        // Another session has its own numbering.
        assert_eq!(s.admit(8, 1, 12), Admit::New);
        assert_eq!(s.last(8), 1);
    }

    #[test]
    fn the_least_recently_used_session_is_forgotten_first() {
        let mut s = Sessions::new(2);
        s.admit(1, 5, 1);
        s.admit(2, 5, 2);
        // Session 1 is used again (a duplicate counts as use): 2 is the oldest now.
        assert_eq!(s.admit(1, 5, 3), Admit::Duplicate);
        s.admit(3, 1, 3);
        assert_eq!(s.len(), 2);
        assert_eq!(s.evicted(), 1);
        assert_eq!(s.last(1), 5);
        assert_eq!(s.last(2), 0, "forgotten");
        // What eviction costs: an old op of a forgotten session is taken again.
        assert_eq!(s.admit(2, 5, 4), Admit::New);
        let mut none = Sessions::new(0);
        assert_eq!(none.admit(1, 1, 1), Admit::New);
        assert_eq!(none.admit(1, 1, 2), Admit::New);
        assert_eq!(none.last(1), 0);
    }

    #[test]
    fn learning_a_log_keeps_the_highest_and_a_cut_forgets() {
        let mut s = Sessions::new(8);
        s.learn(4, 2, 10);
        s.learn(4, 1, 11);
        s.learn(5, 9, 12);
        assert_eq!((s.last(4), s.last(5)), (2, 9));
        s.forget_after(11);
        assert_eq!((s.last(4), s.last(5)), (2, 0));
        assert_eq!(s.admit(5, 9, 12), Admit::New);
    }

    /// One thing that can happen to a session client and the sequencer, in any order.
    #[derive(Clone, Debug)]
    enum Step {
        /// The client draws its next op (sent on its connection, or held while it waits for
        /// the answer after a reconnect).
        Draw,
        /// The head of connection `pick`'s queue reaches the sequencer (a connection delivers
        /// what it carried in order, even after the client has given up on it).
        Deliver { pick: usize },
        /// What connection `pick` still carried is lost (a connection loses a suffix).
        Lose { pick: usize },
        /// The current connection hears about the next published update.
        Echo,
        /// The client gives up on its connection and opens a new one (`full`: the Welcome
        /// has a snapshot, whose updates it never sees one by one).
        Reconnect { full: bool },
        /// The new connection gets its `Session` answer: the sequencer's memory as of now
        /// (on a relay, some time after the Welcome).
        Answer,
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            4 => Just(Step::Draw),
            5 => any::<usize>().prop_map(|pick| Step::Deliver { pick }),
            1 => any::<usize>().prop_map(|pick| Step::Lose { pick }),
            3 => Just(Step::Echo),
            1 => any::<bool>().prop_map(|full| Step::Reconnect { full }),
            2 => Just(Step::Answer),
        ]
    }

    const SESSION: u64 = 42;

    /// A session client (doing what PROTOCOL.md §11 asks of it) and a sequencer.
    struct World {
        sessions: Sessions,
        /// client_seq of each sequenced update of the session, in seq order.
        sequenced: Vec<u64>,
        /// Draws each connection carries to the sequencer, in order; the last is current.
        conns: Vec<VecDeque<u64>>,
        /// How far the current connection has heard the published updates.
        heard: usize,
        /// The client's highest client_seq drawn.
        drawn: u64,
        /// Ops sent (or held) without an echo seen or a `Session` answer covering them.
        unacked: Vec<u64>,
        /// Waiting for the `Session` answer: new draws are held, not sent.
        waiting: bool,
    }

    impl World {
        fn new() -> World {
            World {
                sessions: Sessions::new(1 << 20),
                sequenced: Vec::new(),
                conns: vec![VecDeque::new()],
                heard: 0,
                drawn: 0,
                unacked: Vec::new(),
                waiting: false,
            }
        }

        fn deliver(&mut self, conn: usize) {
            if let Some(client_seq) = self.conns[conn].pop_front() {
                let seq = self.sequenced.len() as u64 + 1;
                if self.sessions.admit(SESSION, client_seq, seq) == Admit::New {
                    if let Some(&last) = self.sequenced.last() {
                        assert!(client_seq > last, "{client_seq} sequenced after {last}");
                    }
                    self.sequenced.push(client_seq);
                }
            }
        }

        fn run(&mut self, step: Step) {
            let current = self.conns.len() - 1;
            match step {
                Step::Draw => {
                    self.drawn += 1;
                    self.unacked.push(self.drawn);
                    if !self.waiting {
                        self.conns[current].push_back(self.drawn);
                    }
                }
                Step::Deliver { pick } => self.deliver(pick % self.conns.len()),
                Step::Lose { pick } => {
                    let pick = pick % self.conns.len();
                    // Only a connection the client gave up on: the current one is reliable
                    // until the client leaves it.
                    if pick != current {
                        self.conns[pick].clear();
                    }
                }
                Step::Echo => {
                    if let Some(&client_seq) = self.sequenced.get(self.heard) {
                        self.heard += 1;
                        // An echo settles that op and, the session's order being kept, every
                        // earlier one still waiting (they were sequenced or dropped as copies).
                        self.unacked.retain(|&c| c > client_seq);
                    }
                }
                Step::Reconnect { full } => {
                    self.conns.push(VecDeque::new());
                    // A resumed Welcome carries the updates the client had not heard (its
                    // echoes are heard from there); a full one hides them in its snapshot.
                    if full {
                        self.heard = self.sequenced.len();
                    }
                    self.waiting = true;
                }
                Step::Answer if self.waiting => {
                    self.waiting = false;
                    let last = self.sessions.last(SESSION);
                    self.unacked.retain(|&c| c > last);
                    let resend = self.unacked.clone();
                    self.conns[current].extend(resend);
                }
                Step::Answer => {}
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

        /// Whatever arrives late, is lost or is sent again, every op of the session is
        /// sequenced exactly once, in the order it was drawn.
        #[test]
        fn every_op_of_a_session_is_sequenced_once_and_in_order(
            steps in prop::collection::vec(step(), 1..300),
        ) {
            let mut world = World::new();
            for step in steps {
                world.run(step);
            }
            // Settle: one last reconnect, the answer, then every connection delivers.
            world.run(Step::Reconnect { full: false });
            world.run(Step::Answer);
            for conn in 0..world.conns.len() {
                while !world.conns[conn].is_empty() {
                    world.deliver(conn);
                }
            }
            let expected: Vec<u64> = (1..=world.drawn).collect();
            prop_assert_eq!(&world.sequenced, &expected);
        }
    }
}
