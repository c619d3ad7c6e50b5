//! A cluster of real processes on loopback (docs/scaling.md): picture services sharing one
//! store (a directory, whose conditional writes lock across processes, or an S3 bucket on
//! LocalStack) and broadcast services listing them all, with short timeouts so that faults
//! play out in seconds. Plus the clients the cluster tests drive it with:
//!
//! - a **drawer** draws *marker* ops (one opaque pixel of a colour of its own at a place of its
//!   own, so that the final picture shows which ops are in it) and now and then a translucent
//!   rectangle (so that the order matters to the pixels), waits for each window's echoes, and
//!   when its connection breaks, connects to another broadcast service and resends only what
//!   was not acknowledged: an acknowledged marker missing from the final picture is an
//!   acknowledged op lost;
//! - every client logs every update it receives: two logs that give one seq to two ops are two
//!   orders.

#![allow(dead_code, clippy::unwrap_used)]

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use protocol::{Op, Point, Raster};
use raster_client::{Client, ClientError, ConnectOptions, LogEntry};
use tokio::time::Instant;

use crate::common::deadline;
use crate::procs::{free_port, pps_binary, wait_healthy, Process};

/// Marker pictures are this wide; each drawer has `ROWS_PER_DRAWER` rows of markers.
pub(crate) const WIDTH: u32 = 128;
pub(crate) const ROWS_PER_DRAWER: u32 = 8;
/// Rows below the markers where the translucent rectangles go.
pub(crate) const SCRATCH_ROWS: u32 = 32;

/// Where a cluster's picture services keep pictures.
pub(crate) enum Storage {
    /// One directory shared by every picture service.
    Dir(PathBuf),
    /// The test bucket on LocalStack, under a prefix of the test's own.
    S3 { s3: crate::s3::S3, prefix: String },
}

impl Storage {
    /// The picture service's arguments naming this store, and the environment it needs (a
    /// `RUST_LOG` of `CLUSTER_LOG`, default `warn`; S3 credentials and endpoint).
    pub(crate) fn args_env(&self) -> (Vec<String>, Vec<(String, String)>) {
        let mut env = vec![(
            "RUST_LOG".to_string(),
            std::env::var("CLUSTER_LOG").unwrap_or_else(|_| "warn".to_string()),
        )];
        let args = match self {
            Storage::Dir(dir) => vec!["--data-dir".into(), dir.display().to_string()],
            Storage::S3 { s3, prefix } => {
                env.push(("AWS_ENDPOINT_URL".into(), s3.endpoint.clone()));
                env.push(("AWS_REGION".into(), "us-east-1".into()));
                env.push(("AWS_ACCESS_KEY_ID".into(), "test".into()));
                env.push(("AWS_SECRET_ACCESS_KEY".into(), "test".into()));
                vec!["--store".into(), format!("s3://{}/{prefix}", s3.bucket)]
            }
        };
        (args, env)
    }
}

/// One node: its process and how to start it again.
pub(crate) struct Node {
    pub port: u16,
    bin: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    pub process: Option<Process>,
}

impl Node {
    pub(crate) fn start(
        bin: PathBuf,
        port: u16,
        args: Vec<String>,
        env: Vec<(String, String)>,
    ) -> Node {
        let mut node = Node {
            port,
            bin,
            args,
            env,
            process: None,
        };
        node.restart();
        node
    }

    /// Starts the process again with the same arguments (it must not be running).
    pub(crate) fn restart(&mut self) {
        let env: Vec<(&str, &str)> = self
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        self.process = Some(Process::spawn_with_env(&self.bin, &self.args, &env));
    }

    /// The URL under which a picture service advertises itself (and is listed in
    /// `--pps-url`).
    pub(crate) fn pps_url(&self) -> String {
        format!("ws://127.0.0.1:{}/bs", self.port)
    }

    pub(crate) fn http(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub(crate) fn ws(&self) -> String {
        format!("ws://127.0.0.1:{}", self.port)
    }

    pub(crate) fn signal(&self, signal: &str) {
        self.process.as_ref().unwrap().signal(signal);
    }

    /// SIGKILL, and waits for the process to be gone.
    pub(crate) async fn kill(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.signal("-KILL");
            assert!(!process.wait().await);
        }
    }

    /// SIGTERM, and waits for a clean exit.
    pub(crate) async fn terminate(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.signal("-TERM");
            assert!(process.wait().await, "{} did not exit cleanly", self.port);
        }
    }

    pub(crate) async fn healthy(&self) {
        wait_healthy(&self.http()).await;
    }

    /// A counter or gauge from `/metrics` (summed over its label sets), 0 when absent.
    pub(crate) async fn metric(&self, name: &str) -> f64 {
        let text = reqwest::get(format!("{}/metrics", self.http()))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .filter(|line| {
                // `name` may carry labels (`x{a="b"}`): then they must be the line's first.
                line.strip_prefix(name).is_some_and(|rest| {
                    rest.starts_with(' ')
                        || rest.starts_with('{')
                        || rest.starts_with(',')
                        || name.ends_with('}')
                })
            })
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }
}

pub(crate) struct Cluster {
    pub pps: Vec<Node>,
    pub bs: Vec<Node>,
    pub storage: Storage,
    /// The picture services' write-ahead logs (`wal-{port}`), kept across restarts.
    pub wal_dirs: tempfile::TempDir,
}

impl Cluster {
    /// `pps` picture services and `bs` broadcast services; `lease_timeout` for the picture
    /// services; extra arguments for each kind.
    pub(crate) async fn start(
        storage: Storage,
        pps: usize,
        bs: usize,
        lease_timeout: &str,
        pps_extra: &[&str],
        bs_extra: &[&str],
    ) -> Cluster {
        let pps_ports: Vec<u16> = (0..pps).map(|_| free_port()).collect();
        let urls: Vec<String> = pps_ports
            .iter()
            .map(|port| format!("ws://127.0.0.1:{port}/bs"))
            .collect();
        let (store_args, env) = storage.args_env();
        let wal_dirs = tempfile::tempdir().unwrap();
        let pps: Vec<Node> = pps_ports
            .iter()
            .map(|&port| {
                let mut args = vec![
                    "--wal-dir".to_string(),
                    wal_dirs
                        .path()
                        .join(format!("wal-{port}"))
                        .display()
                        .to_string(),
                    "--listen".into(),
                    format!("127.0.0.1:{port}"),
                    "--lease-timeout".into(),
                    lease_timeout.into(),
                    "--link-timeout".into(),
                    "1s".into(),
                    "--min-backoff".into(),
                    "20ms".into(),
                    "--max-backoff".into(),
                    "200ms".into(),
                ];
                args.extend(store_args.iter().cloned());
                args.extend(pps_extra.iter().map(|s| s.to_string()));
                Node::start(pps_binary(), port, args, env.clone())
            })
            .collect();
        for node in &pps {
            node.healthy().await;
        }
        let bs: Vec<Node> = (0..bs)
            .map(|_| {
                let port = free_port();
                let mut args = vec![
                    "--listen".to_string(),
                    format!("127.0.0.1:{port}"),
                    "--pps-url".into(),
                    urls.join(","),
                    "--pps-timeout".into(),
                    "1s".into(),
                    "--pps-ping-interval".into(),
                    "200ms".into(),
                    "--pps-min-backoff".into(),
                    "20ms".into(),
                    "--pps-max-backoff".into(),
                    "500ms".into(),
                    "--join-timeout".into(),
                    "20s".into(),
                    "--drain-timeout".into(),
                    "10s".into(),
                ];
                args.extend(bs_extra.iter().map(|s| s.to_string()));
                Node::start(bs_binary(), port, args, env.clone())
            })
            .collect();
        for node in &bs {
            node.healthy().await;
        }
        Cluster {
            pps,
            bs,
            storage,
            wal_dirs,
        }
    }

    /// Which picture service `picture` is placed on first (index into `pps`), as the
    /// broadcast services compute it from their `--pps-url` list.
    pub(crate) fn placed_on(&self, picture: &str) -> usize {
        let urls: Vec<String> = self.pps.iter().map(Node::pps_url).collect();
        protocol::placement::rendezvous(picture, &urls)[0]
    }

    /// The broadcast services' WebSocket URLs, starting at `first` (round robin).
    pub(crate) fn bs_urls_from(&self, first: usize) -> Vec<String> {
        let n = self.bs.len();
        (0..n).map(|i| self.bs[(first + i) % n].ws()).collect()
    }

    /// The broadcast services up now.
    pub(crate) fn live_bs(&self) -> Vec<&Node> {
        self.bs.iter().filter(|n| n.process.is_some()).collect()
    }
}

pub(crate) fn bs_binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_broadcast-service"))
}

/// The marker op `index` of drawer `drawer`: one opaque pixel of its own.
pub(crate) fn marker(drawer: u32, index: u32) -> Op {
    let (x, y) = marker_point(drawer, index);
    Op::Pixels {
        color: marker_color(drawer, index),
        points: vec![Point::new(x, y)],
    }
}

pub(crate) fn marker_point(drawer: u32, index: u32) -> (i32, i32) {
    assert!(
        index < WIDTH * ROWS_PER_DRAWER,
        "drawer {drawer} has no room for marker {index}"
    );
    (
        (index % WIDTH) as i32,
        (drawer * ROWS_PER_DRAWER + index / WIDTH) as i32,
    )
}

pub(crate) fn marker_color(drawer: u32, index: u32) -> [u8; 4] {
    let v = drawer * 7919 + index * 31 + 1;
    [
        (v % 251) as u8,
        (v / 251 % 251) as u8,
        (drawer * 40 % 256) as u8,
        255,
    ]
}

/// A translucent rectangle in the scratch rows, below every drawer's markers.
pub(crate) fn scratch(drawers: u32, drawer: u32, index: u32) -> Op {
    Op::Rect {
        x: ((index * 13 + drawer * 29) % (WIDTH - 8)) as i32,
        y: (drawers * ROWS_PER_DRAWER + (index * 7) % (SCRATCH_ROWS - 6)) as i32,
        w: 8,
        h: 6,
        color: [
            (index * 37 % 256) as u8,
            (drawer * 91 % 256) as u8,
            200,
            100,
        ],
    }
}

pub(crate) fn picture_size(drawers: u32) -> (u32, u32) {
    (WIDTH, drawers * ROWS_PER_DRAWER + SCRATCH_ROWS)
}

/// Connects to the first broadcast service of `urls` that takes the client.
pub(crate) async fn connect_any(urls: &[String], picture: &str, size: (u32, u32)) -> Client {
    let deadline = deadline();
    loop {
        for url in urls {
            let options = ConnectOptions {
                size: Some(size),
                keep_log: true,
                ..ConnectOptions::default()
            };
            if let Ok(client) = Client::connect_with(url, picture, options).await {
                return client;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no broadcast service took {picture}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What a drawer did: its acknowledged markers and every update it saw.
#[derive(Default)]
pub(crate) struct Drawn {
    /// Marker index → the seq its echo came at.
    pub acked: HashMap<u32, u64>,
    /// Every update seen, connection after connection.
    pub logs: Vec<LogEntry>,
    /// How many times it had to connect again.
    pub reconnects: u32,
    /// Its last connection, still open.
    pub client: Option<Client>,
}

/// Draws markers `0..count` (and a scratch rectangle after every 8th), `window` at a time,
/// on picture `picture`, through the broadcast services of `urls` (the first that takes it;
/// another when its connection breaks). Returns once every marker is acknowledged.
pub(crate) async fn draw_markers(
    urls: Vec<String>,
    picture: String,
    drawers: u32,
    drawer: u32,
    count: u32,
    window: u32,
    pace: Duration,
) -> Drawn {
    let size = picture_size(drawers);
    let mut drawn = Drawn::default();
    let mut next = 0;
    let give_up = deadline() + Duration::from_secs(60);
    let mut client = connect_any(&urls, &picture, size).await;
    while next < count {
        assert!(Instant::now() < give_up, "drawer {drawer} never finished");
        // client_seq → marker index, for this window on this connection.
        let mut sent: HashMap<u64, u32> = HashMap::new();
        let mut last_seq = 0;
        let mut failed = false;
        for index in next..(next + window).min(count) {
            match client.draw(marker(drawer, index)).await {
                Ok(client_seq) => {
                    sent.insert(client_seq, index);
                    last_seq = client_seq;
                }
                Err(_) => {
                    failed = true;
                    break;
                }
            }
            if index % 8 == 7 && client.draw(scratch(drawers, drawer, index)).await.is_err() {
                failed = true;
                break;
            }
        }
        if !failed && last_seq > 0 {
            let waited = client.wait_own(client.last_client_seq(), deadline()).await;
            failed = waited.is_err();
            if let Err(error) = &waited {
                assert!(
                    !matches!(error, ClientError::Protocol(_)),
                    "drawer {drawer}: {error}"
                );
            }
        }
        // What was echoed on this connection counts, whatever happened after.
        let me = client.client_id();
        for entry in client.log() {
            if entry.client_id == me {
                if let Some(&index) = sent.get(&entry.client_seq) {
                    drawn.acked.entry(index).or_insert(entry.seq);
                }
            }
        }
        while next < count && drawn.acked.contains_key(&next) {
            next += 1;
        }
        if failed {
            drawn.logs.extend_from_slice(client.log());
            drawn.reconnects += 1;
            tokio::time::sleep(Duration::from_millis(50)).await;
            let first = (drawer as usize + drawn.reconnects as usize) % urls.len();
            let rotated: Vec<String> = urls[first..]
                .iter()
                .chain(&urls[..first])
                .cloned()
                .collect();
            client = connect_any(&rotated, &picture, size).await;
        } else if !pace.is_zero() {
            tokio::time::sleep(pace).await;
        }
        // Markers of a broken window not echoed are sent again; the others are not.
        let mut unacked = (next..count).filter(|i| !drawn.acked.contains_key(i));
        next = unacked.next().unwrap_or(count);
    }
    drawn.logs.extend_from_slice(client.log());
    drawn.client = Some(client);
    drawn
}

/// Checks that all these logs agree on one order: no seq carries two different ops.
pub(crate) fn assert_one_order<'a>(
    logs: impl IntoIterator<Item = &'a LogEntry>,
) -> HashMap<u64, (u64, u64)> {
    let mut order: HashMap<u64, (u64, u64)> = HashMap::new();
    let mut placed: HashMap<(u64, u64), u64> = HashMap::new();
    for entry in logs {
        let op = (entry.client_id, entry.client_seq);
        if let Some(other) = order.insert(entry.seq, op) {
            assert_eq!(
                other, op,
                "seq {} was given to two ops: a forked order",
                entry.seq
            );
        }
        if let Some(seq) = placed.insert(op, entry.seq) {
            assert_eq!(seq, entry.seq, "op {op:?} was sequenced twice");
        }
    }
    order
}

/// Checks that `raster` holds every acknowledged marker of every drawer.
pub(crate) fn assert_markers(raster: &Raster, drawn: &[Drawn]) {
    let mut checked = 0;
    for (drawer, d) in drawn.iter().enumerate() {
        for &index in d.acked.keys() {
            let (x, y) = marker_point(drawer as u32, index);
            let at = (y as usize * raster.width() as usize + x as usize) * 4;
            let pixel = &raster.pixels()[at..at + 4];
            assert_eq!(
                pixel,
                marker_color(drawer as u32, index),
                "acknowledged marker {index} of drawer {drawer} (seq {}) is not in the picture",
                d.acked[&index]
            );
            checked += 1;
        }
    }
    assert!(checked > 0);
}

/// The stored picture of `picture`: its seq and pixels, if it exists.
pub(crate) async fn stored(storage: &Storage, picture: &str) -> Option<(u64, Raster)> {
    match storage {
        Storage::Dir(dir) => {
            crate::common::stored(dir, picture).map(|d| (d.seq.unwrap(), d.raster))
        }
        Storage::S3 { s3, prefix } => {
            crate::s3::object(s3, &format!("{prefix}{picture}.png")).await
        }
    }
}

/// The stored picture of `picture`, decoded, once its seq is `seq` (waits for it).
pub(crate) async fn wait_stored(storage: &Storage, picture: &str, seq: u64) -> Raster {
    let deadline = deadline();
    loop {
        if let Some((stored_seq, raster)) = stored(storage, picture).await {
            if stored_seq == seq {
                return raster;
            }
            assert!(
                stored_seq < seq,
                "stored {picture} at {stored_seq}, beyond {seq}"
            );
        }
        assert!(
            Instant::now() < deadline,
            "{picture} not stored at {seq} in time"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
