//! Several broadcast services and picture services as real processes on loopback
//! (docs/scaling.md): one order per picture wherever its clients connect, and nothing
//! acknowledged lost when nodes are killed, paused or restarted. Every case is bounded in
//! time (the harness's deadlines).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod nodes;
mod procs;
mod s3;

use std::time::Duration;

use common::deadline;
use nodes::*;
use protocol::Raster;

/// Every drawer's final client, synced to the last seq: their pictures, `snapshot.png` on every
/// live broadcast service and the stored picture (once they all left) are one picture, with
/// every acknowledged marker in it, and every log agrees on one order.
async fn assert_converged(cluster: &Cluster, picture: &str, drawn: &mut [Drawn]) -> Raster {
    let last = drawn
        .iter()
        .filter_map(|d| d.client.as_ref())
        .map(|c| c.last_seq())
        .max()
        .unwrap();
    for d in drawn.iter_mut() {
        let client = d.client.as_mut().unwrap();
        client.sync_to(last, deadline()).await.unwrap();
        d.logs.extend_from_slice(client.log());
    }
    let pixels = drawn[0].client.as_ref().unwrap().raster().unwrap().clone();
    for d in drawn.iter() {
        assert!(
            d.client.as_ref().unwrap().raster().unwrap() == &pixels,
            "two clients ended with different pictures"
        );
    }
    assert_one_order(drawn.iter().flat_map(|d| d.logs.iter()));
    assert_markers(&pixels, drawn);
    for node in cluster.live_bs() {
        let (seq, png) = raster_client::snapshot(&node.ws(), picture).await.unwrap();
        let decoded = protocol::snapshot::decode_png(&png, 4096).unwrap();
        assert!(seq >= last);
        if seq == last {
            assert!(
                decoded.raster == pixels,
                "snapshot.png on {} differs",
                node.port
            );
        }
    }
    for d in drawn.iter_mut() {
        d.client.take().unwrap().close(deadline()).await.unwrap();
    }
    let stored = wait_stored(&cluster.storage, picture, last).await;
    assert!(stored == pixels, "the stored picture differs");
    pixels
}

/// Starts `drawers` drawers on `picture`, drawer `i` first on broadcast service `i % n`.
fn spawn_drawers(
    cluster: &Cluster,
    picture: &str,
    drawers: u32,
    count: u32,
    window: u32,
    pace: Duration,
) -> Vec<tokio::task::JoinHandle<Drawn>> {
    (0..drawers)
        .map(|drawer| {
            let urls = cluster.bs_urls_from(drawer as usize);
            tokio::spawn(draw_markers(
                urls,
                picture.to_string(),
                drawers,
                drawer,
                count,
                window,
                pace,
            ))
        })
        .collect()
}

async fn join_all(handles: Vec<tokio::task::JoinHandle<Drawn>>) -> Vec<Drawn> {
    let mut drawn = Vec::new();
    for handle in handles {
        drawn.push(handle.await.unwrap());
    }
    drawn
}

/// Three broadcast services, two picture services: clients of one picture on all three draw at
/// once. One broadcast service sequences it, the other two relay; every client, every
/// `snapshot.png` and the stored picture agree.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_of_one_picture_on_three_broadcast_services_see_one_order() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::start(Storage::Dir(dir.path().into()), 2, 3, "2s", &[], &[]).await;
    let drawers = 6;
    let handles = spawn_drawers(&cluster, "spread", drawers, 200, 16, Duration::ZERO);
    let mut drawn = join_all(handles).await;
    for d in &drawn {
        assert_eq!(d.acked.len(), 200);
        assert_eq!(d.reconnects, 0);
    }
    assert_converged(&cluster, "spread", &mut drawn).await;
    // Exactly one sequencer; the others relayed.
    let mut leases = 0.0;
    let mut relayed = 0.0;
    for node in &cluster.bs {
        leases += node.metric("bs_leases_acquired_total").await;
        relayed += node.metric("bs_draws_relayed_total").await;
    }
    assert_eq!(leases, 1.0, "the picture had more than one sequencer");
    assert!(
        relayed >= 4.0 * 200.0,
        "relays forwarded only {relayed} draws"
    );
}

/// Pictures spread over three broadcast services; the one that sequences them is killed with
/// SIGKILL while they draw, later a relay too. Its clients connect elsewhere and go on; its
/// lease passes to another broadcast service once the picture service gives it up (the lease
/// timeout); not one acknowledged op is lost, and there is still one order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_broadcast_service_loses_no_acknowledged_op() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = Cluster::start(Storage::Dir(dir.path().into()), 2, 3, "1s", &[], &[]).await;
    let pictures = ["kill-a", "kill-b", "kill-c"];
    let drawers = 3;
    let mut handles = Vec::new();
    for picture in pictures {
        // Drawer 0 first, on broadcast service 0: it sequences the picture.
        let mut first = spawn_drawers(&cluster, picture, 1, 0, 1, Duration::ZERO);
        join_all(std::mem::take(&mut first)).await;
        handles.push(spawn_drawers(
            &cluster,
            picture,
            drawers,
            300,
            6,
            Duration::from_millis(15),
        ));
    }
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(cluster.bs[0].metric("bs_leases_acquired_total").await >= 3.0);
    cluster.bs[0].kill().await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    cluster.bs[0].restart();
    cluster.bs[0].healthy().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    cluster.bs[1].kill().await;
    let mut reconnects = 0;
    for (picture, handles) in pictures.iter().zip(handles) {
        let mut drawn = join_all(handles).await;
        reconnects += drawn.iter().map(|d| d.reconnects).sum::<u32>();
        for d in &drawn {
            assert_eq!(d.acked.len(), 300);
        }
        assert_converged(&cluster, picture, &mut drawn).await;
    }
    assert!(
        reconnects >= 2,
        "the kills did not hit any drawer ({reconnects})"
    );
}

/// The picture service that owns the pictures is killed with SIGKILL while they draw: each
/// sequencer moves its picture to the other picture service (which takes it from an owner it
/// cannot reach, and waits for the sequencer's claim) and replays what storage lacked. Every
/// acknowledged op ends in storage; the killed service comes back and the cluster goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_picture_service_moves_its_pictures_on_s3() {
    let Some(s3) = s3::s3().await else {
        return;
    };
    let prefix = s3::unique_prefix("cluster");
    let storage = Storage::S3 { s3, prefix };
    let mut cluster = Cluster::start(storage, 2, 2, "2s", &["--flush-interval", "1h"], &[]).await;
    // Two pictures placed on each picture service (placement hashes the services' ports,
    // which differ from run to run).
    let mut on = [0, 0];
    let pictures: Vec<String> = (0..)
        .map(|n| format!("move-{n}"))
        .filter(|picture| {
            let owner = cluster.placed_on(picture);
            on[owner] += 1;
            on[owner] <= 2
        })
        .take(4)
        .collect();
    let mut handles = Vec::new();
    for picture in &pictures {
        handles.push(spawn_drawers(
            &cluster,
            picture,
            2,
            400,
            6,
            Duration::from_millis(20),
        ));
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    cluster.pps[0].kill().await;
    // The survivor takes the pictures of the dead one, which had not released them.
    let deadline = deadline();
    loop {
        let taken = cluster.pps[1]
            .metric("pps_takeovers_total{from=\"unreleased\"}")
            .await;
        if taken >= 2.0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the pictures of the killed service did not move ({taken})"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    cluster.pps[0].restart();
    cluster.pps[0].healthy().await;
    for (picture, handles) in pictures.iter().zip(handles) {
        let mut drawn = join_all(handles).await;
        assert_converged(&cluster, picture, &mut drawn).await;
    }
}

/// Every node is restarted with SIGTERM, one after the other, while three pictures are drawn
/// on: picture services hand their pictures over (stored as released), broadcast services
/// close their clients with 1012 (they connect elsewhere) and give their leases back. Nothing
/// acknowledged is lost, and there is one order per picture throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_under_load_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = Cluster::start(Storage::Dir(dir.path().into()), 2, 3, "1s", &[], &[]).await;
    let pictures = ["roll-a", "roll-b", "roll-c"];
    let mut handles = Vec::new();
    for picture in pictures {
        handles.push(spawn_drawers(
            &cluster,
            picture,
            3,
            1000,
            6,
            Duration::from_millis(20),
        ));
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    for i in 0..cluster.pps.len() {
        cluster.pps[i].terminate().await;
        cluster.pps[i].restart();
        cluster.pps[i].healthy().await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    for i in 0..cluster.bs.len() {
        cluster.bs[i].terminate().await;
        cluster.bs[i].restart();
        cluster.bs[i].healthy().await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let mut reconnects = 0;
    for (picture, handles) in pictures.iter().zip(handles) {
        let mut drawn = join_all(handles).await;
        reconnects += drawn.iter().map(|d| d.reconnects).sum::<u32>();
        assert_converged(&cluster, picture, &mut drawn).await;
    }
    // Every drawer was on a restarted broadcast service at least once.
    assert!(reconnects >= 9, "only {reconnects} reconnections");
}

/// The picture service that owns a picture is paused (SIGSTOP) past the lease timeout while it
/// is drawn on: the broadcast services take the picture to the other one. Resumed (SIGCONT),
/// the paused one still thinks it owns the picture and tries to store what it had: storage
/// refuses (412), it drops the picture. The stored picture never goes backwards, and nothing
/// acknowledged is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_owner_is_fenced_by_storage() {
    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::Dir(dir.path().into());
    // No periodic flushes: only takeovers, handovers and releases write.
    let cluster = Cluster::start(storage, 2, 2, "1s", &["--flush-interval", "1h"], &[]).await;
    let picture = "paused";
    let handles = spawn_drawers(&cluster, picture, 2, 500, 6, Duration::from_millis(20));
    // The picture's owner is named in storage from its first lease on.
    let file = dir.path().join("pictures").join(format!("{picture}.png"));
    let owner = {
        let deadline = deadline();
        loop {
            if let Some(ownership) = std::fs::read(&file)
                .ok()
                .and_then(|png| protocol::snapshot::png_header(&png).ok()?.ownership)
            {
                break ownership.owner;
            }
            assert!(tokio::time::Instant::now() < deadline, "never stored");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    let paused = cluster
        .pps
        .iter()
        .position(|n| protocol::placement::node_id(&n.pps_url()) == owner)
        .expect("the owner is one of the picture services");
    // Watch storage all along: the picture's seq and epoch never go back.
    let watch = {
        let file = file.clone();
        tokio::spawn(async move {
            let (mut seq, mut epoch) = (0, 0);
            let mut epochs = std::collections::BTreeSet::new();
            for _ in 0..400 {
                if let Ok(png) = std::fs::read(&file) {
                    let header = protocol::snapshot::png_header(&png).unwrap();
                    let now = (header.seq.unwrap(), header.ownership.unwrap().epoch);
                    assert!(
                        now.0 >= seq && now.1 >= epoch,
                        "storage went back: {now:?} after {:?}",
                        (seq, epoch)
                    );
                    (seq, epoch) = now;
                    epochs.insert(epoch);
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            epochs
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    cluster.pps[paused].signal("-STOP");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    cluster.pps[paused].signal("-CONT");
    let mut drawn = join_all(handles).await;
    assert_converged(&cluster, picture, &mut drawn).await;
    let epochs = watch.await.unwrap();
    assert!(
        epochs.len() >= 2,
        "the picture never changed owner: {epochs:?}"
    );
    // The resumed owner tried to write and was refused.
    let deadline = deadline();
    while cluster.pps[paused].metric("pps_fenced_total").await < 1.0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the stale owner was never fenced"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        cluster.pps[paused]
            .metric("pps_flush_conflicts_total")
            .await
            >= 1.0
    );
}
