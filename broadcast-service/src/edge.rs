//! What the HTTP handlers (`http`, `admin`, `timelapse`) check and answer the same way at the
//! edge: the picture id of a path, read access (tokens), questions to storage, and the
//! responses their failures become.

use std::collections::HashMap;
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use protocol::backoff::Backoff;
use protocol::pps::PpsError;
use protocol::PictureId;

use crate::AppState;

pub(crate) fn bad_request(message: String) -> Response {
    (StatusCode::BAD_REQUEST, message + "\n").into_response()
}

/// The picture id of a path, checked (PROTOCOL.md §1): the one check of this service, at its
/// edge; or the `400` message saying why not.
pub(crate) fn check_id(id: &str) -> Result<PictureId, String> {
    PictureId::parse(id).map_err(|e| e.to_string())
}

/// Why a read of `id` (`snapshot.png`, `updates`, history, versions, timelapse) is refused: a
/// bad id, or no valid token for it (PROTOCOL.md §13: `view` is enough); `None`: go ahead.
pub(crate) fn refuse_read(
    state: &AppState,
    id: &str,
    query: &HashMap<String, String>,
    headers: &HeaderMap,
) -> Option<Response> {
    if let Err(message) = check_id(id) {
        return Some(bad_request(message));
    }
    let refused = crate::auth::authorize(
        state.tokens.as_ref(),
        query.get("token").map(String::as_str),
        headers,
        id,
    )
    .err()?;
    metrics::counter!("bs_unauthorized_total", "reason" => refused.label()).increment(1);
    Some(refused.into_response())
}

/// Asks a picture service a question about stored history: any of them can answer (they all
/// read the same storage), so the first reachable in the picture's rendezvous order does, as a
/// link that is reconnecting is waited for a while (as `snapshot.png` does).
pub(crate) async fn ask_storage<T, F>(state: &AppState, id: &str, ask: F) -> Result<T, PpsError>
where
    F: Fn(&dyn link::PictureService) -> futures::future::BoxFuture<'static, Result<T, PpsError>>,
{
    let cluster = state.registry.cluster().clone();
    let give_up = tokio::time::Instant::now() + state.config.join_timeout;
    let mut backoff = storage_backoff();
    loop {
        let link = cluster.route(id, None);
        match ask(cluster.link(link).pps.as_ref()).await {
            Err(PpsError::Unavailable(_)) if tokio::time::Instant::now() < give_up => {
                tokio::time::sleep(backoff.next_delay()).await;
            }
            result => return result,
        }
    }
}

/// The pace of a request that waits for an unreachable picture service (a link reconnecting):
/// from 50 ms, doubling to 1 s, give or take a quarter (the one jitter policy of
/// `protocol::backoff`), so that many waiting requests do not ask in step.
pub(crate) fn storage_backoff() -> Backoff {
    Backoff::new(Duration::from_millis(50), Duration::from_secs(1))
}

/// The answer to a failed history request.
pub(crate) fn history_error(error: PpsError) -> Response {
    match error {
        PpsError::NotFound => (StatusCode::NOT_FOUND, "no such version\n").into_response(),
        PpsError::BadRequest(message) => bad_request(message),
        error => {
            tracing::warn!(%error, "history request failed");
            (StatusCode::SERVICE_UNAVAILABLE, format!("{error}\n")).into_response()
        }
    }
}
