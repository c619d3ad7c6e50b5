//! The pictures this broadcast service has open: one room (sequencer) each, created by the
//! first joiner and removed by the room itself once it is idle.
//!
//! Joins are sent to a room while the registry lock is held, and a room removes itself only
//! under the same lock and only if its mailboxes are empty; so a join can never be sent to a
//! room that is going away (it either reaches a live room or creates a new one).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::time::Instant;

use link::PpsEvent;
use tokio::sync::{broadcast, mpsc, oneshot, Notify};

use crate::cluster::{Cluster, LinkId};
use crate::outbox::Outbox;
use crate::room::{
    Ctl, FollowRequest, Home, Input, JoinRequest, RelayJoin, Room, RoomSeq, RoomSettings,
    RoomStatus, Wants,
};
use crate::session::Sessions;

/// Capacity of a room's input queue: readers wait when it is full (per-client backpressure),
/// the room never does.
const INPUT_QUEUE: usize = 4096;

struct Entry {
    instance: u64,
    ctl: mpsc::UnboundedSender<Ctl>,
    input: mpsc::Sender<Input>,
}

/// What the registry holds under its lock.
#[derive(Default)]
struct Rooms {
    open: HashMap<String, Entry>,
    /// The session memory of closed rooms (PROTOCOL.md §11), for the next room of the picture
    /// here, until `--session-linger` after the room closed.
    parked: HashMap<String, (Instant, Sessions)>,
}

pub(crate) struct Registry {
    /// std Mutex: held for a few lines, never across `.await`.
    rooms: Mutex<Rooms>,
    cluster: Arc<Cluster>,
    settings: Arc<RoomSettings>,
    next_instance: AtomicU64,
    shutting_down: AtomicBool,
    /// Told whenever a room closes (what a shutdown waits for).
    closed: Notify,
    /// For rooms to reach the registry without a reference cycle.
    me: Weak<Registry>,
}

/// Resolves when the client's `Welcome` is queued, with the picture's width and height
/// (`Err`: it will not be).
pub(crate) type Joined = oneshot::Receiver<Result<(u32, u32), ()>>;

#[derive(Debug)]
pub(crate) enum JoinError {
    ShuttingDown,
}

/// Resolves when a relay link is started (`Err`: why not).
pub(crate) type RelayJoined = oneshot::Receiver<Result<(), String>>;

impl Registry {
    pub(crate) fn new(cluster: Arc<Cluster>, settings: RoomSettings) -> Arc<Registry> {
        Arc::new_cyclic(|me| Registry {
            rooms: Mutex::new(Rooms::default()),
            cluster,
            settings: Arc::new(settings),
            next_instance: AtomicU64::new(1),
            shutting_down: AtomicBool::new(false),
            closed: Notify::new(),
            me: me.clone(),
        })
    }

    pub(crate) fn cluster(&self) -> &Arc<Cluster> {
        &self.cluster
    }

    pub(crate) fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Relaxed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Rooms> {
        // A panic while holding this lock leaves the maps consistent (every change is one
        // insert or remove), so a poisoned lock is still usable.
        protocol::sync::lock(&self.rooms)
    }

    /// Joins `client_id` to picture `id`, creating its room if needed. Returns the room's
    /// input queue and a receiver that resolves when the `Welcome` is queued.
    pub(crate) fn join(
        &self,
        id: &str,
        client_id: u64,
        conn: u64,
        wants: Wants,
        outbox: Outbox,
    ) -> Result<(mpsc::Sender<Input>, Joined), JoinError> {
        if self.is_shutting_down() {
            return Err(JoinError::ShuttingDown);
        }
        let (joined_tx, joined_rx) = oneshot::channel();
        let request = JoinRequest {
            client_id,
            conn,
            outbox,
            wants,
            joined: joined_tx,
        };
        let input = self.send_or_open(id, Ctl::Join(request))?;
        Ok((input, joined_rx))
    }

    /// A long-poll follower of picture `id` (PROTOCOL.md §16): handed to its room, which is
    /// opened as for a joiner when the picture has none here.
    pub(crate) fn follow(&self, id: &str, request: FollowRequest) -> Result<(), JoinError> {
        if self.is_shutting_down() {
            return Err(JoinError::ShuttingDown);
        }
        self.send_or_open(id, Ctl::Follow(request)).map(|_| ())
    }

    /// Sends `first` to picture `id`'s room, creating the room if there is none (or its task
    /// ended without deregistering: it panicked). Returns the room's input queue.
    fn send_or_open(&self, id: &str, first: Ctl) -> Result<mpsc::Sender<Input>, JoinError> {
        let mut rooms = self.lock();
        let first = match rooms.open.get(id) {
            Some(entry) => match entry.ctl.send(first) {
                Ok(()) => return Ok(entry.input.clone()),
                Err(mpsc::error::SendError(ctl)) => ctl,
            },
            None => first,
        };
        let instance = self.next_instance.fetch_add(1, Ordering::Relaxed);
        let (ctl_tx, ctl_rx) = mpsc::unbounded_channel();
        let (input_tx, input_rx) = mpsc::channel(INPUT_QUEUE);
        // Sending into a fresh channel whose receiver we hold cannot fail.
        let _ = ctl_tx.send(first);
        rooms.open.insert(
            id.to_string(),
            Entry {
                instance,
                ctl: ctl_tx.clone(),
                input: input_tx.clone(),
            },
        );
        let linger = self.settings.session_linger;
        let sessions = rooms
            .parked
            .remove(id)
            .filter(|(at, _)| at.elapsed() < linger)
            .map(|(_, sessions)| sessions);
        drop(rooms);
        let Some(registry) = self.me.upgrade() else {
            return Err(JoinError::ShuttingDown);
        };
        Room::spawn(
            id.to_string(),
            instance,
            self.cluster.clone(),
            self.settings.clone(),
            registry,
            ctl_tx,
            ctl_rx,
            input_rx,
            sessions,
        );
        Ok(input_tx)
    }

    /// A relay of another broadcast service links to picture `id`: only a room that exists
    /// here can be its sequencer. Returns the room's input queue and a receiver that resolves
    /// when the link is started.
    pub(crate) fn join_relay(
        &self,
        id: &str,
        relay: u64,
        since: Option<u64>,
        outbox: Outbox,
    ) -> Result<(mpsc::Sender<Input>, RelayJoined), String> {
        if self.is_shutting_down() {
            return Err("this broadcast service is shutting down".to_string());
        }
        let (joined, joined_rx) = oneshot::channel();
        let rooms = self.lock();
        let entry = rooms
            .open
            .get(id)
            .ok_or_else(|| "this broadcast service does not sequence the picture".to_string())?;
        entry
            .ctl
            .send(Ctl::RelayJoin(RelayJoin {
                relay,
                outbox,
                since,
                joined,
            }))
            .map_err(|_| "the picture's room has closed".to_string())?;
        Ok((entry.input.clone(), joined_rx))
    }

    /// The last seq of an open picture, the picture service its room asks and the `ETag` of
    /// that seq's PNG if known; `None` when this service does not have it open.
    pub(crate) async fn last_seq(&self, id: &str) -> Option<RoomSeq> {
        let (tx, rx) = oneshot::channel();
        {
            let rooms = self.lock();
            let entry = rooms.open.get(id)?;
            entry.ctl.send(Ctl::LastSeq(tx)).ok()?;
        }
        rx.await.ok()
    }

    /// `snapshot.png` served the PNG at `seq` of picture `id` with `etag`, having asked its
    /// room at `history`: the room keeps it for conditional requests (if still at `history`).
    pub(crate) fn remember_etag(&self, id: &str, history: u64, seq: u64, etag: Arc<str>) {
        if let Some(entry) = self.lock().open.get(id) {
            let _ = entry.ctl.send(Ctl::RememberEtag { history, seq, etag });
        }
    }

    /// Every open room's status (the admin API), in picture order.
    pub(crate) async fn statuses(&self) -> Vec<RoomStatus> {
        let asked: Vec<oneshot::Receiver<RoomStatus>> = {
            let rooms = self.lock();
            rooms
                .open
                .values()
                .filter_map(|entry| {
                    let (tx, rx) = oneshot::channel();
                    entry.ctl.send(Ctl::Status(tx)).ok().map(|()| rx)
                })
                .collect()
        };
        let mut statuses = Vec::with_capacity(asked.len());
        for rx in asked {
            // A room that closed meanwhile is simply not listed.
            if let Ok(status) = rx.await {
                statuses.push(status);
            }
        }
        statuses.sort_by(|a, b| a.picture.cmp(&b.picture));
        statuses
    }

    /// Closes every client of picture `id` here with `code` (the admin API); `None` when the
    /// picture has no room here.
    pub(crate) async fn kick(&self, id: &str, code: u16, reason: &str) -> Option<usize> {
        let (tx, rx) = oneshot::channel();
        {
            let rooms = self.lock();
            let entry = rooms.open.get(id)?;
            entry
                .ctl
                .send(Ctl::Kick {
                    code,
                    reason: reason.to_string(),
                    reply: tx,
                })
                .ok()?;
        }
        rx.await.ok()
    }

    /// Whether picture `id` has a room here.
    pub(crate) fn has_room(&self, id: &str) -> bool {
        self.lock().open.contains_key(id)
    }

    pub(crate) fn open_rooms(&self) -> usize {
        self.lock().open.len()
    }

    /// Routes events of picture service `link` to the rooms, until the service goes away.
    pub(crate) async fn route_events(
        self: Arc<Self>,
        link: LinkId,
        mut events: broadcast::Receiver<PpsEvent>,
    ) {
        loop {
            let event = match events.recv().await {
                Ok(event) => event,
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::warn!(missed, "missed picture service events; replaying logs");
                    PpsEvent::Reconnected
                }
                Err(broadcast::error::RecvError::Closed) => return,
            };
            let rooms = self.lock();
            match event {
                PpsEvent::Flushed { picture, seq } => {
                    if let Some(entry) = rooms.open.get(&picture) {
                        let _ = entry.ctl.send(Ctl::Flushed(seq));
                    }
                }
                PpsEvent::Reconnected => {
                    for entry in rooms.open.values() {
                        let _ = entry.ctl.send(Ctl::PpsReconnected(link));
                    }
                }
            }
        }
    }

    /// Closes every client (1012) and waits until every room has handed its log to the
    /// picture service and seen it durable, or `deadline` passes. Returns the rooms left.
    pub(crate) async fn shutdown(&self, deadline: Duration) -> usize {
        self.shutting_down.store(true, Ordering::Relaxed);
        for entry in self.lock().open.values() {
            let _ = entry.ctl.send(Ctl::Shutdown);
        }
        let until = tokio::time::Instant::now() + deadline;
        let mut next_report = tokio::time::Instant::now() + Duration::from_secs(1);
        loop {
            // Listening before counting: a room that closes in between still wakes us.
            let closed = self.closed.notified();
            tokio::pin!(closed);
            closed.as_mut().enable();
            let left = self.open_rooms();
            let now = tokio::time::Instant::now();
            if left == 0 || now >= until {
                return left;
            }
            if now >= next_report {
                tracing::info!(pictures = left, "waiting for pictures to reach storage");
                next_report = now + Duration::from_secs(1);
            }
            let _ = tokio::time::timeout_at(until.min(next_report), closed).await;
        }
    }
}

impl Home for Registry {
    /// Its session memory is parked for the picture's next room here.
    fn remove_if_idle(
        &self,
        id: &str,
        instance: u64,
        ctl: &mpsc::UnboundedReceiver<Ctl>,
        input: &mpsc::Receiver<Input>,
        sessions: &mut Sessions,
    ) -> bool {
        let mut rooms = self.lock();
        if !ctl.is_empty() || !input.is_empty() {
            return false;
        }
        if rooms.open.get(id).is_some_and(|e| e.instance == instance) {
            rooms.open.remove(id);
            self.closed.notify_waiters();
            let linger = self.settings.session_linger;
            if sessions.len() > 0 && !linger.is_zero() {
                // Forget what has lingered long enough (here: one look per closing room).
                rooms.parked.retain(|_, (at, _)| at.elapsed() < linger);
                let parked = std::mem::replace(sessions, Sessions::new(0));
                rooms
                    .parked
                    .insert(id.to_string(), (Instant::now(), parked));
            }
        }
        true
    }
}
