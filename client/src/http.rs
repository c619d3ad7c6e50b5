//! `GET /pictures/{id}/snapshot.png`: the picture as the server has it, with the last seq it
//! includes (read-your-writes: every update sequenced before the request is in it).

use crate::error::ClientError;

/// The server's picture: `(X-Picture-Seq, PNG bytes)`.
pub async fn snapshot(base_url: &str, picture: &str) -> Result<(u64, Vec<u8>), ClientError> {
    snapshot_with_token(base_url, picture, None).await
}

/// [`snapshot`] from a service that asks for a token (PROTOCOL.md §13), sent as an
/// `Authorization: Bearer` header; a `view` token is enough.
pub async fn snapshot_with_token(
    base_url: &str,
    picture: &str,
    token: Option<&str>,
) -> Result<(u64, Vec<u8>), ClientError> {
    let url = format!(
        "{}/pictures/{picture}/snapshot.png",
        crate::http_base(base_url)
    );
    let mut request = reqwest::Client::new().get(&url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await?;
    let status = response.status();
    if !status.is_success() {
        return Err(ClientError::Http {
            status: status.as_u16(),
        });
    }
    let seq = response
        .headers()
        .get("x-picture-seq")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .ok_or_else(|| {
            ClientError::Protocol("snapshot.png without a decimal X-Picture-Seq header".into())
        })?;
    let png = response.bytes().await?;
    Ok((seq, png.to_vec()))
}
