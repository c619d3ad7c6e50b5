//! [`Shared`]: what the service ([`crate::service::Pps`]) and every picture actor share (the
//! configuration, the store, the scheduler, the mailboxes of the open pictures, the event
//! fan-out, the write-ahead log, the memory budget), and the types that go with it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use link::PpsEvent;
use tokio::sync::{broadcast, mpsc};

use super::Msg;
use crate::config::PpsConfig;
use crate::scheduler::Scheduler;
use crate::store::Store;
use crate::wal::Wal;

/// Identifies one broadcast service's connection: leases are held over it. `0` is the
/// in-process caller (embedded mode), which never disconnects.
pub(crate) type ConnId = u64;

/// State shared by [`crate::service::Pps`] and every picture actor.
pub(crate) struct Shared {
    pub(crate) config: PpsConfig,
    pub(crate) store: Arc<dyn Store>,
    /// Grants CPU/IO slots to all pictures' jobs by priority.
    pub(crate) scheduler: Scheduler,
    /// Mailbox of each open picture's actor. std Mutex, never held across `.await`: requests
    /// are enqueued under it, and an actor removes itself under it only when its mailbox is
    /// empty, so a request can never be sent to an actor that is exiting.
    pub(crate) registry: Mutex<HashMap<String, mpsc::UnboundedSender<Msg>>>,
    /// Fan-out of [`PpsEvent`]s to every subscriber.
    pub(crate) events: broadcast::Sender<PpsEvent>,
    /// Cleared by [`crate::service::Pps::shutdown`]: new requests are refused from then on.
    pub(crate) accepting: AtomicBool,
    /// Source of [`ConnId`]s for [`crate::service::Pps::session`].
    pub(crate) next_conn: AtomicU64,
    /// The write-ahead log, when [`PpsConfig::wal`] asks for one.
    pub(crate) wal: Option<Wal>,
    /// Raster bytes of the pictures in memory (see [`Charge`]).
    pub(crate) loaded_bytes: Arc<AtomicU64>,
}

/// A picture's raster bytes, counted in [`Shared::loaded_bytes`] while it lives.
pub(crate) struct Charge {
    bytes: u64,
    total: Arc<AtomicU64>,
}

impl Charge {
    pub(crate) fn new(total: &Arc<AtomicU64>, bytes: u64) -> Charge {
        let now = total.fetch_add(bytes, Ordering::Relaxed) + bytes;
        metrics::gauge!("pps_loaded_bytes").set(now as f64);
        Charge {
            bytes,
            total: total.clone(),
        }
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        let now = self.total.fetch_sub(self.bytes, Ordering::Relaxed) - self.bytes;
        metrics::gauge!("pps_loaded_bytes").set(now as f64);
    }
}

impl Shared {
    pub(crate) fn registry(&self) -> MutexGuard<'_, HashMap<String, mpsc::UnboundedSender<Msg>>> {
        // Every critical section is a map operation or a channel send: nothing that could leave
        // the map inconsistent on panic.
        protocol::sync::lock(&self.registry)
    }
}
