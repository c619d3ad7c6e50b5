//! A thousand idle sockets against a connection limit of 500 (issue: hostile clients), on the
//! real binary: exactly the 501st connection and every one after it is refused with 503, the
//! clients that draw are undisturbed, and the service's memory is measured (its RSS, from
//! `/proc`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod procs;

use std::path::Path;

use common::{deadline, raw_next, Raw, RawEvent};
use futures::SinkExt;
use procs::{free_port, wait_healthy, Process};
use protocol::{codec, ClientMsg, Op, Point, ServerMsg};
use tokio_tungstenite::tungstenite::Message;

const LIMIT: usize = 500;
const SOCKETS: usize = 1_000;
const DRAWERS: usize = 2;

/// Resident memory of process `pid`, in bytes.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kib * 1024
}

async fn join(url: &str) -> (Raw, u64) {
    let (mut socket, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    match raw_next(&mut socket, deadline()).await {
        RawEvent::Msg(ServerMsg::Welcome { client_id, .. }) => (socket, client_id),
        other => panic!("expected a welcome, got {other:?}"),
    }
}

/// Draws `n` pixels (`client_seq` `from..from+n`) and reads until each is echoed: returns
/// their seqs, in the order they arrived.
async fn draw_and_echo((drawer, me): &mut (Raw, u64), from: u64, n: u64) -> Vec<u64> {
    for client_seq in from..from + n {
        let draw = ClientMsg::Draw {
            client_seq,
            op: Op::Pixels {
                color: [9, 8, 7, 255],
                points: vec![Point {
                    x: client_seq as i32 % 64,
                    y: 3,
                }],
            },
        };
        drawer
            .send(Message::Binary(codec::encode(&draw).into()))
            .await
            .unwrap();
    }
    let mut echoed = Vec::new();
    let deadline = deadline();
    while echoed.len() < n as usize {
        match raw_next(drawer, deadline).await {
            RawEvent::Msg(ServerMsg::Updates(updates)) => echoed.extend(
                updates
                    .iter()
                    .filter(|u| u.client_id == *me)
                    .filter(|u| u.client_seq >= from && u.client_seq < from + n)
                    .map(|u| u.seq),
            ),
            RawEvent::Msg(ServerMsg::Rejected { reason, .. }) => panic!("rejected: {reason}"),
            RawEvent::Msg(_) => {}
            other => panic!("the drawer was disturbed: {other:?}"),
        }
    }
    echoed
}

fn bs_binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_broadcast-service"))
}

#[tokio::test]
async fn a_thousand_idle_sockets_against_a_limit_of_500() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let http = format!("http://127.0.0.1:{port}");
    let args: Vec<String> = [
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--data-dir",
        &dir.path().display().to_string(),
        "--max-connections",
        &LIMIT.to_string(),
        // Every socket here comes from loopback: the per-address limit would refuse first.
        "--max-connections-per-ip",
        "5000",
        "--max-open-pictures-per-ip",
        "5000",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let bs = Process::spawn(bs_binary(), &args);
    wait_healthy(&http).await;
    let pid = bs.child.id();
    let url =
        |picture: &str| format!("ws://127.0.0.1:{port}/pictures/{picture}/ws?width=64&height=64");

    let mut drawers = Vec::new();
    for _ in 0..DRAWERS {
        drawers.push(join(&url("busy")).await);
    }
    let before = rss(pid);

    // Idle sockets: upgraded, then never read nor written again, over ten pictures.
    let mut idle = Vec::new();
    let mut refused = 0;
    for i in 0..SOCKETS - DRAWERS {
        match tokio_tungstenite::connect_async(url(&format!("idle-{}", i % 10))).await {
            Ok((socket, _)) => {
                assert!(
                    refused == 0,
                    "socket {} let in after a refusal",
                    DRAWERS + i + 1
                );
                idle.push(socket);
            }
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                assert_eq!(response.status(), 503);
                assert_eq!(response.headers()["retry-after"], "5");
                refused += 1;
            }
            Err(other) => panic!("socket {}: {other}", DRAWERS + i + 1),
        }
    }
    assert_eq!(idle.len(), LIMIT - DRAWERS);
    assert_eq!(refused, SOCKETS - LIMIT);
    let held = rss(pid);

    // The drawers are undisturbed: every draw of each is sequenced, in order.
    let (first, rest) = drawers.split_at_mut(1);
    let seqs_a = draw_and_echo(&mut first[0], 1, 50).await;
    let seqs_b = draw_and_echo(&mut rest[0], 1, 50).await;
    assert!(seqs_a.windows(2).all(|w| w[0] < w[1]), "{seqs_a:?}");
    assert!(seqs_b.windows(2).all(|w| w[0] < w[1]), "{seqs_b:?}");
    assert!(seqs_a.last() < seqs_b.first());

    let metrics = reqwest::get(format!("{http}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let needle = format!(
        "bs_connections_refused_total{{reason=\"max_connections\"}} {}",
        SOCKETS - LIMIT
    );
    assert!(metrics.contains(&needle), "{needle} missing");

    // What 498 idle clients (over ten 64x64 pictures) cost the service.
    let per_socket = held.saturating_sub(before) / (LIMIT - DRAWERS) as u64;
    eprintln!(
        "RSS before the idle sockets: {} KiB; holding {} of them: {} KiB; {} bytes per socket",
        before / 1024,
        LIMIT - DRAWERS,
        held / 1024,
        per_socket
    );
    assert!(
        per_socket < 64 * 1024,
        "an idle socket costs {per_socket} bytes of RSS"
    );
    drop(idle);
}
