//! One picture on this broadcast service: an actor task that owns the picture's room state.
//!
//! A room plays one of three roles (docs/scaling.md):
//!
//! - **sequencer** (it holds the picture's lease, granted by the picture service that owns the
//!   picture): it assigns `seq`, appends every update to the *pending log* (the updates the
//!   picture service has not yet made durable), hands the log to the picture service in
//!   bounded batches, and publishes each tick's updates as one shared `Updates` frame once the
//!   picture service has accepted them (`sequencer.rs`), to its own clients and to the relays
//!   of other broadcast services;
//! - **relay** (another broadcast service holds the lease): it forwards its clients' draws to
//!   that sequencer over one link, and sends its clients the sequencer's frames unchanged,
//!   keeping a copy of the pending log for its own joins (`relay.rs`);
//! - **acquiring**: it asks the owner for the lease, and becomes one of the two.
//!
//! It never awaits network I/O: requests to the picture service are enqueued synchronously
//! (see [`PictureService`]) and their replies come back as [`Ctl`] messages; clients are fed
//! through their [`Outbox`] without waiting.
//!
//! # The join invariant
//!
//! A joiner gets PPS's snapshot at `S` and exactly the log entries `S+1 ..= k`, and is
//! subscribed from `k+1`, all in one step of this actor (`join.rs`). The log itself
//! ([`PendingLog`]) keeps the entries a join may need (it is pinned while the join waits for
//! its snapshot) and says which ones a `Welcome` at `S` carries: the published ones. A
//! snapshot newer than what was published waits until it is. A joiner that asked to resume
//! after `SEQ` (PROTOCOL.md §11) gets no snapshot at all when the log still holds every
//! published update after `SEQ`: its `Welcome` is at `SEQ` with exactly those.
//!
//! # Durable acknowledgements and sessions
//!
//! `durable` is the highest seq the picture service reported in storage (its `Flushed`
//! events, a release, or the sequencer's `Durable` frames on a relay link); clients that asked
//! are told `min(durable, published)` whenever that advances for them (`durable.rs`). The
//! sequencer remembers the highest `client_seq` of each session it sequenced ([`Sessions`]) and
//! drops a session's draw it has sequenced already; a session client is told that highest
//! `client_seq` after each `Welcome`.

mod durable;
mod follow;
mod join;
mod relay;
mod sequencer;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use link::PictureService;
use protocol::backoff::Backoff;
use protocol::codec;
use protocol::pps::{Acquired, Lease, PpsError, Snapshot};
use protocol::ServerMsg;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::cluster::{Cluster, LinkId};
use crate::config::{Config, SlowClientPolicy};
use crate::outbox::Outbox;
use crate::pending::PendingLog;
use crate::session::{Admit, Sessions};
use crate::upstream::{Upstream, UpstreamEvent};
use crate::ws;

/// Control messages: joins, replies from the picture service and the sequencer, events,
/// queries.
pub(crate) enum Ctl {
    Join(JoinRequest),
    /// Another broadcast service relays this picture through us.
    RelayJoin(RelayJoin),
    SnapshotReady {
        join: u64,
        result: Result<Snapshot, PpsError>,
    },
    RetryJoin(u64),
    Acquired {
        attempt: u64,
        result: Result<Acquired, PpsError>,
    },
    Accepted {
        lease: Lease,
        result: Result<u64, PpsError>,
    },
    Released {
        last_seq: u64,
        result: Result<u64, PpsError>,
    },
    Upstream {
        generation: u64,
        event: UpstreamEvent,
    },
    Flushed(u64),
    /// The link to picture service `LinkId` came back: it may have lost what it held.
    PpsReconnected(LinkId),
    /// Time to ask for the lease again (after a failure's backoff).
    Retry,
    /// The last seq this room knows, the picture service it talks to and the `ETag` of that
    /// seq's PNG if known, for `snapshot.png`.
    LastSeq(oneshot::Sender<RoomSeq>),
    /// `snapshot.png` served the PNG at `seq` with this `ETag`, asked while the room was at
    /// `history`: kept for the conditional requests that follow (PROTOCOL.md §16).
    RememberEtag {
        history: u64,
        seq: u64,
        etag: Arc<str>,
    },
    /// A long-poll follower (`GET /pictures/{id}/updates`, PROTOCOL.md §16).
    Follow(FollowRequest),
    /// The admin API's view of the room.
    Status(oneshot::Sender<RoomStatus>),
    /// The admin API closes every client of this room here with close code `code`; replies how
    /// many.
    Kick {
        code: u16,
        reason: String,
        reply: oneshot::Sender<usize>,
    },
    Shutdown,
}

pub(crate) use follow::{FollowAnswer, FollowRequest};

/// What a room tells `snapshot.png` about its picture.
pub(crate) struct RoomSeq {
    /// The last seq published (0 while the room has not opened the picture).
    pub seq: u64,
    /// The picture service the room asks.
    pub link: LinkId,
    /// The room's history: bumped whenever its log restarts at another seq, after which a
    /// seq may name other updates than before (PROTOCOL.md §16).
    pub history: u64,
    /// The `ETag` of the PNG at `seq` in this history, when `snapshot.png` served one.
    pub etag: Option<Arc<str>>,
}

/// One open picture as the admin API lists it (`GET /admin/pictures`).
#[derive(Clone, Debug, serde::Serialize)]
pub(crate) struct RoomStatus {
    pub picture: String,
    /// `sequencer`, `relay` or `acquiring`.
    pub role: &'static str,
    /// The sequencer's advertise URL, on a relay.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sequencer: Option<String>,
    /// Clients connected to this service (joining ones included).
    pub clients: usize,
    /// Relay links from other broadcast services (a sequencer's).
    pub relays: usize,
    /// The picture's size, once known.
    pub width: Option<u32>,
    pub height: Option<u32>,
    /// The last seq sent to clients.
    pub seq: u64,
    /// The last seq storage is known to hold.
    pub durable_seq: u64,
    /// When `durable_seq` last advanced (milliseconds since the Unix epoch), if it did while
    /// this room was open.
    pub last_flush_unix_ms: Option<u64>,
    /// Sequenced updates held for the picture service (the pending log).
    pub pending: usize,
}

/// What a connected client's or relay's reader sends, in the order it was sent.
pub(crate) enum Input {
    /// `op` is the op's bincode encoding, sliced out of the client's frame. A relayed draw
    /// carries the relay's id (`via`) and the client id the relay gave it; a local one its
    /// connection (`conn`: a session's draws from a connection it replaced are dropped).
    /// `session`: the client connected with a session key (PROTOCOL.md §11).
    Draw {
        client_id: u64,
        client_seq: u64,
        op: Bytes,
        via: Option<u64>,
        conn: u64,
        session: bool,
    },
    Leave {
        client_id: u64,
        conn: u64,
    },
    /// A relay's session client was welcomed: answer with the session's highest `client_seq`.
    SessionQuery {
        relay: u64,
        session: u64,
    },
    /// A relay's count of its clients changed.
    RelayClients {
        relay: u64,
        count: u32,
    },
    RelayLeave {
        relay: u64,
    },
}

/// What a joiner asked for in its upgrade request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Wants {
    /// The size to create the picture at if it does not exist.
    pub size: (u32, u32),
    /// `?snapshot=lz4`: a `WelcomeLz4` where the picture service has the LZ4 form at hand.
    pub lz4: bool,
    /// `?durable=1`: `Durable` messages (PROTOCOL.md §10).
    pub durable: bool,
    /// `?since=SEQ`: the client has the picture up to `SEQ`; a `Welcome` without a snapshot
    /// if the log still holds everything after it (PROTOCOL.md §11). First join only.
    pub since: Option<u64>,
    /// `?session=K`: the client's id is its session key `K` (PROTOCOL.md §11).
    pub session: bool,
}

pub(crate) struct JoinRequest {
    pub client_id: u64,
    /// Tells this connection from another of the same session.
    pub conn: u64,
    pub outbox: Outbox,
    pub wants: Wants,
    /// Tells the reader it may start reading the client's messages.
    pub joined: oneshot::Sender<Result<(u32, u32), ()>>,
}

/// A relay link opening at the sequencer.
pub(crate) struct RelayJoin {
    pub relay: u64,
    pub outbox: Outbox,
    /// The relay has every update up to this seq (`None`: nothing yet).
    pub since: Option<u64>,
    /// `Ok` once the link is started; `Err` with the reason when this room is no sequencer.
    pub joined: oneshot::Sender<Result<(), String>>,
}

/// Settings every room shares.
pub(crate) struct RoomSettings {
    pub tick: Duration,
    pub tick_per_client: Duration,
    pub tick_max: Duration,
    pub client_queue_bytes: usize,
    pub slow_client: SlowClientPolicy,
    pub max_resyncs_per_minute: u32,
    pub batch_updates: usize,
    pub inflight_batches: usize,
    pub join_timeout: Duration,
    /// Largest message accepted on a relay link (a relay's start carries the updates after its
    /// `since`).
    pub max_relay_message: usize,
    /// How long connecting a relay link may take.
    pub relay_connect_timeout: Duration,
    /// Sessions remembered per picture (`--session-memory`).
    pub session_memory: usize,
    /// How long a closed room's session memory waits for the picture's next room here.
    pub session_linger: Duration,
    /// How long the room stays open after a long-poll follower's request (`--follow-linger`).
    pub follow_linger: Duration,
}

impl RoomSettings {
    /// The tick of a room with `clients` subscribers (see `Config::tick_per_client`).
    pub(crate) fn tick_for(&self, clients: usize) -> Duration {
        let scaled = self
            .tick_per_client
            .saturating_mul(u32::try_from(clients).unwrap_or(u32::MAX));
        self.tick.max(scaled.min(self.tick_max))
    }

    pub(crate) fn from_config(c: &Config) -> Self {
        Self {
            tick: c.tick,
            tick_per_client: c.tick_per_client,
            tick_max: c.tick_max.max(c.tick),
            client_queue_bytes: c.client_queue_bytes,
            slow_client: c.slow_client,
            max_resyncs_per_minute: c.max_resyncs_per_minute,
            batch_updates: c.pps_batch_updates.max(1),
            inflight_batches: c.pps_inflight_batches.max(1),
            join_timeout: c.join_timeout,
            max_relay_message: c.link.pps_max_message_size,
            relay_connect_timeout: c.link.pps_timeout,
            session_memory: c.session_memory,
            session_linger: c.session_linger,
            follow_linger: c.follow_linger,
        }
    }
}

struct Client {
    outbox: Outbox,
    /// Its connection (a session's new connection replaces the old one under the same id).
    conn: u64,
    /// Asked for `WelcomeLz4` (resyncs too).
    lz4: bool,
    /// Asked for `Durable`: the highest seq it was told (0: none yet).
    durable: Option<u64>,
    /// Connected with a session key (its `client_id`).
    session: bool,
    /// It was sent its `Session` message since its last `Welcome` (a relay's client waits for
    /// the sequencer's answer).
    session_answered: bool,
    /// When this client was last resynced, for the resync budget.
    resyncs: VecDeque<Instant>,
}

/// A relay of another broadcast service subscribed to this sequencer.
struct Downstream {
    outbox: Outbox,
    /// Its clients, counted in `Presence`.
    clients: u32,
    /// The highest seq sent to it in a `Durable` frame.
    durable: u64,
}

struct Joining {
    client_id: u64,
    conn: u64,
    outbox: Outbox,
    wants: Wants,
    /// The highest seq this client was told durable before (a resync keeps it).
    durable_told: u64,
    /// It asked to resume after a seq the picture does not have (for the metrics).
    resume_refused: bool,
    /// `None` for a resync of a client that is already reading.
    joined: Option<oneshot::Sender<Result<(u32, u32), ()>>>,
    started: Instant,
    resyncs: VecDeque<Instant>,
    /// Its snapshot is asked for (only once the room knows whom to ask).
    asked: bool,
    /// Its snapshot, newer than what this room has published: it waits until it is.
    ready: Option<Snapshot>,
    /// Delay before asking again for a snapshot that failed (until `--join-timeout`).
    retry: Backoff,
}

/// The picture's size, known once the room has the lease or a relay link.
#[derive(Clone, Copy)]
struct Opened {
    width: u32,
    height: u32,
}

/// What this room is for the picture (see the module doc).
enum Role {
    /// Asking for the lease; `in_flight`: the attempt whose answer is awaited.
    Acquiring { in_flight: Option<u64> },
    Sequencer {
        lease: Lease,
        /// The owner's lease timeout: how long this room may go on alone when the owner is
        /// unreachable is derived from it ([`PictureService::echo_until`]).
        lease_timeout: Duration,
    },
    Relay {
        /// The sequencer's advertise URL.
        holder: String,
        upstream: Upstream,
        /// Tags the link's events; events of an older link are ignored.
        generation: u64,
        /// The link's start arrived.
        started: bool,
    },
}

/// Where a room lives (the registry): the one thing a room asks of it is leave to close. A
/// trait, so the room does not depend on the registry that creates it.
pub(crate) trait Home: Send + Sync + 'static {
    /// Called by a room that has nothing left to do: removes it (parking its session memory,
    /// taken from `sessions`) unless a message arrived in `ctl` or `input` meanwhile; `false`:
    /// the room must go on.
    fn remove_if_idle(
        &self,
        id: &str,
        instance: u64,
        ctl: &mpsc::UnboundedReceiver<Ctl>,
        input: &mpsc::Receiver<Input>,
        sessions: &mut Sessions,
    ) -> bool;
}

pub(crate) struct Room {
    id: String,
    /// Identifies this incarnation in the registry (a picture can get a new room after the
    /// old one exited).
    instance: u64,
    cluster: Arc<Cluster>,
    /// The picture service this room asks (P's owner, as far as it knows).
    link: LinkId,
    settings: Arc<RoomSettings>,
    home: Arc<dyn Home>,
    ctl_tx: mpsc::UnboundedSender<Ctl>,
    opened: Option<Opened>,
    role: Role,
    /// The sequenced updates the picture service has not made durable, and where the
    /// clients, the joiners and the picture service stand in them. A relay keeps a copy of
    /// the sequencer's, for its own joins.
    log: PendingLog,
    /// The lease under which this room last sequenced, while its log may hold updates storage
    /// lacks: it claims them when it asks for the lease again.
    claim_lease: Option<Lease>,
    /// Entries of `log` counted in the `bs_pending_log_entries` gauge.
    counted_entries: usize,
    /// Evictions of `sessions` counted in `bs_session_evictions_total`.
    counted_evictions: u64,
    /// Numbers lease requests, so that a stale answer is told from the current one.
    attempts: u64,
    /// Redirections followed (`Moved`) since the last lease: bounded, then the room asks its
    /// own picture service to take the picture anyway.
    redirects: u32,
    /// Ask for the lease with `force` (the stored owner is unreachable from here).
    force: bool,
    /// Numbers relay links, to tell the current link's events from a replaced one's.
    generations: u64,
    /// After a failure, no request to the picture service (or relay link) before this.
    retry_at: Option<Instant>,
    backoff: Backoff,
    clients: BTreeMap<u64, Client>,
    /// Relays subscribed to this room (sequencer only).
    relays: BTreeMap<u64, Downstream>,
    /// The highest seq known to be in storage (PROTOCOL.md §10).
    durable: u64,
    /// When `durable` last advanced (the admin API's "last flush").
    durable_at: Option<std::time::SystemTime>,
    /// The highest `min(durable, published)` announced to the clients and relays.
    durable_announced: u64,
    /// The highest `client_seq` sequenced of each session (a sequencer's; a relay keeps it for
    /// the day it sequences). Parked in the registry when the room closes.
    sessions: Sessions,
    /// This room's clients whose draws went up the relay link without their echo yet: the
    /// last `client_seq` forwarded of each.
    forwarded: HashMap<u64, u64>,
    /// Joins waiting for their snapshot, by join id (the log's pins have the same keys).
    joining: HashMap<u64, Joining>,
    next_join: u64,
    /// When the current tick ends.
    publish_at: Option<Instant>,
    /// Every seq up to this one was sequenced in a tick that has ended: it goes out as soon as
    /// the owner has confirmed it (one frame per tick, at most one tick after its draw).
    tick_end: u64,
    shutting_down: bool,
    /// Bumped whenever the log restarts at another seq ([`Room::reopen_log`]): a seq names the
    /// same updates only within one history (a picture can go back, PROTOCOL.md §11).
    history: u64,
    /// The `ETag` `snapshot.png` gave the PNG at a seq in a history: `(history, seq, etag)`.
    etag: Option<(u64, u64, Arc<str>)>,
    /// Long-poll followers waiting for updates after their `since` (PROTOCOL.md §16).
    followers: Vec<follow::Follower>,
    /// The room stays open until then for followers (`--follow-linger` after the last one).
    follow_until: Option<Instant>,
    /// What the followers were last answered from: nothing to look at while it holds.
    follow_state: Option<follow::FollowState>,
}

/// First and largest delay of the room's retries.
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

impl Room {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn spawn(
        id: String,
        instance: u64,
        cluster: Arc<Cluster>,
        settings: Arc<RoomSettings>,
        home: Arc<dyn Home>,
        ctl_tx: mpsc::UnboundedSender<Ctl>,
        ctl_rx: mpsc::UnboundedReceiver<Ctl>,
        input_rx: mpsc::Receiver<Input>,
        sessions: Option<Sessions>,
    ) {
        let link = cluster.route(&id, None);
        let sessions = sessions.unwrap_or_else(|| Sessions::new(settings.session_memory));
        let room = Room {
            id,
            instance,
            cluster,
            link,
            settings,
            home,
            ctl_tx,
            opened: None,
            role: Role::Acquiring { in_flight: None },
            log: PendingLog::new(),
            claim_lease: None,
            counted_entries: 0,
            counted_evictions: 0,
            attempts: 0,
            redirects: 0,
            force: false,
            generations: 0,
            retry_at: None,
            backoff: Backoff::new(MIN_BACKOFF, MAX_BACKOFF),
            clients: BTreeMap::new(),
            relays: BTreeMap::new(),
            durable: 0,
            durable_at: None,
            durable_announced: 0,
            sessions,
            forwarded: HashMap::new(),
            joining: HashMap::new(),
            next_join: 0,
            publish_at: None,
            tick_end: 0,
            shutting_down: false,
            history: 0,
            etag: None,
            followers: Vec::new(),
            follow_until: None,
            follow_state: None,
        };
        metrics::gauge!("bs_rooms").increment(1.0);
        tokio::spawn(room.run(ctl_rx, input_rx));
    }

    fn pps(&self) -> Arc<dyn PictureService> {
        self.cluster.link(self.link).pps.clone()
    }

    async fn run(
        mut self,
        mut ctl_rx: mpsc::UnboundedReceiver<Ctl>,
        mut input_rx: mpsc::Receiver<Input>,
    ) {
        tracing::debug!(picture = %self.id, "room started");
        loop {
            let publish_at = self.publish_at;
            let retry_at = self.retry_at;
            let follow_at = self.follow_wake();
            tokio::select! {
                biased;
                Some(ctl) = ctl_rx.recv() => self.on_ctl(ctl),
                Some(input) = input_rx.recv() => self.on_input(input),
                _ = sleep_until(publish_at), if publish_at.is_some() => {}
                _ = sleep_until(retry_at), if retry_at.is_some() => {
                    self.retry_at = None;
                    self.on_ctl(Ctl::Retry);
                }
                // A follower's wait ends, or the followers' linger does: `after_turn` sees to it.
                _ = sleep_until(follow_at), if follow_at.is_some() => {}
            }
            // Take whatever else is already waiting before publishing: one frame per turn.
            for _ in 0..4096 {
                match ctl_rx.try_recv() {
                    Ok(ctl) => {
                        self.on_ctl(ctl);
                        continue;
                    }
                    Err(_) => match input_rx.try_recv() {
                        Ok(input) => self.on_input(input),
                        Err(_) => break,
                    },
                }
            }
            self.after_turn();
            self.count_entries();
            // Test builds check the log's invariants at every turn.
            debug_assert_eq!(self.log.check(), Ok(()), "picture {}", self.id);
            self.count_evictions();
            if self.idle()
                && self.home.remove_if_idle(
                    &self.id,
                    self.instance,
                    &ctl_rx,
                    &input_rx,
                    &mut self.sessions,
                )
            {
                break;
            }
        }
        metrics::gauge!("bs_rooms").decrement(1.0);
        metrics::gauge!("bs_pending_log_entries").decrement(self.counted_entries as f64);
        tracing::debug!(picture = %self.id, last_seq = self.log.last(), "room closed");
    }

    /// Brings the `bs_pending_log_entries` gauge up to date with the log.
    fn count_entries(&mut self) {
        let len = self.log.len();
        if len != self.counted_entries {
            metrics::gauge!("bs_pending_log_entries")
                .increment(len as f64 - self.counted_entries as f64);
            self.counted_entries = len;
        }
    }

    /// Counts the sessions forgotten to stay within `--session-memory`.
    fn count_evictions(&mut self) {
        let evicted = self.sessions.evicted();
        if evicted > self.counted_evictions {
            metrics::counter!("bs_session_evictions_total")
                .increment(evicted - self.counted_evictions);
            self.counted_evictions = evicted;
        }
    }

    /// Nobody is here any more (long-poll followers count until their linger ends).
    fn nobody(&self) -> bool {
        self.clients.is_empty()
            && self.joining.is_empty()
            && self.relays.is_empty()
            && self.followers.is_empty()
            && self.follow_until.is_none()
    }

    /// Nothing left to do here: nobody is here, and nothing in the log is this room's to
    /// hand over (it never sequenced, or a release confirmed it all).
    fn idle(&self) -> bool {
        self.nobody() && (self.claim_lease.is_none() || self.log.is_released())
    }

    fn on_ctl(&mut self, ctl: Ctl) {
        match ctl {
            Ctl::Join(request) => self.on_join(request),
            Ctl::RelayJoin(request) => self.on_relay_join(request),
            Ctl::SnapshotReady { join, result } => self.on_snapshot(join, result),
            Ctl::RetryJoin(join) => self.request_snapshot(join),
            Ctl::Acquired { attempt, result } => self.on_acquired(attempt, result),
            Ctl::Accepted { lease, result } => self.on_accepted(lease, result),
            Ctl::Released { last_seq, result } => self.on_released(last_seq, result),
            Ctl::Upstream { generation, event } => self.on_upstream(generation, event),
            Ctl::Flushed(seq) => {
                self.log.flushed(seq);
                self.stored(seq);
            }
            Ctl::PpsReconnected(link) => {
                if link == self.link {
                    self.on_pps_reconnected();
                }
            }
            Ctl::Retry => self.on_retry(),
            Ctl::LastSeq(reply) => {
                let seq = if self.opened.is_some() {
                    self.log.published()
                } else {
                    0
                };
                let etag = match &self.etag {
                    Some((history, at, etag)) if *history == self.history && *at == seq => {
                        Some(etag.clone())
                    }
                    _ => None,
                };
                let _ = reply.send(RoomSeq {
                    seq,
                    link: self.link,
                    history: self.history,
                    etag,
                });
            }
            Ctl::RememberEtag { history, seq, etag } => {
                if history == self.history && self.opened.is_some() {
                    self.etag = Some((history, seq, etag));
                }
            }
            Ctl::Follow(request) => self.on_follow(request),
            Ctl::Status(reply) => {
                let _ = reply.send(self.status());
            }
            Ctl::Kick {
                code,
                reason,
                reply,
            } => {
                let _ = reply.send(self.kick(code, &reason));
            }
            Ctl::Shutdown => self.on_shutdown(),
        }
    }

    fn on_input(&mut self, input: Input) {
        match input {
            Input::Draw {
                client_id,
                client_seq,
                op,
                via,
                conn,
                session,
            } => self.on_draw(
                Drawer {
                    client_id,
                    via,
                    conn,
                    session,
                },
                client_seq,
                op,
            ),
            Input::Leave { client_id, conn } => {
                let was_client = self.clients.get(&client_id).is_some_and(|c| c.conn == conn);
                if was_client {
                    self.clients.remove(&client_id);
                }
                let left: Vec<u64> = self
                    .joining
                    .iter()
                    .filter(|(_, j)| j.client_id == client_id && j.conn == conn)
                    .map(|(&join, _)| join)
                    .collect();
                for join in &left {
                    self.joining.remove(join);
                    self.log.unpin(*join);
                }
                if was_client || !left.is_empty() {
                    self.clients_changed();
                }
            }
            Input::RelayClients { relay, count } => {
                if let Some(downstream) = self.relays.get_mut(&relay) {
                    downstream.clients = count;
                    self.broadcast_presence();
                }
            }
            Input::SessionQuery { relay, session } => self.answer_relay_session(relay, session),
            Input::RelayLeave { relay } => {
                if self.relays.remove(&relay).is_some() {
                    metrics::gauge!("bs_relays_downstream").decrement(1.0);
                    tracing::debug!(picture = %self.id, relay, "relay left");
                    self.broadcast_presence();
                }
            }
        }
    }

    /// A draw of a local client (or, at the sequencer, of a relay's client).
    fn on_draw(&mut self, from: Drawer, client_seq: u64, op: Bytes) {
        let client_id = from.client_id;
        let known = match from.via {
            None => self
                .clients
                .get(&client_id)
                .is_some_and(|c| c.conn == from.conn),
            Some(relay) => self.relays.contains_key(&relay),
        };
        if !known {
            metrics::counter!("bs_draws_dropped_total").increment(1);
            if from.via.is_none()
                && self
                    .clients
                    .get(&client_id)
                    .is_some_and(|c| c.conn != from.conn)
            {
                // A session's connection that a newer one replaced: the client sends again
                // what the new connection's `Session` message does not cover.
                return;
            }
            // The client is being resynced: tell it this op was not taken (it will get a
            // fresh Welcome), so it never waits for an echo that cannot come. (A relay that
            // left hears nothing: its link is gone.)
            self.reject_joining(
                client_id,
                from.conn,
                client_seq,
                "the connection is being resynced",
            );
            return;
        }
        match &self.role {
            // A sequencer, or one that asks for its lease again: the draw waits in the log
            // (published once the lease is confirmed; rejected if it goes elsewhere).
            Role::Sequencer { .. } | Role::Acquiring { .. } if self.claim_lease.is_some() => {
                let seq = self.log.last() + 1;
                if from.session
                    && self.sessions.admit(client_id, client_seq, seq) == Admit::Duplicate
                {
                    // Sequenced already (from an earlier connection of the session): its
                    // original is, or will be, echoed.
                    metrics::counter!("bs_session_duplicates_dropped_total").increment(1);
                    return;
                }
                self.log.append(client_id, client_seq, &op);
                if self.publish_at.is_none() {
                    let tick = self
                        .settings
                        .tick_for(self.clients.len() + self.relays.len());
                    self.publish_at = Some(Instant::now() + tick);
                }
                metrics::counter!("bs_updates_sequenced_total").increment(1);
            }
            Role::Relay {
                upstream,
                started: true,
                ..
            } => {
                let frame = codec::relay_draw(from.session, client_id, client_seq, &op);
                if let Err(error) = upstream.send(frame) {
                    tracing::debug!(picture = %self.id, ?error, "relay link cannot take a draw");
                    self.reject(
                        client_id,
                        client_seq,
                        "the picture's sequencer is not reachable right now",
                    );
                } else {
                    self.forwarded.insert(client_id, client_seq);
                    metrics::counter!("bs_draws_relayed_total").increment(1);
                }
            }
            _ => self.reject(
                client_id,
                client_seq,
                "the picture is moving between nodes; try again",
            ),
        }
    }

    /// Answers a client's draw with `Rejected` (it was not taken).
    fn reject(&self, client_id: u64, client_seq: u64, reason: &str) {
        if let Some(client) = self.clients.get(&client_id) {
            metrics::counter!("bs_rejected_total").increment(1);
            send_rejected(&client.outbox, client_seq, reason);
        }
    }

    /// [`Room::reject`] for a client being resynced.
    fn reject_joining(&self, client_id: u64, conn: u64, client_seq: u64, reason: &str) {
        if let Some(joining) = self
            .joining
            .values()
            .find(|j| j.client_id == client_id && j.conn == conn)
        {
            send_rejected(&joining.outbox, client_seq, reason);
        }
    }

    /// After every turn: publish what is due, hand batches over, ask for a release.
    fn after_turn(&mut self) {
        if self.publish_at.is_some_and(|at| at <= Instant::now()) {
            self.publish_at = None;
            self.tick_end = self.log.last();
            self.publish();
        }
        self.announce_durable();
        self.answer_followers();
        if let Role::Sequencer { .. } = self.role {
            // PPS gets a tick's updates together, right after the tick ends: pumping on every
            // turn sent a batch per update or two (W1 N=256: ~2,900 batches a second, each a
            // task here and a job in PPS) for no gain.
            if self.publish_at.is_none() || self.log.unsent() >= self.settings.batch_updates as u64
            {
                self.pump_pps();
            }
        }
    }

    /// Sends `frame` (framed once) to every subscribed client and relay: the same bytes for
    /// all.
    fn deliver_all(&mut self, frame: &Bytes) {
        let mut slow = Vec::new();
        for (&id, client) in &self.clients {
            if client.outbox.queued_bytes() + frame.len() > self.settings.client_queue_bytes {
                slow.push(id);
            } else {
                client.outbox.send(frame.clone());
            }
        }
        let mut slow_relays = Vec::new();
        for (&id, relay) in &self.relays {
            if relay.outbox.queued_bytes() + frame.len() > self.settings.client_queue_bytes {
                slow_relays.push(id);
            } else {
                relay.outbox.send(frame.clone());
            }
        }
        metrics::counter!("bs_frames_sent_total").increment(
            (self.clients.len() + self.relays.len() - slow.len() - slow_relays.len()) as u64,
        );
        for id in slow {
            self.on_slow_client(id);
        }
        for id in slow_relays {
            // It relinks, continuing after what it has (or resyncing its clients).
            if let Some(relay) = self.relays.remove(&id) {
                tracing::info!(picture = %self.id, relay = id, "closing the link of a relay that cannot keep up");
                metrics::gauge!("bs_relays_downstream").decrement(1.0);
                relay.outbox.start_new_generation();
                relay.outbox.close(1013, "cannot keep up; relink");
            }
        }
    }

    fn on_slow_client(&mut self, id: u64) {
        let Some(mut client) = self.clients.remove(&id) else {
            return;
        };
        let now = Instant::now();
        while client
            .resyncs
            .front()
            .is_some_and(|t| now.duration_since(*t) > Duration::from_secs(60))
        {
            client.resyncs.pop_front();
        }
        let budget_left = (client.resyncs.len() as u32) < self.settings.max_resyncs_per_minute;
        if self.settings.slow_client == SlowClientPolicy::Disconnect || !budget_left {
            tracing::info!(picture = %self.id, client = id, "disconnecting a client that cannot keep up");
            metrics::counter!("bs_slow_client_disconnects_total").increment(1);
            client.outbox.start_new_generation();
            client.outbox.close(1013, "cannot keep up; try again later");
        } else {
            tracing::info!(picture = %self.id, client = id, "resyncing a client that cannot keep up");
            metrics::counter!("bs_slow_client_resyncs_total").increment(1);
            client.resyncs.push_back(now);
            self.resync(id, client);
        }
        self.clients_changed();
    }

    /// Brings a client back in sync with a fresh `Welcome` (its queued frames are dropped).
    fn resync(&mut self, id: u64, client: Client) {
        client.outbox.start_new_generation();
        let wants = Wants {
            size: self.opened.map(|o| (o.width, o.height)).unwrap_or((1, 1)),
            lz4: client.lz4,
            durable: client.durable.is_some(),
            // What it was sent is dropped: it needs the picture.
            since: None,
            session: client.session,
        };
        self.start_join(
            Subscriber {
                client_id: id,
                conn: client.conn,
                outbox: client.outbox,
                wants,
                durable_told: client.durable.unwrap_or(0),
            },
            None,
            client.resyncs,
        );
    }

    /// Resyncs every client: what they were sent no longer continues into what comes next
    /// (a new sequencer, updates echoed here that the picture service never accepted).
    fn resync_all(&mut self, why: &str) {
        if self.clients.is_empty() {
            return;
        }
        tracing::warn!(picture = %self.id, clients = self.clients.len(), why, "resyncing every client");
        metrics::counter!("bs_room_resyncs_total").increment(1);
        for (id, client) in std::mem::take(&mut self.clients) {
            self.resync(id, client);
        }
        self.clients_changed();
    }

    /// The number of this room's clients changed: the picture's `Presence` changes (at the
    /// sequencer, which counts every relay's clients too; a relay tells it).
    fn clients_changed(&mut self) {
        match &self.role {
            Role::Relay {
                upstream,
                started: true,
                ..
            } => {
                let count = self.clients.len() as u32;
                let _ = upstream.send(Bytes::from(codec::encode(
                    &protocol::relay::RelayUp::Clients { count },
                )));
            }
            Role::Relay { .. } | Role::Acquiring { .. } => {}
            Role::Sequencer { .. } => self.broadcast_presence(),
        }
    }

    /// Sends every client and relay the picture's `Presence`: this room's clients and every
    /// relay's.
    fn broadcast_presence(&mut self) {
        let relayed: u32 = self.relays.values().map(|r| r.clients).sum();
        let message = codec::encode(&ServerMsg::Presence {
            clients: self.clients.len() as u32 + relayed,
        });
        self.deliver_all(&ws::binary_frame(&message));
    }

    /// Backs off before the next attempt: `retry_at` is set, the delay doubles.
    fn back_off(&mut self) {
        self.retry_at = Some(Instant::now() + self.backoff.next_delay());
    }

    fn on_retry(&mut self) {
        match self.role {
            Role::Acquiring { in_flight: None } if !self.nobody() || self.claim_lease.is_some() => {
                self.acquire()
            }
            _ => {}
        }
    }

    fn status(&self) -> RoomStatus {
        let (role, sequencer) = match &self.role {
            Role::Acquiring { .. } => ("acquiring", None),
            Role::Sequencer { .. } => ("sequencer", None),
            Role::Relay { holder, .. } => ("relay", Some(holder.clone())),
        };
        RoomStatus {
            picture: self.id.clone(),
            role,
            sequencer,
            clients: self.clients.len() + self.joining.len(),
            relays: self.relays.len(),
            width: self.opened.map(|o| o.width),
            height: self.opened.map(|o| o.height),
            seq: if self.opened.is_some() {
                self.log.published()
            } else {
                0
            },
            durable_seq: self.durable,
            last_flush_unix_ms: self.durable_at.and_then(|at| {
                at.duration_since(std::time::UNIX_EPOCH)
                    .ok()
                    .map(|d| d.as_millis() as u64)
            }),
            pending: self.log.len(),
        }
    }

    /// Closes every client of this room here (joining ones too) with `code`; they are gone from
    /// the room at once, whatever their readers do next.
    fn kick(&mut self, code: u16, reason: &str) -> usize {
        let mut closed = 0;
        for (_, client) in std::mem::take(&mut self.clients) {
            client.outbox.close(code, reason);
            closed += 1;
        }
        for (join, joining) in std::mem::take(&mut self.joining) {
            self.log.unpin(join);
            joining.outbox.close(code, reason);
            if let Some(joined) = joining.joined {
                let _ = joined.send(Err(()));
            }
            closed += 1;
        }
        if closed > 0 {
            tracing::info!(picture = %self.id, closed, code, "clients closed by the admin API");
            self.clients_changed();
        }
        closed
    }

    fn on_shutdown(&mut self) {
        self.shutting_down = true;
        self.tick_end = self.log.last();
        self.publish();
        for (_, client) in std::mem::take(&mut self.clients) {
            client.outbox.close(1012, "service restart");
        }
        for (join, joining) in std::mem::take(&mut self.joining) {
            self.log.unpin(join);
            joining.outbox.close(1012, "service restart");
            if let Some(joined) = joining.joined {
                let _ = joined.send(Err(()));
            }
        }
        // Relays find the next sequencer once this one has released the picture.
        for (_, relay) in std::mem::take(&mut self.relays) {
            metrics::gauge!("bs_relays_downstream").decrement(1.0);
            relay.outbox.close(1012, "service restart");
        }
        if let Role::Relay { .. } = self.role {
            self.role = Role::Acquiring { in_flight: None };
        }
        self.fail_followers(&PpsError::ShuttingDown);
    }

    /// The log restarts at `seq`, which the picture continues from: what a seq after it names
    /// may differ from before, so the room's history moves on (ETags, followers).
    fn reopen_log(&mut self, seq: u64) {
        self.log.open_at(seq);
        self.history += 1;
        self.etag = None;
        self.followers_gone_after(seq);
    }
}

/// Who sent a draw.
#[derive(Clone, Copy)]
struct Drawer {
    client_id: u64,
    /// The relay it came through (at the sequencer), or `None` for a local client.
    via: Option<u64>,
    /// The local client's connection.
    conn: u64,
    /// Drawn under a session key.
    session: bool,
}

/// A client about to join (or be resynced): who it is and what it asked for.
pub(crate) struct Subscriber {
    client_id: u64,
    conn: u64,
    outbox: Outbox,
    wants: Wants,
    durable_told: u64,
}

fn send_rejected(outbox: &Outbox, client_seq: u64, reason: &str) {
    let rejected = ServerMsg::Rejected {
        client_seq,
        reason: format!("not applied: {reason}"),
    };
    outbox.send_direct(&codec::encode(&rejected));
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(args: &[&str]) -> RoomSettings {
        use clap::Parser;
        let mut argv = vec!["broadcast-service"];
        argv.extend_from_slice(args);
        RoomSettings::from_config(&Config::parse_from(argv))
    }

    #[test]
    fn tick_grows_with_the_room_up_to_its_cap() {
        let ms = Duration::from_millis;
        let scaled = settings(&[
            "--tick",
            "5ms",
            "--tick-per-client",
            "40us",
            "--tick-max",
            "10ms",
        ]);
        assert_eq!(scaled.tick_for(0), ms(5));
        assert_eq!(scaled.tick_for(64), ms(5));
        assert_eq!(scaled.tick_for(200), ms(8));
        assert_eq!(scaled.tick_for(250), ms(10));
        assert_eq!(scaled.tick_for(100_000), ms(10));
        let fixed = settings(&["--tick", "5ms", "--tick-per-client", "0s"]);
        assert_eq!(fixed.tick_for(100_000), ms(5));
        // A cap below the base tick never shortens it.
        let capped = settings(&[
            "--tick",
            "5ms",
            "--tick-per-client",
            "1ms",
            "--tick-max",
            "1ms",
        ]);
        assert_eq!(capped.tick_for(1000), ms(5));
        // The defaults: 5 ms up to 119 clients, 42 µs a client above, at most 11 ms.
        let defaults = settings(&[]);
        assert_eq!(defaults.tick_for(119), ms(5));
        assert_eq!(defaults.tick_for(256), Duration::from_micros(10_752));
        assert_eq!(defaults.tick_for(1000), ms(11));
    }
}
