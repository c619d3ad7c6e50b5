//! Shared harness of the broadcast service's end-to-end tests: real servers on `127.0.0.1:0`
//! (the broadcast service in embedded mode, or with a real picture-service server in front of
//! it), real WebSocket clients (the `raster_client` library, or raw sockets), and helpers to
//! read what ended up in storage.
//!
//! Every wait here is a wait for a condition with a deadline, never a fixed sleep.

#![allow(dead_code, clippy::unwrap_used)]

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use broadcast_service::Config;
use clap::Parser;
use futures::{SinkExt, StreamExt};
use link::PictureService;
use primary_picture_service::store::fs::FsStore;
use primary_picture_service::{Pps, PpsConfig};
use protocol::snapshot::{decode_png, Decoded};
use protocol::{codec, Raster, ServerMsg};
use raster_client::{Client, ConnectOptions};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

/// How long any single wait in a test may take before the test fails.
pub(crate) const PATIENCE: Duration = Duration::from_secs(30);

pub(crate) fn deadline() -> Instant {
    Instant::now() + PATIENCE
}

/// Logs of the service under test, shown for failing tests (`RUST_LOG` to change the level).
/// The test process's metrics recorder, installed once (as `main` does) and shared by every
/// in-process server, so their `GET /metrics` answer.
pub(crate) fn metrics() -> Option<metrics_exporter_prometheus::PrometheusHandle> {
    static HANDLE: std::sync::OnceLock<metrics_exporter_prometheus::PrometheusHandle> =
        std::sync::OnceLock::new();
    Some(
        HANDLE
            .get_or_init(|| process::install_metrics().expect("the only recorder of this test"))
            .clone(),
    )
}

pub(crate) fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}

/// A running broadcast service.
pub(crate) struct Server {
    /// `ws://127.0.0.1:PORT`, what clients connect to.
    pub url: String,
    /// `http://127.0.0.1:PORT`, for plain HTTP requests.
    pub http: String,
    /// Where the embedded store keeps pictures (`{data_dir}/pictures/{id}.png`).
    pub data_dir: PathBuf,
    running: Running,
}

/// A server task started on a listener, with its graceful shutdown signal.
struct Running {
    /// Resolving it starts the graceful shutdown.
    shutdown: Option<oneshot::Sender<()>>,
    /// The serving task, to see it end cleanly.
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

impl Running {
    /// Spawns `serve(listener, shutdown)`, where `shutdown` resolves when [`Running::stop`] asks.
    fn spawn<F, Fut>(listener: TcpListener, serve: F) -> Running
    where
        F: FnOnce(TcpListener, futures::future::BoxFuture<'static, ()>) -> Fut,
        Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel::<()>();
        let shutdown: futures::future::BoxFuture<'static, ()> = Box::pin(async move {
            let _ = rx.await;
        });
        Running {
            shutdown: Some(tx),
            task: Some(tokio::spawn(serve(listener, shutdown))),
        }
    }

    /// Graceful shutdown; fails the test if `what` does not stop cleanly in time.
    async fn stop(&mut self, what: &str) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let result = tokio::time::timeout(PATIENCE, task)
                .await
                .unwrap_or_else(|_| panic!("{what} did not stop in time"))
                .unwrap_or_else(|e| panic!("{what} task panicked: {e}"));
            if let Err(e) = result {
                panic!("{what} ended with an error: {e:#}");
            }
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        // A test that failed half-way still stops its server (the runtime ends it anyway).
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// A config as the binary would parse it from `args` (listen filled in, and the data dir in
/// embedded mode: with `--pps-url` the binary refuses it).
pub(crate) fn config(data_dir: &Path, args: &[&str]) -> Config {
    let mut argv = vec![
        "broadcast-service".to_string(),
        "--listen".into(),
        "127.0.0.1:0".into(),
    ];
    if !args.iter().any(|a| a.starts_with("--pps-url")) {
        argv.extend(["--data-dir".into(), data_dir.display().to_string()]);
    }
    argv.extend(args.iter().map(|a| a.to_string()));
    Config::parse_from(argv)
}

impl Server {
    /// Embedded mode (in-process picture service, filesystem store under `data_dir`).
    pub(crate) async fn start(data_dir: &Path, args: &[&str]) -> Server {
        let config = config(data_dir, args);
        Self::spawn(data_dir, |listener, shutdown| {
            broadcast_service::run(config, listener, metrics(), shutdown)
        })
        .await
    }

    /// With an injected picture service.
    pub(crate) async fn start_with(
        data_dir: &Path,
        args: &[&str],
        pps: Arc<dyn PictureService>,
    ) -> Server {
        let config = config(data_dir, args);
        Self::spawn(data_dir, |listener, shutdown| {
            broadcast_service::run_with(
                config,
                listener,
                vec![("injected".to_string(), pps)],
                metrics(),
                shutdown,
            )
        })
        .await
    }

    async fn spawn<F, Fut>(data_dir: &Path, run: F) -> Server
    where
        F: FnOnce(TcpListener, futures::future::BoxFuture<'static, ()>) -> Fut,
        Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        init_tracing();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let running = Running::spawn(listener, run);
        Server {
            url: format!("ws://{addr}"),
            http: format!("http://{addr}"),
            data_dir: data_dir.to_path_buf(),
            running,
        }
    }

    /// Graceful shutdown; fails the test if the service does not stop cleanly in time.
    pub(crate) async fn stop(mut self) {
        self.running.stop("service").await;
    }
}

/// A picture-service server (services mode), with the `Pps` it serves.
pub(crate) struct PpsServer {
    /// `ws://127.0.0.1:PORT/bs`, for `--pps-url`.
    pub url: String,
    pub pps: Arc<Pps>,
    running: Running,
}

impl PpsServer {
    /// Serves a `Pps` over a filesystem store under `data_dir`.
    pub(crate) async fn start(data_dir: &Path, config: PpsConfig) -> PpsServer {
        init_tracing();
        let store = Arc::new(FsStore::new(data_dir.to_path_buf()));
        let pps = Pps::new(config, store);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let served = pps.clone();
        let running = Running::spawn(listener, move |listener, shutdown| {
            primary_picture_service::server::serve(listener, served, shutdown)
        });
        PpsServer {
            url: format!("ws://{addr}/bs"),
            pps,
            running,
        }
    }

    pub(crate) async fn stop(mut self) {
        self.running.stop("picture service").await;
        self.pps.shutdown(PATIENCE).await;
    }
}

/// The stored file of a picture, decoded, if it exists.
pub(crate) fn stored(data_dir: &Path, picture: &str) -> Option<Decoded> {
    let path = data_dir.join("pictures").join(format!("{picture}.png"));
    let bytes = std::fs::read(path).ok()?;
    Some(decode_png(&bytes, 4096).unwrap())
}

/// Waits until the stored file of `picture` carries `seq` (files are replaced atomically, so
/// a half-written file is never seen).
pub(crate) async fn wait_stored(data_dir: &Path, picture: &str, seq: u64) -> Decoded {
    let deadline = deadline();
    loop {
        if let Some(decoded) = stored(data_dir, picture) {
            if decoded.seq == Some(seq) {
                return decoded;
            }
            assert!(
                decoded.seq < Some(seq),
                "stored {picture} is at seq {:?}, beyond the last one {seq}",
                decoded.seq
            );
        }
        assert!(
            Instant::now() < deadline,
            "{picture} was not stored at seq {seq} in time (now {:?})",
            stored(data_dir, picture).map(|d| d.seq)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `snapshot.png` decoded, with its `X-Picture-Seq`.
pub(crate) async fn snapshot(server: &Server, picture: &str) -> (u64, Raster) {
    let (seq, png) = raster_client::snapshot(&server.url, picture).await.unwrap();
    let decoded = decode_png(&png, 4096).unwrap();
    assert_eq!(decoded.seq, Some(seq), "tEXt seq and X-Picture-Seq differ");
    (seq, decoded.raster)
}

/// A client that keeps its raster and its log of received updates.
pub(crate) async fn logged_client(
    server: &Server,
    picture: &str,
    size: Option<(u32, u32)>,
) -> Client {
    let options = ConnectOptions {
        size,
        keep_log: true,
        ..ConnectOptions::default()
    };
    Client::connect_with(&server.url, picture, options)
        .await
        .unwrap()
}

/// Raw WebSocket, for sending what a well-behaved client never would.
pub(crate) type Raw =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Opens a raw socket to `picture` and reads its `Welcome`; returns the socket and client id.
pub(crate) async fn raw_join(server: &Server, picture: &str) -> (Raw, u64) {
    let url = format!("{}/pictures/{picture}/ws", server.url);
    let (mut socket, _) = tokio_tungstenite::connect_async(url.as_str())
        .await
        .unwrap();
    match raw_next(&mut socket, deadline()).await {
        RawEvent::Msg(ServerMsg::Welcome { client_id, .. }) => (socket, client_id),
        other => panic!("expected welcome, got {other:?}"),
    }
}

/// What a raw socket received.
#[derive(Debug)]
pub(crate) enum RawEvent {
    Msg(ServerMsg),
    Close(Option<u16>),
    /// The connection ended without a close frame, or with a transport error.
    Ended(String),
}

/// The next protocol message or close on a raw socket (WebSocket pings skipped).
pub(crate) async fn raw_next(socket: &mut Raw, deadline: Instant) -> RawEvent {
    loop {
        let next = tokio::time::timeout_at(deadline, socket.next())
            .await
            .expect("timed out waiting on a raw socket");
        match next {
            None => return RawEvent::Ended("stream ended".into()),
            Some(Err(e)) => return RawEvent::Ended(e.to_string()),
            Some(Ok(Message::Binary(frame))) => {
                return RawEvent::Msg(codec::decode_server(&frame).unwrap())
            }
            Some(Ok(Message::Close(frame))) => {
                return RawEvent::Close(frame.map(|f| u16::from(f.code)))
            }
            Some(Ok(Message::Text(t))) => panic!("server sent a text frame: {t}"),
            Some(Ok(_)) => continue,
        }
    }
}

/// Reads until the server closes; returns the `Error` messages seen and the close code.
pub(crate) async fn raw_until_close(socket: &mut Raw) -> (Vec<(u16, String)>, Option<u16>) {
    let deadline = deadline();
    let mut errors = Vec::new();
    loop {
        match raw_next(socket, deadline).await {
            RawEvent::Msg(ServerMsg::Error { code, message }) => errors.push((code, message)),
            RawEvent::Msg(_) => {}
            RawEvent::Close(code) => return (errors, code),
            RawEvent::Ended(why) => panic!("connection ended without a close frame: {why}"),
        }
    }
}

pub(crate) async fn raw_send(socket: &mut Raw, bytes: Vec<u8>) {
    socket.send(Message::Binary(bytes.into())).await.unwrap();
}

pub(crate) fn close_code(code: CloseCode) -> u16 {
    u16::from(code)
}

/// Draws `n` random ops (mostly translucent, sized to the client's picture) and waits for every
/// echo: afterwards they are acknowledged. Returns the client's last seq.
pub(crate) async fn draw_acked(client: &mut Client, n: usize, seed: u64) -> u64 {
    use rand::SeedableRng;
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let (width, height) = (client.receiver().width(), client.receiver().height());
    let mut last = 0;
    for _ in 0..n {
        let op = raster_client::random_op(&mut rng, width, height, raster_client::Profile::Mixed);
        last = client.draw(op).await.unwrap();
    }
    client.wait_own(last, deadline()).await.unwrap();
    client.last_seq()
}

/// Draws `ops` random ops sized to the client's picture as fast as it can from one task while
/// reading from another; returns the client once its last op has been echoed. Each time the
/// reader looks for the next event it publishes the seq it has reached on `progress`. A
/// rejection, a close or an error fails the test, and so does a resync unless `allow_resync`.
pub(crate) async fn draw_concurrently(
    client: Client,
    ops: u64,
    seed: u64,
    progress: Option<tokio::sync::watch::Sender<u64>>,
    allow_resync: bool,
) -> Client {
    use rand::SeedableRng;
    use raster_client::Event;
    let (width, height) = (client.receiver().width(), client.receiver().height());
    let (mut sender, mut receiver) = client.into_split();
    let reader = tokio::spawn(async move {
        let deadline = deadline();
        while receiver.own_acked() < ops {
            if let Some(progress) = &progress {
                let _ = progress.send(receiver.last_seq());
            }
            match tokio::time::timeout_at(deadline, receiver.next_event()).await {
                Ok(Ok(Event::Rejected { client_seq, reason })) => {
                    panic!("op {client_seq} rejected: {reason}")
                }
                Ok(Ok(Event::Closed { code, reason })) => panic!("closed {code:?}: {reason}"),
                Ok(Ok(Event::Resynced)) if !allow_resync => panic!("resynced while drawing"),
                Ok(Ok(_)) => {}
                Ok(Err(e)) => panic!("drawing client failed: {e}"),
                Err(_) => panic!("timed out at own echo {}", receiver.own_acked()),
            }
        }
        receiver
    });
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    for _ in 0..ops {
        let op = raster_client::random_op(&mut rng, width, height, raster_client::Profile::Mixed);
        sender.draw(op).await.unwrap();
    }
    Client::from_split(sender, reader.await.unwrap())
}

/// A TCP proxy on loopback in front of a server, whose connections a test can cut at once (both
/// sockets dropped, no close frame): a lost network for the client, a vanished peer for the
/// server.
pub(crate) struct CutProxy {
    /// `ws://127.0.0.1:PORT`, what clients connect to instead of the server.
    pub url: String,
    /// The connections forwarded so far; `cut` aborts them.
    links: Arc<std::sync::Mutex<Vec<JoinHandle<()>>>>,
    /// Set by [`CutProxy::lose_downstream`].
    lose_down: Arc<std::sync::atomic::AtomicBool>,
    accept: JoinHandle<()>,
}

impl CutProxy {
    /// Forwards every connection to `target` (`ws://HOST:PORT`, a server's `url`).
    pub(crate) async fn start(target: &str) -> CutProxy {
        let target = target
            .strip_prefix("ws://")
            .unwrap_or(target)
            .trim_end_matches('/')
            .to_string();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let links: Arc<std::sync::Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let lose_down: Arc<std::sync::atomic::AtomicBool> = Arc::default();
        let accepted = links.clone();
        let losing = lose_down.clone();
        let accept = tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let target = target.clone();
                let losing = losing.clone();
                let link = tokio::spawn(async move {
                    use tokio::io::{AsyncReadExt, AsyncWriteExt};
                    let Ok(outbound) = tokio::net::TcpStream::connect(&target).await else {
                        return;
                    };
                    let (mut from_client, mut to_client) = inbound.into_split();
                    let (mut from_server, mut to_server) = outbound.into_split();
                    let up = tokio::io::copy(&mut from_client, &mut to_server);
                    let down = async {
                        let mut buf = vec![0u8; 64 * 1024];
                        loop {
                            let n = match from_server.read(&mut buf).await {
                                Ok(0) | Err(_) => break,
                                Ok(n) => n,
                            };
                            if losing.load(std::sync::atomic::Ordering::SeqCst) {
                                continue;
                            }
                            if to_client.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                    };
                    tokio::select! {
                        _ = up => {}
                        () = down => {}
                    }
                });
                accepted.lock().unwrap().push(link);
            }
        });
        CutProxy {
            url: format!("ws://{addr}"),
            links,
            lose_down,
            accept,
        }
    }

    /// From now on, what the server sends is dropped (on every connection, for good): the
    /// client's ops still reach the server, their echoes are lost on the way back.
    pub(crate) fn lose_downstream(&self) {
        self.lose_down
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Drops every connection made through the proxy so far (new ones are still forwarded).
    pub(crate) fn cut(&self) {
        for link in self.links.lock().unwrap().drain(..) {
            link.abort();
        }
    }
}

impl Drop for CutProxy {
    fn drop(&mut self) {
        self.cut();
        self.accept.abort();
    }
}

/// A plain HTTP answer: status, headers, body.
pub(crate) struct Answer {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: bytes::Bytes,
}

impl Answer {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// `X-Picture-Seq`.
    pub(crate) fn seq(&self) -> u64 {
        self.header("x-picture-seq").unwrap().parse().unwrap()
    }
}

/// `GET {http}{path}` with `headers`.
pub(crate) async fn get(http: &str, path: &str, headers: &[(&str, &str)]) -> Answer {
    let mut request = reqwest::Client::new().get(format!("{http}{path}"));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.bytes().await.unwrap();
    Answer {
        status,
        headers,
        body,
    }
}

/// Waits until `GET /pictures/{picture}/updates?since={since}` answers 410 (the log was
/// trimmed past `since` by a flush), polling.
pub(crate) async fn wait_gone(http: &str, picture: &str, since: u64) {
    let deadline = deadline();
    loop {
        let answer = get(
            http,
            &format!("/pictures/{picture}/updates?since={since}"),
            &[],
        )
        .await;
        if answer.status == 410 {
            return;
        }
        assert_eq!(answer.status, 200, "{:?}", answer.body);
        assert!(
            Instant::now() < deadline,
            "updates after {since} of {picture} still held"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A busy picture followed over plain HTTP (PROTOCOL.md §16) while a WebSocket client watches:
/// `drawers` clients draw `ops` random ops each, concurrently; the follower long-polls, and
/// once it has some of the updates it pauses until a flush has trimmed the service's log past
/// where it stands, so that it is answered `410` and resyncs from `snapshot.png`. Both end at
/// the last seq with the same pixels, which the follower's and the watcher's rasters show.
/// The picture must not exist yet; `size` is created by the first drawer.
pub(crate) async fn busy_follow(url: &str, http: &str, picture: &str, drawers: u64, ops: u64) {
    let options = || ConnectOptions {
        size: Some((96, 64)),
        ..ConnectOptions::default()
    };
    let mut watcher = Client::connect_with(url, picture, options()).await.unwrap();
    let mut clients = Vec::new();
    for _ in 0..drawers {
        clients.push(Client::connect_with(url, picture, options()).await.unwrap());
    }
    let mut follower = raster_client::Follower::start(http, picture, None)
        .await
        .unwrap();
    let drawing: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(i, c)| tokio::spawn(draw_concurrently(c, ops, 100 + i as u64, None, false)))
        .collect();
    let total = drawers * ops;
    let deadline = deadline();
    let wait = Duration::from_secs(2);
    // Some updates over long-polls first.
    while follower.seq() < total / 4 {
        follower.step(wait).await.unwrap();
        assert!(
            Instant::now() < deadline,
            "follower stuck at {}",
            follower.seq()
        );
    }
    // Then a pause long enough for a flush to trim the log past it: 410, and a resync.
    wait_gone(http, picture, follower.seq()).await;
    let before = follower.seq();
    match follower.step(wait).await.unwrap() {
        raster_client::http::Step::Resynced { seq } => assert!(seq > before, "{seq} {before}"),
        other => panic!("expected a resync after 410, got {other:?}"),
    }
    assert_eq!(follower.resyncs(), 1);
    for task in drawing {
        task.await.unwrap();
    }
    // Every op got one seq (the picture was new): the last one is `total`.
    watcher.sync_to(total, deadline).await.unwrap();
    assert_eq!(watcher.last_seq(), total);
    follower.catch_up(total, deadline).await.unwrap();
    assert_eq!(follower.seq(), total);
    let over_ws = watcher.raster().unwrap();
    assert!(
        follower.raster() == over_ws,
        "the HTTP follower's picture differs from the WebSocket client's"
    );
    // And both are the service's picture.
    let (seq, png) = raster_client::snapshot(http, picture).await.unwrap();
    assert_eq!(seq, total);
    assert!(&decode_png(&png, 4096).unwrap().raster == over_ws);
}
