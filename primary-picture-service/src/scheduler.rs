//! The priority job queue: a fixed number of slots (CPU/IO workers) granted to waiters by
//! priority, FIFO within a priority, with aging so that low-priority work (periodic flushes) is
//! never starved.
//!
//! A slot is held by a [`Permit`] and released when it is dropped. A waiter that gives up (its
//! `acquire` future is dropped) never leaks a slot: if the slot was granted to it in the meantime,
//! it is passed on to the next waiter.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;

/// How urgent a job is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Priority {
    /// Periodic flushes.
    Low,
    /// Applying batches.
    Mid,
    /// A snapshot for a joining client, a release flush, a shutdown flush.
    High,
}

/// Grants slots by priority. Cheap to clone (all clones share the slots).
#[derive(Clone)]
pub struct Scheduler {
    /// Shared with every [`Permit`], which gives its slot back on drop.
    inner: Arc<Inner>,
}

struct Inner {
    /// A Low waiter older than this is served as High.
    aging: Duration,
    /// std Mutex: held for a few lines, never across `.await`.
    state: Mutex<State>,
}

struct State {
    /// Slots not held by any permit.
    free: usize,
    /// Waiters in arrival order (FIFO within a priority comes from this order).
    waiters: VecDeque<Waiter>,
    /// Identifies waiters so a cancelled one can find (and remove) itself.
    next_id: u64,
}

struct Waiter {
    /// Matches the [`WaitGuard`] of the `acquire` call that queued it.
    id: u64,
    priority: Priority,
    /// When it started waiting, for aging.
    since: Instant,
    /// Told when the slot is granted; the slot is already counted as taken by then.
    grant: oneshot::Sender<()>,
}

/// A held slot; dropping it frees the slot for the next waiter.
#[must_use = "the slot is released as soon as the permit is dropped"]
pub struct Permit {
    /// Where to give the slot back.
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Permit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Permit")
    }
}

impl Scheduler {
    /// `workers` slots (at least one); Low waiters older than `aging` count as High.
    pub fn new(workers: usize, aging: Duration) -> Self {
        Self {
            inner: Arc::new(Inner {
                aging,
                state: Mutex::new(State {
                    free: workers.max(1),
                    waiters: VecDeque::new(),
                    next_id: 0,
                }),
            }),
        }
    }

    /// Waits for a slot. Cancel-safe: dropping the future before it completes leaks nothing.
    pub async fn acquire(&self, priority: Priority) -> Permit {
        let (tx, rx) = oneshot::channel();
        let id = {
            let mut state = self.inner.lock();
            if state.free > 0 && state.waiters.is_empty() {
                state.free -= 1;
                return Permit {
                    inner: self.inner.clone(),
                };
            }
            let id = state.next_id;
            state.next_id += 1;
            state.waiters.push_back(Waiter {
                id,
                priority,
                since: Instant::now(),
                grant: tx,
            });
            id
        };
        let mut guard = WaitGuard {
            inner: &self.inner,
            id,
            granted: false,
        };
        // The sender lives in the queue until it is used to grant, so this only errs if the
        // scheduler itself is gone, which cannot happen while `self` is borrowed.
        let _ = rx.await;
        guard.granted = true;
        Permit {
            inner: self.inner.clone(),
        }
    }

    /// Slots free right now (for tests and metrics).
    pub fn free_slots(&self) -> usize {
        self.inner.lock().free
    }

    /// Waiters queued right now (for tests and metrics).
    pub fn waiting(&self) -> usize {
        self.inner.lock().waiters.len()
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock leaves the counters consistent (no code between the
        // lock and the unlock can panic halfway), so a poisoned lock is still usable.
        protocol::sync::lock(&self.state)
    }

    /// Frees one slot and hands it to the most urgent live waiter, if any.
    fn release(&self) {
        let mut state = self.lock();
        state.free += 1;
        self.grant_locked(&mut state);
    }

    fn grant_locked(&self, state: &mut State) {
        let now = Instant::now();
        while state.free > 0 {
            let Some(index) = self.most_urgent(state, now) else {
                return;
            };
            let Some(waiter) = state.waiters.remove(index) else {
                return;
            };
            state.free -= 1;
            // If the send fails, the waiter's receiver is gone but its `WaitGuard` has not run
            // yet (it would have removed the waiter): the guard will find the waiter missing,
            // take the slot as granted and release it, so the slot stays counted as taken here.
            let _ = waiter.grant.send(());
        }
    }

    fn most_urgent(&self, state: &State, now: Instant) -> Option<usize> {
        let effective = |w: &Waiter| {
            if w.priority == Priority::Low && now.duration_since(w.since) > self.aging {
                Priority::High
            } else {
                w.priority
            }
        };
        let mut best: Option<(usize, Priority)> = None;
        for (index, waiter) in state.waiters.iter().enumerate() {
            let priority = effective(waiter);
            // Strictly greater: the earliest waiter wins among equals (FIFO).
            if best.is_none_or(|(_, p)| priority > p) {
                best = Some((index, priority));
            }
        }
        best.map(|(index, _)| index)
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.inner.release();
    }
}

/// Lives while an `acquire` call waits; on cancellation it removes the waiter or, if the slot
/// was already granted but never turned into a [`Permit`], releases that slot.
struct WaitGuard<'a> {
    inner: &'a Arc<Inner>,
    id: u64,
    /// Set once the grant was received and a [`Permit`] now owns the slot.
    granted: bool,
}

impl Drop for WaitGuard<'_> {
    fn drop(&mut self) {
        if self.granted {
            return;
        }
        let mut state = self.inner.lock();
        if let Some(index) = state.waiters.iter().position(|w| w.id == self.id) {
            state.waiters.remove(index);
            return;
        }
        // Granted (the grant succeeded because our receiver was still alive then) but dropped
        // before we could build the permit: pass the slot on.
        state.free += 1;
        self.inner.grant_locked(&mut state);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::sync::Mutex as StdMutex;

    /// Queues a waiter that records its label when granted and then holds the permit until
    /// told to drop it.
    fn spawn_waiter(
        scheduler: &Scheduler,
        priority: Priority,
        label: &'static str,
        log: &Arc<StdMutex<Vec<&'static str>>>,
    ) -> (tokio::task::JoinHandle<()>, oneshot::Sender<()>) {
        let scheduler = scheduler.clone();
        let log = log.clone();
        let (done_tx, done_rx) = oneshot::channel::<()>();
        let handle = tokio::spawn(async move {
            let permit = scheduler.acquire(priority).await;
            log.lock().unwrap().push(label);
            let _ = done_rx.await;
            drop(permit);
        });
        (handle, done_tx)
    }

    /// Lets spawned tasks run until they are all parked (paused clock: no real time passes).
    async fn settle() {
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn high_is_granted_before_mid_and_low() {
        let scheduler = Scheduler::new(1, Duration::from_secs(10));
        let log = Arc::new(StdMutex::new(Vec::new()));
        let first = scheduler.acquire(Priority::Mid).await;
        let (_l, low_done) = spawn_waiter(&scheduler, Priority::Low, "low", &log);
        settle().await;
        let (_m, mid_done) = spawn_waiter(&scheduler, Priority::Mid, "mid", &log);
        settle().await;
        let (_h, high_done) = spawn_waiter(&scheduler, Priority::High, "high", &log);
        settle().await;
        assert_eq!(scheduler.waiting(), 3);
        drop(first);
        settle().await;
        assert_eq!(*log.lock().unwrap(), vec!["high"]);
        high_done.send(()).unwrap();
        settle().await;
        assert_eq!(*log.lock().unwrap(), vec!["high", "mid"]);
        mid_done.send(()).unwrap();
        settle().await;
        assert_eq!(*log.lock().unwrap(), vec!["high", "mid", "low"]);
        low_done.send(()).unwrap();
        settle().await;
        assert_eq!(scheduler.free_slots(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn fifo_within_a_priority() {
        let scheduler = Scheduler::new(1, Duration::from_secs(10));
        let log = Arc::new(StdMutex::new(Vec::new()));
        let first = scheduler.acquire(Priority::High).await;
        let mut dones = Vec::new();
        for label in ["a", "b", "c", "d"] {
            let (_h, done) = spawn_waiter(&scheduler, Priority::Mid, label, &log);
            dones.push(done);
            settle().await;
        }
        drop(first);
        for done in dones {
            settle().await;
            done.send(()).unwrap();
        }
        settle().await;
        assert_eq!(*log.lock().unwrap(), vec!["a", "b", "c", "d"]);
        assert_eq!(scheduler.free_slots(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn aging_promotes_low_above_mid() {
        let scheduler = Scheduler::new(1, Duration::from_secs(5));
        let log = Arc::new(StdMutex::new(Vec::new()));
        let first = scheduler.acquire(Priority::Mid).await;
        let (_l, low_done) = spawn_waiter(&scheduler, Priority::Low, "low", &log);
        settle().await;
        tokio::time::advance(Duration::from_secs(6)).await;
        let (_m, mid_done) = spawn_waiter(&scheduler, Priority::Mid, "mid", &log);
        settle().await;
        drop(first);
        settle().await;
        assert_eq!(*log.lock().unwrap(), vec!["low"]);
        low_done.send(()).unwrap();
        settle().await;
        mid_done.send(()).unwrap();
        settle().await;
        assert_eq!(*log.lock().unwrap(), vec!["low", "mid"]);
    }

    #[tokio::test(start_paused = true)]
    async fn young_low_still_yields_to_mid() {
        let scheduler = Scheduler::new(1, Duration::from_secs(5));
        let log = Arc::new(StdMutex::new(Vec::new()));
        let first = scheduler.acquire(Priority::Mid).await;
        let (_l, low_done) = spawn_waiter(&scheduler, Priority::Low, "low", &log);
        settle().await;
        tokio::time::advance(Duration::from_secs(4)).await;
        let (_m, mid_done) = spawn_waiter(&scheduler, Priority::Mid, "mid", &log);
        settle().await;
        drop(first);
        settle().await;
        assert_eq!(*log.lock().unwrap(), vec!["mid"]);
        mid_done.send(()).unwrap();
        settle().await;
        low_done.send(()).unwrap();
        settle().await;
        assert_eq!(*log.lock().unwrap(), vec!["mid", "low"]);
    }

    #[tokio::test(start_paused = true)]
    async fn cancelled_waiter_does_not_leak_its_slot() {
        let scheduler = Scheduler::new(1, Duration::from_secs(5));
        let log = Arc::new(StdMutex::new(Vec::new()));
        let first = scheduler.acquire(Priority::Mid).await;
        let (cancelled, _keep) = spawn_waiter(&scheduler, Priority::High, "cancelled", &log);
        settle().await;
        let (_m, mid_done) = spawn_waiter(&scheduler, Priority::Mid, "mid", &log);
        settle().await;
        cancelled.abort();
        settle().await;
        assert_eq!(scheduler.waiting(), 1);
        drop(first);
        settle().await;
        assert_eq!(*log.lock().unwrap(), vec!["mid"]);
        mid_done.send(()).unwrap();
        settle().await;
        assert_eq!(scheduler.free_slots(), 1);
        assert_eq!(scheduler.waiting(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_timed_out_acquire_leaks_nothing() {
        let scheduler = Scheduler::new(1, Duration::from_secs(5));
        let first = scheduler.acquire(Priority::Mid).await;
        let attempt =
            tokio::time::timeout(Duration::from_secs(1), scheduler.acquire(Priority::High)).await;
        assert!(attempt.is_err());
        assert_eq!(scheduler.waiting(), 0);
        drop(first);
        assert_eq!(scheduler.free_slots(), 1);
        let _again = scheduler.acquire(Priority::Low).await;
        assert_eq!(scheduler.free_slots(), 0);
    }
}
