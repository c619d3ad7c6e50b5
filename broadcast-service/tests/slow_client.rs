//! PROTOCOL.md §3.5: a client that cannot keep up is brought back in sync with a fresh
//! `Welcome` (or, by policy, closed with 1013); it never slows the others down and never
//! receives a gap.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use bytes::Bytes;
use common::*;
use protocol::Op;
use raster_client::{Client, Event};

/// 40 translucent 256x256 patches: about 10 MiB of updates, more than socket buffers hold.
async fn flood(client: &mut Client) -> u64 {
    for i in 0..40u32 {
        let rgba: Vec<u8> = (0..256 * 256)
            .flat_map(|p: u32| {
                [
                    (p % 251) as u8,
                    (i * 7) as u8,
                    (p / 256) as u8,
                    100 + (i % 50) as u8,
                ]
            })
            .collect();
        let op = Op::Patch {
            x: (i as i32 % 4) * 10,
            y: (i as i32 / 4) * 5,
            w: 256,
            h: 256,
            rgba: Bytes::from(rgba),
        };
        // Reading its own echoes as it goes, this client keeps up.
        let sent = client.draw(op).await.unwrap();
        client.wait_own(sent, deadline()).await.unwrap();
    }
    client.last_seq()
}

const ARGS: &[&str] = &[
    "--client-queue-bytes",
    "1000000",
    "--rate-bytes",
    "1000000000",
    "--max-resyncs-per-minute",
    "100",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_client_is_resynced_without_gaps() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), ARGS).await;
    let mut fast = Client::connect(&server.url, "slow", Some((300, 300)))
        .await
        .unwrap();
    let mut slow = Client::connect(&server.url, "slow", None).await.unwrap();
    // `slow` reads nothing while `fast` floods the picture; `fast` is never held up.
    let last = flood(&mut fast).await;
    assert_eq!(last, 40);
    let mut resyncs = 0;
    let deadline = deadline();
    while slow.last_seq() < last {
        match tokio::time::timeout_at(deadline, slow.next_event())
            .await
            .unwrap()
            .unwrap()
        {
            Event::Resynced => resyncs += 1,
            Event::Closed { code, reason } => panic!("closed: {code:?} {reason}"),
            _ => {}
        }
    }
    assert!(resyncs >= 1, "the slow client was expected to be resynced");
    assert!(slow.raster() == fast.raster());
    // Both carry on normally afterwards.
    let next = fast
        .draw(Op::Clear {
            color: [9, 9, 9, 9],
        })
        .await
        .unwrap();
    fast.wait_own(next, common::deadline()).await.unwrap();
    slow.sync_to(last + 1, common::deadline()).await.unwrap();
    assert!(slow.raster() == fast.raster());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_client_is_closed_with_1013_under_the_disconnect_policy() {
    let dir = tempfile::tempdir().unwrap();
    let mut args = ARGS.to_vec();
    args.extend(["--slow-client", "disconnect"]);
    let server = Server::start(dir.path(), &args).await;
    let mut fast = Client::connect(&server.url, "slow", Some((300, 300)))
        .await
        .unwrap();
    let mut slow = Client::connect(&server.url, "slow", None).await.unwrap();
    flood(&mut fast).await;
    let deadline = deadline();
    loop {
        match tokio::time::timeout_at(deadline, slow.next_event())
            .await
            .unwrap()
            .unwrap()
        {
            Event::Closed { code, .. } => {
                assert_eq!(code, Some(1013));
                break;
            }
            Event::Resynced => panic!("the disconnect policy must not resync"),
            _ => {}
        }
    }
    server.stop().await;
}
