//! Tokens for a broadcast service started with `--token-secret` (PROTOCOL.md §13): HS256 JWTs
//! with the claims `pic` (a picture id, or a prefix ending in `*`), `role` (`draw` or `view`)
//! and `exp` (unix seconds). An application issues them the same way from its own backend;
//! this is for development, tests and `raster token`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Serialize;

use crate::error::ClientError;

/// What a token lets its holder do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Draw and see.
    Draw,
    /// See only: every draw is answered `Rejected`.
    View,
}

/// The claims the service reads.
#[derive(Clone, Debug, Serialize)]
pub struct Claims {
    /// A picture id, or a prefix ending in `*` (`team-a-*`; `*`: every picture).
    pub pic: String,
    /// What the holder may do with the picture.
    pub role: Role,
    /// Unix seconds from which the token is refused (and a connection holding it is closed
    /// with 4401).
    pub exp: u64,
}

/// An HS256 token signed with `secret` granting `role` on `picture` for `ttl` from now.
pub fn mint(secret: &str, picture: &str, role: Role, ttl: Duration) -> Result<String, ClientError> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO);
    let claims = Claims {
        pic: picture.to_string(),
        role,
        exp: (now + ttl).as_secs(),
    };
    mint_claims(secret, &claims)
}

/// An HS256 token signed with `secret` carrying `claims` as they are (an `exp` in the past
/// makes an expired token, for tests).
pub fn mint_claims(secret: &str, claims: &Claims) -> Result<String, ClientError> {
    let key = EncodingKey::from_secret(secret.as_bytes())
        .map_err(|e| ClientError::Token(e.to_string()))?;
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &key)
        .map_err(|e| ClientError::Token(e.to_string()))
}

/// `text` percent-encoded for a query value (a JWT needs none; anything else is kept intact).
pub(crate) fn query_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mints_a_three_part_token_with_the_claims() {
        let token = mint("s", "team-*", Role::View, Duration::from_secs(60)).expect("mint");
        let parts: Vec<&str> = token.split('.').collect();
        assert_eq!(parts.len(), 3);
        let claims: serde_json::Value =
            jsonwebtoken::dangerous::insecure_decode::<serde_json::Value>(&token)
                .expect("decode")
                .claims;
        assert_eq!(claims["pic"], "team-*");
        assert_eq!(claims["role"], "view");
        assert!(claims["exp"].as_u64().is_some());
        assert_eq!(query_escape(&token), token, "a JWT needs no escaping");
        assert_eq!(query_escape("a b+/"), "a%20b%2B%2F");
    }
}
