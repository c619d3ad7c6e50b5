//! Services mode: a real server on 127.0.0.1 and [`RemotePps`] against it over WebSocket.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use link::remote::RemotePps;
use link::{PictureService, PpsEvent};
use primary_picture_service::server::serve;
use primary_picture_service::store::memory::MemoryStore;
use primary_picture_service::store::Store;
use primary_picture_service::{Pps, PpsConfig};
use protocol::pps::{PpsError, ReleaseRequest, SnapshotRequest};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{broadcast, oneshot};
use tokio::task::JoinHandle;

const WAIT: Duration = Duration::from_secs(10);

/// A running server; `stop` shuts it down and waits for it.
struct Server {
    addr: SocketAddr,
    pps: Arc<Pps>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<anyhow::Result<()>>,
}

impl Server {
    async fn start(listener: TcpListener, store: Arc<dyn Store>) -> Server {
        let addr = listener.local_addr().unwrap();
        let pps = Pps::new(
            PpsConfig {
                workers: 2,
                flush_interval: Duration::from_secs(3600),
                ..PpsConfig::default()
            },
            store,
        );
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(serve(listener, pps.clone(), async move {
            let _ = stopped.await;
        }));
        Server {
            addr,
            pps,
            stop: Some(stop),
            task,
        }
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(WAIT, self.task)
            .await
            .expect("server did not stop")
            .unwrap()
            .unwrap();
        self.pps.shutdown(WAIT).await;
    }

    fn url(&self) -> String {
        format!("ws://{}/bs", self.addr)
    }
}

async fn next_event(events: &mut broadcast::Receiver<PpsEvent>) -> PpsEvent {
    tokio::time::timeout(WAIT, events.recv())
        .await
        .expect("no event")
        .unwrap()
}

/// A bare HTTP/1.1 GET: status code and body.
async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let status = response[9..12].parse().unwrap();
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

#[tokio::test]
async fn round_trip_and_reconnect_after_a_server_restart() {
    let store = Arc::new(MemoryStore::new());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = Server::start(listener, store.clone()).await;
    let addr = server.addr;
    let remote = RemotePps::connect(&server.url());
    let mut events = remote.events();
    eventually("the client to connect", WAIT, || remote.is_ready()).await;

    let blank = remote
        .snapshot(SnapshotRequest {
            picture: "p".to_string(),
            create: Some((W, H)),
            min_seq: 0,
            lz4: false,
            latest: false,
            force: false,
        })
        .await
        .unwrap();
    assert_snapshot(&blank, &expected(0), 0);
    assert_eq!(acquire(remote.as_ref(), "p").await, (FIRST_LEASE, 0));
    // Sent back to back without awaiting: order is kept over the connection.
    let first = remote.apply(batch("p", 1, 3));
    let second = remote.apply(batch("p", 4, 6));
    assert_eq!(first.await, Ok(3));
    assert_eq!(second.await, Ok(6));
    assert_eq!(
        remote.apply(batch("p", 9, 9)).await,
        Err(PpsError::Gap {
            have: 6,
            first_seq: 9
        })
    );
    let snapshot = remote
        .snapshot(SnapshotRequest {
            picture: "p".to_string(),
            create: None,
            min_seq: 6,
            lz4: false,
            latest: false,
            force: false,
        })
        .await
        .unwrap();
    assert_snapshot(&snapshot, &expected(6), 6);
    // The LZ4 form over the connection (PROTOCOL.md §8): PNG to the first asker, then the
    // LZ4 block alone.
    let ask_lz4 = || SnapshotRequest {
        picture: "p".to_string(),
        create: None,
        min_seq: 6,
        lz4: true,
        latest: false,
        force: false,
    };
    assert_snapshot(&remote.snapshot(ask_lz4()).await.unwrap(), &expected(6), 6);
    let lz4 = remote.snapshot(ask_lz4()).await.unwrap();
    assert_eq!((lz4.width, lz4.height, lz4.seq), (W, H, 6));
    let block = lz4.image.lz4().expect("the lz4 form");
    let raster = protocol::snapshot::decode_lz4(block, W, H, 4096).unwrap();
    assert_eq!(raster.pixels(), expected(6).pixels());
    let release = ReleaseRequest {
        picture: "p".to_string(),
        lease: FIRST_LEASE,
        last_seq: 6,
    };
    assert_eq!(remote.release(release).await, Ok(6));
    assert_eq!(
        next_event(&mut events).await,
        PpsEvent::Flushed {
            picture: "p".to_string(),
            seq: 6
        }
    );
    assert_eq!(http_get(addr, "/healthz").await, (200, "ok".to_string()));
    assert_eq!(http_get(addr, "/readyz").await.0, 200);

    // The server goes away: pending and new requests fail fast.
    server.stop().await;
    eventually("the client to notice", WAIT, || !remote.is_ready()).await;
    let refused = remote
        .snapshot(SnapshotRequest {
            picture: "p".to_string(),
            create: None,
            min_seq: 0,
            lz4: false,
            latest: false,
            force: false,
        })
        .await;
    assert!(
        matches!(refused, Err(PpsError::Unavailable(_))),
        "{refused:?}"
    );

    // A new server on the same port, same storage: the client comes back by itself.
    let listener = TcpListener::bind(addr).await.unwrap();
    let server = Server::start(listener, store.clone()).await;
    assert_eq!(next_event(&mut events).await, PpsEvent::Reconnected);
    assert!(remote.is_ready());
    let snapshot = remote
        .snapshot(SnapshotRequest {
            picture: "p".to_string(),
            create: None,
            min_seq: 0,
            lz4: false,
            latest: false,
            force: false,
        })
        .await
        .unwrap();
    assert_snapshot(&snapshot, &expected(6), 6);
    // Released before: taken again with a new epoch.
    let (lease, seq) = acquire(remote.as_ref(), "p").await;
    assert_eq!((lease.epoch, seq), (2, 6));
    assert_eq!(remote.apply(batch_with(lease, "p", 5, 8)).await, Ok(8));
    let snapshot = remote
        .snapshot(SnapshotRequest {
            picture: "p".to_string(),
            create: None,
            min_seq: 8,
            lz4: false,
            latest: false,
            force: false,
        })
        .await
        .unwrap();
    assert_snapshot(&snapshot, &expected(8), 8);
    server.stop().await;
}

#[tokio::test]
async fn a_client_started_before_the_server_connects_later() {
    // Reserve a port, then free it so nothing listens there yet.
    let addr = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let remote = RemotePps::connect(&format!("ws://{addr}/bs"));
    let early = remote.apply(batch("q", 1, 1)).await;
    assert!(matches!(early, Err(PpsError::Unavailable(_))), "{early:?}");
    let store = Arc::new(MemoryStore::new());
    let server = Server::start(TcpListener::bind(addr).await.unwrap(), store).await;
    eventually("the client to connect", WAIT, || remote.is_ready()).await;
    acquire(remote.as_ref(), "q").await;
    assert_eq!(remote.apply(batch("q", 1, 1)).await, Ok(1));
    server.stop().await;
}

#[tokio::test]
async fn readiness_follows_shutdown() {
    let store = Arc::new(MemoryStore::new());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = Server::start(listener, store).await;
    assert_eq!(http_get(server.addr, "/readyz").await.0, 200);
    assert_eq!(http_get(server.addr, "/metrics").await.0, 404);
    server.pps.shutdown(WAIT).await;
    assert_eq!(http_get(server.addr, "/readyz").await.0, 503);
    server.stop().await;
}

#[tokio::test]
async fn a_silent_server_is_detected_by_keepalive() {
    // Completes the WebSocket handshake, then never reads (so never answers pings) nor closes.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let silent = tokio::spawn(async move {
        let mut held = Vec::new();
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            held.push(tokio_tungstenite::accept_async(tcp).await.unwrap());
        }
    });
    let remote = RemotePps::connect_with(
        &format!("ws://{addr}/bs"),
        link::remote::RemoteOptions {
            ping_interval: Duration::from_millis(50),
            timeout: Duration::from_millis(150),
            ..Default::default()
        },
    );
    let mut events = remote.events();
    eventually("the client to connect", WAIT, || remote.is_ready()).await;
    // A request on a dead connection fails once the silence is noticed, not never.
    let stuck = remote.apply(batch("p", 1, 1));
    let result = tokio::time::timeout(WAIT, stuck)
        .await
        .expect("request hung");
    assert!(
        matches!(result, Err(PpsError::Unavailable(_))),
        "{result:?}"
    );
    // And it reconnects (to the same silent server) by itself.
    assert_eq!(next_event(&mut events).await, PpsEvent::Reconnected);
    silent.abort();
}
