//! Convergence: many clients drawing translucent ops at once end with byte-identical pictures,
//! equal to `snapshot.png` and to the stored file once everyone left, and every client saw
//! every seq exactly once, in order, with every client's ops in that client's order.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeSet, HashMap};

use common::{deadline, logged_client, snapshot, wait_stored, Server};
use rand::SeedableRng;
use raster_client::{random_op, Client, Event, LogEntry, Profile};

const CLIENTS: usize = 8;
const OPS: u64 = 500;
const PICTURE: &str = "convergence";
const SIZE: (u32, u32) = (320, 240);

/// Draws `OPS` random ops as fast as possible from one task while reading from another;
/// returns the client once its last op has been echoed.
async fn draw_all(client: Client, seed: u64) -> Client {
    let (mut sender, mut receiver) = client.into_split();
    let reader = tokio::spawn(async move {
        let deadline = deadline();
        while receiver.own_acked() < OPS {
            match tokio::time::timeout_at(deadline, receiver.next_event()).await {
                Ok(Ok(Event::Rejected { client_seq, reason })) => {
                    panic!("op {client_seq} rejected: {reason}")
                }
                Ok(Ok(Event::Closed { code, reason })) => panic!("closed {code:?}: {reason}"),
                Ok(Ok(Event::Resynced)) => panic!("resynced while drawing"),
                Ok(Ok(_)) => {}
                Ok(Err(e)) => panic!("client failed: {e}"),
                Err(_) => panic!("timed out at own echo {}", receiver.own_acked()),
            }
        }
        receiver
    });
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    for _ in 0..OPS {
        sender
            .draw(random_op(&mut rng, SIZE.0, SIZE.1, Profile::Mixed))
            .await
            .unwrap();
    }
    let receiver = reader.await.unwrap();
    Client::from_split(sender, receiver)
}

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
        .map(|(i, client)| tokio::spawn(draw_all(client, 1000 + i as u64)))
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
