//! Fault tests: nothing acknowledged is lost. An update is acknowledged when its sender sees
//! the echo; every such update must end up in storage across a storage outage, a crash
//! (SIGKILL) of the picture service, and graceful shutdowns (SIGTERM) of either service.
//! The picture service runs as a real process here where the fault is a process fault.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod procs;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use primary_picture_service::store::memory::MemoryStore;
use primary_picture_service::store::StoredMeta;
use primary_picture_service::{Pps, PpsConfig};
use procs::*;
use protocol::snapshot::{decode_png, encode_png, Compression};
use protocol::Raster;
use raster_client::Client;
use tokio::time::Instant;

/// Waits until `snapshot.png` (read-your-writes) reports `seq`: PPS has applied that far.
async fn wait_applied(server: &Server, picture: &str, seq: u64) {
    let (got, _) = snapshot(server, picture).await;
    assert_eq!(got, seq);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_outage_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(MemoryStore::new());
    let config = PpsConfig {
        flush_interval: Duration::from_millis(50),
        min_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(200),
        ..PpsConfig::default()
    };
    let pps = Pps::new(config, store.clone());
    let server = Server::start_with(dir.path(), &["--join-timeout", "1s"], pps).await;

    // A picture that exists only in storage: while storage is down it must not open blank.
    let mut stored = Raster::new(8, 8);
    stored.apply(&protocol::Op::Clear {
        color: [1, 2, 3, 200],
    });
    let png = encode_png(&stored, 7, Compression::Fast).unwrap();
    store.put("stored", Bytes::from(png), StoredMeta::new(7, 8, 8));

    let mut a = Client::connect(&server.url, "outage", Some((64, 64)))
        .await
        .unwrap();
    draw_acked(&mut a, 40, 1).await;
    store.set_failing(true);
    draw_acked(&mut a, 40, 2).await;

    // Joining the open picture still works: PPS has it in memory.
    let mut b = Client::connect(&server.url, "outage", None).await.unwrap();
    draw_acked(&mut b, 40, 3).await;
    let last = b.last_seq();
    assert_eq!(last, 120);
    a.sync_to(last, deadline()).await.unwrap();
    assert!(a.raster() == b.raster());

    // Joining the stored-but-unloadable picture fails clearly (never a blank picture).
    let (mut raw, _) = {
        let url = format!("{}/pictures/stored/ws", server.url);
        tokio_tungstenite::connect_async(url.as_str())
            .await
            .unwrap()
    };
    let (errors, close) = raw_until_close(&mut raw).await;
    assert_eq!(close, Some(1013));
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].0, 503);

    let expected = a.raster().unwrap().clone();
    a.close(deadline()).await.unwrap();
    b.close(deadline()).await.unwrap();
    // The release keeps failing while storage is down; nothing is dropped meanwhile.
    let saves_before = store.saves();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(store.get("outage").is_none_or(|p| p.meta.seq < last));
    store.set_failing(false);

    let deadline = deadline();
    loop {
        if let Some(picture) = store.get("outage") {
            if picture.meta.seq == last {
                let decoded = decode_png(&picture.png, 4096).unwrap();
                assert_eq!(decoded.seq, Some(last));
                assert!(decoded.raster == expected, "stored pixels differ");
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "picture not stored after storage healed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(store.saves() > saves_before);
    // The unloadable picture opens normally now, with its stored seq.
    let c = Client::connect(&server.url, "stored", None).await.unwrap();
    assert_eq!(c.receiver().snapshot_seq(), 7);
    assert!(c.raster() == Some(&stored));
    c.close(common::deadline()).await.unwrap();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn picture_service_crash_loses_nothing() {
    let bs_dir = tempfile::tempdir().unwrap();
    let pps_dir = tempfile::tempdir().unwrap();
    let port = free_port();
    // Periodic flushes far away: at the crash, PPS holds everything in memory only.
    let pps_args = ["--flush-interval", "1h"];
    let mut pps = start_pps(port, pps_dir.path(), &pps_args);
    wait_healthy(&format!("http://127.0.0.1:{port}")).await;
    let pps_url = format!("ws://127.0.0.1:{port}/bs");
    let server = Server::start(bs_dir.path(), &["--pps-url", &pps_url]).await;

    let mut a = Client::connect(&server.url, "crash", Some((64, 64)))
        .await
        .unwrap();
    let mut b = Client::connect(&server.url, "crash", None).await.unwrap();
    draw_acked(&mut a, 60, 10).await;
    draw_acked(&mut b, 60, 11).await;
    wait_applied(&server, "crash", 120).await;

    pps.child.kill().unwrap();
    assert!(!pps.wait().await);
    // Nothing drawn was flushed before the crash: storage has only the blank picture that the
    // takeover of the first lease wrote (docs/scaling.md).
    assert_eq!(
        stored(pps_dir.path(), "crash").map(|d| d.seq),
        Some(Some(0)),
        "nothing drawn was flushed before the crash"
    );

    // Drawing goes on while the picture service is gone.
    draw_acked(&mut a, 30, 12).await;
    let mut pps = start_pps(port, pps_dir.path(), &pps_args);
    wait_healthy(&format!("http://127.0.0.1:{port}")).await;
    draw_acked(&mut b, 30, 13).await;
    let last = b.last_seq();
    assert_eq!(last, 180);
    a.sync_to(last, deadline()).await.unwrap();
    let expected = a.raster().unwrap().clone();
    assert!(b.raster() == Some(&expected));

    // The restarted service got the replayed log: snapshot.png is exact.
    let (seq, raster) = snapshot(&server, "crash").await;
    assert_eq!(seq, last);
    assert!(raster == expected);

    a.close(deadline()).await.unwrap();
    b.close(deadline()).await.unwrap();
    let decoded = wait_stored(pps_dir.path(), "crash", last).await;
    assert!(decoded.raster == expected, "stored pixels differ");
    server.stop().await;
    pps.signal("-TERM");
    assert!(pps.wait().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn picture_service_sigterm_flushes_dirty_pictures() {
    let bs_dir = tempfile::tempdir().unwrap();
    let pps_dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut pps = start_pps(port, pps_dir.path(), &["--flush-interval", "1h"]);
    wait_healthy(&format!("http://127.0.0.1:{port}")).await;
    let pps_url = format!("ws://127.0.0.1:{port}/bs");
    // The picture service does not come back in this test: don't wait long for it at the end.
    let server = Server::start(
        bs_dir.path(),
        &["--pps-url", &pps_url, "--drain-timeout", "1s"],
    )
    .await;

    let mut clients = Vec::new();
    for (i, picture) in ["dirty-1", "dirty-2", "dirty-3"].iter().enumerate() {
        let mut client = Client::connect(&server.url, picture, Some((64, 64)))
            .await
            .unwrap();
        draw_acked(&mut client, 25 + i, 20 + i as u64).await;
        wait_applied(&server, picture, client.last_seq()).await;
        clients.push((picture, client));
    }
    // The clients stay connected: only the shutdown flush can store these pictures.
    pps.signal("-TERM");
    assert!(pps.wait().await, "picture service did not exit cleanly");
    for (picture, client) in &clients {
        let decoded = stored(pps_dir.path(), picture).expect("dirty picture flushed at SIGTERM");
        assert_eq!(decoded.seq, Some(client.last_seq()));
        assert!(Some(&decoded.raster) == client.raster());
    }
    for (_, client) in clients {
        drop(client);
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broadcast_service_sigterm_stores_every_update() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let args: Vec<String> = [
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--data-dir",
        &dir.path().display().to_string(),
        "--flush-interval",
        "1h",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut bs = Process::spawn(Path::new(env!("CARGO_BIN_EXE_broadcast-service")), &args);
    let base = format!("http://127.0.0.1:{port}");
    wait_healthy(&base).await;

    let mut a = Client::connect(&base, "term", Some((64, 64)))
        .await
        .unwrap();
    draw_acked(&mut a, 80, 30).await;
    let last = a.last_seq();
    let expected = a.raster().unwrap().clone();
    bs.signal("-TERM");
    // The client is told the service restarts (1012) ...
    let deadline = deadline();
    loop {
        match tokio::time::timeout_at(deadline, a.next_event())
            .await
            .unwrap()
        {
            Ok(raster_client::Event::Closed { code, .. }) => {
                assert_eq!(code, Some(1012));
                break;
            }
            Ok(_) => {}
            Err(error) => panic!("client error before the close: {error}"),
        }
    }
    // ... and the process exits only once the picture is durable.
    assert!(bs.wait().await, "broadcast service did not exit cleanly");
    let decoded = stored(dir.path(), "term").expect("picture stored at shutdown");
    assert_eq!(decoded.seq, Some(last));
    assert!(decoded.raster == expected);
}

/// A broadcast service pointed at a wrong picture-service URL (here without its `/bs` path)
/// says why it is not ready: `/readyz` names the link and its state, and `/metrics` counts the
/// failed attempts by cause (each attempt is also logged, once per backoff step).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_picture_service_url_explains_itself() {
    let bs_dir = tempfile::tempdir().unwrap();
    let pps_dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut pps = start_pps(port, pps_dir.path(), &[]);
    wait_healthy(&format!("http://127.0.0.1:{port}")).await;
    let wrong = format!("ws://127.0.0.1:{port}");
    let server = Server::start(bs_dir.path(), &["--pps-url", &wrong]).await;
    let http = reqwest::Client::new();
    let deadline = deadline();
    loop {
        let metrics = http
            .get(format!("{}/metrics", server.http))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let counted = metrics.lines().any(|line| {
            line.starts_with("bs_pps_link_failures_total{")
                && line.contains(&format!("url=\"{wrong}\""))
                && line.contains("cause=\"http_status\"")
        });
        if counted {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "failed attempts not counted:\n{metrics}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let ready = http
        .get(format!("{}/readyz", server.http))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 503);
    let body = ready.text().await.unwrap();
    assert!(body.contains("no picture service reachable"), "{body}");
    assert!(
        body.contains(&format!("picture service {wrong} (unknown): unreachable")),
        "{body}"
    );
    server.stop().await;
    pps.signal("-TERM");
    assert!(pps.wait().await);
}
