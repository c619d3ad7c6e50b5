//! Batches of sequenced updates: checking what BS sends ([`Actor::validate`]), queueing it
//! after everything the picture holds or saying why not ([`Loaded::accept`]), and applying the
//! queue to the raster ([`Actor::apply`]).
//!
//! Touches the queue, `received_seq`, `applied_seq` and `dirty_since` of the [`Loaded`] state,
//! and the raster through a job.

use protocol::pps::{ApplyBatch, Lease, PpsError};
use protocol::Sequenced;
use tokio::time::Instant;

use super::{Actor, Loaded, Mailbox, Reply};
use crate::scheduler::Priority;
use crate::service::ConnId;

/// Consecutive sequenced updates, `first_seq..=last_seq`. Validated, `updates` holds exactly
/// those seqs; queued, `first_seq` is the first seq not held before it (the overlap with what
/// was held is dropped).
pub(super) struct Batch {
    pub(super) first_seq: u64,
    pub(super) last_seq: u64,
    pub(super) updates: Vec<Sequenced>,
    /// BS's idea of the picture's size (width, height): the size to create it at if storage
    /// has none.
    pub(super) size: (u32, u32),
    /// The lease it was sequenced under: only the holder's batches are accepted.
    pub(super) lease: Lease,
}

impl Actor {
    /// Decodes a batch and checks that it holds exactly the consecutive seqs it claims.
    pub(super) fn validate(&self, batch: ApplyBatch) -> Result<Batch, PpsError> {
        self.check_size(batch.width, batch.height)?;
        let updates: Vec<Sequenced> = protocol::codec::decode(&batch.updates)
            .map_err(|e| PpsError::BadRequest(format!("batch updates: {e}")))?;
        let consecutive = updates
            .iter()
            .enumerate()
            .all(|(i, u)| Some(u.seq) == batch.first_seq.checked_add(i as u64));
        let count_matches = batch.last_seq >= batch.first_seq
            && batch.last_seq - batch.first_seq + 1 == updates.len() as u64;
        if batch.first_seq == 0 || !consecutive || !count_matches {
            return Err(PpsError::BadRequest(format!(
                "batch claims seqs {}..={} but holds {} updates that do not match",
                batch.first_seq,
                batch.last_seq,
                updates.len()
            )));
        }
        Ok(Batch {
            first_seq: batch.first_seq,
            last_seq: batch.last_seq,
            updates,
            size: (batch.width, batch.height),
            lease: batch.lease,
        })
    }

    /// Applies queued batches up to (at least) `target`, one chunk per job.
    pub(super) async fn apply(&mut self, target: u64, priority: Priority, mailbox: &mut Mailbox) {
        let permit = self.permit(priority, mailbox).await;
        let chunk = self.shared.config.apply_chunk.max(1);
        let Some(loaded) = self.picture.loaded_mut().filter(|l| l.raster.is_some()) else {
            return;
        };
        let batches = loaded.take_chunk(target, priority, chunk);
        let mut applied = loaded.applied_seq;
        let delay = self.shared.config.apply_delay;
        let started = Instant::now();
        let result = self
            .with_raster(mailbox, "applying updates", move |raster| {
                let mut count = 0u64;
                let mut batch_count = 0u64;
                for batch in &batches {
                    for update in &batch.updates {
                        if update.seq > applied {
                            raster.apply(&update.op);
                            applied = update.seq;
                            count += 1;
                        }
                    }
                    batch_count += 1;
                    if let Some(delay) = delay {
                        std::thread::sleep(delay);
                    }
                }
                (applied, count, batch_count)
            })
            .await;
        drop(permit);
        if let Some((applied, count, batch_count)) = result {
            if let Some(loaded) = self.picture.loaded_mut() {
                if applied > loaded.applied_seq {
                    loaded.applied_seq = applied;
                    loaded.dirty_since.get_or_insert_with(Instant::now);
                }
            }
            metrics::counter!("pps_batches_applied").increment(batch_count);
            metrics::counter!("pps_updates_applied").increment(count);
            metrics::histogram!("pps_apply_seconds").record(started.elapsed().as_secs_f64());
        }
    }
}

impl Loaded {
    /// Queues a batch that came over connection `conn` if its lease is the current one (a
    /// holder that reconnected carries on over its new connection), or replies why not.
    pub(super) fn accept_from(&mut self, conn: ConnId, batch: Batch, reply: Reply<u64>) {
        if !self.holds(&batch.lease) {
            metrics::counter!("pps_batches_refused_total", "reason" => "not_holder").increment(1);
            let _ = reply.send(Err(self.not_holder()));
            return;
        }
        if let Some(holder) = self.lease.holder.as_mut().filter(|h| h.conn != conn) {
            holder.conn = conn;
            holder.expires = None;
        }
        self.accept(batch, reply);
    }

    /// Queues a batch after everything PPS holds, or replies why not.
    fn accept(&mut self, batch: Batch, reply: Reply<u64>) {
        if batch.first_seq > self.received_seq + 1 {
            let _ = reply.send(Err(PpsError::Gap {
                have: self.received_seq,
                first_seq: batch.first_seq,
            }));
            return;
        }
        if batch.last_seq <= self.received_seq {
            metrics::counter!("pps_duplicate_batches").increment(1);
            let _ = reply.send(Ok(self.received_seq));
            return;
        }
        let received = self.received_seq;
        let updates: Vec<Sequenced> = batch
            .updates
            .into_iter()
            .filter(|u| u.seq > received)
            .collect();
        self.received_seq = batch.last_seq;
        self.queue.push_back(Batch {
            first_seq: received + 1,
            updates,
            ..batch
        });
        let _ = reply.send(Ok(self.received_seq));
    }

    /// The batches one apply job takes from the front of the queue: up to `chunk` of them, so
    /// that a long queue does not hold a slot for too long, and beyond that, unless the job
    /// runs at `Mid` priority, every batch that `target` needs.
    fn take_chunk(&mut self, target: u64, priority: Priority, chunk: usize) -> Vec<Batch> {
        let mut batches = Vec::new();
        while let Some(front) = self.queue.front() {
            let needed = front.first_seq <= target;
            if batches.len() >= chunk && !needed {
                break;
            }
            if priority == Priority::Mid && batches.len() >= chunk {
                break;
            }
            if let Some(batch) = self.queue.pop_front() {
                batches.push(batch);
            }
        }
        batches
    }
}
