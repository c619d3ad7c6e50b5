//! The pending log of one picture, as a plain state machine: no tasks, no channels, no clocks.
//!
//! It holds the sequenced updates that storage may not have yet, in seq order, and knows where
//! each of its readers stands:
//!
//! ```text
//!   durable (storage has it)   published (clients have it)   last (sequenced)
//!            │                          │                        │
//!  ─ trimmed ┴─ … ──────────────────────┴── … ───────────────────┤
//!            └ acked (PPS has it) ┘└ sent (handed to PPS) ┘
//! ```
//!
//! - `trimmed`: the log holds `trimmed + 1 ..= last`. It only moves forward, and never past
//!   what storage holds (`durable`), what the picture service was handed (`sent`), or a
//!   joiner's *pin* (the trim point when its join started).
//! - `published`: every entry up to it has been given to the subscribed clients; the ones after
//!   it go out in the next `Updates` frame.
//! - `sent` / `acked`: how far batches were handed to the picture service, and how far it
//!   confirmed them. A gap reported by the picture service, a failed batch or a new grant of
//!   the lease (`resume_at`) moves `sent` back (never below `trimmed`): those entries are
//!   resent.
//! - a release: asked once everything is acked and nobody is left, confirmed with the seq
//!   that storage then holds.
//!
//! # The join rule
//!
//! A joiner pins the trim point when it starts and asks the picture service for a snapshot
//! that includes at least the pin. The snapshot comes back at some `S >= pin >= trimmed`, so
//! the log still holds `S + 1 ..`: [`PendingLog::welcome`] gives exactly the published entries
//! after `S`, and the joiner is subscribed to what is published next. [`PendingLog::check`]
//! states the order between the counters; the tests drive random interleavings against it.

use std::collections::{BTreeMap, VecDeque};

use bytes::Bytes;
use protocol::codec;

/// Updates in seq order, as encoded inside `Updates` and `Welcome.pending`.
pub(crate) type Entries<'a> = std::collections::vec_deque::Iter<'a, Bytes>;

/// Why a snapshot cannot start a `Welcome` from this log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Misfit {
    /// The snapshot is older than the log: the updates right after it are gone.
    Trimmed { snapshot: u64, log_from: u64 },
    /// The snapshot is newer than what was published.
    Ahead { snapshot: u64, published: u64 },
}

/// A batch for the picture service: the entries `first ..= last`, as a bincode
/// `Vec<Sequenced>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Batch {
    pub first: u64,
    pub last: u64,
    pub updates: Bytes,
}

#[derive(Debug, Default)]
pub(crate) struct PendingLog {
    /// Entries `trimmed + 1 ..= last()`, each an encoded `Sequenced`.
    entries: VecDeque<Bytes>,
    /// Every seq up to this one is durable and dropped from the log.
    trimmed: u64,
    /// The highest seq storage holds, as reported (trimming may lag behind it for pins).
    durable: u64,
    /// Entries up to this seq have been given to the subscribers.
    published: u64,
    /// The highest seq handed to the picture service.
    sent: u64,
    /// The highest seq the picture service confirmed it has.
    acked: u64,
    /// Batches handed over and not answered yet.
    inflight: usize,
    /// A release was asked for everything up to this seq and is not answered yet.
    releasing: Option<u64>,
    /// Storage held everything up to this seq and the picture service let the picture go.
    released: Option<u64>,
    /// Joins in progress and the trim point each saw when it started.
    pins: BTreeMap<u64, u64>,
}

impl PendingLog {
    pub(crate) fn new() -> PendingLog {
        PendingLog::default()
    }

    /// The picture was opened at `seq` (its first snapshot): numbering continues after it and
    /// every earlier seq is durable. Joins in progress are pinned there.
    pub(crate) fn open_at(&mut self, seq: u64) {
        self.entries.clear();
        self.trimmed = seq;
        self.durable = seq;
        self.published = seq;
        self.sent = seq;
        self.acked = seq;
        self.inflight = 0;
        self.releasing = None;
        self.released = None;
        for pin in self.pins.values_mut() {
            *pin = seq;
        }
    }

    /// The last sequenced seq.
    pub(crate) fn last(&self) -> u64 {
        self.trimmed + self.entries.len() as u64
    }

    /// The log holds the entries after this seq.
    pub(crate) fn trimmed(&self) -> u64 {
        self.trimmed
    }

    /// Entries held (for the metrics).
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Sequences a client's op (its bincode encoding): returns its seq.
    pub(crate) fn append(&mut self, client_id: u64, client_seq: u64, op: &[u8]) -> u64 {
        let seq = self.last() + 1;
        self.entries
            .push_back(codec::sequenced_entry(seq, client_id, client_seq, op));
        self.released = None;
        seq
    }

    /// A relayed update (`entry`, the encoding of seq `last() + 1`) from the picture's
    /// sequencer: published at once, and nothing to hand to the picture service (the
    /// sequencer does that). `false` (and nothing changes) if it is not the next seq.
    pub(crate) fn push_relayed(&mut self, seq: u64, entry: Bytes) -> bool {
        if seq != self.last() + 1 {
            return false;
        }
        self.entries.push_back(entry);
        self.published = seq;
        self.sent = seq;
        self.acked = seq;
        true
    }

    /// The entries after `seq` (up to the last), in order.
    pub(crate) fn after(&self, seq: u64) -> Entries<'_> {
        let seq = seq.clamp(self.trimmed, self.last());
        self.range_between(seq, self.last())
    }

    /// The highest seq published.
    pub(crate) fn published(&self) -> u64 {
        self.published
    }

    /// The highest seq the picture service confirmed it has.
    pub(crate) fn acked(&self) -> u64 {
        self.acked
    }

    /// The entries not yet published, up to `upto`, in order.
    pub(crate) fn publishable(&self, upto: u64) -> Entries<'_> {
        let upto = upto.clamp(self.published, self.last());
        self.range_between(self.published, upto)
    }

    /// Everything up to `upto` (at most what was sequenced) has been given to the subscribers.
    pub(crate) fn mark_published(&mut self, upto: u64) {
        self.published = self.published.max(upto.min(self.last()));
    }

    /// This service holds the picture's lease again and its picture service has everything
    /// up to `seq` (a grant after a claim, or to a relay that had received exactly that much):
    /// the entries after `seq` are handed over next. `Err` when `seq` is outside the log.
    pub(crate) fn resume_at(&mut self, seq: u64) -> Result<(), Misfit> {
        if seq < self.trimmed {
            return Err(Misfit::Trimmed {
                snapshot: seq,
                log_from: self.trimmed + 1,
            });
        }
        if seq > self.last() {
            return Err(Misfit::Ahead {
                snapshot: seq,
                published: self.last(),
            });
        }
        self.sent = seq;
        self.acked = seq;
        self.inflight = 0;
        self.releasing = None;
        self.released = None;
        Ok(())
    }

    /// Pins the log for join `join`: nothing after the current trim point is dropped until
    /// [`PendingLog::unpin`]. Returns the pin, the least seq its snapshot must include.
    pub(crate) fn pin(&mut self, join: u64) -> u64 {
        self.pins.insert(join, self.trimmed);
        self.trimmed
    }

    /// The join ended (joined, failed or left): its pin no longer holds the log.
    pub(crate) fn unpin(&mut self, join: u64) {
        if self.pins.remove(&join).is_some() {
            self.trim();
        }
    }

    /// The pin of a join in progress.
    pub(crate) fn pin_of(&self, join: u64) -> Option<u64> {
        self.pins.get(&join).copied()
    }

    /// The `pending` of a `Welcome` whose snapshot is at `snapshot`: the published entries
    /// `snapshot + 1 ..= published`.
    pub(crate) fn welcome(&self, snapshot: u64) -> Result<Entries<'_>, Misfit> {
        if snapshot < self.trimmed {
            return Err(Misfit::Trimmed {
                snapshot,
                log_from: self.trimmed + 1,
            });
        }
        if snapshot > self.published {
            return Err(Misfit::Ahead {
                snapshot,
                published: self.published,
            });
        }
        Ok(self.range_between(snapshot, self.published))
    }

    /// Entries sequenced and not yet handed to the picture service.
    pub(crate) fn unsent(&self) -> u64 {
        self.last() - self.sent
    }

    /// The next batch to hand to the picture service: at most `max_updates` entries after
    /// `sent`, unless `max_inflight` batches are out already.
    pub(crate) fn next_batch(&mut self, max_updates: usize, max_inflight: usize) -> Option<Batch> {
        let last = self.last();
        if self.inflight >= max_inflight || self.sent >= last {
            return None;
        }
        let first = self.sent + 1;
        let end = last.min(self.sent + max_updates.max(1) as u64);
        let updates = codec::sequenced_vec(self.range_between(self.sent, end));
        self.inflight += 1;
        self.sent = end;
        Some(Batch {
            first,
            last: end,
            updates,
        })
    }

    /// A batch was accepted: the picture service has every update up to `have`.
    pub(crate) fn accepted(&mut self, have: u64) {
        self.inflight = self.inflight.saturating_sub(1);
        self.acked = self.acked.max(have);
    }

    /// A batch was refused because the picture service has only up to `have`: resend from
    /// `have + 1` (what is trimmed is durable and never resent).
    pub(crate) fn gap(&mut self, have: u64) {
        self.inflight = self.inflight.saturating_sub(1);
        self.rewind_to(have);
    }

    /// A batch failed (the picture service is unreachable, say): resend what it did not
    /// confirm.
    pub(crate) fn failed(&mut self) {
        self.inflight = self.inflight.saturating_sub(1);
        self.sent = self.acked.max(self.trimmed).min(self.sent);
    }

    /// Storage holds every update up to `seq`.
    pub(crate) fn flushed(&mut self, seq: u64) {
        self.durable = self.durable.max(seq);
        self.trim();
    }

    /// Asks for a release when it is due: nobody is left (`nobody`), everything sequenced was
    /// handed over and confirmed, and no release of it is out or done. Returns the seq to
    /// release up to.
    pub(crate) fn start_release(&mut self, nobody: bool) -> Option<u64> {
        let last = self.last();
        let due = nobody
            && self.releasing.is_none()
            && self.inflight == 0
            && self.sent == last
            && self.acked >= last
            && self.released.is_none_or(|r| r < last);
        if !due {
            return None;
        }
        self.releasing = Some(last);
        Some(last)
    }

    /// The release asked at some seq was answered: storage holds everything up to `flushed`.
    pub(crate) fn released(&mut self, flushed: u64) {
        self.releasing = None;
        self.durable = self.durable.max(flushed);
        self.released = Some(flushed);
        self.trim();
    }

    /// The release found the picture service behind, at `have`: resend, then release again.
    pub(crate) fn release_gap(&mut self, have: u64) {
        self.releasing = None;
        self.rewind_to(have);
    }

    /// The release failed: it will be asked again.
    pub(crate) fn release_failed(&mut self) {
        self.releasing = None;
    }

    /// Whether a release confirmed everything sequenced.
    pub(crate) fn is_released(&self) -> bool {
        self.released.is_some_and(|r| r >= self.last())
    }

    /// The order between the counters; `Err` names the first one broken.
    pub(crate) fn check(&self) -> Result<(), String> {
        let last = self.last();
        let min_pin = self.pins.values().min().copied();
        let rules = [
            (self.trimmed <= self.durable, "trimmed <= durable"),
            (self.trimmed <= self.sent, "trimmed <= sent"),
            (self.trimmed <= self.published, "trimmed <= published"),
            (self.published <= last, "published <= last"),
            (self.sent <= last, "sent <= last"),
            (self.acked <= last, "acked <= last"),
            (
                min_pin.is_none_or(|pin| self.trimmed <= pin),
                "trimmed <= every pin",
            ),
            (
                self.releasing.is_none_or(|r| r <= last),
                "releasing <= last",
            ),
        ];
        match rules.iter().find(|(holds, _)| !holds) {
            None => Ok(()),
            Some((_, rule)) => Err(format!("{rule} broken: {self:?}")),
        }
    }

    fn rewind_to(&mut self, have: u64) {
        self.sent = have.clamp(self.trimmed, self.sent);
        self.acked = self.acked.min(self.sent);
    }

    /// Drops entries storage holds, but none a join in progress may need and none the
    /// picture service was not handed.
    fn trim(&mut self) {
        let pinned = self.pins.values().min().copied().unwrap_or(u64::MAX);
        let target = self
            .durable
            .min(pinned)
            .min(self.sent.max(self.trimmed))
            .min(self.published.max(self.trimmed))
            .min(self.last());
        while self.trimmed < target {
            self.entries.pop_front();
            self.trimmed += 1;
        }
    }

    /// Entries `after + 1 ..= to`, for `trimmed <= after <= to <= last()`.
    fn range_between(&self, after: u64, to: u64) -> Entries<'_> {
        let from = (after - self.trimmed) as usize;
        let to = (to - self.trimmed) as usize;
        self.entries.range(from..to)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::collections::VecDeque;

    use proptest::prelude::*;
    use protocol::{Op, Sequenced};

    use super::*;

    /// One thing that can happen to a picture's room, in any order.
    #[derive(Clone, Debug)]
    enum Step {
        /// A client's op is sequenced.
        Append,
        /// The tick ends: the unpublished entries go to every subscribed client.
        Publish,
        /// The tick ends with the echoes gated: only what the picture service confirmed goes.
        PublishAcked,
        /// A client starts joining.
        Join,
        /// The snapshot of a join in progress arrives (`pick` chooses the join and its seq).
        Snapshot { pick: usize, at: usize },
        /// A joiner gives up before its snapshot.
        JoinLeaves { pick: usize },
        /// A subscribed client leaves.
        ClientLeaves { pick: usize },
        /// The room hands the next batch to the picture service.
        SendBatch,
        /// The picture service answers the oldest batch in flight.
        Answer,
        /// The oldest batch in flight fails (the connection broke).
        Fail,
        /// The picture service stores what it has (`at` chooses how far).
        Flush { at: usize },
        /// The picture service restarts and loses what it had not stored; the room resumes.
        Restart,
        /// The room asks for a release if one is due, and the picture service answers it.
        Release,
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            6 => Just(Step::Append),
            2 => Just(Step::Publish),
            2 => Just(Step::PublishAcked),
            2 => Just(Step::Join),
            2 => (any::<usize>(), any::<usize>()).prop_map(|(pick, at)| Step::Snapshot { pick, at }),
            1 => any::<usize>().prop_map(|pick| Step::JoinLeaves { pick }),
            1 => any::<usize>().prop_map(|pick| Step::ClientLeaves { pick }),
            3 => Just(Step::SendBatch),
            3 => Just(Step::Answer),
            1 => Just(Step::Fail),
            2 => any::<usize>().prop_map(|at| Step::Flush { at }),
            1 => Just(Step::Restart),
            1 => Just(Step::Release),
        ]
    }

    /// The room around the log, and a picture service that keeps its promises: it holds a
    /// gapless prefix of the updates, stores a prefix of that, and snapshots between the two.
    struct World {
        log: PendingLog,
        opened: bool,
        /// The picture service has every update up to this seq (in memory or stored).
        received: u64,
        /// Storage has every update up to this seq; it never goes back.
        stored: u64,
        /// Batches handed over, answered in order.
        in_flight: VecDeque<Batch>,
        next_join: u64,
        joins: Vec<u64>,
        /// The next seq each subscribed client must receive.
        clients: Vec<u64>,
        /// Every seq ever published, in order: the one total order.
        published: Vec<u64>,
    }

    impl World {
        fn new() -> World {
            World {
                log: PendingLog::new(),
                opened: false,
                received: 0,
                stored: 0,
                in_flight: VecDeque::new(),
                next_join: 0,
                joins: Vec::new(),
                clients: Vec::new(),
                published: Vec::new(),
            }
        }

        fn op(seq: u64) -> Vec<u8> {
            protocol::codec::encode(&Op::Clear {
                color: [seq as u8, (seq >> 8) as u8, 0, 255],
            })
        }

        fn publish(&mut self) {
            let last = self.log.last();
            self.publish_to(last);
        }

        fn publish_to(&mut self, upto: u64) {
            let seqs: Vec<u64> = self
                .log
                .publishable(upto)
                .map(|entry| protocol::codec::decode::<Sequenced>(entry).unwrap().seq)
                .collect();
            if seqs.is_empty() {
                return;
            }
            for next in &mut self.clients {
                for &seq in &seqs {
                    assert_eq!(seq, *next, "a client saw a gap or an overlap");
                    *next += 1;
                }
            }
            if let Some(&last) = self.published.last() {
                assert_eq!(seqs[0], last + 1, "the published order has a gap");
            }
            self.published.extend(&seqs);
            self.log.mark_published(upto);
        }

        fn run(&mut self, step: Step) {
            match step {
                Step::Append if self.opened => {
                    let seq = self.log.last() + 1;
                    assert_eq!(self.log.append(7, seq, &World::op(seq)), seq);
                }
                Step::Append => {}
                Step::Publish => self.publish(),
                Step::PublishAcked => {
                    let acked = self.log.acked();
                    self.publish_to(acked);
                }
                Step::Join => {
                    let join = self.next_join;
                    self.next_join += 1;
                    let pin = self.log.pin(join);
                    assert_eq!(pin, self.log.trimmed());
                    self.joins.push(join);
                }
                Step::Snapshot { pick, at } if !self.joins.is_empty() => {
                    let join = self.joins.remove(pick % self.joins.len());
                    let pin = self.log.pin_of(join).unwrap();
                    // The picture service answers with any seq it has applied that is at
                    // least the pin (and at least what it stored, as its encodings are).
                    let low = pin.max(self.stored);
                    assert!(low <= self.received, "pin {pin} beyond the picture service");
                    let snapshot = low + (at as u64) % (self.received - low + 1);
                    if !self.opened {
                        self.opened = true;
                        self.log.open_at(snapshot);
                    }
                    // Echoes gated by the picture service, or not (its link is down).
                    if at % 2 == 0 {
                        let acked = self.log.acked();
                        self.publish_to(acked);
                    } else {
                        self.publish();
                    }
                    let pending: Vec<u64> = match self.log.welcome(snapshot) {
                        Ok(pending) => pending
                            .map(|entry| protocol::codec::decode::<Sequenced>(entry).unwrap().seq)
                            .collect(),
                        Err(Misfit::Ahead { .. }) => {
                            // Newer than what was published: the join waits for it.
                            assert!(snapshot > self.log.published());
                            self.joins.push(join);
                            return;
                        }
                        Err(misfit) => panic!("welcome at {snapshot}: {misfit:?}"),
                    };
                    let published = self.log.published();
                    let expected: Vec<u64> = (snapshot + 1..=published).collect();
                    assert_eq!(pending, expected, "welcome at {snapshot}");
                    self.clients.push(published + 1);
                    self.log.unpin(join);
                }
                Step::Snapshot { .. } => {}
                Step::JoinLeaves { pick } if !self.joins.is_empty() => {
                    let join = self.joins.remove(pick % self.joins.len());
                    self.log.unpin(join);
                }
                Step::JoinLeaves { .. } => {}
                Step::ClientLeaves { pick } if !self.clients.is_empty() => {
                    self.clients.remove(pick % self.clients.len());
                }
                Step::ClientLeaves { .. } => {}
                Step::SendBatch => {
                    if let Some(batch) = self.log.next_batch(3, 2) {
                        let updates: Vec<Sequenced> =
                            protocol::codec::decode(&batch.updates).unwrap();
                        let seqs: Vec<u64> = updates.iter().map(|u| u.seq).collect();
                        assert_eq!(seqs, (batch.first..=batch.last).collect::<Vec<_>>());
                        self.in_flight.push_back(batch);
                    }
                }
                Step::Answer => {
                    if let Some(batch) = self.in_flight.pop_front() {
                        if batch.first > self.received + 1 {
                            self.log.gap(self.received);
                        } else {
                            self.received = self.received.max(batch.last);
                            self.log.accepted(self.received);
                        }
                    }
                }
                Step::Fail => {
                    if self.in_flight.pop_front().is_some() {
                        self.log.failed();
                    }
                }
                Step::Flush { at } => {
                    self.stored += (at as u64) % (self.received - self.stored + 1);
                    self.log.flushed(self.stored);
                }
                Step::Restart => {
                    // It comes back with what it stored; the room claims its lease again and
                    // resumes from there (answers to batches in flight never come).
                    self.received = self.stored;
                    self.in_flight.clear();
                    self.log.resume_at(self.received).unwrap();
                }
                Step::Release => {
                    let nobody = self.clients.is_empty() && self.joins.is_empty();
                    if let Some(last) = self.log.start_release(nobody) {
                        if last > self.received {
                            self.log.release_gap(self.received);
                        } else {
                            self.stored = self.received;
                            self.log.released(self.stored);
                            assert!(self.log.is_released());
                        }
                    }
                }
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        /// Every welcome starts right after its snapshot and meets the next `Updates` exactly,
        /// every client sees each seq once and in order, and nothing is trimmed before storage
        /// has it, whatever the order of events.
        #[test]
        fn joins_meet_the_log_exactly_in_any_interleaving(steps in prop::collection::vec(step(), 1..200)) {
            let mut world = World::new();
            for step in steps {
                world.run(step);
                world.log.check().map_err(TestCaseError::fail)?;
                prop_assert!(world.log.trimmed() <= world.stored, "trimmed past storage");
                prop_assert!(world.log.trimmed() <= world.received.max(world.log.trimmed()));
            }
            // Drain: everything reaches storage and the log empties.
            world.clients.clear();
            for join in std::mem::take(&mut world.joins) {
                world.log.unpin(join);
            }
            world.publish();
            for _ in 0..1000 {
                if world.log.is_released() {
                    break;
                }
                world.run(Step::SendBatch);
                world.run(Step::Answer);
                world.run(Step::Release);
                world.log.check().map_err(TestCaseError::fail)?;
            }
            if world.opened {
                prop_assert!(world.log.is_released(), "never released: {:?}", world.log);
                prop_assert_eq!(world.log.len(), 0);
                prop_assert_eq!(world.stored, world.log.last());
            }
        }
    }

    #[test]
    fn a_snapshot_outside_the_log_is_refused() {
        let mut log = PendingLog::new();
        log.open_at(10);
        for seq in 11..=15 {
            log.append(1, seq, &World::op(seq));
        }
        assert_eq!(
            log.welcome(12).err(),
            Some(Misfit::Ahead {
                snapshot: 12,
                published: 10
            })
        );
        log.mark_published(15);
        assert_eq!(log.welcome(12).unwrap().len(), 3);
        let batch = log.next_batch(100, 1).unwrap();
        assert_eq!((batch.first, batch.last), (11, 15));
        log.accepted(15);
        log.flushed(13);
        assert_eq!(log.trimmed(), 13);
        assert_eq!(
            log.welcome(12).err(),
            Some(Misfit::Trimmed {
                snapshot: 12,
                log_from: 14
            })
        );
        assert_eq!(log.welcome(13).unwrap().len(), 2);
    }

    #[test]
    fn a_pin_holds_the_log_until_the_join_ends() {
        let mut log = PendingLog::new();
        log.open_at(0);
        let pin = log.pin(1);
        for seq in 1..=4 {
            log.append(1, seq, &World::op(seq));
        }
        log.mark_published(4);
        let _ = log.next_batch(100, 1);
        log.accepted(4);
        log.flushed(4);
        assert_eq!(log.trimmed(), pin, "pinned at {pin}");
        assert_eq!(log.welcome(pin).unwrap().len(), 4);
        log.unpin(1);
        assert_eq!(log.trimmed(), 4);
        assert_eq!(log.len(), 0);
    }
}
