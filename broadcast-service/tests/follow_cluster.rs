//! Following over plain HTTP (PROTOCOL.md §16) in a cluster (§9): one picture service and two
//! broadcast services as processes. The picture's clients are on the first (its sequencer);
//! one HTTP follower polls the sequencer, another the second broadcast service, whose room is
//! opened by the follower and relays. Both get the same updates under the same seqs as a
//! WebSocket client, and end with its pixels.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod nodes;
mod procs;
mod s3;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{deadline, draw_concurrently};
use nodes::{Cluster, Storage};
use raster_client::http::Step;
use raster_client::{Client, ConnectOptions, Follower};

/// Follows until `total`, recording each update's (client id, client_seq) by seq.
async fn follow(mut follower: Follower, total: u64) -> (Follower, BTreeMap<u64, (u64, u64)>) {
    let deadline = deadline();
    let mut seen = BTreeMap::new();
    while follower.seq() < total {
        assert!(
            tokio::time::Instant::now() < deadline,
            "follower stuck at {}",
            follower.seq()
        );
        match follower.step(Duration::from_secs(2)).await.unwrap() {
            Step::Updates(updates) => {
                for u in updates {
                    assert!(seen.insert(u.seq, (u.client_id, u.client_seq)).is_none());
                }
            }
            Step::Resynced { .. } => {}
        }
    }
    (follower, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn followers_on_the_sequencer_and_on_a_relay_see_one_order() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::start(Storage::Dir(dir.path().into()), 1, 2, "2s", &[], &[]).await;
    let (sequencer, relay) = (&cluster.bs[0], &cluster.bs[1]);
    let options = || ConnectOptions {
        size: Some((64, 48)),
        keep_log: true,
        ..ConnectOptions::default()
    };
    let mut watcher = Client::connect_with(&sequencer.ws(), "spread", options())
        .await
        .unwrap();
    let a = Client::connect_with(&sequencer.ws(), "spread", options())
        .await
        .unwrap();
    let b = Client::connect_with(&sequencer.ws(), "spread", options())
        .await
        .unwrap();
    let ops = 300;
    let total = 2 * ops;
    let mut on_sequencer = Follower::start(&sequencer.http(), "spread", None)
        .await
        .unwrap();
    let mut on_relay = Follower::start(&relay.http(), "spread", None)
        .await
        .unwrap();
    // A first poll opens the relay's room (it links to the sequencer) before the drawing.
    for follower in [&mut on_sequencer, &mut on_relay] {
        assert_eq!(
            follower.step(Duration::ZERO).await.unwrap(),
            Step::Updates(Vec::new())
        );
    }
    let following = [
        tokio::spawn(follow(on_sequencer, total)),
        tokio::spawn(follow(on_relay, total)),
    ];
    let drawing = [
        tokio::spawn(draw_concurrently(a, ops, 7, None, false)),
        tokio::spawn(draw_concurrently(b, ops, 8, None, false)),
    ];
    for task in drawing {
        task.await.unwrap();
    }
    watcher.sync_to(total, deadline()).await.unwrap();
    let order: BTreeMap<u64, (u64, u64)> = watcher
        .receiver()
        .log()
        .iter()
        .map(|e| (e.seq, (e.client_id, e.client_seq)))
        .collect();
    for task in following {
        let (follower, seen) = task.await.unwrap();
        assert_eq!(follower.seq(), total);
        assert!(
            follower.raster() == watcher.raster().unwrap(),
            "pixels differ"
        );
        assert!(!seen.is_empty());
        for (seq, who) in &seen {
            assert_eq!(order.get(seq), Some(who), "seq {seq}: another update");
        }
    }
    // The relay's room was opened by its follower and relayed: one sequencer.
    assert_eq!(sequencer.metric("bs_leases_acquired_total").await, 1.0);
    assert_eq!(relay.metric("bs_leases_acquired_total").await, 0.0);
}
