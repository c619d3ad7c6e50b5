//! The client's protocol checks against a scripted WebSocket server (real sockets on
//! 127.0.0.1:0): a correct stream is applied, and every broken guarantee of PROTOCOL.md §3 is
//! reported as `ClientError::Protocol` instead of being absorbed.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use protocol::snapshot::{encode_png, Compression};
use protocol::{codec, ClientMsg, Op, Point, Raster, Sequenced, ServerMsg};
use raster_client::{Client, ClientError, ConnectOptions, Event, LogEntry};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;

const ID: u64 = 42;

/// One step of the scripted server.
enum Step {
    Send(ServerMsg),
    /// Wait until the client has sent this many `Draw`s (in total).
    Draws(usize),
    Close(u16),
}

/// Serves one connection with `script`, then reads until the client goes away. Returns the
/// draws it received.
async fn scripted(script: Vec<Step>) -> (String, JoinHandle<Vec<(u64, Op)>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
        let mut draws = Vec::new();
        for step in script {
            match step {
                Step::Send(msg) => {
                    let frame = Bytes::from(codec::encode(&msg));
                    if ws.send(Message::Binary(frame)).await.is_err() {
                        return draws;
                    }
                }
                Step::Draws(n) => {
                    while draws.len() < n {
                        match ws.next().await {
                            Some(Ok(Message::Binary(frame))) => {
                                if let ClientMsg::Draw { client_seq, op } =
                                    codec::decode_client(&frame).unwrap()
                                {
                                    draws.push((client_seq, op));
                                }
                            }
                            Some(Ok(_)) => {}
                            _ => return draws,
                        }
                    }
                }
                Step::Close(code) => {
                    let frame = CloseFrame {
                        code: CloseCode::from(code),
                        reason: "bye".into(),
                    };
                    let _ = ws.close(Some(frame)).await;
                }
            }
        }
        while let Some(Ok(_)) = ws.next().await {}
        draws
    });
    (url, task)
}

fn op(x: i32) -> Op {
    Op::Stroke {
        color: [200, 10, 10, 120],
        width: 2,
        points: vec![Point::new(x, 1), Point::new(x + 1, 2)],
    }
}

fn update(seq: u64, client_id: u64, client_seq: u64) -> Sequenced {
    Sequenced {
        seq,
        client_id,
        client_seq,
        op: op(seq as i32 % 5),
    }
}

fn welcome(snapshot: &Raster, snapshot_seq: u64, pending: Vec<Sequenced>) -> ServerMsg {
    ServerMsg::Welcome {
        client_id: ID,
        width: snapshot.width(),
        height: snapshot.height(),
        snapshot_seq,
        snapshot_png: Bytes::from(encode_png(snapshot, snapshot_seq, Compression::Fast).unwrap()),
        pending,
    }
}

fn soon() -> Instant {
    Instant::now() + Duration::from_secs(10)
}

async fn logged(url: &str) -> Result<Client, ClientError> {
    let options = ConnectOptions {
        keep_log: true,
        ..ConnectOptions::default()
    };
    Client::connect_with(url, "p", options).await
}

fn assert_protocol<T: std::fmt::Debug>(result: Result<T, ClientError>, needle: &str) {
    match result {
        Err(ClientError::Protocol(message)) => {
            assert!(message.contains(needle), "{message:?} lacks {needle:?}")
        }
        other => panic!("expected a protocol violation ({needle}), got {other:?}"),
    }
}

#[tokio::test]
async fn a_correct_stream_is_applied_in_order() {
    let mut snapshot = Raster::new(6, 4);
    snapshot.apply(&op(0));
    let (url, server) = scripted(vec![
        Step::Send(welcome(
            &snapshot,
            5,
            vec![update(6, 7, 1), update(7, 8, 1)],
        )),
        Step::Send(ServerMsg::Presence { clients: 2 }),
        Step::Draws(1),
        Step::Send(ServerMsg::Updates(vec![update(8, ID, 1), update(9, 7, 2)])),
        Step::Send(ServerMsg::Pong { nonce: 3 }),
        Step::Close(1012),
    ])
    .await;
    let mut client = logged(&url).await.unwrap();
    assert_eq!(client.client_id(), ID);
    assert_eq!(client.receiver().snapshot_seq(), 5);
    assert_eq!(client.last_seq(), 7);
    assert_eq!(client.next_event().await.unwrap(), Event::Presence(2));
    assert_eq!(client.presence(), 2);
    assert_eq!(client.draw(op(3)).await.unwrap(), 1);
    client.wait_own(1, soon()).await.unwrap();
    client.sync_to(9, soon()).await.unwrap();
    assert_eq!(client.next_event().await.unwrap(), Event::Pong(3));
    assert_eq!(
        client.next_event().await.unwrap(),
        Event::Closed {
            code: Some(1012),
            reason: "bye".into()
        }
    );
    assert!(matches!(
        client.next_event().await,
        Err(ClientError::Closed {
            code: Some(1012),
            ..
        })
    ));

    let mut expected = snapshot.clone();
    for seq in 6..=9 {
        expected.apply(&update(seq, 0, 0).op);
    }
    assert!(client.raster().unwrap() == &expected);
    let log: Vec<LogEntry> = client.log().to_vec();
    assert_eq!(
        log,
        vec![
            LogEntry {
                seq: 6,
                client_id: 7,
                client_seq: 1
            },
            LogEntry {
                seq: 7,
                client_id: 8,
                client_seq: 1
            },
            LogEntry {
                seq: 8,
                client_id: ID,
                client_seq: 1
            },
            LogEntry {
                seq: 9,
                client_id: 7,
                client_seq: 2
            },
        ]
    );
    drop(client);
    assert_eq!(server.await.unwrap(), vec![(1, op(3))]);
}

#[tokio::test]
async fn a_gap_is_a_protocol_violation() {
    let (url, _server) = scripted(vec![
        Step::Send(welcome(&Raster::new(2, 2), 5, vec![update(6, 7, 1)])),
        Step::Send(ServerMsg::Updates(vec![update(8, 7, 2)])),
    ])
    .await;
    let mut client = logged(&url).await.unwrap();
    assert_protocol(client.next_event().await, "seq 8 after 6");
}

#[tokio::test]
async fn a_duplicate_is_a_protocol_violation() {
    let (url, _server) = scripted(vec![
        Step::Send(welcome(&Raster::new(2, 2), 0, vec![])),
        Step::Send(ServerMsg::Updates(vec![update(1, 7, 1)])),
        Step::Send(ServerMsg::Updates(vec![update(1, 7, 1)])),
    ])
    .await;
    let mut client = logged(&url).await.unwrap();
    client.next_event().await.unwrap();
    assert_protocol(client.next_event().await, "seq 1 after 1");
}

#[tokio::test]
async fn an_update_after_the_largest_seq_is_a_protocol_violation_not_a_panic() {
    // The shared vector `welcome_max`: snapshot_seq u64::MAX and a pending update; nothing
    // can follow u64::MAX (computing its successor overflowed).
    let (url, _server) = scripted(vec![Step::Send(welcome(
        &Raster::new(2, 2),
        u64::MAX,
        vec![update(u64::MAX, 7, 1)],
    ))])
    .await;
    assert_protocol(
        logged(&url).await,
        "seq 18446744073709551615 after 18446744073709551615 (expected none)",
    );
}

#[tokio::test]
async fn pending_that_overlaps_the_snapshot_is_a_protocol_violation() {
    let (url, _server) = scripted(vec![Step::Send(welcome(
        &Raster::new(2, 2),
        5,
        vec![update(5, 7, 1)],
    ))])
    .await;
    assert_protocol(logged(&url).await, "seq 5 after 5");
}

#[tokio::test]
async fn own_echoes_out_of_order_or_never_sent_are_protocol_violations() {
    let (url, _server) = scripted(vec![
        Step::Send(welcome(&Raster::new(2, 2), 0, vec![])),
        Step::Draws(2),
        Step::Send(ServerMsg::Updates(vec![update(1, ID, 2), update(2, ID, 1)])),
    ])
    .await;
    let mut client = logged(&url).await.unwrap();
    client.draw(op(1)).await.unwrap();
    client.draw(op(2)).await.unwrap();
    assert_protocol(client.next_event().await, "own echo client_seq 1");

    let (url, _server) = scripted(vec![
        Step::Send(welcome(&Raster::new(2, 2), 0, vec![])),
        Step::Send(ServerMsg::Updates(vec![update(1, ID, 1)])),
    ])
    .await;
    let mut client = logged(&url).await.unwrap();
    assert_protocol(client.next_event().await, "sent up to 0");
}

#[tokio::test]
async fn a_fresh_welcome_resyncs_and_checking_restarts_from_it() {
    let mut other = Raster::new(3, 3);
    other.apply(&Op::Clear {
        color: [1, 2, 3, 4],
    });
    let (url, _server) = scripted(vec![
        Step::Send(welcome(&Raster::new(3, 3), 0, vec![update(1, 7, 1)])),
        Step::Send(welcome(&other, 10, vec![update(11, 7, 5)])),
        Step::Send(ServerMsg::Updates(vec![update(12, 7, 6)])),
    ])
    .await;
    let mut client = logged(&url).await.unwrap();
    assert_eq!(client.next_event().await.unwrap(), Event::Resynced);
    assert_eq!(client.receiver().resyncs(), 1);
    assert_eq!(client.last_seq(), 11);
    client.sync_to(12, soon()).await.unwrap();
    let mut expected = other.clone();
    expected.apply(&update(11, 0, 0).op);
    expected.apply(&update(12, 0, 0).op);
    assert!(client.raster().unwrap() == &expected);
}

#[tokio::test]
async fn rejections_end_the_wait_for_an_echo() {
    let (url, _server) = scripted(vec![
        Step::Send(welcome(&Raster::new(2, 2), 0, vec![])),
        Step::Draws(1),
        Step::Send(ServerMsg::Rejected {
            client_seq: 1,
            reason: "stroke: width 0".into(),
        }),
    ])
    .await;
    let mut client = logged(&url).await.unwrap();
    client.draw(op(1)).await.unwrap();
    match client.wait_own(1, soon()).await {
        Err(ClientError::Rejected {
            client_seq: 1,
            reason,
        }) => assert!(reason.contains("width")),
        other => panic!("expected a rejection, got {other:?}"),
    }
}

#[tokio::test]
async fn bad_welcomes_are_refused() {
    // An error instead of a welcome.
    let (url, _server) = scripted(vec![Step::Send(ServerMsg::Error {
        code: 503,
        message: "picture service unavailable".into(),
    })])
    .await;
    assert!(matches!(
        logged(&url).await,
        Err(ClientError::Server { code: 503, .. })
    ));
    // Something else first.
    let (url, _server) = scripted(vec![Step::Send(ServerMsg::Presence { clients: 1 })]).await;
    assert_protocol(logged(&url).await, "expected welcome");
    // A snapshot whose size is not the announced one.
    let mut lie = welcome(&Raster::new(2, 2), 0, vec![]);
    if let ServerMsg::Welcome { width, .. } = &mut lie {
        *width = 3;
    }
    let (url, _server) = scripted(vec![Step::Send(lie)]).await;
    assert_protocol(logged(&url).await, "snapshot png is 2x2");
    // Waiting on a server that says nothing times out instead of hanging.
    let (url, _server) = scripted(vec![Step::Send(welcome(&Raster::new(2, 2), 0, vec![]))]).await;
    let mut client = logged(&url).await.unwrap();
    let result = client
        .sync_to(1, Instant::now() + Duration::from_millis(50))
        .await;
    assert!(matches!(result, Err(ClientError::Timeout(_))), "{result:?}");
}

fn welcome_lz4(snapshot: &Raster, snapshot_seq: u64, pending: Vec<Sequenced>) -> ServerMsg {
    ServerMsg::WelcomeLz4 {
        client_id: ID,
        width: snapshot.width(),
        height: snapshot.height(),
        snapshot_seq,
        snapshot_lz4: Bytes::from(protocol::snapshot::encode_lz4(snapshot).unwrap()),
        pending,
    }
}

/// `WelcomeLz4` (PROTOCOL.md §8) is applied like a `Welcome`, first and as a resync, and the
/// client says which form it got.
#[tokio::test]
async fn an_lz4_welcome_is_applied_first_and_as_a_resync() {
    let mut snapshot = Raster::new(6, 4);
    snapshot.apply(&op(0));
    let mut later = snapshot.clone();
    for seq in 6..=9 {
        later.apply(&update(seq, 0, 0).op);
    }
    let (url, server) = scripted(vec![
        Step::Send(welcome_lz4(&snapshot, 5, vec![update(6, 7, 1)])),
        Step::Send(ServerMsg::Updates(vec![update(7, 8, 1)])),
        // A resync to seq 9 as a PNG `Welcome`, then back to LZ4 at 9 with one pending.
        Step::Send(welcome(&later, 9, vec![])),
        Step::Send(welcome_lz4(&later, 9, vec![update(10, 7, 2)])),
        Step::Close(1012),
    ])
    .await;
    let mut client = logged(&url).await.unwrap();
    assert!(client.receiver().welcome_was_lz4());
    assert_eq!(client.receiver().snapshot_seq(), 5);
    assert_eq!(client.last_seq(), 6);
    let mut expected = snapshot.clone();
    expected.apply(&update(6, 0, 0).op);
    assert!(client.raster().unwrap() == &expected);
    assert!(matches!(
        client.next_event().await.unwrap(),
        Event::Updates(_)
    ));
    assert_eq!(client.next_event().await.unwrap(), Event::Resynced);
    assert!(!client.receiver().welcome_was_lz4());
    assert!(client.raster().unwrap() == &later);
    assert_eq!(client.next_event().await.unwrap(), Event::Resynced);
    assert!(client.receiver().welcome_was_lz4());
    assert_eq!(client.last_seq(), 10);
    let mut expected = later.clone();
    expected.apply(&update(10, 0, 0).op);
    assert!(client.raster().unwrap() == &expected);
    assert_eq!(client.receiver().resyncs(), 2);
    drop(client);
    server.await.unwrap();
}

/// A malformed LZ4 snapshot is an error of the join, never a panic or a wrong picture.
#[tokio::test]
async fn a_malformed_lz4_welcome_is_refused() {
    let snapshot = Raster::new(6, 4);
    let good = protocol::snapshot::encode_lz4(&snapshot).unwrap();
    let lying_size = |width, height| ServerMsg::WelcomeLz4 {
        client_id: ID,
        width,
        height,
        snapshot_seq: 0,
        snapshot_lz4: Bytes::from(good.clone()),
        pending: vec![],
    };
    let garbage = ServerMsg::WelcomeLz4 {
        client_id: ID,
        width: 6,
        height: 4,
        snapshot_seq: 0,
        snapshot_lz4: Bytes::from_static(&[0xff; 16]),
        pending: vec![],
    };
    for (message, what) in [
        (lying_size(6, 5), "block too short for 6x5"),
        (lying_size(5, 4), "block too long for 5x4"),
        (garbage, "garbage"),
    ] {
        let (url, server) = scripted(vec![Step::Send(message)]).await;
        match logged(&url).await {
            Err(ClientError::Lz4(_)) => {}
            other => panic!("{what}: expected an lz4 error, got {:?}", other.map(|_| ())),
        }
        server.await.unwrap();
    }
    // Sides beyond `max_side` are refused before anything is allocated.
    let (url, server) = scripted(vec![Step::Send(lying_size(5000, 4))]).await;
    assert_protocol(logged(&url).await.map(|_| ()), "outside 1..=4096");
    server.await.unwrap();
}
