//! Following a picture over plain HTTP (PROTOCOL.md §16), over loopback against a real service
//! (embedded, filesystem store): conditional `snapshot.png` (strong `ETag`, `304` for a
//! matching `If-None-Match`), the long-poll `updates` endpoint (at once, waiting and woken by
//! a draw, an empty answer when the wait ends, `410` for a `since` the log no longer holds or
//! beyond the picture, the JSON form, bad parameters, tokens), a follower of a busy picture
//! that ends byte-identical to a WebSocket client through a forced `410` and resync, and the
//! CLI's `raster watch --http`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use protocol::{codec, Op, Point, ServerMsg};
use raster_client::token::{mint, Role};
use raster_client::{Client, ConnectOptions};
use tokio::time::Instant;

fn dot(x: i32) -> Op {
    Op::Pixels {
        color: [200, 10, 10, 255],
        points: vec![Point { x, y: 1 }],
    }
}

async fn client(server: &Server, picture: &str) -> Client {
    let options = ConnectOptions {
        size: Some((32, 16)),
        keep_log: true,
        ..ConnectOptions::default()
    };
    Client::connect_with(&server.url, picture, options)
        .await
        .unwrap()
}

async fn draw(client: &mut Client, op: Op) -> u64 {
    let client_seq = client.draw(op).await.unwrap();
    client.wait_own(client_seq, deadline()).await.unwrap();
    client.last_seq()
}

/// The updates of an `updates` answer (bincode).
fn decoded(answer: &Answer) -> Vec<protocol::Sequenced> {
    match codec::decode_server(&answer.body).unwrap() {
        ServerMsg::Updates(updates) => updates,
        other => panic!("expected Updates, got {other:?}"),
    }
}

#[tokio::test]
async fn snapshot_etag_304_and_a_new_etag_after_a_draw() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]).await;
    let mut a = client(&server, "etag-a").await;
    let seq = draw(&mut a, dot(1)).await;
    assert_eq!(seq, 1);

    let first = get(&server.http, "/pictures/etag-a/snapshot.png", &[]).await;
    assert_eq!(first.status, 200);
    assert_eq!(first.seq(), 1);
    assert_eq!(first.header("cache-control"), Some("public, no-cache"));
    assert_eq!(first.header("content-type"), Some("image/png"));
    let etag = first.header("etag").unwrap().to_string();
    assert!(
        etag.starts_with("\"1-") && etag.ends_with('"') && etag.len() == 36,
        "{etag}"
    );

    // The same ETag again: 304, no body, the same validators.
    let again = get(
        &server.http,
        "/pictures/etag-a/snapshot.png",
        &[("if-none-match", &etag)],
    )
    .await;
    assert_eq!(again.status, 304);
    assert!(again.body.is_empty());
    assert_eq!(again.header("etag"), Some(etag.as_str()));
    assert_eq!(again.seq(), 1);
    assert_eq!(again.header("cache-control"), Some("public, no-cache"));
    // In a list, and weak: still a match (If-None-Match compares weakly).
    let listed = format!("\"0-00\", W/{etag}");
    let again = get(
        &server.http,
        "/pictures/etag-a/snapshot.png",
        &[("if-none-match", &listed)],
    )
    .await;
    assert_eq!(again.status, 304);
    // Another ETag: the picture.
    let other = get(
        &server.http,
        "/pictures/etag-a/snapshot.png",
        &[("if-none-match", "\"1-0000000000000000000000000000000\"")],
    )
    .await;
    assert_eq!(other.status, 200);
    assert_eq!(other.body, first.body);
    assert_eq!(other.header("etag"), Some(etag.as_str()));

    // A draw: the old ETag no longer matches; a new one at the new seq.
    let seq = draw(&mut a, dot(2)).await;
    assert_eq!(seq, 2);
    let changed = get(
        &server.http,
        "/pictures/etag-a/snapshot.png",
        &[("if-none-match", &etag)],
    )
    .await;
    assert_eq!(changed.status, 200);
    assert_eq!(changed.seq(), 2);
    let etag2 = changed.header("etag").unwrap().to_string();
    assert!(etag2.starts_with("\"2-"), "{etag2}");
    assert_ne!(etag2, etag);
    let png = protocol::snapshot::decode_png(&changed.body, 4096).unwrap();
    assert!(Some(&png.raster) == a.raster());
    let same = get(
        &server.http,
        "/pictures/etag-a/snapshot.png",
        &[("if-none-match", &etag2)],
    )
    .await;
    assert_eq!(same.status, 304);
    assert_eq!(same.seq(), 2);

    // Another picture with the same pixels at the same seq has another ETag.
    let mut b = client(&server, "etag-b").await;
    draw(&mut b, dot(1)).await;
    draw(&mut b, dot(2)).await;
    let b_answer = get(&server.http, "/pictures/etag-b/snapshot.png", &[]).await;
    assert_eq!(b_answer.seq(), 2);
    let b_png = protocol::snapshot::decode_png(&b_answer.body, 4096).unwrap();
    assert!(b_png.raster == png.raster, "same drawing, same pixels");
    assert_ne!(b_answer.header("etag"), Some(etag2.as_str()));
    // ... and is not a match for the first picture's ETag.
    let crossed = get(
        &server.http,
        "/pictures/etag-b/snapshot.png",
        &[("if-none-match", &etag2)],
    )
    .await;
    assert_eq!(crossed.status, 200);

    // A picture that does not exist: 404 whatever the ETag.
    let missing = get(
        &server.http,
        "/pictures/never/snapshot.png",
        &[("if-none-match", "*")],
    )
    .await;
    assert_eq!(missing.status, 404);
    server.stop().await;
}

#[tokio::test]
async fn snapshot_max_age_is_configurable() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--snapshot-max-age", "5s"]).await;
    let mut a = client(&server, "aged").await;
    draw(&mut a, dot(1)).await;
    let answer = get(&server.http, "/pictures/aged/snapshot.png", &[]).await;
    assert_eq!(
        answer.header("cache-control"),
        Some("public, max-age=5, must-revalidate")
    );
    server.stop().await;
}

#[tokio::test]
async fn long_poll_answers_waits_wakes_times_out_and_is_gone() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--flush-interval", "100ms"]).await;
    let mut a = client(&server, "lp").await;
    for x in 0..3 {
        draw(&mut a, dot(x)).await;
    }
    assert_eq!(a.last_seq(), 3);

    // At once: everything after `since`, exactly the updates the WebSocket client got.
    let started = Instant::now();
    let answer = get(&server.http, "/pictures/lp/updates?since=0&wait=20", &[]).await;
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(answer.status, 200);
    assert_eq!(answer.seq(), 3);
    assert_eq!(
        answer.header("content-type"),
        Some("application/octet-stream")
    );
    assert_eq!(answer.header("cache-control"), Some("no-store"));
    let updates = decoded(&answer);
    let seqs: Vec<u64> = updates.iter().map(|u| u.seq).collect();
    assert_eq!(seqs, [1, 2, 3]);
    for (update, logged) in updates.iter().zip(a.receiver().log()) {
        assert_eq!(
            (update.seq, update.client_id, update.client_seq),
            (logged.seq, logged.client_id, logged.client_seq)
        );
    }
    assert_eq!(updates[1].op, dot(1));
    let tail = get(&server.http, "/pictures/lp/updates?since=2", &[]).await;
    assert_eq!(decoded(&tail), updates[2..]);

    // Waits, and a draw wakes it with exactly the new update.
    let http = server.http.clone();
    let mut waiting =
        tokio::spawn(async move { get(&http, "/pictures/lp/updates?since=3&wait=20", &[]).await });
    assert!(
        tokio::time::timeout(Duration::from_millis(300), &mut waiting)
            .await
            .is_err(),
        "answered before anything was drawn"
    );
    let started = Instant::now();
    draw(&mut a, dot(9)).await;
    let woken = waiting.await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(woken.status, 200);
    assert_eq!(woken.seq(), 4);
    let updates = decoded(&woken);
    assert_eq!(updates.len(), 1);
    assert_eq!((updates[0].seq, &updates[0].op), (4, &dot(9)));

    // Nothing comes: at the end of the wait, an empty Updates at `since`, 12 bytes exactly.
    let started = Instant::now();
    let empty = get(&server.http, "/pictures/lp/updates?since=4&wait=0.4", &[]).await;
    assert!(started.elapsed() >= Duration::from_millis(400));
    assert_eq!(empty.status, 200);
    assert_eq!(empty.seq(), 4);
    assert_eq!(&empty.body[..], &[1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    // No wait: at once.
    let now = get(&server.http, "/pictures/lp/updates?since=4", &[]).await;
    assert_eq!((now.status, now.seq(), now.body.len()), (200, 4, 12));

    // Beyond what the picture has: 410 at once (never updates that would not continue it).
    let beyond = get(&server.http, "/pictures/lp/updates?since=99&wait=10", &[]).await;
    assert_eq!(beyond.status, 410);
    assert!(
        String::from_utf8_lossy(&beyond.body).contains("snapshot.png"),
        "{:?}",
        beyond.body
    );

    // The log is trimmed by a flush: `since=0` is gone; the last seq is still followable.
    wait_stored(&server.data_dir, "lp", 4).await;
    wait_gone(&server.http, "lp", 0).await;
    let gone = get(&server.http, "/pictures/lp/updates?since=2", &[]).await;
    assert_eq!(gone.status, 410);
    let current = get(&server.http, "/pictures/lp/updates?since=4", &[]).await;
    assert_eq!((current.status, current.seq()), (200, 4));
    server.stop().await;
}

#[tokio::test]
async fn long_poll_json_bad_parameters_and_missing_pictures() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--follow-max-wait", "1s"]).await;
    let mut a = client(&server, "js").await;
    draw(&mut a, dot(3)).await;
    draw(
        &mut a,
        Op::Rect {
            x: 1,
            y: 2,
            w: 3,
            h: 4,
            color: [1, 2, 3, 128],
        },
    )
    .await;

    let answer = get(
        &server.http,
        "/pictures/js/updates?since=1",
        &[("accept", "application/json")],
    )
    .await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.header("content-type"), Some("application/json"));
    assert_eq!(answer.seq(), 2);
    let json: serde_json::Value = serde_json::from_slice(&answer.body).unwrap();
    let expected = serde_json::json!({"Updates": [{
        "seq": 2,
        "client_id": a.client_id(),
        "client_seq": 2,
        "op": {"Rect": {"x": 1, "y": 2, "w": 3, "h": 4, "color": [1, 2, 3, 128]}}
    }]});
    assert_eq!(json, expected);

    // A wait longer than --follow-max-wait is cut to it.
    let started = Instant::now();
    let cut = get(&server.http, "/pictures/js/updates?since=2&wait=600", &[]).await;
    let took = started.elapsed();
    assert_eq!((cut.status, cut.seq()), (200, 2));
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_secs(10),
        "{took:?}"
    );

    for (query, needle) in [
        ("", "since is required"),
        ("?since=abc", "since must be"),
        ("?since=-1", "since must be"),
        ("?since=1&wait=-1", "wait must be"),
        ("?since=1&wait=soon", "wait must be"),
    ] {
        let bad = get(&server.http, &format!("/pictures/js/updates{query}"), &[]).await;
        assert_eq!(bad.status, 400, "{query}");
        assert!(
            String::from_utf8_lossy(&bad.body).contains(needle),
            "{query}: {:?}",
            bad.body
        );
    }
    let bad_id = get(&server.http, "/pictures/no%20pe/updates?since=0", &[]).await;
    assert_eq!(bad_id.status, 400);
    // A picture that never existed is not created by following it.
    let missing = get(
        &server.http,
        "/pictures/nothing-here/updates?since=0&wait=1",
        &[],
    )
    .await;
    assert_eq!(missing.status, 404);
    assert!(stored(&server.data_dir, "nothing-here").is_none());
    server.stop().await;
}

#[tokio::test]
async fn following_a_picture_not_open_here_opens_it_and_keeps_it_for_the_next_poll() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]).await;
    let mut a = client(&server, "closed").await;
    draw(&mut a, dot(1)).await;
    draw(&mut a, dot(2)).await;
    a.close(deadline()).await.unwrap();
    wait_stored(&server.data_dir, "closed", 2).await;

    // From the stored seq: nothing new, the follower waits; a drawer's update wakes it.
    let http = server.http.clone();
    let waiting =
        tokio::spawn(
            async move { get(&http, "/pictures/closed/updates?since=2&wait=20", &[]).await },
        );
    let mut b = client(&server, "closed").await;
    assert_eq!(b.last_seq(), 2);
    draw(&mut b, dot(3)).await;
    let woken = waiting.await.unwrap();
    assert_eq!((woken.status, woken.seq()), (200, 3));
    assert_eq!(decoded(&woken)[0].op, dot(3));
    // Before what storage had when the room opened: gone.
    let gone = get(&server.http, "/pictures/closed/updates?since=1", &[]).await;
    assert_eq!(gone.status, 410);
    server.stop().await;
}

#[tokio::test]
async fn tokens_apply_to_updates_and_conditional_snapshots() {
    const SECRET: &str = "follow-suite-secret";
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--token-secret", SECRET]).await;
    let draw_token = mint(SECRET, "tok", Role::Draw, Duration::from_secs(3600)).unwrap();
    let view = mint(SECRET, "tok", Role::View, Duration::from_secs(3600)).unwrap();
    let other = mint(SECRET, "other", Role::View, Duration::from_secs(3600)).unwrap();
    let options = ConnectOptions {
        size: Some((16, 16)),
        token: Some(draw_token),
        ..ConnectOptions::default()
    };
    let mut a = Client::connect_with(&server.url, "tok", options)
        .await
        .unwrap();
    draw(&mut a, dot(1)).await;

    let none = get(&server.http, "/pictures/tok/updates?since=0", &[]).await;
    assert_eq!(none.status, 401);
    assert_eq!(none.header("www-authenticate"), Some("Bearer"));
    let wrong = get(
        &server.http,
        &format!("/pictures/tok/updates?since=0&token={other}"),
        &[],
    )
    .await;
    assert_eq!(wrong.status, 401);
    let by_query = get(
        &server.http,
        &format!("/pictures/tok/updates?since=0&token={view}"),
        &[],
    )
    .await;
    assert_eq!((by_query.status, by_query.seq()), (200, 1));
    let bearer = format!("Bearer {view}");
    let by_header = get(
        &server.http,
        "/pictures/tok/updates?since=0",
        &[("authorization", &bearer)],
    )
    .await;
    assert_eq!(by_header.status, 200);
    assert_eq!(by_header.body, by_query.body);

    // snapshot.png: private to its token holders; a 304 needs the token too.
    let png = get(
        &server.http,
        "/pictures/tok/snapshot.png",
        &[("authorization", &bearer)],
    )
    .await;
    assert_eq!(png.status, 200);
    assert_eq!(png.header("cache-control"), Some("private, no-cache"));
    let etag = png.header("etag").unwrap().to_string();
    let unauthorized = get(
        &server.http,
        "/pictures/tok/snapshot.png",
        &[("if-none-match", &etag)],
    )
    .await;
    assert_eq!(unauthorized.status, 401);
    let revalidated = get(
        &server.http,
        "/pictures/tok/snapshot.png",
        &[("if-none-match", &etag), ("authorization", &bearer)],
    )
    .await;
    assert_eq!(revalidated.status, 304);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_follower_of_a_busy_picture_ends_identical_to_a_websocket_client() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--flush-interval", "100ms"]).await;
    busy_follow(&server.url, &server.http, "busy", 3, 400).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raster_watch_http_follows_to_a_seq_and_saves_the_picture() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]).await;
    let mut a = client(&server, "cli").await;
    draw(&mut a, dot(1)).await;
    let out = dir.path().join("followed.png");
    let raster = std::env::current_exe()
        .unwrap()
        .parent()
        .and_then(std::path::Path::parent)
        .unwrap()
        .join("raster");
    assert!(
        raster.exists(),
        "run `cargo build --workspace --bins` first"
    );
    let mut child = tokio::process::Command::new(&raster)
        .args([
            "--url",
            &server.http,
            "watch",
            "cli",
            "--http",
            "--wait",
            "10",
            "--until-seq",
            "3",
            "-o",
        ])
        .arg(&out)
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    use tokio::io::AsyncBufReadExt;
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    // It starts from the snapshot; the next draws come over its long-polls.
    assert_eq!(
        next_line(&mut lines).await.as_deref(),
        Some("snapshot: 32x16 seq 1")
    );
    draw(&mut a, dot(2)).await;
    draw(&mut a, dot(3)).await;
    let id = a.client_id();
    let mut printed = Vec::new();
    while let Some(line) = next_line(&mut lines).await {
        printed.push(line);
    }
    let status = tokio::time::timeout(PATIENCE, child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success());
    assert_eq!(
        printed,
        [
            format!("seq 2 client {id} #2 pixels (2,1)-(2,1)"),
            format!("seq 3 client {id} #3 pixels (3,1)-(3,1)"),
            "at seq 3".to_string(),
        ]
    );
    let saved = protocol::snapshot::decode_png(&std::fs::read(&out).unwrap(), 4096).unwrap();
    assert_eq!(saved.seq, Some(3));
    assert!(Some(&saved.raster) == a.raster());
    server.stop().await;
}

async fn next_line(
    lines: &mut tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
) -> Option<String> {
    tokio::time::timeout(PATIENCE, lines.next_line())
        .await
        .unwrap()
        .unwrap()
}

#[tokio::test]
async fn followers_beyond_max_followers_get_503_with_retry_after() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--max-followers", "1"]).await;
    let mut a = client(&server, "capped").await;
    draw(&mut a, dot(1)).await;
    let http = server.http.clone();
    let mut waiting =
        tokio::spawn(
            async move { get(&http, "/pictures/capped/updates?since=1&wait=20", &[]).await },
        );
    assert!(
        tokio::time::timeout(Duration::from_millis(300), &mut waiting)
            .await
            .is_err(),
        "the first follower was answered before anything was drawn"
    );
    let refused = get(&server.http, "/pictures/capped/updates?since=1", &[]).await;
    assert_eq!(refused.status, 503);
    assert_eq!(refused.header("retry-after"), Some("5"));
    assert!(String::from_utf8_lossy(&refused.body).contains("--max-followers"));
    // The waiting one is still served, and its slot is free again afterwards.
    draw(&mut a, dot(2)).await;
    let woken = waiting.await.unwrap();
    assert_eq!((woken.status, woken.seq()), (200, 2));
    let next = get(&server.http, "/pictures/capped/updates?since=2", &[]).await;
    assert_eq!((next.status, next.seq()), (200, 2));
    server.stop().await;
}
