//! The HTTP front door (PROTOCOL.md §1): WebSocket upgrade, `snapshot.png`, the browser client,
//! liveness, readiness and metrics, and the HTTP/1.1 server under them. Errors become responses
//! here, at the edge.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, Path, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use protocol::pps::{PpsError, Snapshot, SnapshotImage, SnapshotRequest};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower::ServiceExt;

use crate::edge::{
    ask_storage, bad_request, check_id, history_error, refuse_read, storage_backoff,
};
use crate::AppState;

pub(crate) fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/pictures/{id}/ws", get(ws))
        .route("/pictures/{id}/relay", get(relay))
        .route("/pictures/{id}/snapshot.png", get(snapshot))
        .route("/pictures/{id}/updates", get(updates))
        .route("/pictures/{id}/history", get(history))
        .route("/pictures/{id}/history/{file}", get(version))
        .route("/pictures/{id}/timelapse", get(crate::timelapse::timelapse))
        .route("/", get(|headers: HeaderMap| async move { asset("index.html", &headers) }))
        .route("/p/{id}", get(picture_page))
        .route("/static/{*path}", get(|Path(path): Path<String>, headers: HeaderMap| async move { asset(&path, &headers) }))
        // Liveness: the process serves HTTP. `/healthz` is its older name, kept.
        .route("/livez", get(|| async { "ok\n" }))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .route("/metrics", get(metrics))
        .merge(crate::admin::router())
        .with_state(state)
}

/// Serves HTTP/1.1 (and WebSocket upgrades) on `listener` until `shutdown` resolves, then
/// waits for the requests in flight. A connection whose request headers are not complete
/// `header_read_timeout` after it is ready for a request is closed (hyper's timer: slowloris
/// clients, idle kept-alive connections). Upgraded connections are not tracked here: they are
/// closed by the registry's shutdown.
pub(crate) async fn serve(
    listener: TcpListener,
    app: Router,
    header_read_timeout: Duration,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let mut shutdown = std::pin::pin!(shutdown);
    // Dropping `stop` tells every connection to finish; `done` closes once they all have.
    let (stop, stopping) = watch::channel(());
    let (done, connections) = watch::channel(());
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors, or a connection reset before it was accepted:
                    // wait a little instead of spinning.
                    tracing::warn!(%error, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Updates are small and latency matters: no Nagle delay on client sockets.
        if let Err(error) = tcp.set_nodelay(true) {
            tracing::debug!(%error, "cannot set TCP_NODELAY");
        }
        let app = app.clone();
        let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
            let mut request = request.map(axum::body::Body::new);
            request.extensions_mut().insert(ConnectInfo(peer));
            app.clone().oneshot(request)
        });
        let stopping = stopping.clone();
        let connections = connections.clone();
        tokio::spawn(async move {
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(header_read_timeout);
            let connection = builder
                .serve_connection(TokioIo::new(tcp), service)
                .with_upgrades();
            let mut connection = std::pin::pin!(connection);
            let mut stopping = stopping;
            tokio::select! {
                result = connection.as_mut() => {
                    if let Err(error) = result {
                        tracing::debug!(%peer, %error, "http connection ended");
                    }
                }
                _ = stopping.changed() => {
                    connection.as_mut().graceful_shutdown();
                    let _ = connection.await;
                }
            }
            drop(connections);
        });
    }
    drop(listener);
    drop(stop);
    drop(connections);
    done.closed().await;
}

/// `?width=W&height=H`: each 1..=max_side; a missing one takes the default.
fn requested_size(query: &HashMap<String, String>, state: &AppState) -> Result<(u32, u32), String> {
    let max = state.config.max_side;
    let side = |name: &str| match query.get(name) {
        None => Ok(state.config.default_side),
        Some(value) => value
            .parse::<u32>()
            .ok()
            .filter(|v| (1..=max).contains(v))
            .ok_or_else(|| format!("{name} must be an integer in 1..={max}, got {value:?}")),
    };
    Ok((side("width")?, side("height")?))
}

async fn ws(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    mut request: Request,
) -> Response {
    if let Err(message) = check_id(&id) {
        return bad_request(message);
    }
    let header = |name| {
        request
            .headers()
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
    };
    let origin = header(header::ORIGIN);
    if !state.origins.allows(origin, header(header::HOST)) {
        metrics::counter!("bs_connections_refused_total", "reason" => "origin").increment(1);
        tracing::debug!(picture = %id, origin = origin.unwrap_or_default(), "upgrade from a foreign origin refused");
        return (
            StatusCode::FORBIDDEN,
            format!(
                "origin {:?} may not open connections here (see --allowed-origins)\n",
                origin.unwrap_or_default()
            ),
        )
            .into_response();
    }
    // Tokens (PROTOCOL.md §13): 401 before the parameters below are looked at.
    let grant = match crate::auth::authorize(
        state.tokens.as_ref(),
        query.get("token").map(String::as_str),
        request.headers(),
        &id,
    ) {
        Ok(grant) => grant,
        Err(refused) => {
            metrics::counter!("bs_unauthorized_total", "reason" => refused.label()).increment(1);
            tracing::debug!(picture = %id, %refused, "join refused");
            return refused.into_response();
        }
    };
    let size = match requested_size(&query, &state) {
        Ok(size) => size,
        Err(message) => return bad_request(message),
    };
    // `?snapshot=lz4`: the `WelcomeLz4` extension (PROTOCOL.md §8).
    let lz4 = match query.get("snapshot").map(String::as_str) {
        None | Some("png") => false,
        Some("lz4") => true,
        Some(other) => {
            return bad_request(format!("snapshot must be png or lz4, got {other:?}"));
        }
    };
    // `?durable=1`: the `Durable` extension (PROTOCOL.md §10).
    let durable = match query.get("durable").map(String::as_str) {
        None | Some("0" | "false") => false,
        Some("1" | "true") => true,
        Some(other) => {
            return bad_request(format!(
                "durable must be 1, true, 0 or false, got {other:?}"
            ));
        }
    };
    // `?since=SEQ` and `?session=K`: resuming (PROTOCOL.md §11).
    // A bad value is answered like a bad size or snapshot form: 400, naming the parameter and
    // echoing what was given.
    let since = match query.get("since") {
        None => None,
        Some(value) => match value.parse::<u64>() {
            Ok(since) => Some(since),
            Err(_) => {
                return bad_request(format!(
                    "since must be a seq (an unsigned 64-bit integer), got {value:?}"
                ));
            }
        },
    };
    let session = match query.get("session") {
        None => None,
        Some(value) => match value.parse::<u64>() {
            Ok(key) if key != 0 => Some(key),
            _ => {
                return bad_request(format!(
                    "session must be a nonzero unsigned 64-bit integer, got {value:?}"
                ));
            }
        },
    };
    let wants = crate::room::Wants {
        size,
        lz4: lz4 && state.config.snapshot_lz4,
        durable,
        since,
        session: session.is_some(),
    };
    if state.registry.is_shutting_down() {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response();
    }
    if let Err(refusal) = crate::ws::accept(&request) {
        return refusal.into_response();
    }
    let ip = state.admission.client_ip(peer, request.headers());
    let permit = match state.admission.admit_client(ip, &id, size) {
        Ok(permit) => permit,
        Err(refused) => {
            tracing::debug!(%ip, picture = %id, reason = refused.label(), "connection refused");
            return refused.into_response();
        }
    };
    upgrade(&mut request, move |socket| {
        crate::connection::serve(socket, state, id, wants, session, grant, permit)
    })
}

/// Answers a WebSocket upgrade request (`101`, or why not) and, once upgraded, hands the
/// socket to `serve` on a task of its own.
fn upgrade<F, Fut>(request: &mut Request, serve: F) -> Response
where
    F: FnOnce(crate::ws::Socket) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let response = match crate::ws::accept(request) {
        Ok(response) => response,
        Err(refusal) => return refusal.into_response(),
    };
    let upgrade = hyper::upgrade::on(request);
    tokio::spawn(async move {
        match upgrade.await {
            Ok(upgraded) => serve(crate::ws::Socket::Upgraded(TokioIo::new(upgraded))).await,
            Err(error) => tracing::debug!(%error, "websocket upgrade failed"),
        }
    });
    response
}

/// `GET /pictures/{id}/relay?since=SEQ`: another broadcast service relays this picture
/// through this one, its sequencer (PROTOCOL.md §9).
async fn relay(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    mut request: Request,
) -> Response {
    if let Err(message) = check_id(&id) {
        return bad_request(message);
    }
    let since = match query.get("since").map(|s| s.parse::<u64>()) {
        None => None,
        Some(Ok(since)) => Some(since),
        Some(Err(_)) => return bad_request("since must be a seq (an unsigned integer)".into()),
    };
    if !state.registry.has_room(&id) {
        return (
            StatusCode::CONFLICT,
            "this broadcast service does not sequence the picture\n",
        )
            .into_response();
    }
    if let Err(refusal) = crate::ws::accept(&request) {
        return refusal.into_response();
    }
    let permit = match state.admission.admit_relay() {
        Ok(permit) => permit,
        Err(refused) => return refused.into_response(),
    };
    upgrade(&mut request, move |socket| {
        crate::downstream::serve(socket, state, id, since, permit)
    })
}

async fn snapshot(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    // A `view` token is enough to read the picture (PROTOCOL.md §13).
    if let Some(refused) = refuse_read(&state, &id, &query, &headers) {
        return refused;
    }
    let if_none_match = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok());
    // Read-your-writes: everything sequenced before this request arrived. A room here knows
    // its seq and its picture service; without one, the owner is found as a room would, and
    // asked for everything it has accepted.
    let cluster = state.registry.cluster().clone();
    let room = state.registry.last_seq(&id).await;
    if let (Some(if_none_match), Some(room)) = (if_none_match, &room) {
        // The room knows the ETag of the PNG at its seq: a match costs neither the picture
        // service nor an encoding (PROTOCOL.md §16).
        if let Some(etag) = room
            .etag
            .as_deref()
            .filter(|e| etag_matches(if_none_match, e))
        {
            metrics::counter!("bs_snapshots_total", "answer" => "not_modified", "asked" => "room")
                .increment(1);
            return not_modified(&state, etag, room.seq);
        }
    }
    let (min_seq, mut link, latest) = match &room {
        Some(room) => (room.seq, room.link, false),
        None => (0, cluster.route(&id, None), true),
    };
    let mut request = SnapshotRequest {
        picture: id.clone(),
        create: None,
        min_seq,
        lz4: false,
        latest,
        force: false,
    };
    // The picture service may be reconnecting (services mode): wait for it a while, as a
    // joining client would, rather than fail at once.
    let give_up = tokio::time::Instant::now() + state.config.join_timeout;
    let mut redirects = 0;
    let mut backoff = storage_backoff();
    let result = loop {
        match cluster.link(link).pps.snapshot(request.clone()).await {
            Err(PpsError::Unavailable(_)) if tokio::time::Instant::now() < give_up => {
                tokio::time::sleep(backoff.next_delay()).await;
                if latest {
                    link = cluster.route(&request.picture, None);
                }
            }
            Err(PpsError::Moved { owner }) if redirects < 3 => {
                redirects += 1;
                match cluster
                    .by_node(owner)
                    .filter(|&l| cluster.link(l).pps.is_ready())
                {
                    Some(owner) => link = owner,
                    // Its owner is unreachable from here: what storage holds.
                    None => request.force = true,
                }
            }
            result => break result,
        }
    };
    match result {
        Ok(Snapshot {
            seq,
            image: SnapshotImage::Png(png),
            ..
        }) => {
            let etag: Arc<str> = snapshot_etag(&id, seq, &png).into();
            if let Some(room) = &room {
                state
                    .registry
                    .remember_etag(&id, room.history, seq, etag.clone());
            }
            if if_none_match.is_some_and(|inm| etag_matches(inm, &etag)) {
                metrics::counter!("bs_snapshots_total", "answer" => "not_modified", "asked" => "picture_service")
                    .increment(1);
                return not_modified(&state, &etag, seq);
            }
            metrics::counter!("bs_snapshots_total", "answer" => "png", "asked" => "picture_service")
                .increment(1);
            let mut response = png.into_response();
            let headers = response.headers_mut();
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("image/png"));
            snapshot_headers(&state, headers, &etag, seq);
            response
        }
        Ok(_) => {
            // The request did not ask for the LZ4 form: a picture service that sends it anyway
            // is broken.
            tracing::error!("picture service answered a png snapshot request with lz4");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "unexpected snapshot form\n",
            )
                .into_response()
        }
        Err(PpsError::NotFound) => (StatusCode::NOT_FOUND, "no such picture\n").into_response(),
        Err(error) => {
            tracing::warn!(%error, "snapshot request failed");
            (StatusCode::SERVICE_UNAVAILABLE, format!("{error}\n")).into_response()
        }
    }
}

/// The strong `ETag` of a `snapshot.png` answer (PROTOCOL.md §16): the seq, then the first 16
/// bytes of the SHA-256 of the picture id and the PNG bytes, so two answers share an `ETag`
/// exactly when they are the same bytes of the same picture, whichever broadcast service (or
/// history of the picture, or encoding) gave them.
fn snapshot_etag(id: &str, seq: u64, png: &[u8]) -> String {
    use sha2::Digest;
    let mut hash = sha2::Sha256::new();
    hash.update(id.as_bytes());
    hash.update([0]);
    hash.update(png);
    let digest: String = hash.finalize()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("\"{seq}-{digest}\"")
}

/// Whether an `If-None-Match` value names `etag` (RFC 9110 §13.1.2: a list, `*`, weak
/// comparison).
fn etag_matches(if_none_match: &str, etag: &str) -> bool {
    if_none_match
        .split(',')
        .map(str::trim)
        .any(|tag| tag == "*" || tag.strip_prefix("W/").unwrap_or(tag) == etag)
}

/// The caching headers of a `snapshot.png` answer, 200 or 304.
fn snapshot_headers(state: &AppState, headers: &mut HeaderMap, etag: &str, seq: u64) {
    // With tokens on, a shared cache must not give the picture to whoever asks.
    let scope = if state.tokens.is_some() {
        "private"
    } else {
        "public"
    };
    let max_age = state.config.snapshot_max_age.as_secs();
    let cache = if max_age == 0 {
        format!("{scope}, no-cache")
    } else {
        format!("{scope}, max-age={max_age}, must-revalidate")
    };
    if let Ok(cache) = HeaderValue::from_str(&cache) {
        headers.insert(header::CACHE_CONTROL, cache);
    }
    if let Ok(etag) = HeaderValue::from_str(etag) {
        headers.insert(header::ETAG, etag);
    }
    headers.insert(
        header::HeaderName::from_static("x-picture-seq"),
        HeaderValue::from(seq),
    );
}

fn not_modified(state: &AppState, etag: &str, seq: u64) -> Response {
    let mut response = StatusCode::NOT_MODIFIED.into_response();
    snapshot_headers(state, response.headers_mut(), etag, seq);
    response
}

/// Counts a long-poll request in progress against `--max-followers` while it lives.
struct FollowerSlot<'a>(&'a std::sync::atomic::AtomicU32);

impl<'a> FollowerSlot<'a> {
    fn take(count: &'a std::sync::atomic::AtomicU32, max: u32) -> Option<Self> {
        use std::sync::atomic::Ordering;
        count
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()?;
        metrics::gauge!("bs_followers").increment(1.0);
        Some(FollowerSlot(count))
    }
}

impl Drop for FollowerSlot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
        metrics::gauge!("bs_followers").decrement(1.0);
    }
}

/// `GET /pictures/{id}/updates?since=SEQ&wait=SECONDS`: the long-poll follow (PROTOCOL.md
/// §16). The picture's room answers: the published updates after `since`, at once when there
/// are any, else when the next come or `wait` ends (none); `410` when its log no longer
/// holds them.
async fn updates(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    // As for snapshot.png: a `view` token is enough (PROTOCOL.md §13).
    if let Some(refused) = refuse_read(&state, &id, &query, &headers) {
        return refused;
    }
    let since = match query.get("since").map(|v| (v, v.parse::<u64>())) {
        Some((_, Ok(since))) => since,
        Some((value, Err(_))) => {
            return bad_request(format!(
                "since must be a seq (an unsigned 64-bit integer), got {value:?}"
            ));
        }
        None => {
            return bad_request(
                "since is required: the last seq the follower has (X-Picture-Seq of snapshot.png)"
                    .into(),
            );
        }
    };
    let wait = match query.get("wait").map(|v| (v, v.parse::<f64>())) {
        None => Duration::ZERO,
        Some((_, Ok(seconds))) if seconds.is_finite() && seconds >= 0.0 => {
            Duration::from_secs_f64(seconds.min(state.config.follow_max_wait.as_secs_f64()))
        }
        Some((value, _)) => {
            return bad_request(format!(
                "wait must be a number of seconds, 0 or more, got {value:?}"
            ));
        }
    };
    let json = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.contains("application/json"));
    let Some(_slot) = FollowerSlot::take(&state.followers, state.config.max_followers) else {
        metrics::counter!("bs_follows_total", "answer" => "refused").increment(1);
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            [(
                header::RETRY_AFTER,
                HeaderValue::from(crate::admission::RETRY_AFTER_SECONDS),
            )],
            "too many followers (--max-followers)\n",
        )
            .into_response();
    };
    let (reply, answer) = tokio::sync::oneshot::channel();
    let request = crate::room::FollowRequest { since, wait, reply };
    if state.registry.follow(&id, request).is_err() {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response();
    }
    // The room answers by the end of the wait (or of the join timeout while it opens the
    // picture); the margin only guards against a room that died.
    let limit = wait.max(state.config.join_timeout) + Duration::from_secs(1);
    let answer = match tokio::time::timeout(limit, answer).await {
        Ok(Ok(answer)) => answer,
        _ => {
            metrics::counter!("bs_follows_total", "answer" => "failed").increment(1);
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                "the picture's room did not answer\n",
            )
                .into_response();
        }
    };
    use crate::room::FollowAnswer;
    match answer {
        FollowAnswer::Updates { last, body } => {
            let label = if last == since { "empty" } else { "updates" };
            metrics::counter!("bs_follows_total", "answer" => label).increment(1);
            let (content_type, body) = if json {
                match updates_json(&body) {
                    Ok(json) => ("application/json", bytes::Bytes::from(json)),
                    Err(error) => {
                        tracing::error!(%error, "updates from the log do not decode");
                        return (StatusCode::INTERNAL_SERVER_ERROR, "undecodable log entry\n")
                            .into_response();
                    }
                }
            } else {
                ("application/octet-stream", body)
            };
            (
                [
                    (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
                    (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
                    (
                        header::HeaderName::from_static("x-picture-seq"),
                        HeaderValue::from(last),
                    ),
                ],
                body,
            )
                .into_response()
        }
        FollowAnswer::Gone { from, published } => {
            metrics::counter!("bs_follows_total", "answer" => "gone").increment(1);
            (
                StatusCode::GONE,
                [(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))],
                format!(
                    "the updates after seq {since} are not held here (this service holds {}..={published}): fetch snapshot.png and follow from its X-Picture-Seq\n",
                    from + 1
                ),
            )
                .into_response()
        }
        FollowAnswer::Failed(PpsError::NotFound) => {
            metrics::counter!("bs_follows_total", "answer" => "not_found").increment(1);
            (StatusCode::NOT_FOUND, "no such picture\n").into_response()
        }
        FollowAnswer::Failed(error) => {
            metrics::counter!("bs_follows_total", "answer" => "failed").increment(1);
            (StatusCode::SERVICE_UNAVAILABLE, format!("{error}\n")).into_response()
        }
    }
}

/// The JSON form of an `Updates` message (`Accept: application/json`): serde's form of
/// `ServerMsg::Updates`, `{"Updates":[{"seq":..,"client_id":..,"client_seq":..,"op":{..}}]}`.
fn updates_json(body: &[u8]) -> Result<Vec<u8>, String> {
    let message = protocol::codec::decode_server(body).map_err(|e| e.to_string())?;
    serde_json::to_vec(&message).map_err(|e| e.to_string())
}

/// `GET /pictures/{id}/history`: the picture's stored versions as JSON (PROTOCOL.md §15).
async fn history(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    if let Some(refused) = refuse_read(&state, &id, &query, &headers) {
        return refused;
    }
    let picture = id.clone();
    match ask_storage(&state, &id, |pps| pps.history(picture.clone())).await {
        Ok(versions) => (
            [
                (
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                ),
                (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
            ],
            history_json(&id, &versions),
        )
            .into_response(),
        Err(error) => history_error(error),
    }
}

/// `{"picture":ID,"versions":[{"seq":S,"time_ms":T,"size":B},...]}`, by seq ascending. Written
/// by hand: every value is a number or an id (`[A-Za-z0-9_-]`), nothing needs escaping.
pub(crate) fn history_json(id: &str, versions: &[protocol::pps::HistoryEntry]) -> String {
    let entries: Vec<String> = versions
        .iter()
        .map(|v| {
            format!(
                "{{\"seq\":{},\"time_ms\":{},\"size\":{}}}",
                v.seq, v.time_ms, v.size
            )
        })
        .collect();
    format!(
        "{{\"picture\":\"{id}\",\"versions\":[{}]}}\n",
        entries.join(",")
    )
}

/// `GET /pictures/{id}/history/{seq}.png`: one stored version, byte for byte (PROTOCOL.md §15).
async fn version(
    State(state): State<Arc<AppState>>,
    Path((id, file)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    if let Some(refused) = refuse_read(&state, &id, &query, &headers) {
        return refused;
    }
    let Some(seq) = file
        .strip_suffix(".png")
        .and_then(|seq| seq.parse::<u64>().ok())
    else {
        return bad_request(format!(
            "a version is named SEQ.png (SEQ an unsigned 64-bit integer), got {file:?}"
        ));
    };
    let picture = id.clone();
    match ask_storage(&state, &id, |pps| pps.version(picture.clone(), seq)).await {
        Ok(version) => (
            [
                (header::CONTENT_TYPE, HeaderValue::from_static("image/png")),
                // A version never changes (it may be pruned): cache it, privately (tokens).
                (
                    header::CACHE_CONTROL,
                    HeaderValue::from_static("private, max-age=86400, immutable"),
                ),
                (
                    header::HeaderName::from_static("x-picture-seq"),
                    HeaderValue::from(version.seq),
                ),
            ],
            version.png,
        )
            .into_response(),
        Err(error) => history_error(error),
    }
}

async fn picture_page(Path(id): Path<String>, headers: HeaderMap) -> Response {
    if let Err(message) = check_id(&id) {
        return bad_request(message);
    }
    asset("picture.html", &headers)
}

/// Ready while not shutting down and at least one picture service is reachable; the body says
/// the state of every link (`/metrics` has their failures by cause).
async fn ready(State(state): State<Arc<AppState>>) -> Response {
    let links = state.registry.cluster().links();
    let mut body = String::new();
    let mut up = 0;
    for link in links {
        let ready = link.pps.is_ready();
        up += usize::from(ready);
        let node = link
            .pps
            .node()
            .map(protocol::snapshot::owner_text)
            .unwrap_or_else(|| "unknown".to_string());
        body.push_str(&format!(
            "picture service {} ({node}): {}\n",
            link.url,
            if ready { "up" } else { "unreachable" }
        ));
    }
    if state.registry.is_shutting_down() {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("shutting down\n{body}"),
        )
            .into_response()
    } else if up == 0 {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("no picture service reachable\n{body}"),
        )
            .into_response()
    } else {
        format!("ready\n{body}").into_response()
    }
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    match &state.metrics {
        Some(metrics) => (
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            metrics.render(),
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "metrics are not enabled").into_response(),
    }
}

#[derive(rust_embed::Embed)]
#[folder = "static/"]
struct Assets;

/// A file of the browser client, embedded in the binary. Revalidated by ETag on every use,
/// so a redeploy is picked up at once and an unchanged file costs a 304.
fn asset(path: &str, headers: &HeaderMap) -> Response {
    let Some(file) = Assets::get(path) else {
        return (StatusCode::NOT_FOUND, "not found\n").into_response();
    };
    let etag = format!("\"{}\"", hex_prefix(&file.metadata.sha256_hash()));
    let cache = HeaderValue::from_static("public, max-age=0, must-revalidate");
    if headers
        .get(header::IF_NONE_MATCH)
        .is_some_and(|v| v.as_bytes() == etag.as_bytes())
    {
        return (StatusCode::NOT_MODIFIED, [(header::CACHE_CONTROL, cache)]).into_response();
    }
    let content_type = match path.rsplit('.').next() {
        Some("html") => "text/html; charset=utf-8",
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("json") => "application/json",
        Some("ico") => "image/x-icon",
        _ => "application/octet-stream",
    };
    let etag = HeaderValue::from_str(&etag).unwrap_or(HeaderValue::from_static("\"0\""));
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (header::CACHE_CONTROL, cache),
            (header::ETAG, etag),
        ],
        file.data.into_owned(),
    )
        .into_response()
}

fn hex_prefix(hash: &[u8]) -> String {
    hash.iter().take(12).map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn if_none_match_lists_weak_tags_and_star() {
        let etag = "\"7-00112233445566778899aabbccddeeff\"";
        assert!(etag_matches(etag, etag));
        assert!(etag_matches(&format!("W/{etag}"), etag));
        assert!(etag_matches(&format!("\"6-ab\" , {etag}"), etag));
        assert!(etag_matches("*", etag));
        assert!(!etag_matches(
            "\"7-00112233445566778899aabbccddeefe\"",
            etag
        ));
        assert!(!etag_matches("7-00112233445566778899aabbccddeeff", etag));
        assert!(!etag_matches("", etag));
    }

    #[test]
    fn snapshot_etags_name_the_picture_the_seq_and_the_bytes() {
        let a = snapshot_etag("a", 7, b"png");
        assert_eq!(a.len(), 1 + 1 + 1 + 32 + 1);
        assert!(a.starts_with("\"7-") && a.ends_with('"'));
        assert_eq!(a, snapshot_etag("a", 7, b"png"));
        assert_ne!(a, snapshot_etag("b", 7, b"png"));
        assert_ne!(a, snapshot_etag("a", 7, b"pnG"));
        assert_ne!(a, snapshot_etag("a", 8, b"png"));
        // The id and the bytes are separated: ("ab", "c") is not ("a", "bc").
        assert_ne!(snapshot_etag("ab", 1, b"c"), snapshot_etag("a", 1, b"bc"));
    }
}
