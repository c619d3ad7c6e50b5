//! Convergence: many clients drawing translucent ops at once end with byte-identical pictures,
//! equal to `snapshot.png` and to the stored file once everyone left, and every client saw
//! every seq exactly once, in order, with every client's ops in that client's order.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeSet, HashMap};

use common::{deadline, draw_concurrently, logged_client, snapshot, wait_stored, Server};
use raster_client::{Client, LogEntry};

const CLIENTS: usize = 8;
const OPS: u64 = 500;
const PICTURE: &str = "convergence";
const SIZE: (u32, u32) = (320, 240);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_clients_converge_with_snapshot_and_stored_file() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]).await;

    // Everyone joins before anyone draws, so every client must see seq 1 ..= CLIENTS*OPS.
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        clients.push(logged_client(&server, PICTURE, Some(SIZE)).await);
    }
    let handles: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(i, client)| {
            tokio::spawn(draw_concurrently(client, OPS, 1000 + i as u64, None, false))
        })
        .collect();
    let mut clients = Vec::new();
    for handle in handles {
        clients.push(handle.await.unwrap());
    }

    let last = CLIENTS as u64 * OPS;
    for client in &mut clients {
        client.sync_to(last, deadline()).await.unwrap();
        assert_eq!(client.last_seq(), last);
        assert_eq!(client.receiver().snapshot_seq(), 0);
        assert_eq!(client.receiver().resyncs(), 0);
    }

    // Every client saw every seq once, in order, no gaps; every client's ops in its order.
    let ids: BTreeSet<u64> = clients.iter().map(Client::client_id).collect();
    assert_eq!(ids.len(), CLIENTS, "client ids must be distinct");
    let reference: &[LogEntry] = clients[0].log();
    for client in &clients {
        let log = client.log();
        let seqs: Vec<u64> = log.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, (1..=last).collect::<Vec<_>>());
        assert_eq!(log, reference, "clients disagree on the total order");
        let mut per_client: HashMap<u64, Vec<u64>> = HashMap::new();
        for entry in log {
            per_client
                .entry(entry.client_id)
                .or_default()
                .push(entry.client_seq);
        }
        assert_eq!(per_client.len(), CLIENTS);
        for (id, client_seqs) in per_client {
            assert!(ids.contains(&id));
            assert_eq!(
                client_seqs,
                (1..=OPS).collect::<Vec<_>>(),
                "ops of client {id}"
            );
        }
    }

    // Identical pixels everywhere: clients, snapshot.png, and (after all leave) storage.
    let pixels = clients[0].raster().unwrap().clone();
    assert_ne!(
        pixels,
        protocol::Raster::new(SIZE.0, SIZE.1),
        "nothing was drawn"
    );
    for client in &clients {
        assert!(client.raster().unwrap() == &pixels, "rasters differ");
    }
    let (seq, snap) = snapshot(&server, PICTURE).await;
    assert_eq!(seq, last);
    assert!(
        snap == pixels,
        "snapshot.png differs from the clients' picture"
    );

    for client in clients {
        client.close(deadline()).await.unwrap();
    }
    let stored = wait_stored(dir.path(), PICTURE, last).await;
    assert!(
        stored.raster == pixels,
        "stored picture differs from the clients' picture"
    );
    server.stop().await;
}
