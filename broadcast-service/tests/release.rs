//! The last client leaving releases the picture (apply everything, flush, drop from memory on
//! both sides); a client that joins while that release is still writing must get the exact
//! picture, and numbering must continue.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use primary_picture_service::store::memory::MemoryStore;
use primary_picture_service::{Pps, PpsConfig};
use protocol::snapshot::decode_png;
use raster_client::Client;
use tokio::time::Instant;

async fn wait_stored_seq(store: &MemoryStore, picture: &str, seq: u64) -> protocol::Raster {
    let deadline = deadline();
    loop {
        if let Some(stored) = store.get(picture) {
            if stored.meta.seq == seq {
                let decoded = decode_png(&stored.png, 4096).unwrap();
                assert_eq!(decoded.seq, Some(seq));
                return decoded.raster;
            }
        }
        assert!(Instant::now() < deadline, "{picture} not stored at {seq}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_during_release_gets_the_exact_picture() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(MemoryStore::new());
    let config = PpsConfig {
        flush_interval: Duration::from_secs(3600),
        ..PpsConfig::default()
    };
    let server = Server::start_with(dir.path(), &[], Pps::new(config, store.clone())).await;

    for round in 0..5u64 {
        let picture = format!("release-{round}");
        let mut a = Client::connect(&server.url, &picture, Some((48, 48)))
            .await
            .unwrap();
        let first = draw_acked(&mut a, 40, round).await;
        assert_eq!(first, 40);
        let expected = a.raster().unwrap().clone();
        // Slow storage: the release write is still under way when the next client arrives.
        store.set_delay(Some(Duration::from_millis(300)));
        a.close(deadline()).await.unwrap();
        let mut b = Client::connect(&server.url, &picture, None).await.unwrap();
        // (Storage has only the blank picture the first lease's takeover wrote.)
        assert_eq!(
            store.get(&picture).map(|p| p.meta.seq),
            Some(0),
            "the join was meant to happen during the release"
        );
        assert_eq!(b.last_seq(), first);
        assert!(b.raster() == Some(&expected));
        store.set_delay(None);

        // Numbering continues after the release.
        let last = draw_acked(&mut b, 10, 100 + round).await;
        assert_eq!(last, first + 10);
        let expected = b.raster().unwrap().clone();
        b.close(deadline()).await.unwrap();
        let stored = wait_stored_seq(&store, &picture, last).await;
        assert!(stored == expected);

        // And after everything was released, a new client continues from storage.
        let mut c = Client::connect(&server.url, &picture, None).await.unwrap();
        assert_eq!(c.last_seq(), last);
        assert!(c.raster() == Some(&expected));
        let next = draw_acked(&mut c, 1, 200 + round).await;
        assert_eq!(next, last + 1);
        c.close(deadline()).await.unwrap();
        wait_stored_seq(&store, &picture, last + 1).await;
    }
    server.stop().await;
}
