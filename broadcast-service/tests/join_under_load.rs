//! Join under load: while a few clients draw as fast as they can, many clients join at random
//! moments; every one of them must end with the same picture as the drawers and as
//! `snapshot.png`. This is where the old system lost or doubled updates (a join racing the
//! sequencer), so the scenario is repeated, in embedded mode and in services mode with a
//! picture service slowed down on purpose so that its snapshots lag far behind the log.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use tokio::sync::watch;

use common::{deadline, draw_concurrently, logged_client, snapshot, PpsServer, Server};
use std::sync::Arc;

use primary_picture_service::store::fs::FsStore;
use primary_picture_service::{Pps, PpsConfig};
use rand::{Rng, SeedableRng};
use raster_client::{Client, Event};

const DRAWERS: usize = 4;
const JOINERS: usize = 20;
const OPS: u64 = 300;
const SIZE: (u32, u32) = (200, 160);

/// What one round saw, for the services-mode assertions.
struct Round {
    /// For each joiner, the `snapshot_seq` of its `Welcome` and the last seq of its `pending`.
    joins: Vec<(u64, u64)>,
}

/// Joins once the drawing has reached seq `at`, then keeps reading (checking every update)
/// until told the final seq.
async fn join_later(
    server_url: String,
    picture: String,
    at: u64,
    mut progress: watch::Receiver<u64>,
    final_seq: watch::Receiver<Option<u64>>,
) -> (Client, (u64, u64)) {
    // An error means the reporting drawer is done: the drawing is (nearly) over, join now.
    let _ = tokio::time::timeout_at(deadline(), progress.wait_for(|seq| *seq >= at))
        .await
        .expect("drawing stalled");
    let options = raster_client::ConnectOptions {
        size: Some(SIZE),
        keep_log: true,
        ..Default::default()
    };
    let mut client = Client::connect_with(&server_url, &picture, options)
        .await
        .unwrap();
    let joined = (client.receiver().snapshot_seq(), client.last_seq());
    // Read while the drawers draw, so this client never falls behind and gets resynced.
    let mut final_seq = final_seq;
    let deadline = deadline();
    let last = loop {
        if let Some(last) = *final_seq.borrow() {
            break last;
        }
        tokio::select! {
            _ = final_seq.changed() => {}
            event = client.next_event() => match event {
                Ok(Event::Closed { code, reason }) => panic!("joiner closed {code:?}: {reason}"),
                Ok(_) => {}
                Err(e) => panic!("joiner failed: {e}"),
            },
            _ = tokio::time::sleep_until(deadline) => panic!("joiner never told the final seq"),
        }
    };
    client.sync_to(last, deadline).await.unwrap();
    (client, joined)
}

async fn round(server: &Server, picture: &str, seed: u64) -> Round {
    round_on(server, server, picture, seed).await
}

/// A round with the drawers on `sequencer` and the joiners on `joining` (another broadcast
/// service of the cluster, relaying to the first: the joins through a relay must be just as
/// exact).
async fn round_on(sequencer: &Server, joining: &Server, picture: &str, seed: u64) -> Round {
    let server = sequencer;
    let mut drawers = Vec::new();
    for _ in 0..DRAWERS {
        drawers.push(logged_client(server, picture, Some(SIZE)).await);
    }
    let base = drawers[0].last_seq();
    for drawer in &mut drawers {
        drawer.sync_to(base, deadline()).await.unwrap();
    }
    let (final_tx, final_rx) = watch::channel(None);
    let (progress_tx, progress_rx) = watch::channel(base);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let last = base + DRAWERS as u64 * OPS;
    // Each joiner joins at a random point of the drawing (as seen by the first drawer).
    // Through a relay, the first joiner comes before any drawing: the relay is linked by the
    // time the others join.
    let relayed = !std::ptr::eq(sequencer, joining);
    let joiners: Vec<_> = (0..JOINERS)
        .map(|i| {
            let at = if relayed && i == 0 {
                base
            } else {
                rng.gen_range(base..last)
            };
            tokio::spawn(join_later(
                joining.url.clone(),
                picture.to_string(),
                at,
                progress_rx.clone(),
                final_rx.clone(),
            ))
        })
        .collect();
    let mut progress = Some(progress_tx);
    let drawing: Vec<_> = drawers
        .into_iter()
        .enumerate()
        .map(|(i, d)| {
            // Only the first drawer reports progress; the others' senders are dropped copies.
            let tx = progress.take().unwrap_or_else(|| watch::channel(0).0);
            tokio::spawn(draw_concurrently(
                d,
                OPS,
                seed * 100 + i as u64,
                Some(tx),
                true,
            ))
        })
        .collect();
    let mut drawers = Vec::new();
    for handle in drawing {
        drawers.push(handle.await.unwrap());
    }
    final_tx.send(Some(last)).unwrap();
    let mut everyone = Vec::new();
    let mut joins = Vec::new();
    for handle in joiners {
        let (client, joined) = handle.await.unwrap();
        joins.push(joined);
        everyone.push(client);
    }
    for mut drawer in drawers {
        drawer.sync_to(last, deadline()).await.unwrap();
        everyone.push(drawer);
    }

    let reference = everyone[0].raster().unwrap().clone();
    for (i, client) in everyone.iter().enumerate() {
        assert_eq!(client.last_seq(), last);
        assert_eq!(client.receiver().resyncs(), 0, "client {i} was resynced");
        assert!(
            client.raster().unwrap() == &reference,
            "client {i} (joined at snapshot {}) ends with a different picture",
            client.receiver().snapshot_seq()
        );
        // The log covers exactly what came after this client's snapshot.
        let first = client.receiver().snapshot_seq() + 1;
        let seqs: Vec<u64> = client.log().iter().map(|e| e.seq).collect();
        assert_eq!(seqs, (first..=last).collect::<Vec<_>>(), "client {i}");
    }
    for server in [sequencer, joining] {
        let (seq, snap) = snapshot(server, picture).await;
        assert_eq!(seq, last);
        assert!(
            snap == reference,
            "snapshot.png differs from the clients' picture"
        );
    }
    for client in everyone {
        client.close(deadline()).await.unwrap();
    }
    Round { joins }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joiners_under_load_converge_embedded() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]).await;
    for r in 0..5 {
        let picture = format!("join-embedded-{r}");
        let round = round(&server, &picture, 10 + r).await;
        eprintln!(
            "embedded round {r}: (snapshot, pending up to) {:?}",
            round.joins
        );
    }
    // The same picture again, now with history: joiners start from a non-blank snapshot.
    round(&server, "join-embedded-0", 99).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joiners_under_load_converge_with_lagging_remote_pps() {
    let dir = tempfile::tempdir().unwrap();
    let pps_config = PpsConfig {
        apply_delay: Some(Duration::from_millis(25)),
        ..PpsConfig::default()
    };
    let pps = PpsServer::start(dir.path(), pps_config).await;
    let bs_dir = tempfile::tempdir().unwrap();
    let server = Server::start(bs_dir.path(), &["--pps-url", &pps.url]).await;
    let mut max_pending = 0;
    for r in 0..3 {
        let picture = format!("join-remote-{r}");
        let round = round(&server, &picture, 20 + r).await;
        eprintln!(
            "services round {r}: (snapshot, pending up to) {:?}",
            round.joins
        );
        let most = round.joins.iter().map(|(s, k)| k - s).max().unwrap_or(0);
        max_pending = max_pending.max(most);
    }
    // With PPS this slow, some joiner must have been served from an old snapshot plus log:
    // otherwise this test did not exercise what it is for.
    assert!(max_pending > 0, "no joiner needed pending updates");
    server.stop().await;
    pps.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joiners_under_load_converge_with_fresh_snapshots() {
    // A picture service that encodes a fresh snapshot for every join (no reuse), so joiners
    // start from snapshots taken in the middle of the drawing, not only from the blank one.
    let dir = tempfile::tempdir().unwrap();
    let pps_config = PpsConfig {
        snapshot_reuse: Duration::ZERO,
        ..PpsConfig::default()
    };
    let store = Arc::new(FsStore::new(dir.path().to_path_buf()));
    let pps = Pps::new(pps_config, store);
    let server = Server::start_with(dir.path(), &[], pps.clone()).await;
    let mut mid_snapshots = 0;
    for r in 0..3 {
        let picture = format!("join-fresh-{r}");
        let round = round(&server, &picture, 30 + r).await;
        eprintln!(
            "fresh-snapshot round {r}: (snapshot, pending up to) {:?}",
            round.joins
        );
        mid_snapshots += round
            .joins
            .iter()
            .filter(|(s, _)| *s > 0 && *s < DRAWERS as u64 * OPS)
            .count();
    }
    eprintln!("{mid_snapshots} joins started from a snapshot taken mid-drawing");
    assert!(
        mid_snapshots > 0,
        "no join started from a mid-drawing snapshot"
    );
    server.stop().await;
    pps.shutdown(common::PATIENCE).await;
}

/// Joiners on a relay (another broadcast service than the drawers', which sequences the
/// picture), with the picture service lagging: every joiner still gets its snapshot plus exactly
/// the updates after it, from the relay's own copy of the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joiners_through_a_relay_converge() {
    let dir = tempfile::tempdir().unwrap();
    let pps_config = PpsConfig {
        apply_delay: Some(Duration::from_millis(10)),
        ..PpsConfig::default()
    };
    let pps = PpsServer::start(dir.path(), pps_config).await;
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let sequencer = Server::start(a_dir.path(), &["--pps-url", &pps.url]).await;
    let relay = Server::start(b_dir.path(), &["--pps-url", &pps.url]).await;
    let mut max_pending = 0;
    for r in 0..3 {
        let picture = format!("join-relay-{r}");
        let round = round_on(&sequencer, &relay, &picture, 40 + r).await;
        eprintln!(
            "relay round {r}: (snapshot, pending up to) {:?}",
            round.joins
        );
        let most = round.joins.iter().map(|(s, k)| k - s).max().unwrap_or(0);
        max_pending = max_pending.max(most);
    }
    assert!(max_pending > 0, "no joiner needed pending updates");
    sequencer.stop().await;
    relay.stop().await;
    pps.stop().await;
}
