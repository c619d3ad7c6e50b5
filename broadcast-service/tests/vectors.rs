//! The shared test vectors replayed through a running service: every raster case drawn by a
//! client ends as exactly the expected picture in `snapshot.png` and in the client, and every
//! client wire frame is decoded by the server (answered with an echo, `Rejected` or `Pong`,
//! never with a close: limits are checked after decoding).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;

use common::{deadline, logged_client, raw_join, raw_next, raw_send, snapshot, RawEvent, Server};
use protocol::{codec, ClientMsg, Limits, Raster, ServerMsg};
use raster_client::script::{parse_raster_cases, parse_wire_cases, RasterCase};

const SHARED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/vectors");
const OWN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../protocol/vectors");

fn cases(path: &str) -> Vec<RasterCase> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {path}: {e}"));
    parse_raster_cases(&text).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raster_vectors_drawn_through_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]).await;
    let mut all = cases(&format!("{SHARED}/raster.json"));
    let shared = all.len();
    all.extend(cases(&format!("{OWN}/raster-extra.json")));
    assert!(
        shared >= 40 && all.len() > shared,
        "{shared} shared, {} in all",
        all.len()
    );
    for (i, case) in all.iter().enumerate() {
        let picture = format!("vector-{i}");
        let mut client = logged_client(&server, &picture, Some((case.width, case.height))).await;
        let mut expected = Raster::new(case.width, case.height);
        let mut last = 0;
        for json in &case.ops {
            let op = json.to_op().unwrap();
            expected.apply(&op);
            last = client.draw(op).await.unwrap();
        }
        client.wait_own(last, deadline()).await.unwrap();
        let (seq, snap) = snapshot(&server, &picture).await;
        assert_eq!(seq, case.ops.len() as u64, "case {}", case.name);
        assert!(snap == expected, "case {}: snapshot.png differs", case.name);
        assert!(
            client.raster().unwrap() == &expected,
            "case {}: client differs",
            case.name
        );
        if let Some(rgba) = &case.rgba_hex {
            assert_eq!(&hex_string(snap.pixels()), rgba, "case {}", case.name);
        }
        client.close(deadline()).await.unwrap();
    }
    server.stop().await;
}

fn hex_string(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_wire_vectors_are_decoded_by_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]).await;
    let text = std::fs::read_to_string(format!("{SHARED}/wire.json")).unwrap();
    let frames: Vec<(String, Vec<u8>)> = parse_wire_cases(&text)
        .unwrap()
        .into_iter()
        .filter(|c| c.kind == "ClientMsg")
        .map(|c| (c.name, unhex(&c.bincode_hex)))
        .collect();
    assert!(frames.len() >= 10, "{} client frames", frames.len());

    let (mut raw, id) = raw_join(&server, "wire-vectors").await;
    // What each frame must produce: an echo, a rejection or a pong, counted by key.
    let mut expected: BTreeMap<String, usize> = BTreeMap::new();
    let limits = Limits::default();
    for (name, frame) in &frames {
        let key = match codec::decode_client(frame).unwrap_or_else(|e| panic!("{name}: {e}")) {
            ClientMsg::Ping { nonce } => format!("pong {nonce}"),
            ClientMsg::Draw { client_seq, op } => match limits.check(&op) {
                Ok(()) => format!("echo {client_seq}"),
                Err(_) => format!("rejected {client_seq}"),
            },
        };
        *expected.entry(key).or_default() += 1;
        raw_send(&mut raw, frame.clone()).await;
    }
    let total: usize = expected.values().sum();
    let mut got: BTreeMap<String, usize> = BTreeMap::new();
    let deadline = deadline();
    while got.values().sum::<usize>() < total {
        let key = match raw_next(&mut raw, deadline).await {
            RawEvent::Msg(ServerMsg::Updates(updates)) => {
                for u in updates.iter().filter(|u| u.client_id == id) {
                    *got.entry(format!("echo {}", u.client_seq)).or_default() += 1;
                }
                continue;
            }
            RawEvent::Msg(ServerMsg::Rejected { client_seq, .. }) => {
                format!("rejected {client_seq}")
            }
            RawEvent::Msg(ServerMsg::Pong { nonce }) => format!("pong {nonce}"),
            RawEvent::Msg(_) => continue,
            other => panic!("connection ended after a valid frame: {other:?}"),
        };
        *got.entry(key).or_default() += 1;
    }
    assert_eq!(got, expected);
    server.stop().await;
}
