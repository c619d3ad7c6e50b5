//! Batches of sequenced updates: checking what BS sends ([`Actor::validate`]), writing it to
//! the write-ahead log when there is one ([`Actor::accept_from`], [`Actor::on_logged`]),
//! queueing it after everything the picture holds or saying why not ([`Loaded::accept`]), and
//! applying the queue to the raster ([`Actor::apply`]); and the updates a crash left in the log
//! ([`Actor::apply_recovered`]).
//!
//! Touches the queue, `received_seq`, `promised_seq`, `wal_waiting`, `applied_seq` and
//! `dirty_since` of the [`Loaded`] state, the raster through a job, and the log.

use bytes::Bytes;
use protocol::pps::{ApplyBatch, Lease, PpsError};
use protocol::Sequenced;
use tokio::time::Instant;

use super::lease::Owning;
use super::ConnId;
use super::{Actor, Loaded, Mailbox, Msg, Reply};
use crate::scheduler::Priority;
use crate::wal::{Record, WalError};

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
    /// `updates` as the batch carried them (bincode), for the write-ahead log.
    pub(super) raw: Bytes,
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
            raw: batch.updates,
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
        let id = self.id.clone();
        let result = self
            .with_raster(mailbox, "applying updates", move |raster| {
                let mut count = 0u64;
                let mut batch_count = 0u64;
                for batch in &batches {
                    // One span per batch (exported over OTLP when configured).
                    let _span = tracing::info_span!(
                        "apply_batch",
                        picture = %id,
                        first_seq = batch.updates.first().map_or(0, |u| u.seq),
                        last_seq = batch.updates.last().map_or(0, |u| u.seq),
                        updates = batch.updates.len(),
                    )
                    .entered();
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
            metrics::counter!("pps_batches_applied_total").increment(batch_count);
            metrics::counter!("pps_updates_applied_total").increment(count);
            metrics::histogram!("pps_apply_seconds").record(started.elapsed().as_secs_f64());
        }
    }
}

impl Actor {
    /// Takes a batch that came over connection `conn` if its lease is the current one (a
    /// holder that reconnected carries on over its new connection), or replies why not. With
    /// a write-ahead log, the batch is queued and confirmed once it is on disk
    /// ([`Actor::on_logged`]); without, at once.
    pub(super) fn accept_from(&mut self, conn: ConnId, batch: Batch, reply: Reply<u64>) {
        let wal = self.shared.wal.clone();
        let me = self.me.clone();
        let Some(loaded) = self.picture.loaded_mut() else {
            return;
        };
        if !loaded.holds(&batch.lease) {
            metrics::counter!("pps_batches_refused_total", "reason" => "not_holder").increment(1);
            let _ = reply.send(Err(loaded.not_holder()));
            return;
        }
        if let Some(holder) = loaded.lease.holder.as_mut().filter(|h| h.conn != conn) {
            holder.conn = conn;
            holder.expires = None;
        }
        let Some(wal) = wal else {
            return loaded.accept(batch, reply);
        };
        // Checked against what is promised (received or on its way to the log): a batch must
        // continue it; one the picture has all of is confirmed at once.
        if batch.first_seq > loaded.promised_seq + 1 {
            let _ = reply.send(Err(PpsError::Gap {
                have: loaded.promised_seq,
                first_seq: batch.first_seq,
            }));
            return;
        }
        if batch.last_seq <= loaded.received_seq {
            return loaded.accept(batch, reply);
        }
        let (width, height) = batch.size;
        // The record names the ownership it continues: the epoch storage names the picture
        // with (our last takeover), which recovery compares with storage's. Not the lease's: a
        // lease granted again after a takeover by the same owner keeps its older epoch, and its
        // updates would then look like another owner's history and be dropped after a crash.
        let Owning::Owner { epoch, .. } = loaded.owning else {
            // Cannot be (`holds` above: a lease is only held on a picture we own).
            let _ = reply.send(Err(loaded.not_holder()));
            return;
        };
        let written = wal.append(Record {
            picture: self.id.to_string(),
            width,
            height,
            epoch,
            first_seq: batch.first_seq,
            last_seq: batch.last_seq,
            updates: batch.raw.clone(),
        });
        loaded.promised_seq = loaded.promised_seq.max(batch.last_seq);
        loaded.wal_waiting.push_back((batch, reply));
        tokio::spawn(async move {
            let result = written.await.unwrap_or(Err(WalError::Stopped));
            if let Some(me) = me.upgrade() {
                let _ = me.send(Msg::WalDone(result));
            }
        });
    }

    /// The write-ahead log answered for the oldest batch waiting for it (it answers in order):
    /// on disk, the batch is queued and confirmed; not, it is refused, and what follows is
    /// checked against what the picture holds again.
    pub(super) fn on_logged(&mut self, result: Result<(), WalError>) {
        let Some(loaded) = self.picture.loaded_mut() else {
            return;
        };
        let Some((batch, reply)) = loaded.wal_waiting.pop_front() else {
            return;
        };
        match result {
            Ok(()) => loaded.accept(batch, reply),
            Err(error) => {
                if matches!(error, WalError::Full { .. }) {
                    loaded.wal_full = true;
                }
                tracing::warn!(picture = %self.id, %error, first_seq = batch.first_seq, "a batch could not be logged; refused");
                let _ = reply.send(Err(PpsError::Unavailable(error.to_string())));
                loaded.promised_seq = loaded.received_seq;
            }
        }
    }

    /// The picture is ours: the updates the write-ahead log held from before a crash are
    /// queued after what storage had (in seq order, as long as they continue it), to be applied
    /// and stored. A picture another service took meanwhile keeps none of them: its sequencer
    /// had them too, and gave them to the new owner.
    pub(super) fn apply_recovered(&mut self) {
        if self.recovered.is_empty() {
            return;
        }
        let me = self.shared.config.node();
        // Kept (and keeping the actor alive) until the picture is loaded.
        let Some(loaded) = self.picture.loaded_mut() else {
            return;
        };
        let records = std::mem::take(&mut self.recovered);
        if let Owning::Reader { stored } = loaded.owning {
            // Only what was logged under the ownership storage still names continues the
            // stored picture (every takeover bumps the epoch, so the same epoch is the same
            // ownership, ours): once another service took it, its sequencer either gave it
            // what we had, or the picture went on without it.
            let logged = records.len();
            let received = loaded.received_seq;
            // What storage has of our own ownership still says which ops of a session are in
            // the picture (a resume after the crash must not draw them twice).
            for record in records
                .iter()
                .filter(|r| r.epoch == stored.epoch && r.first_seq <= received)
            {
                if let Ok(updates) = protocol::codec::decode::<Vec<Sequenced>>(&record.updates) {
                    for u in updates.iter().filter(|u| u.seq <= received) {
                        loaded.trail.note(u.client_id, u.client_seq, u.seq);
                    }
                }
            }
            let wanted: Vec<Record> = records
                .into_iter()
                .filter(|r| r.epoch == stored.epoch && r.last_seq > received)
                .collect();
            if wanted.len() < logged && (stored.owner != me || wanted.is_empty()) {
                tracing::warn!(picture = %self.id, logged, kept = wanted.len(), stored_owner = %protocol::snapshot::owner_text(stored.owner), stored_epoch = stored.epoch, stored_seq = received, "logged updates storage already has or that another owner's history replaced: dropped");
            }
            if wanted.is_empty() {
                if let Some(wal) = &self.shared.wal {
                    wal.forget(&self.id);
                }
            }
            // Kept until the picture is taken again (`lease_need`).
            self.recovered = wanted;
            return;
        }
        let before = loaded.received_seq;
        for record in records {
            if record.last_seq <= loaded.received_seq {
                continue;
            }
            if record.first_seq > loaded.received_seq + 1 {
                // A batch logged but then refused (one before it failed): the sequencer sent
                // its updates again, and they follow in the log.
                tracing::debug!(picture = %self.id, have = loaded.received_seq, first_seq = record.first_seq, "a logged batch does not continue the picture; skipped");
                continue;
            }
            let updates: Vec<Sequenced> = match protocol::codec::decode(&record.updates) {
                Ok(updates) => updates,
                Err(error) => {
                    tracing::error!(picture = %self.id, %error, "a logged batch does not decode; skipped");
                    continue;
                }
            };
            let received = loaded.received_seq;
            let updates: Vec<Sequenced> =
                updates.into_iter().filter(|u| u.seq > received).collect();
            for u in &updates {
                loaded.trail.note(u.client_id, u.client_seq, u.seq);
            }
            loaded.queue.push_back(Batch {
                first_seq: received + 1,
                last_seq: record.last_seq,
                updates,
                size: (record.width, record.height),
                lease: Lease::default(),
                raw: Bytes::new(),
            });
            loaded.received_seq = record.last_seq;
            loaded.promised_seq = record.last_seq;
        }
        if loaded.received_seq > before {
            metrics::counter!("pps_wal_recovered_updates_total")
                .increment(loaded.received_seq - before);
            tracing::info!(picture = %self.id, from = before + 1, to = loaded.received_seq, "logged updates applied again");
        }
    }
}

impl Loaded {
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
            metrics::counter!("pps_duplicate_batches_total").increment(1);
            let _ = reply.send(Ok(self.received_seq));
            return;
        }
        let received = self.received_seq;
        let updates: Vec<Sequenced> = batch
            .updates
            .into_iter()
            .filter(|u| u.seq > received)
            .collect();
        for u in &updates {
            self.trail.note(u.client_id, u.client_seq, u.seq);
        }
        self.received_seq = batch.last_seq;
        self.promised_seq = self.promised_seq.max(batch.last_seq);
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
