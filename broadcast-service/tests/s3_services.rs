//! End to end in services mode on S3 (LocalStack): drawing clients, the picture service and the
//! broadcast service as separate processes. What is in the bucket is read back with aws-sdk-s3
//! and compared pixel for pixel with a client's raster.
//!
//! Needs `S3_TEST_ENDPOINT` (and `S3_TEST_BUCKET`, default `raster-test`), as
//! `scripts/test.sh` provides; without it the test fails unless `S3_TESTS=skip`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod procs;
mod s3;

use std::path::Path;

use common::*;
use procs::*;
use raster_client::Client;
use s3::*;

fn pps_on_s3(port: u16, dir: &Path, store: &str, flush: &str, s3: &S3) -> Process {
    start_pps_with_env(
        port,
        dir,
        &["--store", store, "--flush-interval", flush],
        &[
            ("AWS_ENDPOINT_URL", &s3.endpoint),
            ("AWS_REGION", "us-east-1"),
            ("AWS_ACCESS_KEY_ID", "test"),
            ("AWS_SECRET_ACCESS_KEY", "test"),
        ],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_mode_on_s3_keeps_every_update() {
    let Some(s3) = s3().await else { return };
    let prefix = s3::unique_prefix("e2e");
    let store = format!("s3://{}/{prefix}", s3.bucket);
    let key = format!("{prefix}art.png");
    let dir = tempfile::tempdir().unwrap();
    let pps_port = free_port();
    let pps_http = format!("http://127.0.0.1:{pps_port}");

    // Picture service with a short periodic flush.
    let mut pps = pps_on_s3(pps_port, dir.path(), &store, "300ms", &s3);
    wait_healthy(&pps_http).await;
    let bs_port = free_port();
    let bs_args: Vec<String> = [
        "--listen".to_string(),
        format!("127.0.0.1:{bs_port}"),
        "--pps-url".into(),
        format!("ws://127.0.0.1:{pps_port}/bs"),
    ]
    .into();
    let mut bs = Process::spawn(Path::new(env!("CARGO_BIN_EXE_broadcast-service")), &bs_args);
    let bs_http = format!("http://127.0.0.1:{bs_port}");
    wait_healthy(&bs_http).await;

    // Periodic flushes are visible while drawing goes on: the object's seq increases.
    let mut a = Client::connect(&bs_http, "art", Some((64, 64)))
        .await
        .unwrap();
    let mut previous = 0;
    for round in 0..3 {
        let seq = draw_acked(&mut a, 25, round).await;
        assert!(seq > previous);
        let stored = wait_object_seq(&s3, &key, seq).await;
        assert!(
            Some(&stored) == a.raster(),
            "periodic flush at {seq}: pixels differ"
        );
        previous = seq;
    }
    // Last leave flushes.
    let seq = draw_acked(&mut a, 10, 10).await;
    let expected = a.raster().unwrap().clone();
    a.close(deadline()).await.unwrap();
    assert!(wait_object_seq(&s3, &key, seq).await == expected);

    // Restart the picture service, now with periodic flushes out of the way.
    pps.signal("-TERM");
    assert!(pps.wait().await);
    let mut pps = pps_on_s3(pps_port, dir.path(), &store, "1h", &s3);
    wait_healthy(&pps_http).await;

    // The restarted service loads the picture from S3 and seqs continue.
    let mut b = Client::connect(&bs_http, "art", None).await.unwrap();
    assert_eq!(b.last_seq(), seq);
    assert!(b.raster() == Some(&expected));
    let dirty = draw_acked(&mut b, 20, 20).await;
    assert_eq!(dirty, seq + 20);
    let (applied, _) = raster_client::snapshot(&bs_http, "art").await.unwrap();
    assert_eq!(applied, dirty);

    // SIGTERM to the picture service flushes the dirty picture before it exits.
    pps.signal("-TERM");
    assert!(pps.wait().await, "picture service did not exit cleanly");
    let (stored_seq, stored) = object(&s3, &key).await.unwrap();
    assert_eq!(stored_seq, dirty);
    assert!(Some(&stored) == b.raster());

    // And with a new picture service the same client goes on; its release lands in S3.
    let mut pps = pps_on_s3(pps_port, dir.path(), &store, "1h", &s3);
    wait_healthy(&pps_http).await;
    let last = draw_acked(&mut b, 15, 30).await;
    assert_eq!(last, dirty + 15);
    let expected = b.raster().unwrap().clone();
    b.close(deadline()).await.unwrap();
    assert!(wait_object_seq(&s3, &key, last).await == expected);

    bs.signal("-TERM");
    assert!(bs.wait().await);
    pps.signal("-TERM");
    assert!(pps.wait().await);
}
