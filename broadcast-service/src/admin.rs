//! The admin API (PROTOCOL.md §14), behind `--admin-token`: list the pictures open here, store
//! one now, close its clients, and moderate it with sequenced ops that every client sees.
//!
//! Every request carries `Authorization: Bearer <admin token>`; without `--admin-token` the
//! whole API answers 404. The answers are JSON.
//!
//! A moderation op is drawn by the admin API's own client: an in-process connection
//! ([`Socket::Internal`]) that joins the picture's room like any other, so the op is sequenced
//! exactly like a client's, on a sequencer or through a relay, and is answered with the seqs
//! it got once it is published.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use futures::StreamExt;
use protocol::pps::{PpsError, SnapshotRequest};
use protocol::{codec, Op, ServerMsg};
use serde_json::json;

use crate::outbox::Outbox;
use crate::registry::JoinError;
use crate::room::{Input, Wants};
use crate::ws::Socket;
use crate::AppState;

/// The close code of clients closed with `POST /admin/pictures/{id}/close` (unless the request
/// names another).
pub(crate) const ADMIN_CLOSE: u16 = 4403;

/// How long a moderation op may take to be sequenced and published.
const DRAW_TIMEOUT: Duration = Duration::from_secs(30);

pub(crate) fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/admin/pictures", get(list))
        .route("/admin/pictures/{id}/flush", post(flush))
        .route("/admin/pictures/{id}/close", post(close))
        .route("/admin/pictures/{id}/clear", post(clear))
        .route("/admin/pictures/{id}/revert", post(revert))
}

/// An admin answer that is not a success: its status and a message (as JSON `{"error": ..}`).
struct Failure(StatusCode, String);

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let mut response = (self.0, Json(json!({ "error": self.1 }))).into_response();
        if self.0 == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"admin\""),
            );
        }
        response
    }
}

fn failure(status: StatusCode, message: impl Into<String>) -> Failure {
    Failure(status, message.into())
}

/// Checks the admin token; counts the request under `action` either way.
fn authorize(state: &AppState, headers: &HeaderMap, action: &'static str) -> Result<(), Failure> {
    let outcome = check_token(state.config.admin_token.as_deref(), headers);
    let label = match &outcome {
        Ok(()) => "allowed",
        Err(Failure(StatusCode::NOT_FOUND, _)) => "disabled",
        Err(_) => "unauthorized",
    };
    metrics::counter!("bs_admin_requests_total", "action" => action, "outcome" => label)
        .increment(1);
    if label == "unauthorized" {
        tracing::warn!(action, "admin request without the admin token");
    }
    outcome
}

fn check_token(expected: Option<&str>, headers: &HeaderMap) -> Result<(), Failure> {
    let Some(expected) = expected else {
        return Err(failure(
            StatusCode::NOT_FOUND,
            "the admin API is off (start the service with --admin-token)",
        ));
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    match given {
        Some(given) if same_secret(given.as_bytes(), expected.as_bytes()) => Ok(()),
        Some(_) => Err(failure(StatusCode::UNAUTHORIZED, "wrong admin token")),
        None => Err(failure(
            StatusCode::UNAUTHORIZED,
            "the admin API needs `Authorization: Bearer <admin token>`",
        )),
    }
}

/// Compares in time that depends on the lengths only, not on where the bytes differ.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn check_id(id: &str) -> Result<protocol::PictureId, Failure> {
    crate::edge::check_id(id).map_err(|message| failure(StatusCode::BAD_REQUEST, message))
}

fn pps_failure(error: PpsError) -> Failure {
    match error {
        PpsError::NotFound => failure(StatusCode::NOT_FOUND, "no such picture"),
        PpsError::BadRequest(message) => failure(StatusCode::BAD_REQUEST, message),
        error => failure(StatusCode::SERVICE_UNAVAILABLE, error.to_string()),
    }
}

/// `GET /admin/pictures`: the pictures open on this service.
async fn list(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    if let Err(failure) = authorize(&state, &headers, "list") {
        return failure.into_response();
    }
    let pictures = state.registry.statuses().await;
    Json(json!({ "pictures": pictures })).into_response()
}

/// `POST /admin/pictures/{id}/flush`: the picture's owner stores everything it has accepted,
/// now; answers the seq storage then holds.
async fn flush(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Err(failure) = authorize(&state, &headers, "flush").and_then(|()| check_id(&id)) {
        return failure.into_response();
    }
    let cluster = state.registry.cluster().clone();
    let mut link = match state.registry.last_seq(&id).await {
        Some(room) => room.link,
        None => cluster.route(&id, None),
    };
    // The room (or the placement) may name a picture service that no longer owns it: follow
    // the owner a few times.
    let mut result = Err(PpsError::NotFound);
    for _ in 0..3 {
        result = cluster.link(link).pps.flush(id.clone()).await;
        match result {
            Err(PpsError::Moved { owner }) => match cluster.by_node(owner) {
                Some(owner) => link = owner,
                None => break,
            },
            _ => break,
        }
    }
    match result {
        Ok(flushed_seq) => {
            tracing::info!(picture = %id, flushed_seq, "flushed by the admin API");
            Json(json!({ "picture": id, "flushed_seq": flushed_seq })).into_response()
        }
        Err(PpsError::NotFound) => failure(
            StatusCode::NOT_FOUND,
            "the picture is not open in its picture service (nothing to store)",
        )
        .into_response(),
        Err(error) => pps_failure(error).into_response(),
    }
}

/// `POST /admin/pictures/{id}/close[?code=C&reason=R]`: closes every client of the picture on
/// this service with close code `C` (4403 unless given).
async fn close(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    if let Err(failure) = authorize(&state, &headers, "close").and_then(|()| check_id(&id)) {
        return failure.into_response();
    }
    let code = match query.get("code") {
        None => ADMIN_CLOSE,
        // RFC 6455 §7.4: a server may send 1000, 1001, 1008 or an application code 4000-4999.
        Some(value) => match value.parse::<u16>() {
            Ok(code @ (1000 | 1001 | 1008 | 4000..=4999)) => code,
            _ => {
                return failure(
                    StatusCode::BAD_REQUEST,
                    format!("code must be 1000, 1001, 1008 or 4000..=4999, got {value:?}"),
                )
                .into_response()
            }
        },
    };
    let reason = query
        .get("reason")
        .map_or("closed by an administrator", String::as_str);
    if reason.len() > 123 {
        return failure(
            StatusCode::BAD_REQUEST,
            "reason must be at most 123 bytes (it travels in the close frame)",
        )
        .into_response();
    }
    match state.registry.kick(&id, code, reason).await {
        Some(closed) => {
            Json(json!({ "picture": id, "closed": closed, "code": code })).into_response()
        }
        None => failure(StatusCode::NOT_FOUND, "the picture has no clients here").into_response(),
    }
}

/// `POST /admin/pictures/{id}/clear?x=&y=&w=&h=[&color=RRGGBB]`: paints the rectangle with an
/// opaque colour (white unless given) as one sequenced `Rect`; answers its seq.
async fn clear(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    if let Err(failure) = authorize(&state, &headers, "clear").and_then(|()| check_id(&id)) {
        return failure.into_response();
    }
    let op = match clear_op(&query, &state.limits) {
        Ok(op) => op,
        Err(failure) => return failure.into_response(),
    };
    match draw(&state, &id, vec![op], None).await {
        Ok(seqs) => {
            tracing::info!(picture = %id, ?seqs, "rectangle cleared by the admin API");
            Json(json!({ "picture": id, "seqs": seqs })).into_response()
        }
        Err(failure) => failure.into_response(),
    }
}

/// Side of the tiles a revert draws (a `Patch` each: 256 KiB, within every client's message
/// size).
const REVERT_TILE: u32 = 256;

/// `POST /admin/pictures/{id}/revert?seq=S`: draws stored version `S` (PROTOCOL.md §15) over
/// the picture as sequenced `Patch`es, so that every client sees the picture become that
/// version; answers the seqs of the first and last tile.
async fn revert(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    if let Err(failure) = authorize(&state, &headers, "revert").and_then(|()| check_id(&id)) {
        return failure.into_response();
    }
    let seq = match query.get("seq").map(|v| v.parse::<u64>()) {
        Some(Ok(seq)) => seq,
        _ => {
            return failure(
                StatusCode::BAD_REQUEST,
                "seq is required: the seq of a stored version (GET /pictures/{id}/history)",
            )
            .into_response()
        }
    };
    // Any picture service reads the stored versions (as for GET .../history/{seq}.png).
    let asked = crate::edge::ask_storage(&state, &id, |pps| pps.version(id.clone(), seq)).await;
    let version = match asked {
        Ok(version) => version,
        Err(PpsError::NotFound) => {
            return failure(
                StatusCode::NOT_FOUND,
                format!("picture {id} has no stored version at seq {seq}"),
            )
            .into_response()
        }
        Err(error) => return pps_failure(error).into_response(),
    };
    let max_side = state.config.max_side;
    let decoded = match tokio::task::spawn_blocking(move || {
        protocol::snapshot::decode_png(&version.png, max_side)
    })
    .await
    {
        Ok(Ok(decoded)) => decoded,
        Ok(Err(error)) => {
            return failure(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("stored version {seq} does not decode: {error}"),
            )
            .into_response()
        }
        Err(error) => {
            return failure(StatusCode::INTERNAL_SERVER_ERROR, error.to_string()).into_response()
        }
    };
    let raster = decoded.raster;
    // A `Patch` blends (§4): it sets exactly the opaque pixels only. Pictures start opaque and
    // blending keeps them so; only a translucent `Clear` makes pixels a revert cannot redraw.
    if raster.pixels().chunks_exact(4).any(|p| p[3] != 255) {
        return failure(
            StatusCode::CONFLICT,
            format!("version {seq} has translucent pixels (a translucent Clear): a revert made of Patches would not reproduce it"),
        )
        .into_response();
    }
    let side = REVERT_TILE.min(state.limits.max_patch_side).max(1);
    let ops = tiles(&raster, side);
    let tiles = ops.len();
    match draw(&state, &id, ops, Some((raster.width(), raster.height()))).await {
        Ok(seqs) => {
            let (first, last) = (seqs.first().copied(), seqs.last().copied());
            tracing::info!(picture = %id, version = seq, tiles, ?first, ?last, "picture reverted by the admin API");
            Json(json!({
                "picture": id,
                "version": seq,
                "tiles": tiles,
                "first_seq": first,
                "last_seq": last,
            }))
            .into_response()
        }
        Err(failure) => failure.into_response(),
    }
}

/// `raster` as `Patch`es of at most `side` x `side`, row by row.
fn tiles(raster: &protocol::Raster, side: u32) -> Vec<Op> {
    let (width, height) = (raster.width(), raster.height());
    let pixels = raster.pixels();
    let mut ops = Vec::new();
    for y in (0..height).step_by(side as usize) {
        for x in (0..width).step_by(side as usize) {
            let (w, h) = (side.min(width - x), side.min(height - y));
            let mut rgba = Vec::with_capacity((w * h * 4) as usize);
            for row in y..y + h {
                let start = ((row * width + x) * 4) as usize;
                rgba.extend_from_slice(&pixels[start..start + (w * 4) as usize]);
            }
            ops.push(Op::Patch {
                x: x as i32,
                y: y as i32,
                w,
                h,
                rgba: rgba.into(),
            });
        }
    }
    ops
}

/// The `Rect` a clear request asks for.
fn clear_op(query: &HashMap<String, String>, limits: &protocol::Limits) -> Result<Op, Failure> {
    fn number<T: std::str::FromStr>(
        query: &HashMap<String, String>,
        name: &str,
    ) -> Result<T, Failure> {
        let value = query.get(name).ok_or_else(|| {
            failure(
                StatusCode::BAD_REQUEST,
                format!("{name} is required (x, y, w, h)"),
            )
        })?;
        value.parse().map_err(|_| {
            failure(
                StatusCode::BAD_REQUEST,
                format!("{name} must be an integer, got {value:?}"),
            )
        })
    }
    let color = match query.get("color") {
        None => [255, 255, 255, 255],
        Some(hex) => parse_color(hex).ok_or_else(|| {
            failure(
                StatusCode::BAD_REQUEST,
                format!("color must be RRGGBB or RRGGBBff (hex, opaque: a clear sets the pixels), got {hex:?}"),
            )
        })?,
    };
    let op = Op::Rect {
        x: number(query, "x")?,
        y: number(query, "y")?,
        w: number(query, "w")?,
        h: number(query, "h")?,
        color,
    };
    limits
        .check(&op)
        .map_err(|error| failure(StatusCode::BAD_REQUEST, error.to_string()))?;
    Ok(op)
}

/// `RRGGBB` or `RRGGBBff`: an opaque colour (a translucent one would blend, not clear).
fn parse_color(hex: &str) -> Option<[u8; 4]> {
    let hex = hex.strip_prefix('#').unwrap_or(hex);
    if !(hex.len() == 6 || hex.len() == 8) || !hex.is_ascii() {
        return None;
    }
    let byte = |i: usize| u8::from_str_radix(&hex[i..i + 2], 16).ok();
    let alpha = if hex.len() == 8 { byte(6)? } else { 255 };
    (alpha == 255).then_some([byte(0)?, byte(2)?, byte(4)?, 255])
}

/// Whether the picture exists (a join would create it): open here, or known to its picture
/// service.
async fn exists(state: &AppState, id: &str) -> Result<(), Failure> {
    if state.registry.has_room(id) {
        return Ok(());
    }
    let cluster = state.registry.cluster().clone();
    let mut link = cluster.route(id, None);
    let request = SnapshotRequest {
        picture: id.to_string(),
        create: None,
        min_seq: 0,
        lz4: false,
        latest: false,
        force: false,
    };
    for _ in 0..3 {
        match cluster.link(link).pps.snapshot(request.clone()).await {
            Ok(_) => return Ok(()),
            Err(PpsError::Moved { owner }) => match cluster.by_node(owner) {
                Some(owner) => link = owner,
                // Its owner holds it, so it exists.
                None => return Ok(()),
            },
            Err(error) => return Err(pps_failure(error)),
        }
    }
    Ok(())
}

/// Draws `ops` on picture `id` as the admin API's own client, one after the other (each
/// once the one before is published, so that no frame carries more than one of them), and
/// returns their seqs. `size`: the picture must be this big (`409` otherwise).
async fn draw(
    state: &Arc<AppState>,
    id: &str,
    ops: Vec<Op>,
    size: Option<(u32, u32)>,
) -> Result<Vec<u64>, Failure> {
    exists(state, id).await?;
    let conn = state.next_client_id();
    let (ours, theirs) = tokio::io::duplex(256 * 1024);
    let (_, write_half) = tokio::io::split(Socket::Internal(ours));
    let outbox = Outbox::spawn(write_half);
    let wants = Wants {
        size: (state.config.default_side, state.config.default_side),
        lz4: false,
        durable: false,
        since: None,
        session: false,
    };
    let (input, _joined) = match state.registry.join(id, conn, conn, wants, outbox) {
        Ok(joined) => joined,
        Err(JoinError::ShuttingDown) => {
            return Err(failure(
                StatusCode::SERVICE_UNAVAILABLE,
                "the service is shutting down",
            ))
        }
    };
    // What the room sends this client, read as any client would.
    let config = tungstenite::protocol::WebSocketConfig::default()
        .max_message_size(None)
        .max_frame_size(None);
    let mut frames = tokio_tungstenite::WebSocketStream::from_raw_socket(
        theirs,
        tungstenite::protocol::Role::Client,
        Some(config),
    )
    .await;
    let send = |i: usize| Input::Draw {
        client_id: conn,
        client_seq: i as u64 + 1,
        op: Bytes::from(codec::encode(&ops[i])),
        via: None,
        conn,
        session: false,
    };
    let timeout = DRAW_TIMEOUT + Duration::from_millis(10) * ops.len() as u32;
    let result = tokio::time::timeout(timeout, async {
        let mut seqs = Vec::with_capacity(ops.len());
        let mut welcomed = false;
        while seqs.len() < ops.len() {
            let frame = match frames.next().await {
                Some(Ok(tungstenite::Message::Binary(frame))) => frame,
                Some(Ok(tungstenite::Message::Close(close))) => {
                    let reason = close.map(|c| c.reason.to_string()).unwrap_or_default();
                    return Err(failure(
                        StatusCode::SERVICE_UNAVAILABLE,
                        format!("the picture's room closed the admin client: {reason}"),
                    ));
                }
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return Err(closed()),
            };
            match codec::decode_server(&frame) {
                Ok(
                    ServerMsg::Welcome { width, height, .. }
                    | ServerMsg::WelcomeLz4 { width, height, .. },
                ) if !welcomed => {
                    welcomed = true;
                    if let Some(size) = size.filter(|&size| size != (width, height)) {
                        return Err(failure(
                            StatusCode::CONFLICT,
                            format!(
                                "the picture is {width}x{height}, the version {}x{}",
                                size.0, size.1
                            ),
                        ));
                    }
                    if input.send(send(0)).await.is_err() {
                        return Err(closed());
                    }
                }
                Ok(ServerMsg::Updates(updates)) if welcomed => {
                    let next = seqs.len() as u64 + 1;
                    if let Some(update) = updates
                        .iter()
                        .find(|u| u.client_id == conn && u.client_seq == next)
                    {
                        seqs.push(update.seq);
                        if seqs.len() < ops.len() && input.send(send(seqs.len())).await.is_err() {
                            return Err(closed());
                        }
                    }
                }
                Ok(ServerMsg::Rejected { reason, .. }) => {
                    return Err(failure(
                        StatusCode::CONFLICT,
                        format!("the op was not sequenced: {reason}"),
                    ))
                }
                Ok(ServerMsg::Error { code, message }) => {
                    return Err(failure(
                        StatusCode::from_u16(code).unwrap_or(StatusCode::SERVICE_UNAVAILABLE),
                        message,
                    ))
                }
                _ => {}
            }
        }
        Ok(seqs)
    })
    .await
    .unwrap_or_else(|_| {
        Err(failure(
            StatusCode::GATEWAY_TIMEOUT,
            "the op was not published in time",
        ))
    });
    let _ = input
        .send(Input::Leave {
            client_id: conn,
            conn,
        })
        .await;
    result
}

fn closed() -> Failure {
    failure(
        StatusCode::SERVICE_UNAVAILABLE,
        "the picture's room closed the admin client",
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn colors_are_opaque_hex() {
        assert_eq!(parse_color("ff0080"), Some([255, 0, 128, 255]));
        assert_eq!(parse_color("#FF0080ff"), Some([255, 0, 128, 255]));
        assert_eq!(parse_color("ff008080"), None);
        assert_eq!(parse_color("ff00"), None);
        assert_eq!(parse_color("gg0000"), None);
        assert_eq!(parse_color("éé0000"), None);
    }

    #[test]
    fn tiles_cover_the_picture_exactly_once() {
        let mut raster = protocol::Raster::new(5, 3);
        raster.apply(&Op::Rect {
            x: 1,
            y: 1,
            w: 3,
            h: 1,
            color: [1, 2, 3, 255],
        });
        let ops = tiles(&raster, 2);
        assert_eq!(ops.len(), 6); // 3 columns (2, 2, 1) x 2 rows (2, 1)
        let mut redrawn = protocol::Raster::new(5, 3);
        redrawn.apply(&Op::Clear {
            color: [9, 9, 9, 255],
        });
        for op in &ops {
            redrawn.apply(op);
        }
        assert_eq!(redrawn, raster);
    }

    #[test]
    fn the_token_is_compared_whole() {
        let mut headers = HeaderMap::new();
        assert_eq!(
            check_token(None, &headers).err().map(|f| f.0),
            Some(StatusCode::NOT_FOUND)
        );
        assert_eq!(
            check_token(Some("0123456789abcdef"), &headers)
                .err()
                .map(|f| f.0),
            Some(StatusCode::UNAUTHORIZED)
        );
        headers.insert(
            header::AUTHORIZATION,
            "Bearer 0123456789abcde".parse().unwrap(),
        );
        assert!(check_token(Some("0123456789abcdef"), &headers).is_err());
        headers.insert(
            header::AUTHORIZATION,
            "Bearer 0123456789abcdef".parse().unwrap(),
        );
        assert!(check_token(Some("0123456789abcdef"), &headers).is_ok());
    }
}
