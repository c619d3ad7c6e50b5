//! Hostile and careless clients: the close handshake, probes, the header-read timeout, the
//! keepalive pings and idle timeout, and the connection, picture and raster-byte limits
//! (PROTOCOL.md §12). Each limit is set small by its flag, hit by real clients over loopback,
//! and shown to refuse clearly while every other client carries on.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{deadline, raw_join, raw_next, raw_until_close, PpsServer, Raw, RawEvent, Server};
use futures::{SinkExt, StreamExt};
use primary_picture_service::PpsConfig;
use protocol::{codec, ClientMsg, Op, Point, ServerMsg};
use raster_client::{Client, Event};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;

/// Connects a raw WebSocket to `path` (e.g. `/pictures/p/ws`), with extra request headers.
async fn connect(
    server: &Server,
    path: &str,
    headers: &[(&'static str, &str)],
) -> Result<Raw, tokio_tungstenite::tungstenite::Error> {
    let mut request = format!("{}{path}", server.url)
        .into_client_request()
        .unwrap();
    for (name, value) in headers {
        request.headers_mut().insert(*name, value.parse().unwrap());
    }
    tokio_tungstenite::connect_async(request)
        .await
        .map(|(socket, _)| socket)
}

/// Joins `path` and reads the `Welcome`.
async fn join(server: &Server, path: &str, headers: &[(&'static str, &str)]) -> Raw {
    let mut socket = connect(server, path, headers)
        .await
        .unwrap_or_else(|e| panic!("join {path} refused: {e}"));
    match raw_next(&mut socket, deadline()).await {
        RawEvent::Msg(ServerMsg::Welcome { .. } | ServerMsg::WelcomeLz4 { .. }) => socket,
        other => panic!("expected welcome, got {other:?}"),
    }
}

/// The HTTP status and `Retry-After` of a refused upgrade.
async fn refused(server: &Server, path: &str, headers: &[(&'static str, &str)]) -> (u16, String) {
    match connect(server, path, headers).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            let retry = response
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().to_string())
                .unwrap_or_default();
            let body =
                String::from_utf8_lossy(response.body().as_deref().unwrap_or_default()).to_string();
            assert!(!body.is_empty(), "a refusal says why");
            (response.status().as_u16(), retry)
        }
        Err(other) => panic!("{path}: expected an HTTP refusal, got {other}"),
        Ok(_) => panic!("{path}: expected a refusal, was let in"),
    }
}

/// Draws one pixel on a raw socket and waits for its echo: the connection still works.
async fn draws(socket: &mut Raw, client_seq: u64) {
    let draw = ClientMsg::Draw {
        client_seq,
        op: Op::Pixels {
            color: [1, 2, 3, 255],
            points: vec![Point { x: 1, y: 1 }],
        },
    };
    socket
        .send(Message::Binary(codec::encode(&draw).into()))
        .await
        .unwrap();
    let deadline = deadline();
    loop {
        match raw_next(socket, deadline).await {
            RawEvent::Msg(ServerMsg::Updates(updates))
                if updates.iter().any(|u| u.client_seq == client_seq) =>
            {
                return
            }
            RawEvent::Msg(_) => {}
            other => panic!("expected the echo, got {other:?}"),
        }
    }
}

async fn metrics(server: &Server) -> String {
    reqwest::get(format!("{}/metrics", server.http))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

async fn refusals_counted(server: &Server, reason: &str) {
    let needle = format!("bs_connections_refused_total{{reason=\"{reason}\"}}");
    let page = metrics(server).await;
    assert!(page.contains(&needle), "{needle} missing from /metrics");
}

/// Retries `attempt` until it succeeds (a permit is given back once the server has seen its
/// connection end, a moment after the client left).
async fn eventually<F, Fut, T>(mut attempt: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = deadline();
    loop {
        if let Some(value) = attempt().await {
            return value;
        }
        assert!(Instant::now() < deadline, "did not happen in time");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// After a close frame a client reads only its answer, then the end of the stream.
async fn close_answer(socket: &mut Raw) -> Option<CloseFrame> {
    let deadline = deadline();
    loop {
        let next = tokio::time::timeout_at(deadline, socket.next())
            .await
            .expect("no answer to the close");
        match next {
            Some(Ok(Message::Close(frame))) => {
                // ... and then the connection ends cleanly: no reset, nothing more.
                let end = tokio::time::timeout_at(deadline, socket.next())
                    .await
                    .unwrap();
                assert!(
                    matches!(
                        end,
                        None | Some(Err(tokio_tungstenite::tungstenite::Error::ConnectionClosed))
                    ),
                    "after the close: {end:?}"
                );
                return frame;
            }
            Some(Ok(_)) => continue,
            other => panic!("connection ended without answering the close (1006): {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_client_close_is_answered_with_its_code() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]).await;
    let (mut other, _) = raw_join(&server, "close").await;
    for (code, reason) in [(1000, "bye"), (4000, "app says bye"), (4999, "")] {
        let (mut socket, _) = raw_join(&server, "close").await;
        socket
            .send(Message::Close(Some(CloseFrame {
                code: CloseCode::from(code),
                reason: reason.into(),
            })))
            .await
            .unwrap();
        let answer = close_answer(&mut socket).await.expect("a close code");
        assert_eq!(u16::from(answer.code), code);
        assert_eq!(answer.reason.as_str(), reason);
    }
    // A close without a code is answered without one.
    let (mut socket, _) = raw_join(&server, "close").await;
    socket.send(Message::Close(None)).await.unwrap();
    assert!(close_answer(&mut socket).await.is_none());

    // The Rust client reports the code the service answered with.
    let client = Client::connect(&server.url, "close", None).await.unwrap();
    let code = client.close_with(1000, "bye", deadline()).await.unwrap();
    assert_eq!(code, Some(1000));

    // The client that stayed carries on.
    draws(&mut other, 1).await;
    server.stop().await;
}

#[tokio::test]
async fn probes_answer_on_both_services() {
    let dir = tempfile::tempdir().unwrap();
    let pps = PpsServer::start(dir.path(), PpsConfig::default()).await;
    let pps_http = pps
        .url
        .replace("ws://", "http://")
        .trim_end_matches("/bs")
        .to_string();
    let bs_dir = tempfile::tempdir().unwrap();
    let server = Server::start(bs_dir.path(), &["--pps-url", &pps.url]).await;
    for base in [&server.http, &pps_http] {
        for probe in ["livez", "healthz"] {
            let response = reqwest::get(format!("{base}/{probe}")).await.unwrap();
            assert_eq!(response.status(), 200, "{base}/{probe}");
            assert_eq!(response.text().await.unwrap().trim(), "ok");
        }
        // Ready once the broadcast service's link to the picture service is up.
        eventually(|| async {
            let response = reqwest::get(format!("{base}/readyz")).await.unwrap();
            (response.status() == 200).then_some(())
        })
        .await;
    }
    server.stop().await;
    pps.stop().await;
}

#[tokio::test]
async fn slow_headers_are_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    // (`--header-timeout` is the short name of `--header-read-timeout`.)
    let server = Server::start(dir.path(), &["--header-timeout", "500ms"]).await;
    let addr = server.url.trim_start_matches("ws://").to_string();
    // A slowloris client: a byte of its headers every 100 ms, never finishing.
    let slow = tokio::spawn({
        let addr = addr.clone();
        async move {
            let started = Instant::now();
            let mut tcp = TcpStream::connect(&addr).await.unwrap();
            let request = b"GET /livez HTTP/1.1\r\nHost: x\r\nX-Slow: ";
            tcp.write_all(request).await.unwrap();
            let mut buf = [0u8; 1024];
            loop {
                tokio::select! {
                    read = tcp.read(&mut buf) => match read {
                        // The service closed it (it may say 408 first).
                        Ok(0) | Err(_) => return started.elapsed(),
                        Ok(_) => {}
                    },
                    () = tokio::time::sleep(Duration::from_millis(100)) => {
                        if tcp.write_all(b"a").await.is_err() {
                            return started.elapsed();
                        }
                    }
                }
                assert!(started.elapsed() < Duration::from_secs(20), "never cut off");
            }
        }
    });
    // A connection that says nothing at all is closed too.
    let mut silent = TcpStream::connect(&addr).await.unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(20), silent.read(&mut buf))
        .await
        .expect("silent connection not closed")
        .unwrap_or(0);
    assert_eq!(n, 0, "a silent connection gets no answer, only closed");
    assert!(started.elapsed() >= Duration::from_millis(400));
    // Meanwhile, and after, well-behaved requests are served.
    let response = reqwest::get(format!("{}/livez", server.http))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let cut_after = slow.await.unwrap();
    assert!(
        cut_after >= Duration::from_millis(400) && cut_after < Duration::from_secs(10),
        "{cut_after:?}"
    );
    let (mut socket, _) = raw_join(&server, "headers").await;
    draws(&mut socket, 1).await;
    server.stop().await;
}

/// A WebSocket handshake on a bare TCP socket, for a client that then never writes a byte.
async fn mute_join(server: &Server, picture: &str) -> TcpStream {
    let addr = server.url.trim_start_matches("ws://");
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "GET /pictures/{picture}/ws?width=8&height=8 HTTP/1.1\r\nHost: {addr}\r\nConnection: Upgrade\r\n\
         Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    );
    tcp.write_all(request.as_bytes()).await.unwrap();
    tcp
}

/// Reads a mute client's socket until the service closes it; returns the opcodes of the frames
/// after the HTTP answer, and the close code.
async fn read_until_end(tcp: &mut TcpStream) -> (Vec<u8>, Option<u16>) {
    let mut bytes = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(20), tcp.read(&mut buf))
            .await
            .expect("never closed")
            .unwrap_or(0);
        if n == 0 {
            break;
        }
        bytes.extend_from_slice(&buf[..n]);
    }
    let start = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("an HTTP answer")
        + 4;
    assert!(bytes.starts_with(b"HTTP/1.1 101"));
    let mut frames = &bytes[start..];
    let (mut opcodes, mut code) = (Vec::new(), None);
    while frames.len() >= 2 {
        let (header, len) = match frames[1] & 0x7f {
            126 => (4, u16::from_be_bytes([frames[2], frames[3]]) as usize),
            127 => (
                10,
                u64::from_be_bytes(frames[2..10].try_into().unwrap()) as usize,
            ),
            len => (2, len as usize),
        };
        let payload = &frames[header..header + len];
        let opcode = frames[0] & 0x0f;
        opcodes.push(opcode);
        if opcode == 0x8 && payload.len() >= 2 {
            code = Some(u16::from_be_bytes([payload[0], payload[1]]));
        }
        frames = &frames[header + len..];
    }
    (opcodes, code)
}

#[tokio::test]
async fn silent_clients_are_pinged_then_closed() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        dir.path(),
        &["--ws-ping-interval", "200ms", "--idle-timeout", "1s"],
    )
    .await;
    // A client that answers pings (tungstenite does, as browsers do) stays.
    let (mut alive, _) = raw_join(&server, "idle").await;
    let mut mute = mute_join(&server, "idle").await;
    // So does the Rust client, which only reads.
    let mut reader = Client::connect(&server.url, "idle", None).await.unwrap();
    let rust_client = tokio::spawn(async move {
        let until = Instant::now() + Duration::from_millis(2500);
        while Instant::now() < until {
            if let Ok(event) = tokio::time::timeout_at(until, reader.next_event()).await {
                let event = event.unwrap();
                assert!(!matches!(event, Event::Closed { .. }), "closed: {event:?}");
            }
        }
        reader
    });
    let started = Instant::now();
    let mut pings = 0;
    while started.elapsed() < Duration::from_millis(2500) {
        match tokio::time::timeout(Duration::from_millis(100), alive.next()).await {
            Err(_) => {}
            Ok(Some(Ok(Message::Ping(_)))) => pings += 1,
            Ok(Some(Ok(Message::Binary(_)))) => {}
            Ok(other) => panic!("the answering client was disturbed: {other:?}"),
        }
    }
    assert!(pings >= 5, "{pings} pings in 2.5 s at 200 ms");
    // The mute one was pinged, never answered, and closed with 1001 after about a second.
    let (opcodes, code) = read_until_end(&mut mute).await;
    assert!(opcodes.contains(&0x9), "pinged: {opcodes:?}");
    assert_eq!(code, Some(1001));
    draws(&mut alive, 1).await;
    let reader = rust_client.await.unwrap();
    assert_eq!(
        reader.close_with(1000, "done", deadline()).await.unwrap(),
        Some(1000)
    );
    let page = metrics(&server).await;
    assert!(page.contains("bs_idle_clients_closed_total"));
    server.stop().await;
}

#[tokio::test]
async fn connections_over_the_total_are_refused_with_503() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--max-connections", "2"]).await;
    let mut first = join(&server, "/pictures/a/ws", &[]).await;
    let _second = join(&server, "/pictures/b/ws", &[]).await;
    let (status, retry) = refused(&server, "/pictures/a/ws", &[]).await;
    assert_eq!((status, retry.as_str()), (503, "5"));
    refusals_counted(&server, "max_connections").await;
    // The others carry on; plain HTTP is not counted.
    draws(&mut first, 1).await;
    assert_eq!(
        reqwest::get(format!("{}/livez", server.http))
            .await
            .unwrap()
            .status(),
        200
    );
    // A place freed is a place taken.
    first.close(None).await.unwrap();
    drop(first);
    let mut third =
        eventually(|| async { connect(&server, "/pictures/c/ws", &[]).await.ok() }).await;
    assert!(matches!(
        raw_next(&mut third, deadline()).await,
        RawEvent::Msg(ServerMsg::Welcome { .. })
    ));
    server.stop().await;
}

#[tokio::test]
async fn browsers_on_foreign_origins_are_refused_with_403() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        dir.path(),
        &["--allowed-origins", "https://app.example.com"],
    )
    .await;
    // tungstenite sends `Host: 127.0.0.1:PORT`: the service's own pages have that origin.
    let own = server.http.clone();
    let mut page = join(&server, "/pictures/o/ws", &[("origin", &own)]).await;
    let mut app = join(
        &server,
        "/pictures/o/ws",
        &[("origin", "https://app.example.com")],
    )
    .await;
    // A program sends no Origin.
    let mut program = join(&server, "/pictures/o/ws", &[]).await;
    for origin in ["https://evil.example", "http://127.0.0.1:1", "null"] {
        let (status, retry) = refused(&server, "/pictures/o/ws", &[("origin", origin)]).await;
        assert_eq!((status, retry.as_str()), (403, ""), "{origin}");
    }
    refusals_counted(&server, "origin").await;
    // Those let in draw as before.
    draws(&mut page, 1).await;
    draws(&mut app, 1).await;
    draws(&mut program, 1).await;
    server.stop().await;
}

#[tokio::test]
async fn connections_over_the_per_address_limit_are_refused_with_429() {
    let dir = tempfile::tempdir().unwrap();
    // Without trusted proxies, X-Forwarded-For is ignored: every loopback client is one address.
    let server = Server::start(dir.path(), &["--max-connections-per-ip", "2"]).await;
    let forged = [("x-forwarded-for", "192.0.2.99")];
    let mut first = join(&server, "/pictures/a/ws", &[]).await;
    let _second = join(&server, "/pictures/a/ws", &forged).await;
    let (status, retry) = refused(
        &server,
        "/pictures/a/ws",
        &[("x-forwarded-for", "192.0.2.98")],
    )
    .await;
    assert_eq!((status, retry.as_str()), (429, "5"));
    refusals_counted(&server, "max_connections_per_ip").await;
    draws(&mut first, 1).await;
    server.stop().await;

    // Behind a trusted proxy (here: loopback), the forwarded address counts.
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        dir.path(),
        &[
            "--max-connections-per-ip",
            "2",
            "--trust-forwarded-for",
            "127.0.0.1",
        ],
    )
    .await;
    let one = [("x-forwarded-for", "192.0.2.1")];
    let two = [("x-forwarded-for", "192.0.2.2, 127.0.0.1")];
    let mut a1 = join(&server, "/pictures/a/ws", &one).await;
    let _a2 = join(&server, "/pictures/b/ws", &one).await;
    let (status, _) = refused(&server, "/pictures/a/ws", &one).await;
    assert_eq!(status, 429);
    // Another address behind the same proxy is not affected.
    let mut b1 = join(&server, "/pictures/a/ws", &two).await;
    let _b2 = join(&server, "/pictures/a/ws", &two).await;
    assert_eq!(refused(&server, "/pictures/a/ws", &two).await.0, 429);
    draws(&mut a1, 1).await;
    draws(&mut b1, 1).await;
    server.stop().await;
}

#[tokio::test]
async fn clients_over_the_per_picture_limit_are_refused_with_503() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--max-clients-per-picture", "2"]).await;
    let mut a1 = join(&server, "/pictures/full/ws", &[]).await;
    let _a2 = join(&server, "/pictures/full/ws", &[]).await;
    let (status, retry) = refused(&server, "/pictures/full/ws", &[]).await;
    assert_eq!((status, retry.as_str()), (503, "5"));
    refusals_counted(&server, "max_clients_per_picture").await;
    // Another picture is not affected, nor are the picture's own clients.
    let mut other = join(&server, "/pictures/other/ws", &[]).await;
    draws(&mut other, 1).await;
    draws(&mut a1, 1).await;
    server.stop().await;
}

#[tokio::test]
async fn pictures_over_the_open_limit_are_refused_with_503() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--max-open-pictures", "1"]).await;
    let mut a1 = join(&server, "/pictures/one/ws", &[]).await;
    let (status, retry) = refused(&server, "/pictures/two/ws", &[]).await;
    assert_eq!((status, retry.as_str()), (503, "5"));
    refusals_counted(&server, "max_open_pictures").await;
    // The open picture takes more clients.
    let _a2 = join(&server, "/pictures/one/ws", &[]).await;
    draws(&mut a1, 1).await;
    server.stop().await;
}

#[tokio::test]
async fn raster_bytes_over_the_limit_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    // A 512x512 picture stored earlier (1 MiB of raster).
    let server = Server::start(dir.path(), &[]).await;
    let mut big = join(&server, "/pictures/big/ws?width=512&height=512", &[]).await;
    draws(&mut big, 1).await;
    big.close(None).await.unwrap();
    drop(big);
    server.stop().await;

    let server = Server::start(dir.path(), &["--max-raster-bytes", "1M"]).await;
    let mut small = join(&server, "/pictures/small/ws?width=256&height=256", &[]).await;
    // A new picture that would not fit: refused before the upgrade.
    let (status, retry) = refused(&server, "/pictures/new/ws?width=512&height=512", &[]).await;
    assert_eq!((status, retry.as_str()), (503, "5"));
    refusals_counted(&server, "max_raster_bytes").await;
    // One that fits is let in.
    let _fits = join(&server, "/pictures/fits/ws?width=256&height=256", &[]).await;
    // An existing picture bigger than its joiner said: found out at the Welcome, closed 1013.
    let mut liar = connect(&server, "/pictures/big/ws?width=8&height=8", &[])
        .await
        .unwrap();
    let (errors, code) = raw_until_close(&mut liar).await;
    assert_eq!(code, Some(1013));
    assert!(
        errors
            .iter()
            .any(|(code, message)| *code == 503 && message.contains("--max-raster-bytes")),
        "{errors:?}"
    );
    draws(&mut small, 1).await;
    server.stop().await;
}

#[tokio::test]
async fn one_address_opens_a_bounded_share_of_pictures_and_bytes() {
    let dir = tempfile::tempdir().unwrap();
    // Loopback is the trusted proxy: each forwarded address is a client of its own.
    let server = Server::start(
        dir.path(),
        &[
            "--trust-forwarded-for",
            "127.0.0.1",
            "--max-open-pictures-per-ip",
            "2",
            "--max-raster-bytes-per-ip",
            "1M",
        ],
    )
    .await;
    let greedy = [("x-forwarded-for", "192.0.2.1")];
    let other = [("x-forwarded-for", "192.0.2.2")];
    let mut a = join(&server, "/pictures/a/ws?width=256&height=256", &greedy).await;
    // 256 KiB opened: 1 MiB more does not fit this address's share.
    let (status, retry) = refused(&server, "/pictures/huge/ws?width=512&height=512", &greedy).await;
    assert_eq!((status, retry.as_str()), (429, "5"));
    refusals_counted(&server, "max_raster_bytes_per_ip").await;
    let _b = join(&server, "/pictures/b/ws?width=8&height=8", &greedy).await;
    let (status, _) = refused(&server, "/pictures/c/ws?width=8&height=8", &greedy).await;
    assert_eq!(status, 429);
    refusals_counted(&server, "max_open_pictures_per_ip").await;
    // Joining what is open costs nothing; another address opens its own share.
    let _a2 = join(&server, "/pictures/a/ws", &greedy).await;
    let mut huge = join(&server, "/pictures/huge/ws?width=512&height=512", &other).await;
    draws(&mut huge, 1).await;
    draws(&mut a, 1).await;
    server.stop().await;
}

#[tokio::test]
async fn the_picture_service_loads_pictures_within_its_memory_budget() {
    let dir = tempfile::tempdir().unwrap();
    // One 64x64 picture (16 KiB) in memory takes the whole budget.
    let server = Server::start(
        dir.path(),
        &[
            "--max-loaded-bytes",
            "16384",
            "--join-timeout",
            "1s",
            "--idle-unload",
            "100ms",
        ],
    )
    .await;
    let mut a = join(&server, "/pictures/a/ws?width=64&height=64", &[]).await;
    draws(&mut a, 1).await;
    let mut b = connect(&server, "/pictures/b/ws?width=64&height=64", &[])
        .await
        .unwrap();
    let (errors, code) = raw_until_close(&mut b).await;
    assert_eq!(code, Some(1013));
    assert!(
        errors
            .iter()
            .any(|(code, message)| *code == 503 && message.contains("--max-loaded-bytes")),
        "{errors:?}"
    );
    assert!(metrics(&server).await.contains("pps_loads_refused_total"));
    // The picture in memory carries on; once it is unloaded, the other one fits.
    draws(&mut a, 2).await;
    a.close(None).await.unwrap();
    drop(a);
    let mut b = eventually(|| async {
        let mut socket = connect(&server, "/pictures/b/ws?width=64&height=64", &[])
            .await
            .ok()?;
        match raw_next(&mut socket, deadline()).await {
            RawEvent::Msg(ServerMsg::Welcome { .. }) => Some(socket),
            _ => None,
        }
    })
    .await;
    draws(&mut b, 1).await;
    server.stop().await;
}

#[test]
fn bad_limit_flags_stop_the_binary_with_a_clear_error() {
    let bin = env!("CARGO_BIN_EXE_broadcast-service");
    for (args, needle) in [
        (&["--max-connections", "0"][..], "--max-connections"),
        (&["--max-raster-bytes", "lots"], "--max-raster-bytes"),
        (
            &["--ws-ping-interval", "30s", "--ws-idle-timeout", "10s"],
            "--ws-idle-timeout",
        ),
        (
            &["--trust-forwarded-for", "my-proxy"],
            "--trust-forwarded-for",
        ),
    ] {
        let output = std::process::Command::new(bin)
            .args(args)
            .args(["--listen", "127.0.0.1:0"])
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
    }
}
