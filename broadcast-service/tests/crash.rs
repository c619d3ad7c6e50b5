//! SIGKILL at random moments while a client draws, again and again: every op the client saw
//! echoed is in the picture after the restart, checked op by op against a replay of what it
//! sent (docs/durability.md). Embedded mode, and services mode with the picture service, the
//! broadcast service or both killed; on the filesystem and on S3 (LocalStack).
//!
//! Periodic flushes are off (`--flush-interval 1h`) and a SIGKILL flushes nothing, so what the
//! killed processes had echoed comes back only from the write-ahead log (or from the process
//! that survived).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod nodes;
mod procs;
mod s3;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use nodes::{bs_binary, marker, picture_size, scratch, Node, Storage};
use procs::{free_port, pps_binary};
use protocol::{Op, Raster};
use rand::Rng;
use raster_client::{Client, ConnectOptions, Event};
use tokio::time::Instant;

use common::deadline;

/// Four drawers' worth of marker rows: room for 4096 ops.
const DRAWERS: u32 = 4;
/// A draw every this often (~250 ops/s).
const PACE: Duration = Duration::from_millis(4);

/// The `n`th op the test draws: a marker pixel of its own (so the picture shows which ops it
/// holds), every tenth a translucent rectangle over the others (so the order shows too).
fn op(n: u32) -> Op {
    if n % 10 == 9 {
        scratch(DRAWERS, 0, n)
    } else {
        marker(n / 1024, n % 1024)
    }
}

#[derive(Clone, Copy, Debug)]
enum Kill {
    /// The embedded service (the one process).
    Embedded,
    /// Services mode: the picture service only (the broadcast service and its client live on).
    Pps,
    /// Services mode: the broadcast service only.
    Bs,
    /// Services mode: both at the same moment.
    Both,
}

/// The processes under test, by mode.
struct Setup {
    /// The embedded service, or services mode's broadcast service.
    bs: Node,
    /// Services mode's picture service.
    pps: Option<Node>,
    _wal: tempfile::TempDir,
}

impl Setup {
    fn embedded(storage: &Storage) -> Setup {
        let wal = tempfile::tempdir().unwrap();
        let (store_args, env) = storage.args_env();
        let port = free_port();
        let mut args = base_args(port, &wal);
        args.extend(store_args);
        Setup {
            bs: Node::start(bs_binary(), port, args, env),
            pps: None,
            _wal: wal,
        }
    }

    fn services(storage: &Storage) -> Setup {
        let wal = tempfile::tempdir().unwrap();
        let (store_args, env) = storage.args_env();
        let pps_port = free_port();
        let mut args = base_args(pps_port, &wal);
        args.extend(store_args);
        // A killed broadcast service's lease is free again a second later.
        args.extend(["--lease-timeout", "1s", "--link-timeout", "1s"].map(String::from));
        let pps = Node::start(pps_binary(), pps_port, args, env.clone());
        let bs_port = free_port();
        let args = [
            "--listen",
            &format!("127.0.0.1:{bs_port}"),
            "--pps-url",
            &pps.pps_url(),
            "--pps-timeout",
            "1s",
            "--pps-ping-interval",
            "200ms",
            "--pps-min-backoff",
            "20ms",
            "--pps-max-backoff",
            "200ms",
        ]
        .map(String::from)
        .to_vec();
        Setup {
            bs: Node::start(bs_binary(), bs_port, args, env),
            pps: Some(pps),
            _wal: wal,
        }
    }

    async fn healthy(&self) {
        if let Some(pps) = &self.pps {
            pps.healthy().await;
        }
        self.bs.healthy().await;
    }
}

/// A picture service's (or the embedded service's) arguments: no periodic flushes, short
/// backoffs, the log in `wal`.
fn base_args(port: u16, wal: &tempfile::TempDir) -> Vec<String> {
    [
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--flush-interval",
        "1h",
        "--min-backoff",
        "20ms",
        "--max-backoff",
        "200ms",
        "--wal-dir",
        &wal.path().join("wal").display().to_string(),
    ]
    .map(String::from)
    .to_vec()
}

/// Connects (retrying while the service comes up), keeping a raster.
async fn connect(url: &str, picture: &str) -> Client {
    let deadline = deadline();
    loop {
        let options = ConnectOptions {
            size: Some(picture_size(DRAWERS)),
            ..ConnectOptions::default()
        };
        match Client::connect_with(url, picture, options).await {
            Ok(client) => return client,
            Err(error) => {
                assert!(Instant::now() < deadline, "cannot join {picture}: {error}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// One drawing client's round: what it sent and which of its ops it saw echoed, as
/// `(seq, client_seq)`.
struct Round {
    /// The picture's seq at the client's Welcome.
    base: u64,
    sent: Vec<Op>,
    echoes: Vec<(u64, u64)>,
}

/// Draws `op(first..)` every [`PACE`] from a new connection until it breaks or `stop` is set,
/// then (if it is still up) waits for the echoes of everything it sent.
async fn draw_round(url: String, picture: String, first: u32, stop: Arc<AtomicBool>) -> Round {
    let client = connect(&url, &picture).await;
    let base = client.last_seq();
    let me = client.client_id();
    let (mut sender, mut receiver) = client.into_split();
    let drawing = tokio::spawn(async move {
        let mut sent = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            let op = op(first + sent.len() as u32);
            if sender.draw(op.clone()).await.is_err() {
                break;
            }
            sent.push(op);
            tokio::time::sleep(PACE).await;
        }
        (sent, sender)
    });
    let mut echoes = Vec::new();
    let mut drawn: Option<usize> = None;
    let mut drawing = Some(drawing);
    let mut sender = None;
    let deadline = deadline();
    loop {
        if drawing.as_ref().is_some_and(|d| d.is_finished()) {
            let (sent, s) = drawing.take().unwrap().await.unwrap();
            drawn = Some(sent.len());
            sender = Some((sent, s));
        }
        // Everything echoed (the connection outlived the drawing): done.
        if let Some(n) = drawn {
            if echoes.len() == n {
                break;
            }
        }
        let event = tokio::time::timeout(Duration::from_millis(20), receiver.next_event()).await;
        match event {
            Err(_) => {}
            Ok(Ok(Event::Updates(updates))) => echoes.extend(
                updates
                    .iter()
                    .filter(|u| u.client_id == me)
                    .map(|u| (u.seq, u.client_seq)),
            ),
            Ok(Ok(Event::Closed { .. }) | Err(_)) => break,
            Ok(Ok(Event::Rejected { client_seq, reason })) => {
                panic!("op {client_seq} rejected: {reason}")
            }
            Ok(Ok(_)) => {}
        }
        assert!(Instant::now() < deadline, "the round never ended");
    }
    let sent = match sender {
        Some((sent, _)) => sent,
        // The connection broke while drawing: the drawer stops at its next draw.
        None => drawing.unwrap().await.unwrap().0,
    };
    Round { base, sent, echoes }
}

/// Rounds of drawing on one picture, each ended by `kills[i]` at a random moment (a restart
/// follows at once). After each, a new client's picture must hold every op echoed so far
/// (exactly the first ops sent, in order, as one drawer's ops are sequenced) and nothing else.
async fn kill_while_drawing(mut setup: Setup, picture: &str, kills: &[Kill]) {
    setup.healthy().await;
    let url = setup.bs.ws();
    let (width, height) = picture_size(DRAWERS);
    let mut history: Vec<Op> = Vec::new();
    let mut rng = rand::thread_rng();
    for (round, &kill) in kills.iter().enumerate() {
        let stop = Arc::new(AtomicBool::new(false));
        let drawer = tokio::spawn(draw_round(
            url.clone(),
            picture.to_string(),
            history.len() as u32,
            stop.clone(),
        ));
        tokio::time::sleep(Duration::from_millis(rng.gen_range(150..600))).await;
        match kill {
            Kill::Embedded | Kill::Bs => setup.bs.kill().await,
            Kill::Pps => setup.pps.as_mut().unwrap().kill().await,
            Kill::Both => {
                // As close to one moment as two signals get.
                setup.bs.signal("-KILL");
                setup.pps.as_ref().unwrap().signal("-KILL");
                setup.bs.kill().await;
                setup.pps.as_mut().unwrap().kill().await;
            }
        }
        match kill {
            Kill::Embedded | Kill::Bs => setup.bs.restart(),
            Kill::Pps => setup.pps.as_mut().unwrap().restart(),
            Kill::Both => {
                setup.pps.as_mut().unwrap().restart();
                setup.bs.restart();
            }
        }
        setup.healthy().await;
        if let Kill::Pps = kill {
            // The client lives on: it draws a little more, then waits for every echo.
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        stop.store(true, Ordering::Relaxed);
        let Round { base, sent, echoes } = drawer.await.unwrap();
        assert_eq!(
            base,
            history.len() as u64,
            "round {round} started elsewhere"
        );
        for &(seq, client_seq) in &echoes {
            assert_eq!(
                seq,
                base + client_seq,
                "round {round}: op {client_seq} sequenced out of order"
            );
        }

        // A new client's picture: every echoed op, op by op.
        let check = connect(&url, picture).await;
        let seq = check.last_seq();
        let echoed = echoes.last().map_or(base, |e| e.0);
        assert!(
            seq >= echoed,
            "round {round} ({kill:?}): the picture is at seq {seq} after the restart, but the \
             client had seen seq {echoed} echoed"
        );
        let accepted = (seq - base) as usize;
        assert!(
            accepted <= sent.len(),
            "round {round}: seq {seq}, only {} ops sent",
            sent.len()
        );
        if let Kill::Pps = kill {
            assert_eq!(
                accepted,
                sent.len(),
                "round {round}: the client's ops went missing"
            );
        }
        history.extend_from_slice(&sent[..accepted]);
        let mut expected = Raster::new(width, height);
        for op in &history {
            expected.apply(op);
        }
        assert!(
            check.raster() == Some(&expected),
            "round {round} ({kill:?}): the picture differs from the replay of its {} ops",
            history.len()
        );
        eprintln!(
            "round {round} ({kill:?}): {} sent, {} echoed, {accepted} kept, picture at seq {seq}",
            sent.len(),
            echoes.len()
        );
        check.close(deadline()).await.unwrap();
    }
    assert!(
        history.len() > 100,
        "too little was drawn to prove anything"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_sigkill_loses_no_echoed_op_on_the_filesystem() {
    let dir = tempfile::tempdir().unwrap();
    let setup = Setup::embedded(&Storage::Dir(dir.path().into()));
    kill_while_drawing(setup, "crash-embedded", &[Kill::Embedded; 4]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_sigkill_loses_no_echoed_op_on_s3() {
    let Some(s3) = s3::s3().await else {
        return;
    };
    let prefix = format!("crash-{}/", std::process::id());
    let setup = Setup::embedded(&Storage::S3 { s3, prefix });
    kill_while_drawing(setup, "crash-embedded-s3", &[Kill::Embedded; 3]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_sigkill_of_either_or_both_loses_no_echoed_op_on_the_filesystem() {
    let dir = tempfile::tempdir().unwrap();
    let setup = Setup::services(&Storage::Dir(dir.path().into()));
    let kills = [
        Kill::Pps,
        Kill::Bs,
        Kill::Both,
        Kill::Both,
        Kill::Pps,
        Kill::Bs,
    ];
    kill_while_drawing(setup, "crash-services", &kills).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_sigkill_of_either_or_both_loses_no_echoed_op_on_s3() {
    let Some(s3) = s3::s3().await else {
        return;
    };
    let prefix = format!("crash-services-{}/", std::process::id());
    let setup = Setup::services(&Storage::S3 { s3, prefix });
    kill_while_drawing(
        setup,
        "crash-services-s3",
        &[Kill::Both, Kill::Pps, Kill::Bs],
    )
    .await;
}
