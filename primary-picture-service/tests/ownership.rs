//! Ownership and fencing under random interleavings (docs/scaling.md): three picture services
//! over one store, broadcast services asking any of them for a picture's lease (forcing or
//! not), drawing under whatever lease they hold, releasing, and vanishing (their connection
//! dropped), in any order. Whatever happens, storage never goes back (seq and epoch only grow),
//! every epoch is written by one owner only, no service accepts a batch under a lease it did not
//! grant, and a service never grants two live leases at once.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use primary_picture_service::service::Session;
use primary_picture_service::store::memory::MemoryStore;
use primary_picture_service::{Pps, PpsConfig};
use proptest::prelude::*;
use protocol::pps::{AcquireRequest, Acquired, Lease, PpsError, ReleaseRequest};

const SERVICES: usize = 3;
const HOLDERS: usize = 3;
const PICTURE: &str = "owned";

#[derive(Clone, Debug)]
enum Step {
    /// Broadcast service `holder` asks picture service `pps` for the lease.
    Acquire {
        pps: usize,
        holder: usize,
        force: bool,
    },
    /// It sends a batch of two updates under the lease it holds there.
    Apply { pps: usize, holder: usize },
    /// It gives the lease back.
    Release { pps: usize, holder: usize },
    /// Its connection to that service breaks.
    Drop { pps: usize, holder: usize },
    /// Time passes (leases run out, flushes happen).
    Wait { ms: u64 },
}

fn step() -> impl Strategy<Value = Step> {
    let at = (0..SERVICES, 0..HOLDERS);
    prop_oneof![
        3 => (at.clone(), any::<bool>()).prop_map(|((pps, holder), force)| Step::Acquire { pps, holder, force }),
        5 => at.clone().prop_map(|(pps, holder)| Step::Apply { pps, holder }),
        1 => at.clone().prop_map(|(pps, holder)| Step::Release { pps, holder }),
        1 => at.prop_map(|(pps, holder)| Step::Drop { pps, holder }),
        2 => (1u64..300).prop_map(|ms| Step::Wait { ms }),
    ]
}

/// A broadcast service's view of one picture service: its connection and what it was granted.
#[derive(Default)]
struct Held {
    session: Option<Session>,
    /// The lease and the next seq to send under it.
    lease: Option<(Lease, u64)>,
}

struct World {
    services: Vec<Arc<Pps>>,
    store: Arc<MemoryStore>,
    held: HashMap<(usize, usize), Held>,
    /// Batches a service accepted: (service, lease, first seq).
    accepted: Vec<(usize, Lease, u64)>,
}

fn holder_url(holder: usize) -> String {
    format!("http://bs-{holder}:8080")
}

impl World {
    fn new() -> World {
        let store = Arc::new(MemoryStore::new());
        let services = (0..SERVICES)
            .map(|i| {
                Pps::new(
                    PpsConfig {
                        workers: 1,
                        flush_interval: Duration::from_millis(40),
                        min_backoff: Duration::from_millis(5),
                        max_backoff: Duration::from_millis(20),
                        lease_timeout: Duration::from_millis(100),
                        advertise_url: format!("ws://pps-{i}:9090/bs"),
                        ..PpsConfig::default()
                    },
                    store.clone(),
                )
            })
            .collect();
        World {
            services,
            store,
            held: HashMap::new(),
            accepted: Vec::new(),
        }
    }

    fn session(&mut self, pps: usize, holder: usize) -> &Session {
        let service = self.services[pps].clone();
        let held = self.held.entry((pps, holder)).or_default();
        held.session.get_or_insert_with(|| service.session())
    }

    async fn run(&mut self, step: Step) {
        match step {
            Step::Acquire { pps, holder, force } => {
                let request = AcquireRequest {
                    picture: PICTURE.to_string(),
                    create: Some((W, H)),
                    holder: holder_url(holder),
                    claim: None,
                    force,
                };
                let reply = self.session(pps, holder).acquire(request);
                if let Ok(Ok(Acquired::Granted { lease, seq, .. })) =
                    tokio::time::timeout(Duration::from_secs(5), reply).await
                {
                    self.held.entry((pps, holder)).or_default().lease = Some((lease, seq + 1));
                }
            }
            Step::Apply { pps, holder } => {
                let Some((lease, next)) = self.held.get(&(pps, holder)).and_then(|h| h.lease)
                else {
                    return;
                };
                let reply =
                    self.session(pps, holder)
                        .apply(batch_with(lease, PICTURE, next, next + 1));
                let held = self.held.entry((pps, holder)).or_default();
                match tokio::time::timeout(Duration::from_secs(5), reply).await {
                    Ok(Ok(have)) => {
                        self.accepted.push((pps, lease, next));
                        held.lease = Some((lease, have + 1));
                    }
                    Ok(Err(PpsError::Gap { have, .. })) => held.lease = Some((lease, have + 1)),
                    _ => held.lease = None,
                }
            }
            Step::Release { pps, holder } => {
                let Some((lease, next)) = self.held.get(&(pps, holder)).and_then(|h| h.lease)
                else {
                    return;
                };
                let reply = self.session(pps, holder).release(ReleaseRequest {
                    picture: PICTURE.to_string(),
                    lease,
                    last_seq: next - 1,
                });
                let _ = tokio::time::timeout(Duration::from_secs(5), reply).await;
                self.held.entry((pps, holder)).or_default().lease = None;
            }
            Step::Drop { pps, holder } => {
                self.held.remove(&(pps, holder));
            }
            Step::Wait { ms } => tokio::time::sleep(Duration::from_millis(ms)).await,
        }
    }

    /// The invariants, checked after every step.
    fn check(&self) -> Result<(), TestCaseError> {
        let history: Vec<_> = self
            .store
            .history()
            .into_iter()
            .filter(|(picture, _)| picture == PICTURE)
            .map(|(_, meta)| meta)
            .collect();
        let mut owners: HashMap<u64, u64> = HashMap::new();
        for pair in history.windows(2) {
            let (a, b) = (&pair[0], &pair[1]);
            prop_assert!(b.seq >= a.seq, "storage went back: {a:?} then {b:?}");
            prop_assert!(
                b.ownership.epoch >= a.ownership.epoch,
                "an older owner wrote over a newer one: {a:?} then {b:?}"
            );
        }
        for meta in &history {
            let owner = *owners
                .entry(meta.ownership.epoch)
                .or_insert(meta.ownership.owner);
            prop_assert_eq!(
                owner,
                meta.ownership.owner,
                "two owners wrote epoch {}",
                meta.ownership.epoch
            );
        }
        // Only the service that granted a lease accepts batches under it; a service's grants
        // have the epoch of its ownership.
        let mut granted_by: HashMap<Lease, usize> = HashMap::new();
        for &(pps, lease, _) in &self.accepted {
            let by = *granted_by.entry(lease).or_insert(pps);
            prop_assert_eq!(by, pps, "two services accepted batches under {:?}", lease);
        }
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn storage_fences_every_interleaving(steps in prop::collection::vec(step(), 1..40)) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .unwrap();
        runtime.block_on(async {
            let mut world = World::new();
            for step in steps {
                world.run(step).await;
                world.check()?;
            }
            // Let everything settle: leases run out, pictures are stored as released.
            world.held.clear();
            tokio::time::sleep(Duration::from_secs(2)).await;
            world.check()?;
            Ok::<(), TestCaseError>(())
        })?;
    }
}

/// Two services, one picture, one of them forcing: exactly one owns it afterwards, and the
/// other's grant and batches are refused once storage fenced it.
#[tokio::test(start_paused = true)]
async fn a_forced_takeover_fences_the_old_owner() {
    let mut world = World::new();
    world
        .run(Step::Acquire {
            pps: 0,
            holder: 0,
            force: false,
        })
        .await;
    world.run(Step::Apply { pps: 0, holder: 0 }).await;
    assert!(world.held[&(0, 0)].lease.is_some());
    // Service 1 is told the picture is service 0's ...
    world
        .run(Step::Acquire {
            pps: 1,
            holder: 1,
            force: false,
        })
        .await;
    assert!(world.held[&(1, 1)].lease.is_none());
    // ... until a broadcast service that cannot reach service 0 forces it.
    world
        .run(Step::Acquire {
            pps: 1,
            holder: 1,
            force: true,
        })
        .await;
    assert!(
        world.held[&(1, 1)].lease.is_some(),
        "the forced takeover was not granted"
    );
    // Service 0 still thinks it owns the picture; its next write is refused and it drops it.
    world.run(Step::Apply { pps: 0, holder: 0 }).await;
    world.run(Step::Wait { ms: 200 }).await;
    world.run(Step::Apply { pps: 0, holder: 0 }).await;
    assert!(
        world.held[&(0, 0)].lease.is_none(),
        "the fenced owner still accepts batches"
    );
    world.check().unwrap();
}
