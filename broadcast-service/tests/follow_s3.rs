//! Following over plain HTTP (PROTOCOL.md §16) with the picture service on S3 (LocalStack), in
//! services mode (both services as processes): conditional `snapshot.png` (304, a new `ETag`
//! after a draw), long-poll gaps and `410` once a flush to S3 has trimmed the log, and a
//! follower of a busy picture that ends byte-identical to a WebSocket client through a resync.
//!
//! Needs `S3_TEST_ENDPOINT` (and `S3_TEST_BUCKET`, default `raster-test`), as
//! `scripts/test.sh` provides; without it the tests fail unless `S3_TESTS=skip`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod procs;
mod s3;

use std::path::Path;

use common::*;
use procs::*;
use protocol::{codec, Op, Point, ServerMsg};
use raster_client::{Client, ConnectOptions};
use s3::*;

/// A picture service on S3 under a fresh prefix and a broadcast service in front of it.
struct OnS3 {
    pps: Process,
    bs: Process,
    http: String,
    prefix: String,
    s3: S3,
    _dir: tempfile::TempDir,
}

async fn start(s3: S3, flush: &str) -> OnS3 {
    let prefix = s3::unique_prefix("follow");
    let store = format!("s3://{}/{prefix}", s3.bucket);
    let dir = tempfile::tempdir().unwrap();
    let pps_port = free_port();
    let pps = start_pps_with_env(
        pps_port,
        dir.path(),
        &["--store", &store, "--flush-interval", flush],
        &[
            ("AWS_ENDPOINT_URL", &s3.endpoint),
            ("AWS_REGION", "us-east-1"),
            ("AWS_ACCESS_KEY_ID", "test"),
            ("AWS_SECRET_ACCESS_KEY", "test"),
        ],
    );
    wait_healthy(&format!("http://127.0.0.1:{pps_port}")).await;
    let bs_port = free_port();
    let args: Vec<String> = [
        "--listen".to_string(),
        format!("127.0.0.1:{bs_port}"),
        "--pps-url".into(),
        format!("ws://127.0.0.1:{pps_port}/bs"),
    ]
    .into();
    let bs = Process::spawn(Path::new(env!("CARGO_BIN_EXE_broadcast-service")), &args);
    let http = format!("http://127.0.0.1:{bs_port}");
    wait_healthy(&http).await;
    OnS3 {
        pps,
        bs,
        http,
        prefix,
        s3,
        _dir: dir,
    }
}

impl OnS3 {
    async fn stop(mut self) {
        self.bs.signal("-TERM");
        assert!(self.bs.wait().await);
        self.pps.signal("-TERM");
        assert!(self.pps.wait().await);
    }
}

fn dot(x: i32) -> Op {
    Op::Pixels {
        color: [0, 90, 200, 255],
        points: vec![Point { x, y: 2 }],
    }
}

async fn draw(client: &mut Client, op: Op) -> u64 {
    let client_seq = client.draw(op).await.unwrap();
    client.wait_own(client_seq, deadline()).await.unwrap();
    client.last_seq()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_s3_conditional_snapshots_and_long_poll_gaps() {
    let Some(s3) = s3().await else { return };
    let on = start(s3, "200ms").await;
    let options = ConnectOptions {
        size: Some((24, 24)),
        ..ConnectOptions::default()
    };
    let mut a = Client::connect_with(&on.http, "cond", options)
        .await
        .unwrap();
    assert_eq!(draw(&mut a, dot(1)).await, 1);

    let first = get(&on.http, "/pictures/cond/snapshot.png", &[]).await;
    assert_eq!((first.status, first.seq()), (200, 1));
    let etag = first.header("etag").unwrap().to_string();
    let same = get(
        &on.http,
        "/pictures/cond/snapshot.png",
        &[("if-none-match", &etag)],
    )
    .await;
    assert_eq!((same.status, same.seq(), same.body.len()), (304, 1, 0));
    assert_eq!(same.header("etag"), Some(etag.as_str()));

    assert_eq!(draw(&mut a, dot(2)).await, 2);
    let changed = get(
        &on.http,
        "/pictures/cond/snapshot.png",
        &[("if-none-match", &etag)],
    )
    .await;
    assert_eq!((changed.status, changed.seq()), (200, 2));
    let etag2 = changed.header("etag").unwrap().to_string();
    assert_ne!(etag2, etag);
    let png = protocol::snapshot::decode_png(&changed.body, 4096).unwrap();
    assert!(Some(&png.raster) == a.raster());

    // Long-poll: what is in the log comes at once; a flush to S3 trims it (410 for a `since`
    // before it), and a follower from the stored seq carries on.
    let answer = get(&on.http, "/pictures/cond/updates?since=0", &[]).await;
    assert_eq!((answer.status, answer.seq()), (200, 2));
    match codec::decode_server(&answer.body).unwrap() {
        ServerMsg::Updates(updates) => {
            assert_eq!(updates.iter().map(|u| u.seq).collect::<Vec<_>>(), [1, 2]);
            assert_eq!(updates[1].op, dot(2));
        }
        other => panic!("{other:?}"),
    }
    let stored = wait_object_seq(&on.s3, &format!("{}cond.png", on.prefix), 2).await;
    assert!(Some(&stored) == a.raster());
    wait_gone(&on.http, "cond", 0).await;
    let gone = get(&on.http, "/pictures/cond/updates?since=1&wait=5", &[]).await;
    assert_eq!(gone.status, 410);
    let http = on.http.clone();
    let waiting =
        tokio::spawn(
            async move { get(&http, "/pictures/cond/updates?since=2&wait=20", &[]).await },
        );
    assert_eq!(draw(&mut a, dot(3)).await, 3);
    let woken = waiting.await.unwrap();
    assert_eq!((woken.status, woken.seq()), (200, 3));
    on.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_s3_an_http_follower_of_a_busy_picture_ends_identical_to_a_websocket_client() {
    let Some(s3) = s3().await else { return };
    let on = start(s3, "200ms").await;
    let ws = on.http.replace("http://", "ws://");
    busy_follow(&ws, &on.http, "busy-s3", 3, 300).await;
    on.stop().await;
}
