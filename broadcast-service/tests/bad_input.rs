//! Bad input (PROTOCOL.md §1, §2, §5) sent over raw WebSocket connections: each is answered
//! exactly as the contract says (close code, `Error`, `Rejected`, HTTP 400), and a well-behaved
//! client on the same picture keeps working throughout and never sees a bad op.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;

use common::{
    deadline, logged_client, raw_join, raw_next, raw_send, raw_until_close, Raw, RawEvent, Server,
};
use futures::SinkExt;
use protocol::{codec, ClientMsg, Op, Point, ServerMsg};
use raster_client::Client;
use tokio_tungstenite::tungstenite::Message;

const PICTURE: &str = "bad-input";

fn draw(client_seq: u64, op: Op) -> Vec<u8> {
    codec::encode(&ClientMsg::Draw { client_seq, op })
}

fn dot(x: i32) -> Op {
    Op::Pixels {
        color: [1, 2, 3, 128],
        points: vec![Point::new(x, 1)],
    }
}

fn error_codes(errors: &[(u16, String)]) -> Vec<u16> {
    errors.iter().map(|e| e.0).collect()
}

/// The observer draws one op and sees it sequenced: the picture still works.
async fn observer_still_works(observer: &mut Client) {
    let client_seq = observer.draw(dot(0)).await.unwrap();
    observer.wait_own(client_seq, deadline()).await.unwrap();
}

/// Sends `frame` on a fresh raw connection and returns the errors and close code it got.
async fn closes_with(server: &Server, frame: Message) -> (Vec<(u16, String)>, Option<u16>) {
    let (mut raw, _) = raw_join(server, PICTURE).await;
    // The server may close while a big frame is still being written: that is its right.
    let _ = raw.send(frame).await;
    raw_until_close(&mut raw).await
}

/// Reads a raw client's messages until it has seen `echoes` own echoes and `rejections`
/// rejections; returns the echoed client_seqs and the rejection reasons.
async fn own_results(
    raw: &mut Raw,
    client_id: u64,
    echoes: usize,
    rejections: usize,
) -> (Vec<u64>, Vec<(u64, String)>) {
    let deadline = deadline();
    let (mut echoed, mut rejected) = (Vec::new(), Vec::new());
    while echoed.len() < echoes || rejected.len() < rejections {
        match raw_next(raw, deadline).await {
            RawEvent::Msg(ServerMsg::Updates(updates)) => echoed.extend(
                updates
                    .iter()
                    .filter(|u| u.client_id == client_id)
                    .map(|u| u.client_seq),
            ),
            RawEvent::Msg(ServerMsg::Rejected { client_seq, reason }) => {
                rejected.push((client_seq, reason))
            }
            RawEvent::Msg(_) => {}
            other => panic!("raw client lost its connection: {other:?}"),
        }
    }
    assert_eq!(echoed.len(), echoes, "{echoed:?}");
    assert_eq!(rejected.len(), rejections, "{rejected:?}");
    (echoed, rejected)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_and_others_carry_on() {
    let dir = tempfile::tempdir().unwrap();
    // A low rate limit so that going over it takes few messages.
    let server = Server::start(dir.path(), &["--rate-ops", "50", "--rate-burst", "20"]).await;
    let mut observer = logged_client(&server, PICTURE, Some((64, 64))).await;
    observer_still_works(&mut observer).await;
    // (client_id, client_seq) of every op that should have been sequenced.
    let mut accepted: BTreeSet<(u64, u64)> = BTreeSet::new();
    accepted.insert((observer.client_id(), 1));

    // §2: a text frame closes with 1003.
    let (errors, code) = closes_with(&server, Message::text("hello")).await;
    assert_eq!(code, Some(1003), "text frame; errors {errors:?}");
    assert_eq!(
        error_codes(&errors),
        vec![400],
        "text frame: one Error 400 first"
    );
    observer_still_works(&mut observer).await;

    // §2: undecodable frames: Error 400, then close 1007.
    let mut huge_points = 0u32.to_le_bytes().to_vec(); // ClientMsg::Draw
    huge_points.extend_from_slice(&1u64.to_le_bytes()); // client_seq
    huge_points.extend_from_slice(&0u32.to_le_bytes()); // Op::Pixels
    huge_points.extend_from_slice(&[1, 2, 3, 4]); // color
    huge_points.extend_from_slice(&(1u64 << 60).to_le_bytes()); // 2^60 points
    huge_points.extend_from_slice(&[0; 16]);
    let mut huge_patch = 0u32.to_le_bytes().to_vec();
    huge_patch.extend_from_slice(&1u64.to_le_bytes());
    huge_patch.extend_from_slice(&3u32.to_le_bytes()); // Op::Patch
    huge_patch.extend_from_slice(&[0; 16]); // x, y, w, h
    huge_patch.extend_from_slice(&u64::MAX.to_le_bytes()); // rgba length
    let mut unknown_msg = 7u32.to_le_bytes().to_vec();
    unknown_msg.extend_from_slice(&[0; 8]);
    let mut unknown_op = 0u32.to_le_bytes().to_vec();
    unknown_op.extend_from_slice(&1u64.to_le_bytes());
    unknown_op.extend_from_slice(&9u32.to_le_bytes());
    unknown_op.extend_from_slice(&[0; 4]);
    let mut trailing = codec::encode(&ClientMsg::Ping { nonce: 1 });
    trailing.push(0);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("garbage", vec![0xff; 7]),
        ("empty", Vec::new()),
        ("huge point count", huge_points),
        ("huge patch length", huge_patch),
        ("unknown message tag", unknown_msg),
        ("unknown op tag", unknown_op),
        ("trailing bytes", trailing),
        ("truncated draw", draw(1, dot(3))[..10].to_vec()),
    ];
    for (name, frame) in cases {
        let (errors, code) = closes_with(&server, Message::Binary(frame.into())).await;
        assert_eq!(code, Some(1007), "{name}: errors {errors:?}");
        assert_eq!(
            error_codes(&errors),
            vec![400],
            "{name}: one Error 400 before the close"
        );
        observer_still_works(&mut observer).await;
    }
    accepted.extend((2..=10).map(|s| (observer.client_id(), s)));

    // §2: a message over 2 MiB closes with 1009.
    let oversize = vec![0u8; 2 * 1024 * 1024 + 1];
    let (errors, code) = closes_with(&server, Message::Binary(oversize.into())).await;
    assert_eq!(code, Some(1009), "oversize frame; errors {errors:?}");
    assert_eq!(
        error_codes(&errors),
        vec![413],
        "oversize: one Error 413 first"
    );
    observer_still_works(&mut observer).await;
    // Exactly the limit is fine as far as size goes (it is an undecodable frame, so 1007).
    let (_, code) = closes_with(
        &server,
        Message::Binary(vec![0xffu8; 2 * 1024 * 1024].into()),
    )
    .await;
    assert_eq!(code, Some(1007), "a 2 MiB frame is within the size limit");
    observer_still_works(&mut observer).await;
    accepted.extend((11..=12).map(|s| (observer.client_id(), s)));

    // §5: out-of-limit ops are Rejected to the sender only; its connection stays usable.
    let (mut raw, raw_id) = raw_join(&server, PICTURE).await;
    let bad_ops = vec![
        Op::Pixels {
            color: [0; 4],
            points: vec![],
        },
        Op::Pixels {
            color: [0; 4],
            points: vec![Point::new(0, 0); 65_537],
        },
        Op::Rect {
            x: 0,
            y: 0,
            w: 0,
            h: 1,
            color: [0; 4],
        },
        Op::Rect {
            x: 0,
            y: 0,
            w: 1,
            h: 65_537,
            color: [0; 4],
        },
        Op::Rect {
            x: 1_000_001,
            y: 0,
            w: 1,
            h: 1,
            color: [0; 4],
        },
        Op::Stroke {
            color: [0; 4],
            width: 0,
            points: vec![Point::new(0, 0)],
        },
        Op::Stroke {
            color: [0; 4],
            width: 257,
            points: vec![Point::new(0, 0)],
        },
        Op::Stroke {
            color: [0; 4],
            width: 1,
            points: vec![Point::new(0, 0); 4_097],
        },
        Op::Stroke {
            color: [0; 4],
            width: 1,
            points: vec![Point::new(0, -1_000_001)],
        },
        Op::Patch {
            x: 0,
            y: 0,
            w: 2,
            h: 2,
            rgba: vec![0; 15].into(),
        },
        Op::Patch {
            x: 0,
            y: 0,
            w: 513,
            h: 1,
            rgba: vec![0; 513 * 4].into(),
        },
    ];
    let n_bad = bad_ops.len() as u64;
    for (i, op) in bad_ops.into_iter().enumerate() {
        raw_send(&mut raw, draw(i as u64 + 1, op)).await;
    }
    // The edges of the limits are accepted.
    raw_send(
        &mut raw,
        draw(
            n_bad + 1,
            Op::Rect {
                x: -1_000_000,
                y: 1_000_000,
                w: 65_536,
                h: 1,
                color: [9; 4],
            },
        ),
    )
    .await;
    raw_send(&mut raw, draw(n_bad + 2, dot(5))).await;
    let (echoed, rejected) = own_results(&mut raw, raw_id, 2, n_bad as usize).await;
    assert_eq!(echoed, vec![n_bad + 1, n_bad + 2]);
    assert_eq!(
        rejected.iter().map(|r| r.0).collect::<Vec<_>>(),
        (1..=n_bad).collect::<Vec<_>>()
    );
    accepted.extend(echoed.iter().map(|&s| (raw_id, s)));
    observer_still_works(&mut observer).await;
    accepted.insert((observer.client_id(), 13));

    // §5: over the rate limit (burst 20 here): Rejected with a reason that says so.
    let (mut fast, fast_id) = raw_join(&server, PICTURE).await;
    for client_seq in 1..=60u64 {
        fast.feed(Message::Binary(draw(client_seq, dot(7)).into()))
            .await
            .unwrap();
    }
    fast.flush().await.unwrap();
    let deadline = deadline();
    let (mut echoed, mut rejected) = (Vec::new(), Vec::new());
    while echoed.len() + rejected.len() < 60 {
        match raw_next(&mut fast, deadline).await {
            RawEvent::Msg(ServerMsg::Updates(updates)) => echoed.extend(
                updates
                    .iter()
                    .filter(|u| u.client_id == fast_id)
                    .map(|u| u.client_seq),
            ),
            RawEvent::Msg(ServerMsg::Rejected { client_seq, reason }) => {
                assert!(reason.contains("rate"), "reason {reason:?}");
                rejected.push(client_seq)
            }
            RawEvent::Msg(_) => {}
            other => panic!("fast client lost its connection: {other:?}"),
        }
    }
    assert!(
        echoed.len() >= 20,
        "the burst is allowed: {} echoed",
        echoed.len()
    );
    assert!(
        !rejected.is_empty(),
        "60 ops at once must go over a burst of 20"
    );
    assert!(echoed.windows(2).all(|w| w[0] < w[1]), "own ops in order");
    accepted.extend(echoed.iter().map(|&s| (fast_id, s)));
    observer_still_works(&mut observer).await;
    accepted.insert((observer.client_id(), 14));

    // The observer saw exactly the accepted ops: nothing bad reached the picture.
    let last = observer.last_seq();
    observer.sync_to(last, deadline).await.unwrap();
    let seen: BTreeSet<(u64, u64)> = observer
        .log()
        .iter()
        .map(|e| (e.client_id, e.client_seq))
        .collect();
    assert_eq!(
        seen.len(),
        observer.log().len(),
        "an op was delivered twice"
    );
    assert_eq!(seen, accepted);
    assert_eq!(observer.receiver().resyncs(), 0);
    for mut raw in [raw, fast] {
        raw.close(None).await.unwrap();
    }
    observer.close(deadline).await.unwrap();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_picture_ids_and_sizes_are_400_before_upgrade() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]).await;
    let observer = logged_client(&server, "exists", Some((32, 32))).await;
    let long = "x".repeat(65);
    let bad_ids = [
        "a.b",
        "a%20b",
        "%C3%A9",
        "a%2Fb",
        long.as_str(),
        "semi%3Bcolon",
    ];
    for id in bad_ids {
        let url = format!("{}/pictures/{id}/ws", server.url);
        match tokio_tungstenite::connect_async(url.as_str()).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                assert_eq!(response.status().as_u16(), 400, "id {id:?}")
            }
            Err(other) => panic!("id {id:?}: expected HTTP 400, got {other}"),
            Ok(_) => panic!("id {id:?}: upgraded"),
        }
        let snapshot = raster_client::snapshot(&server.url, id).await;
        assert!(
            matches!(
                snapshot,
                Err(raster_client::ClientError::Http { status: 400 })
            ),
            "snapshot of {id:?}: {snapshot:?}"
        );
    }
    // 64 characters is the longest valid id.
    let ok = Client::connect(&server.url, &"y".repeat(64), Some((4, 4)))
        .await
        .unwrap();
    ok.close(deadline()).await.unwrap();

    let bad_sizes = [
        "width=0",
        "height=0",
        "width=4097",
        "height=4097",
        "width=-1",
        "width=abc",
        "width=10&height=99999",
        // The snapshot form of PROTOCOL.md §8: png or lz4, nothing else.
        "snapshot=gif",
        "snapshot=",
        "snapshot=LZ4",
    ];
    for picture in ["exists", "does-not-exist"] {
        for query in bad_sizes {
            let url = format!("{}/pictures/{picture}/ws?{query}", server.url);
            match tokio_tungstenite::connect_async(url.as_str()).await {
                Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                    assert_eq!(response.status().as_u16(), 400, "{picture}?{query}")
                }
                Err(other) => panic!("{picture}?{query}: expected HTTP 400, got {other}"),
                Ok(_) => panic!("{picture}?{query}: upgraded"),
            }
        }
    }
    // Only one of the two given: the other takes the default (1024).
    let url = format!("{}/pictures/only-width/ws?width=7", server.url);
    let (mut raw, _) = tokio_tungstenite::connect_async(url.as_str())
        .await
        .unwrap();
    match raw_next(&mut raw, deadline()).await {
        RawEvent::Msg(ServerMsg::Welcome { width, height, .. }) => {
            assert_eq!((width, height), (7, 1024))
        }
        other => panic!("expected welcome, got {other:?}"),
    }
    raw.close(None).await.unwrap();
    // The existing picture was not disturbed.
    assert_eq!(observer.receiver().resyncs(), 0);
    observer.close(deadline()).await.unwrap();
    server.stop().await;
}
