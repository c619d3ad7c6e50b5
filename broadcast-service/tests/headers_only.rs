//! The load generator's fast path (`headers_only`: ops left encoded) sees exactly what a fully
//! decoding client sees: the same seqs, senders and client seqs, in the same order.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use rand::{rngs::StdRng, SeedableRng};
use raster_client::{random_op, Client, ConnectOptions, Event, Profile};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_only_client_sees_what_a_full_client_sees() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]).await;
    let mut full = logged_client(&server, "headers", Some((64, 64))).await;
    let options = ConnectOptions {
        keep_raster: false,
        keep_log: true,
        headers_only: true,
        ..ConnectOptions::default()
    };
    let mut light = Client::connect_with(&server.url, "headers", options)
        .await
        .unwrap();
    let mut rng = StdRng::seed_from_u64(5);
    let mut last = 0;
    for _ in 0..200 {
        last = full
            .draw(random_op(&mut rng, 64, 64, Profile::Mixed))
            .await
            .unwrap();
    }
    full.wait_own(last, deadline()).await.unwrap();
    let mut headers = 0;
    while light.last_seq() < full.last_seq() {
        match light.next_event().await.unwrap() {
            Event::Headers(h) => headers += h.len(),
            Event::Updates(_) => panic!("headers_only client got decoded updates"),
            _ => {}
        }
    }
    assert_eq!(headers, 200);
    assert_eq!(light.log(), full.log());
    server.stop().await;
}
