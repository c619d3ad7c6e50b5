//! Tokens (PROTOCOL.md §13): signed, expiring JWTs that grant `draw` or `view` on one picture
//! id or an id prefix. With `--token-secret` (HS256) or `--token-public-key` (RS256/ES256)
//! set, every WebSocket join and `snapshot.png` needs one; without either, nothing is checked.
//!
//! The check is pure (token, picture and clock in, a [`Grant`] or an [`AuthError`] out) so that
//! the matching rules are unit-tested without a server; `http` turns errors into 401s and
//! `connection` enforces the grant (view-only draws rejected, expiry closes with 4401).

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use crate::config::Config;

/// The close code of a connection whose token expired while it was connected.
pub(crate) const EXPIRED_CLOSE: u16 = 4401;

/// What a token lets its holder do on the pictures it names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Role {
    /// Everything a client of PROTOCOL.md may do.
    Draw,
    /// Receive everything; every `Draw` is answered `Rejected`.
    View,
}

/// The claims this service reads; others (`iat`, `sub`, ...) are ignored.
#[derive(Debug, Deserialize)]
struct Claims {
    /// A picture id, or a prefix ending in `*` (`team-a-*`; `*` alone: every picture).
    pic: String,
    role: Role,
    /// Unix seconds; the token is refused from this second on.
    exp: u64,
}

/// What a verified token grants a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Grant {
    pub role: Role,
    /// Unix seconds at which the grant ends (a connection is closed with 4401 then).
    pub exp: u64,
}

impl Grant {
    /// When the grant ends, on the monotonic clock (now, if it already has).
    pub(crate) fn expires_at(&self) -> Instant {
        let left = Duration::from_secs(self.exp).saturating_sub(unix_now());
        Instant::now() + left
    }
}

/// Why a request was refused: each becomes a 401 with a one-line body.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum AuthError {
    #[error(
        "token required: pass ?token=JWT or an Authorization: Bearer header (PROTOCOL.md §13)"
    )]
    Missing,
    #[error("token expired")]
    Expired,
    #[error("invalid token: {0}")]
    Invalid(String),
    #[error("token grants picture {granted:?}, not {picture:?}")]
    WrongPicture { granted: String, picture: String },
}

impl AuthError {
    /// The `reason` label of `bs_unauthorized_total`.
    pub(crate) fn label(&self) -> &'static str {
        match self {
            AuthError::Missing => "missing",
            AuthError::Expired => "expired",
            AuthError::Invalid(_) => "invalid",
            AuthError::WrongPicture { .. } => "wrong_picture",
        }
    }
}

impl IntoResponse for AuthError {
    fn into_response(self) -> Response {
        (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            format!("{self}\n"),
        )
            .into_response()
    }
}

/// Checks tokens against the configured key.
pub(crate) struct Verifier {
    key: DecodingKey,
    validation: Validation,
}

impl Verifier {
    /// The verifier the config asks for: `None` when neither `--token-secret` nor
    /// `--token-public-key` is set (every request is let in, as before tokens existed).
    pub(crate) fn from_config(config: &Config) -> anyhow::Result<Option<Self>> {
        if let Some(secret) = &config.token_secret {
            anyhow::ensure!(!secret.is_empty(), "--token-secret is empty");
            let key = DecodingKey::from_secret(secret.as_bytes())
                .context("--token-secret is not a usable HMAC key")?;
            return Ok(Some(Self::new(key, Algorithm::HS256)));
        }
        if let Some(path) = &config.token_public_key {
            let pem = std::fs::read(path)
                .with_context(|| format!("reading --token-public-key {}", path.display()))?;
            return Self::from_public_pem(&pem)
                .with_context(|| format!("--token-public-key {}", path.display()))
                .map(Some);
        }
        Ok(None)
    }

    /// An RSA public key verifies RS256 tokens; an EC (P-256) public key, ES256.
    fn from_public_pem(pem: &[u8]) -> anyhow::Result<Self> {
        if let Ok(key) = DecodingKey::from_rsa_pem(pem) {
            return Ok(Self::new(key, Algorithm::RS256));
        }
        let key = DecodingKey::from_ec_pem(pem)
            .context("not an RSA or EC public key in PEM (-----BEGIN PUBLIC KEY-----)")?;
        Ok(Self::new(key, Algorithm::ES256))
    }

    fn new(key: DecodingKey, algorithm: Algorithm) -> Self {
        // Only this algorithm (a token cannot pick another), `exp` required and checked to the
        // second: a connected client is closed at `exp` exactly, so joining must agree.
        let mut validation = Validation::new(algorithm);
        validation.leeway = 0;
        validation.set_required_spec_claims(&["exp"]);
        // An issuer's `aud` is its own business: this service checks only its claims.
        validation.validate_aud = false;
        Self { key, validation }
    }

    /// The grant of `token` for `picture`, or why there is none.
    pub(crate) fn verify(&self, token: &str, picture: &str) -> Result<Grant, AuthError> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation).map_err(
            |error| match error.kind() {
                ErrorKind::ExpiredSignature => AuthError::Expired,
                _ => AuthError::Invalid(error.to_string()),
            },
        )?;
        let claims = data.claims;
        // `exp` is checked by the library with no leeway; this repeats it for an `exp` equal to
        // now, which the library lets through for the rest of that second.
        if claims.exp <= unix_now().as_secs() {
            return Err(AuthError::Expired);
        }
        if !pic_matches(&claims.pic, picture) {
            return Err(AuthError::WrongPicture {
                granted: claims.pic,
                picture: picture.to_string(),
            });
        }
        Ok(Grant {
            role: claims.role,
            exp: claims.exp,
        })
    }
}

/// Whether the `pic` claim names `picture`: the same id, or a prefix of it followed by `*`.
pub(crate) fn pic_matches(pattern: &str, picture: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => picture.starts_with(prefix),
        None => pattern == picture,
    }
}

/// The request's token: `?token=` (browsers cannot set headers on a WebSocket), else an
/// `Authorization: Bearer` header.
pub(crate) fn token_of<'a>(query: Option<&'a str>, headers: &'a HeaderMap) -> Option<&'a str> {
    if let Some(token) = query {
        return Some(token);
    }
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}

/// Checks a request for `picture` when tokens are on: `Ok(None)` when they are off.
pub(crate) fn authorize(
    verifier: Option<&Verifier>,
    query: Option<&str>,
    headers: &HeaderMap,
    picture: &str,
) -> Result<Option<Grant>, AuthError> {
    let Some(verifier) = verifier else {
        return Ok(None);
    };
    let token = token_of(query, headers).ok_or(AuthError::Missing)?;
    verifier.verify(token, picture).map(Some)
}

fn unix_now() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;
    use jsonwebtoken::{EncodingKey, Header};

    const SECRET: &str = "unit-test-secret";

    fn verifier() -> Verifier {
        Verifier::new(
            DecodingKey::from_secret(SECRET.as_bytes()).expect("key"),
            Algorithm::HS256,
        )
    }

    fn mint(secret: &str, claims: serde_json_like::Claims) -> String {
        let key = EncodingKey::from_secret(secret.as_bytes()).expect("key");
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &key).expect("encode")
    }

    /// Claims as an issuer writes them (serialisable; the service's own are only read).
    mod serde_json_like {
        #[derive(serde::Serialize)]
        pub(super) struct Claims {
            pub pic: &'static str,
            pub role: &'static str,
            pub exp: u64,
        }
    }

    fn in_an_hour() -> u64 {
        unix_now().as_secs() + 3600
    }

    #[test]
    fn picture_patterns() {
        assert!(pic_matches("demo", "demo"));
        assert!(!pic_matches("demo", "demo2"));
        assert!(!pic_matches("demo", "dem"));
        assert!(pic_matches("team-a-*", "team-a-1"));
        assert!(pic_matches("team-a-*", "team-a-"));
        assert!(!pic_matches("team-a-*", "team-b-1"));
        assert!(!pic_matches("team-a-*", "team-a"));
        assert!(pic_matches("*", "anything"));
        // `*` is special only at the end.
        assert!(!pic_matches("a*b", "axb"));
        assert!(pic_matches("a*b", "a*b"));
    }

    #[test]
    fn verifies_role_picture_and_expiry() {
        let v = verifier();
        let exp = in_an_hour();
        let draw = mint(
            SECRET,
            serde_json_like::Claims {
                pic: "p-*",
                role: "draw",
                exp,
            },
        );
        assert_eq!(
            v.verify(&draw, "p-1"),
            Ok(Grant {
                role: Role::Draw,
                exp
            })
        );
        let view = mint(
            SECRET,
            serde_json_like::Claims {
                pic: "p-1",
                role: "view",
                exp,
            },
        );
        assert_eq!(v.verify(&view, "p-1").map(|g| g.role), Ok(Role::View));
        assert!(matches!(
            v.verify(&view, "p-2"),
            Err(AuthError::WrongPicture { .. })
        ));
        let old = mint(
            SECRET,
            serde_json_like::Claims {
                pic: "p-1",
                role: "draw",
                exp: 1000,
            },
        );
        assert_eq!(v.verify(&old, "p-1"), Err(AuthError::Expired));
        let forged = mint(
            "other",
            serde_json_like::Claims {
                pic: "p-1",
                role: "draw",
                exp,
            },
        );
        assert!(matches!(
            v.verify(&forged, "p-1"),
            Err(AuthError::Invalid(_))
        ));
        let admin = mint(
            SECRET,
            serde_json_like::Claims {
                pic: "p-1",
                role: "admin",
                exp,
            },
        );
        assert!(matches!(
            v.verify(&admin, "p-1"),
            Err(AuthError::Invalid(_))
        ));
        assert!(matches!(
            v.verify("not.a.jwt", "p-1"),
            Err(AuthError::Invalid(_))
        ));
    }

    #[test]
    fn token_from_query_or_bearer_header() {
        let mut headers = HeaderMap::new();
        assert_eq!(token_of(None, &headers), None);
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer abc"),
        );
        assert_eq!(token_of(None, &headers), Some("abc"));
        assert_eq!(token_of(Some("q"), &headers), Some("q"));
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic abc"));
        assert_eq!(token_of(None, &headers), None);
        assert_eq!(
            authorize(None, None, &headers, "p"),
            Ok(None),
            "tokens off: everything is let in"
        );
        assert_eq!(
            authorize(Some(&verifier()), None, &HeaderMap::new(), "p"),
            Err(AuthError::Missing)
        );
    }
}
