//! The picture's session trail: for the most recent client ids whose updates the picture
//! accepted, the highest `client_seq` and its seq. Handed to every sequencer granted the lease
//! ([`protocol::pps::Acquired::Granted`]), so that a broadcast service that starts sequencing
//! the picture (another one, or the same one restarted after a crash) knows which ops of a
//! resuming session (PROTOCOL.md §11) are already in the picture, and drops their resends
//! instead of drawing them twice. Sans-I/O; bounded by `--session-trail`.

use std::collections::HashMap;

use protocol::pps::SessionMark;

#[derive(Debug)]
pub(super) struct SessionTrail {
    /// Most client ids kept; 0 keeps none.
    cap: usize,
    /// By client id: (highest client_seq, its seq).
    by_client: HashMap<u64, (u64, u64)>,
}

impl SessionTrail {
    pub(super) fn new(cap: usize) -> Self {
        Self {
            cap,
            by_client: HashMap::new(),
        }
    }

    /// The picture accepted `client_seq` of `client_id` as `seq`.
    pub(super) fn note(&mut self, client_id: u64, client_seq: u64, seq: u64) {
        if self.cap == 0 {
            return;
        }
        let entry = self.by_client.entry(client_id).or_insert((0, 0));
        if client_seq >= entry.0 {
            *entry = (client_seq, seq);
        }
        if self.by_client.len() > self.cap {
            self.evict();
        }
    }

    /// Keeps the three quarters of `cap` most recently sequenced (amortised: one sort per
    /// `cap / 4` new client ids).
    fn evict(&mut self) {
        let keep = self.cap - self.cap / 4;
        let mut seqs: Vec<u64> = self.by_client.values().map(|&(_, seq)| seq).collect();
        seqs.sort_unstable_by(|a, b| b.cmp(a));
        let Some(&oldest_kept) = seqs.get(keep.saturating_sub(1)) else {
            return;
        };
        // Seqs are unique per update, so exactly `keep` ids have a seq at or above it.
        self.by_client.retain(|_, &mut (_, seq)| seq >= oldest_kept);
    }

    /// Everything kept, for a lease grant.
    pub(super) fn marks(&self) -> Vec<SessionMark> {
        self.by_client
            .iter()
            .map(|(&client_id, &(client_seq, seq))| SessionMark {
                client_id,
                client_seq,
                seq,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sorted(trail: &SessionTrail) -> Vec<(u64, u64, u64)> {
        let mut marks: Vec<_> = trail
            .marks()
            .into_iter()
            .map(|m| (m.client_id, m.client_seq, m.seq))
            .collect();
        marks.sort_unstable();
        marks
    }

    #[test]
    fn keeps_the_highest_client_seq_of_each_client() {
        let mut trail = SessionTrail::new(8);
        trail.note(7, 1, 10);
        trail.note(7, 2, 11);
        trail.note(9, 5, 12);
        // A lower client_seq never takes a client back.
        trail.note(7, 1, 13);
        assert_eq!(sorted(&trail), [(7, 2, 11), (9, 5, 12)]);
    }

    #[test]
    fn stays_within_its_cap_keeping_the_most_recent() {
        let mut trail = SessionTrail::new(8);
        for id in 1..=100u64 {
            trail.note(id, 1, id);
            assert!(trail.by_client.len() <= 8);
        }
        let kept = sorted(&trail);
        // The latest id is always kept, and whatever is kept is the most recent.
        assert!(kept.contains(&(100, 1, 100)));
        let oldest = kept.iter().map(|m| m.2).min().unwrap_or(0);
        assert_eq!(kept.len() as u64, 100 - oldest + 1);
        let mut none = SessionTrail::new(0);
        none.note(1, 1, 1);
        assert!(none.marks().is_empty());
    }
}
