//! The WebSocket layer itself: the upgrade handshake (done by the service, RFC 6455 §4.2), the
//! frames it writes, pings, and both ways of closing.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{deadline, raw_join, raw_until_close, Server};
use futures::{SinkExt, StreamExt};
use protocol::{codec, ClientMsg, ServerMsg};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

/// Sends `request` on a fresh connection and returns everything the server answers until it
/// has sent the end of the headers.
async fn raw_http(server: &Server, request: &str) -> String {
    let addr = server.url.trim_start_matches("ws://");
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(10), tcp.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(
            n > 0,
            "connection closed after {:?}",
            String::from_utf8_lossy(&answer)
        );
        answer.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&answer).into_owned()
}

fn upgrade_request(connection: &str, version: &str, key: Option<&str>) -> String {
    let key = key.map_or(String::new(), |k| format!("Sec-WebSocket-Key: {k}\r\n"));
    format!(
        "GET /pictures/hs/ws HTTP/1.1\r\nHost: localhost\r\nConnection: {connection}\r\n\
         Upgrade: websocket\r\nSec-WebSocket-Version: {version}\r\n{key}\r\n"
    )
}

#[tokio::test]
async fn the_handshake_follows_rfc_6455() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]).await;

    // The example of RFC 6455 §1.3, with a Connection header listing two tokens (Firefox).
    let answer = raw_http(
        &server,
        &upgrade_request(
            "keep-alive, Upgrade",
            "13",
            Some("dGhlIHNhbXBsZSBub25jZQ=="),
        ),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 101"), "{answer}");
    let lower = answer.to_ascii_lowercase();
    assert!(
        lower.contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo=\r\n"),
        "{answer}"
    );
    assert!(lower.contains("upgrade: websocket\r\n"), "{answer}");

    let http = reqwest::Client::new();
    let url = format!("{}/pictures/hs/ws", server.http);
    let plain = http.get(&url).send().await.unwrap();
    assert_eq!(plain.status().as_u16(), 426);
    assert!(plain.text().await.unwrap().contains("WebSocket endpoint"));

    let old = raw_http(
        &server,
        &upgrade_request("Upgrade", "8", Some("a2V5a2V5a2V5a2V5a2V5aw==")),
    )
    .await;
    assert!(old.starts_with("HTTP/1.1 426"), "{old}");
    assert!(
        old.to_ascii_lowercase()
            .contains("sec-websocket-version: 13\r\n"),
        "{old}"
    );

    let keyless = raw_http(&server, &upgrade_request("Upgrade", "13", None)).await;
    assert!(keyless.starts_with("HTTP/1.1 400"), "{keyless}");

    let post = http.post(&url).send().await.unwrap();
    assert_eq!(post.status().as_u16(), 405);
}

#[tokio::test]
async fn pings_are_answered_and_closes_are_completed() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]).await;
    let (mut socket, _) = raw_join(&server, "ping").await;

    // A WebSocket ping gets its pong (tungstenite's, through the service's writer) ...
    socket
        .send(Message::Ping(b"are you there".to_vec().into()))
        .await
        .unwrap();
    // ... and a protocol Ping its Pong, in order with everything else.
    let ping = codec::encode(&ClientMsg::Ping { nonce: 4242 });
    socket.send(Message::Binary(ping.into())).await.unwrap();
    let mut pong = false;
    let mut nonce = None;
    while !(pong && nonce.is_some()) {
        let message = tokio::time::timeout_at(deadline(), socket.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        match message {
            Message::Pong(data) => {
                assert_eq!(&data[..], b"are you there");
                pong = true;
            }
            Message::Binary(frame) => {
                if let Ok(ServerMsg::Pong { nonce: n }) = codec::decode_server(&frame) {
                    nonce = Some(n);
                }
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(nonce, Some(4242));

    // The client closes: the service answers with a close and ends the connection.
    socket.close(None).await.unwrap();
    let end = tokio::time::timeout_at(deadline(), async {
        let mut frames = Vec::new();
        while let Some(message) = socket.next().await {
            frames.push(message);
        }
        frames
    })
    .await
    .unwrap();
    assert!(
        end.iter()
            .all(|m| matches!(m, Ok(Message::Close(_)) | Err(_))),
        "{end:?}"
    );

    // The service closes (a text frame is not part of the protocol): an Error, then code 1003.
    let (mut socket, _) = raw_join(&server, "ping").await;
    socket.send(Message::Text("hello".into())).await.unwrap();
    let (errors, code) = raw_until_close(&mut socket).await;
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].0, 400);
    assert_eq!(code, Some(u16::from(CloseCode::Unsupported)));
}
