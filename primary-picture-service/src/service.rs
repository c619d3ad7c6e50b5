//! [`Pps`]: the in-process picture service. It routes each request to its picture's actor
//! (`crate::picture`), starting the actor when the picture is not open, and drains every
//! dirty picture to storage on shutdown.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::{self, BoxFuture, FutureExt};
use futures::stream::{FuturesUnordered, StreamExt};
use protocol::pps::{
    AcquireRequest, Acquired, ApplyBatch, HistoryEntry, PpsError, ReleaseRequest, Snapshot,
    SnapshotRequest, VersionImage,
};
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::time::Instant;

use crate::config::PpsConfig;
use crate::picture::{self, ConnId, Msg, Shared};
use crate::scheduler::Scheduler;
use crate::store::Store;
use crate::wal::{Record, Wal, WalError};
use link::{PictureService, PpsEvent};
use protocol::PictureId;

/// What [`Pps::shutdown`] managed to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShutdownSummary {
    /// Pictures that were open when the shutdown began.
    pub pictures: usize,
    /// Pictures whose every update is now in storage.
    pub flushed: usize,
    /// Pictures that could not be flushed before the deadline (their updates are lost unless
    /// the broadcast service still holds them).
    pub failed: usize,
}

/// The primary picture service, in process.
pub struct Pps {
    /// Also held by every picture actor.
    shared: Arc<Shared>,
}

impl Pps {
    /// A picture service without a write-ahead log (whatever `config.wal` says: see
    /// [`Pps::open`]).
    pub fn new(config: PpsConfig, store: Arc<dyn Store>) -> Arc<Pps> {
        Self::with_wal(config, store, None)
    }

    /// A picture service with the write-ahead log `config.wal` names, if any: the log is opened,
    /// and the updates it holds from before (a crash) are applied again to their pictures, which
    /// are then stored. Needs a tokio runtime.
    pub fn open(config: PpsConfig, store: Arc<dyn Store>) -> Result<Arc<Pps>, WalError> {
        let Some(wal_config) = config.wal.clone() else {
            return Ok(Self::new(config, store));
        };
        let (wal, recovered) = Wal::open(wal_config)?;
        let pps = Self::with_wal(config, store, Some(wal));
        let mut by_picture: HashMap<String, Vec<Record>> = HashMap::new();
        for record in recovered {
            by_picture
                .entry(record.picture.clone())
                .or_default()
                .push(record);
        }
        for (picture, records) in by_picture {
            // Records were logged for requests that passed the check: one that does not is
            // another program's file, and its updates are no picture's.
            let picture = match PictureId::try_from(picture) {
                Ok(picture) => picture,
                Err(error) => {
                    tracing::error!(%error, updates = records.len(), "write-ahead log records of no picture: skipped");
                    continue;
                }
            };
            if let Err(error) = pps.send(&picture, Msg::Recover(records)) {
                tracing::error!(%picture, %error, "cannot recover the picture's logged updates");
            }
        }
        Ok(pps)
    }

    fn with_wal(config: PpsConfig, store: Arc<dyn Store>, wal: Option<Wal>) -> Arc<Pps> {
        let (events, _) = broadcast::channel(config.event_capacity.max(1));
        let scheduler = Scheduler::new(config.workers, config.aging);
        tracing::info!(
            store = %store.describe(),
            workers = config.workers,
            flush_interval_ms = config.flush_interval.as_millis() as u64,
            "picture service started"
        );
        Arc::new(Pps {
            shared: Arc::new(Shared {
                config,
                store,
                scheduler,
                registry: Mutex::new(HashMap::new()),
                events,
                accepting: AtomicBool::new(true),
                next_conn: AtomicU64::new(1),
                wal,
                loaded_bytes: Arc::new(AtomicU64::new(0)),
            }),
        })
    }

    /// A caller of its own, for one broadcast service's connection: the leases it acquires are
    /// held over this session, which is told [`Session::heard`] on every message; when the
    /// session is dropped (the connection is gone), its leases expire one lease timeout after
    /// it was last heard.
    pub fn session(self: &Arc<Self>) -> Session {
        Session {
            pps: self.clone(),
            conn: self.shared.next_conn.fetch_add(1, Ordering::Relaxed),
            last_heard: Mutex::new(Instant::now()),
        }
    }

    /// Tells every picture that connection `conn` is gone.
    fn disconnected(&self, conn: ConnId, last_heard: Instant) {
        let registry = self.shared.registry();
        for mailbox in registry.values() {
            let _ = mailbox.send(Msg::Disconnected { conn, last_heard });
        }
    }

    /// The configuration the service was started with.
    pub fn config(&self) -> &PpsConfig {
        &self.shared.config
    }

    /// Pictures held in memory right now.
    pub fn open_pictures(&self) -> usize {
        self.shared.registry().len()
    }

    /// Whether `picture` is held in memory right now.
    pub fn is_open(&self, picture: &str) -> bool {
        self.shared.registry().contains_key(picture)
    }

    /// Stops accepting requests, flushes every dirty picture at high priority and waits for the
    /// writes, at most `deadline`.
    pub async fn shutdown(&self, deadline: Duration) -> ShutdownSummary {
        self.shared.accepting.store(false, Ordering::SeqCst);
        let mut waits = FuturesUnordered::new();
        {
            let registry = self.shared.registry();
            for (picture, mailbox) in registry.iter() {
                let (tx, rx) = oneshot::channel();
                if mailbox.send(Msg::Flush(tx)).is_ok() {
                    let picture = picture.clone();
                    waits.push(async move { (picture, rx.await) });
                }
            }
        }
        let pictures = waits.len();
        tracing::info!(pictures, "shutdown: flushing open pictures");
        let mut summary = ShutdownSummary {
            pictures,
            flushed: 0,
            failed: 0,
        };
        let give_up = tokio::time::sleep(deadline);
        tokio::pin!(give_up);
        let mut progress = tokio::time::interval(Duration::from_secs(1));
        progress.tick().await;
        while !waits.is_empty() {
            tokio::select! {
                Some((picture, result)) = waits.next() => match result {
                    Ok(Ok(seq)) => {
                        summary.flushed += 1;
                        tracing::debug!(%picture, seq, "shutdown: picture flushed");
                    }
                    Ok(Err(error)) => {
                        summary.failed += 1;
                        tracing::error!(%picture, %error, "shutdown: picture not flushed");
                    }
                    Err(_) => {
                        summary.failed += 1;
                        tracing::error!(%picture, "shutdown: picture actor stopped before flushing");
                    }
                },
                _ = progress.tick() => {
                    tracing::info!(left = waits.len(), "shutdown: waiting for flushes");
                }
                _ = &mut give_up => {
                    summary.failed += waits.len();
                    tracing::error!(left = waits.len(), "shutdown: deadline passed with pictures not flushed");
                    break;
                }
            }
        }
        if let Some(wal) = self.shared.wal.clone() {
            // Flushed or not, what was logged stays logged; the directory is let go for the
            // next service (picture actors may outlive this call, holding the handle).
            let _ = tokio::task::spawn_blocking(move || wal.close()).await;
        }
        tracing::info!(
            pictures = summary.pictures,
            flushed = summary.flushed,
            failed = summary.failed,
            "shutdown: done"
        );
        summary
    }

    /// Enqueues a request for `picture`'s actor (starting it if needed) and returns a future
    /// of its reply.
    fn call<T: Send + 'static>(
        &self,
        picture: &str,
        make: impl FnOnce(oneshot::Sender<Result<T, PpsError>>) -> Msg,
    ) -> BoxFuture<'static, Result<T, PpsError>> {
        let picture = match self.check(picture) {
            Ok(picture) => picture,
            Err(error) => return future::ready(Err(error)).boxed(),
        };
        let (tx, rx) = oneshot::channel();
        if let Err(error) = self.send(&picture, make(tx)) {
            return future::ready(Err(error)).boxed();
        }
        async move {
            rx.await.unwrap_or_else(|_| {
                Err(PpsError::Unavailable(
                    "picture actor stopped unexpectedly".to_string(),
                ))
            })
        }
        .boxed()
    }

    /// What every request checks first (the edge of the picture service): that the service is
    /// still accepting requests, and the picture id, which from here on is a [`PictureId`].
    fn check(&self, picture: &str) -> Result<PictureId, PpsError> {
        if !self.shared.accepting.load(Ordering::SeqCst) {
            return Err(PpsError::ShuttingDown);
        }
        PictureId::parse(picture).map_err(|e| PpsError::BadRequest(e.to_string()))
    }

    fn send(&self, picture: &PictureId, msg: Msg) -> Result<(), PpsError> {
        let mut registry = self.shared.registry();
        let msg = match registry.get(picture.as_str()) {
            Some(mailbox) => match mailbox.send(msg) {
                Ok(()) => return Ok(()),
                // Cannot happen (actors leave the registry before their mailbox closes), but
                // if it does, a fresh actor is the right answer.
                Err(mpsc::error::SendError(msg)) => msg,
            },
            None => msg,
        };
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| PpsError::Unavailable("no tokio runtime".to_string()))?;
        let (tx, rx) = mpsc::unbounded_channel();
        // The receiver exists, so this cannot fail.
        let _ = tx.send(msg);
        let me = tx.downgrade();
        registry.insert(picture.to_string(), tx);
        metrics::gauge!("pps_open_pictures").set(registry.len() as f64);
        runtime.spawn(picture::run(self.shared.clone(), picture.clone(), rx, me));
        Ok(())
    }

    fn acquire_on(
        &self,
        conn: ConnId,
        request: AcquireRequest,
    ) -> BoxFuture<'static, Result<Acquired, PpsError>> {
        let picture = request.picture.clone();
        self.call(&picture, |reply| Msg::Acquire(request, conn, reply))
    }

    fn apply_on(
        &self,
        conn: ConnId,
        batch: ApplyBatch,
    ) -> BoxFuture<'static, Result<u64, PpsError>> {
        let picture = batch.picture.clone();
        self.call(&picture, |reply| Msg::Apply(batch, conn, reply))
    }
}

/// The in-process caller (embedded mode, tests): connection 0, which never disconnects.
impl PictureService for Pps {
    fn acquire(&self, request: AcquireRequest) -> BoxFuture<'static, Result<Acquired, PpsError>> {
        self.acquire_on(0, request)
    }

    fn snapshot(&self, request: SnapshotRequest) -> BoxFuture<'static, Result<Snapshot, PpsError>> {
        let picture = request.picture.clone();
        self.call(&picture, |reply| Msg::Snapshot(request, reply))
    }

    fn apply(&self, batch: ApplyBatch) -> BoxFuture<'static, Result<u64, PpsError>> {
        self.apply_on(0, batch)
    }

    fn release(&self, request: ReleaseRequest) -> BoxFuture<'static, Result<u64, PpsError>> {
        let picture = request.picture.clone();
        self.call(&picture, |reply| Msg::Release(request, reply))
    }

    fn flush(&self, picture: String) -> BoxFuture<'static, Result<u64, PpsError>> {
        // A picture not in memory has nothing unstored; asking its actor would load it.
        if !self.is_open(&picture) {
            return future::ready(Err(PpsError::NotFound)).boxed();
        }
        self.call(&picture, Msg::Store)
    }

    fn history(&self, picture: String) -> BoxFuture<'static, Result<Vec<HistoryEntry>, PpsError>> {
        let picture = match self.check(&picture) {
            Ok(picture) => picture,
            Err(error) => return future::ready(Err(error)).boxed(),
        };
        let store = self.shared.store.clone();
        async move {
            let listed = store
                .list_versions(&picture)
                .await
                .map_err(|e| PpsError::Storage(e.to_string()))?;
            Ok(listed
                .into_iter()
                .map(|v| HistoryEntry {
                    seq: v.seq,
                    time_ms: v.time_ms,
                    size: v.size,
                })
                .collect())
        }
        .boxed()
    }

    fn version(
        &self,
        picture: String,
        seq: u64,
    ) -> BoxFuture<'static, Result<VersionImage, PpsError>> {
        let picture = match self.check(&picture) {
            Ok(picture) => picture,
            Err(error) => return future::ready(Err(error)).boxed(),
        };
        let store = self.shared.store.clone();
        let max_side = self.shared.config.max_side;
        async move {
            let png = store
                .get_version(&picture, seq)
                .await
                .map_err(|e| PpsError::Storage(e.to_string()))?
                .ok_or(PpsError::NotFound)?;
            // The header only: the caller decodes the pixels if it needs them.
            let header = protocol::snapshot::check_png(&png, max_side).map_err(|e| {
                PpsError::Storage(format!("version {seq} of {picture} is corrupt: {e}"))
            })?;
            if header.seq != Some(seq) {
                return Err(PpsError::Storage(format!(
                    "version {seq} of {picture} is corrupt: its png says seq {:?}",
                    header.seq
                )));
            }
            Ok(VersionImage {
                seq,
                width: header.width,
                height: header.height,
                png,
            })
        }
        .boxed()
    }

    fn events(&self) -> broadcast::Receiver<PpsEvent> {
        self.shared.events.subscribe()
    }

    fn is_ready(&self) -> bool {
        self.shared.accepting.load(Ordering::SeqCst)
    }

    fn echo_until(&self) -> Option<Instant> {
        // In process the service cannot be unreachable.
        Some(Instant::now() + Duration::from_secs(3600))
    }

    fn node(&self) -> Option<u64> {
        Some(self.shared.config.node())
    }
}

/// One broadcast service's connection to this service (see [`Pps::session`]).
pub struct Session {
    pps: Arc<Pps>,
    conn: ConnId,
    /// When the connection last delivered a message.
    last_heard: Mutex<Instant>,
}

impl Session {
    /// The connection delivered a message now.
    pub fn heard(&self) {
        *protocol::sync::lock(&self.last_heard) = Instant::now();
    }

    /// [`PictureService::acquire`] for this connection: a lease granted is held by it, and
    /// expires one lease timeout after the connection was last heard once it is gone.
    pub fn acquire(
        &self,
        request: AcquireRequest,
    ) -> BoxFuture<'static, Result<Acquired, PpsError>> {
        self.pps.acquire_on(self.conn, request)
    }

    /// [`PictureService::apply`] for this connection: the batch's lease must be the current
    /// one, and from then on it is held over this connection (a holder that reconnected
    /// carries on over its new one).
    pub fn apply(&self, batch: ApplyBatch) -> BoxFuture<'static, Result<u64, PpsError>> {
        self.pps.apply_on(self.conn, batch)
    }

    /// [`PictureService::snapshot`]: the same for every connection.
    pub fn snapshot(
        &self,
        request: SnapshotRequest,
    ) -> BoxFuture<'static, Result<Snapshot, PpsError>> {
        self.pps.snapshot(request)
    }

    /// [`PictureService::release`]: the request's lease must be the current one, whichever
    /// connection sends it.
    pub fn release(&self, request: ReleaseRequest) -> BoxFuture<'static, Result<u64, PpsError>> {
        self.pps.release(request)
    }

    /// [`PictureService::flush`]: the same for every connection.
    pub fn flush(&self, picture: String) -> BoxFuture<'static, Result<u64, PpsError>> {
        self.pps.flush(picture)
    }

    /// [`PictureService::history`]: the same for every connection.
    pub fn history(
        &self,
        picture: String,
    ) -> BoxFuture<'static, Result<Vec<HistoryEntry>, PpsError>> {
        self.pps.history(picture)
    }

    /// [`PictureService::version`]: the same for every connection.
    pub fn version(
        &self,
        picture: String,
        seq: u64,
    ) -> BoxFuture<'static, Result<VersionImage, PpsError>> {
        self.pps.version(picture, seq)
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let last_heard = *protocol::sync::lock(&self.last_heard);
        self.pps.disconnected(self.conn, last_heard);
    }
}
