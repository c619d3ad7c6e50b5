//! Tokens and view-only clients (PROTOCOL.md §13), over loopback against a real service: a
//! join or `snapshot.png` without a valid token for the picture is answered 401 before any
//! upgrade; a `view` client sees everything and its draws are rejected without using a seq;
//! a token expiring while connected closes the connection with 4401. Without a key nothing
//! changes (every other test file runs that way).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{deadline, Server};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use protocol::{Op, Point};
use raster_client::token::{mint, mint_claims, Claims, Role};
use raster_client::{Client, ClientError, ConnectOptions, Event};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const SECRET: &str = "test-secret-of-the-tokens-suite";

/// A test-only P-256 key pair (made with `openssl genpkey -algorithm EC`), for ES256 tokens.
const EC_PRIVATE: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgjanJfS2Pq0vMaN57
PXv+X4v0lB789x5+MvLcftcZiuWhRANCAAT3P8H5KSzXtD/ZdDht7Z+o2JYDH5BK
bBbCSxACSUXP6uZquK0Jl82eJI1LkSXMCamMPqhJbQIdKA4sXnjr5TX/
-----END PRIVATE KEY-----
";
const EC_PUBLIC: &str = "-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE9z/B+Sks17Q/2XQ4be2fqNiWAx+Q
SmwWwksQAklFz+rmaritCZfNniSNS5ElzAmpjD6oSW0CHSgOLF546+U1/w==
-----END PUBLIC KEY-----
";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn token(picture: &str, role: Role) -> String {
    mint(SECRET, picture, role, Duration::from_secs(3600)).unwrap()
}

fn with_token(token: &str) -> ConnectOptions {
    ConnectOptions {
        token: Some(token.to_string()),
        ..ConnectOptions::default()
    }
}

async fn start(dir: &std::path::Path) -> Server {
    Server::start(dir, &["--token-secret", SECRET]).await
}

/// The status and body of a refused upgrade of `/pictures/{picture}/ws{query}`.
async fn refused(
    server: &Server,
    picture: &str,
    query: &str,
    bearer: Option<&str>,
) -> (u16, String) {
    let mut request = format!("{}/pictures/{picture}/ws{query}", server.url)
        .into_client_request()
        .unwrap();
    if let Some(token) = bearer {
        let value = format!("Bearer {token}").parse().unwrap();
        request.headers_mut().insert("authorization", value);
    }
    match tokio_tungstenite::connect_async(request).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            let body =
                String::from_utf8_lossy(response.body().as_deref().unwrap_or_default()).to_string();
            (response.status().as_u16(), body)
        }
        Err(other) => panic!("expected an HTTP refusal, got {other}"),
        Ok(_) => panic!("expected a refusal, was let in"),
    }
}

fn pixel(x: i32) -> Op {
    Op::Pixels {
        color: [10, 20, 30, 255],
        points: vec![Point { x, y: 0 }],
    }
}

#[tokio::test]
async fn joins_without_a_valid_token_for_the_picture_are_refused_401() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;

    let (status, body) = refused(&server, "p1", "", None).await;
    assert_eq!(status, 401);
    assert!(body.contains("token required"), "{body}");

    let forged = mint(
        "another-secret",
        "p1",
        Role::Draw,
        Duration::from_secs(3600),
    )
    .unwrap();
    let (status, body) = refused(&server, "p1", &format!("?token={forged}"), None).await;
    assert_eq!(status, 401);
    assert!(body.starts_with("invalid token"), "{body}");

    let (status, body) = refused(&server, "p1", "?token=garbage", None).await;
    assert_eq!(status, 401);
    assert!(body.starts_with("invalid token"), "{body}");

    let expired = mint_claims(
        SECRET,
        &Claims {
            pic: "p1".into(),
            role: Role::Draw,
            exp: now() - 10,
        },
    )
    .unwrap();
    let (status, body) = refused(&server, "p1", &format!("?token={expired}"), None).await;
    assert_eq!(status, 401);
    assert_eq!(body, "token expired\n");

    let other = token("p2", Role::Draw);
    let (status, body) = refused(&server, "p1", &format!("?token={other}"), None).await;
    assert_eq!(status, 401);
    assert!(body.contains("grants picture \"p2\""), "{body}");
    // Nor does a header with a wrong token get in.
    let (status, _) = refused(&server, "p1", "", Some(&other)).await;
    assert_eq!(status, 401);
    // A prefix is not the picture: `p` grants `p`, not `p1`.
    let (status, _) = refused(
        &server,
        "p1",
        &format!("?token={}", token("p", Role::Draw)),
        None,
    )
    .await;
    assert_eq!(status, 401);

    // A prefix ending in `*` grants every picture it starts: as `?token=` (the Rust client)...
    let team = token("team-*", Role::Draw);
    let mut client = Client::connect_with(&server.url, "team-1", with_token(&team))
        .await
        .unwrap();
    let seq = client.draw(pixel(1)).await.unwrap();
    client.wait_own(seq, deadline()).await.unwrap();
    client.close(deadline()).await.unwrap();
    // ... and as an `Authorization: Bearer` header.
    let mut request = format!("{}/pictures/team-2/ws", server.url)
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("authorization", format!("Bearer {team}").parse().unwrap());
    let (socket, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    drop(socket);

    // The refusals are counted.
    let metrics = reqwest::get(format!("{}/metrics", server.http))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for reason in ["missing", "invalid", "expired", "wrong_picture"] {
        let needle = format!("bs_unauthorized_total{{reason=\"{reason}\"}}");
        assert!(metrics.contains(&needle), "{needle} missing from /metrics");
    }
    server.stop().await;
}

#[tokio::test]
async fn snapshot_png_needs_a_token_too() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    let mut client =
        Client::connect_with(&server.url, "snap", with_token(&token("snap", Role::Draw)))
            .await
            .unwrap();
    let seq = client.draw(pixel(2)).await.unwrap();
    client.wait_own(seq, deadline()).await.unwrap();

    let url = format!("{}/pictures/snap/snapshot.png", server.http);
    let response = reqwest::get(&url).await.unwrap();
    assert_eq!(response.status().as_u16(), 401);
    assert!(response.text().await.unwrap().contains("token required"));
    let wrong = token("other", Role::View);
    match raster_client::snapshot_with_token(&server.url, "snap", Some(&wrong)).await {
        Err(ClientError::Http { status: 401 }) => {}
        other => panic!("expected 401, got {:?}", other.map(|(seq, _)| seq)),
    }

    // A view token reads it, as a header (the Rust client) or as `?token=` (the browser's link).
    let view = token("snap", Role::View);
    let (seq, png) = raster_client::snapshot_with_token(&server.url, "snap", Some(&view))
        .await
        .unwrap();
    assert_eq!(seq, client.last_seq());
    assert!(!png.is_empty());
    let response = reqwest::get(format!("{url}?token={view}")).await.unwrap();
    assert_eq!(response.status().as_u16(), 200);

    client.close(deadline()).await.unwrap();
    server.stop().await;
}

#[tokio::test]
async fn a_view_client_sees_everything_and_its_draws_are_rejected_without_a_seq() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    let picture = "shared";
    let mut drawer = Client::connect_with(
        &server.url,
        picture,
        with_token(&token(picture, Role::Draw)),
    )
    .await
    .unwrap();
    let mut viewer = Client::connect_with(
        &server.url,
        picture,
        with_token(&token(picture, Role::View)),
    )
    .await
    .unwrap();

    let first = drawer.draw(pixel(3)).await.unwrap();
    drawer.wait_own(first, deadline()).await.unwrap();
    let before = drawer.last_seq();

    // The viewer's draws: each answered `Rejected`, saying why.
    for x in 0..3 {
        let client_seq = viewer.draw(pixel(10 + x)).await.unwrap();
        match viewer.wait_own(client_seq, deadline()).await {
            Err(ClientError::Rejected { reason, .. }) => {
                assert!(reason.contains("view-only token"), "{reason}")
            }
            other => panic!("expected a rejection, got {other:?}"),
        }
    }

    // The drawer goes on at the very next seq: the rejected draws took none.
    let second = drawer.draw(pixel(4)).await.unwrap();
    drawer.wait_own(second, deadline()).await.unwrap();
    assert_eq!(drawer.last_seq(), before + 1);

    // The viewer saw both of the drawer's ops and has the same picture.
    viewer.sync_to(before + 1, deadline()).await.unwrap();
    assert_eq!(viewer.raster().unwrap(), drawer.raster().unwrap());
    assert_eq!(viewer.presence(), 2);

    viewer.close(deadline()).await.unwrap();
    drawer.close(deadline()).await.unwrap();
    server.stop().await;
}

#[tokio::test]
async fn a_token_expiring_while_connected_closes_with_4401() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    let short = mint_claims(
        SECRET,
        &Claims {
            pic: "brief".into(),
            role: Role::Draw,
            exp: now() + 2,
        },
    )
    .unwrap();
    let mut client = Client::connect_with(&server.url, "brief", with_token(&short))
        .await
        .unwrap();
    let seq = client.draw(pixel(5)).await.unwrap();
    client.wait_own(seq, deadline()).await.unwrap();
    let (code, reason) = loop {
        match tokio::time::timeout_at(deadline(), client.next_event())
            .await
            .expect("no close before the deadline")
            .unwrap()
        {
            Event::Closed { code, reason } => break (code, reason),
            _ => continue,
        }
    };
    assert_eq!(code, Some(4401));
    assert_eq!(reason, "token expired");
    // ... and it cannot come back with it.
    match Client::connect_with(&server.url, "brief", with_token(&short)).await {
        Err(ClientError::Http { status: 401 }) => {}
        other => panic!("expected 401, got {:?}", other.map(|c| c.client_id())),
    }
    server.stop().await;
}

#[tokio::test]
async fn es256_tokens_verify_with_a_public_key_file() {
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("issuer.pub.pem");
    std::fs::write(&key_file, EC_PUBLIC).unwrap();
    let server = Server::start(
        dir.path(),
        &["--token-public-key", key_file.to_str().unwrap()],
    )
    .await;
    let claims = Claims {
        pic: "signed".into(),
        role: Role::Draw,
        exp: now() + 3600,
    };
    let key = EncodingKey::from_ec_pem(EC_PRIVATE.as_bytes()).unwrap();
    let es256 = jsonwebtoken::encode(&Header::new(Algorithm::ES256), &claims, &key).unwrap();
    let client = Client::connect_with(&server.url, "signed", with_token(&es256))
        .await
        .unwrap();
    client.close(deadline()).await.unwrap();
    // An HS256 token (even one signed with the public key's bytes as secret) is refused:
    // the algorithm is the key's, not the token's.
    let hs256 = mint(EC_PUBLIC, "signed", Role::Draw, Duration::from_secs(3600)).unwrap();
    let (status, _) = refused(&server, "signed", &format!("?token={hs256}"), None).await;
    assert_eq!(status, 401);
    server.stop().await;
}

#[tokio::test]
async fn without_a_key_no_token_is_asked_for() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]).await;
    let mut client = Client::connect_with(&server.url, "open", ConnectOptions::default())
        .await
        .unwrap();
    let seq = client.draw(pixel(6)).await.unwrap();
    client.wait_own(seq, deadline()).await.unwrap();
    // A token is ignored, even a view-only one: nothing checks it.
    let mut viewer =
        Client::connect_with(&server.url, "open", with_token(&token("open", Role::View)))
            .await
            .unwrap();
    let seq = viewer.draw(pixel(7)).await.unwrap();
    viewer.wait_own(seq, deadline()).await.unwrap();
    let response = reqwest::get(format!("{}/pictures/open/snapshot.png", server.http))
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    viewer.close(deadline()).await.unwrap();
    client.close(deadline()).await.unwrap();
    server.stop().await;
}
