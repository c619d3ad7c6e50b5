//! S3 on LocalStack for the end-to-end tests: the bucket the test command provides, and the
//! stored objects read back with aws-sdk-s3.
//!
//! Needs `S3_TEST_ENDPOINT` (and `S3_TEST_BUCKET`, default `raster-test`), as
//! `scripts/test.sh` provides; without it a test fails unless `S3_TESTS=skip`.

#![allow(dead_code, clippy::unwrap_used)]

use std::time::Duration;

use protocol::snapshot::decode_png;
use protocol::Raster;
use tokio::time::Instant;

use crate::common::deadline;

/// A key prefix no other run uses (`{name}-{nanoseconds since the epoch}/`): tests share the
/// bucket, runs of one test too.
pub(crate) fn unique_prefix(name: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{name}-{nanos}/")
}

pub(crate) struct S3 {
    pub endpoint: String,
    pub bucket: String,
    pub client: aws_sdk_s3::Client,
}

pub(crate) async fn s3() -> Option<S3> {
    let endpoint = match std::env::var("S3_TEST_ENDPOINT") {
        Ok(endpoint) if !endpoint.is_empty() => endpoint,
        _ if std::env::var("S3_TESTS").as_deref() == Ok("skip") => return None,
        _ => panic!(
            "S3_TEST_ENDPOINT is not set: this test needs LocalStack (scripts/localstack.sh \
             start PORT; S3_TEST_ENDPOINT=http://127.0.0.1:PORT), or S3_TESTS=skip"
        ),
    };
    let bucket = std::env::var("S3_TEST_BUCKET").unwrap_or_else(|_| "raster-test".into());
    let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_sdk_s3::config::Region::new("us-east-1"))
        .endpoint_url(&endpoint)
        .credentials_provider(aws_sdk_s3::config::Credentials::new(
            "test", "test", None, None, "e2e",
        ))
        .load()
        .await;
    let config = aws_sdk_s3::config::Builder::from(&sdk)
        .force_path_style(true)
        .build();
    Some(S3 {
        endpoint,
        bucket,
        client: aws_sdk_s3::Client::from_conf(config),
    })
}

/// The stored object: (metadata seq, decoded picture), or `None` when it does not exist.
pub(crate) async fn object(s3: &S3, key: &str) -> Option<(u64, Raster)> {
    let got = s3
        .client
        .get_object()
        .bucket(&s3.bucket)
        .key(key)
        .send()
        .await
        .ok()?;
    let meta_seq: u64 = got.metadata()?.get("seq")?.parse().unwrap();
    let bytes = got.body.collect().await.unwrap().into_bytes();
    let decoded = decode_png(&bytes, 4096).unwrap();
    assert_eq!(
        decoded.seq,
        Some(meta_seq),
        "tEXt seq and metadata seq differ"
    );
    Some((meta_seq, decoded.raster))
}

pub(crate) async fn wait_object_seq(s3: &S3, key: &str, seq: u64) -> Raster {
    let deadline = deadline();
    loop {
        if let Some((got, raster)) = object(s3, key).await {
            if got == seq {
                return raster;
            }
            assert!(got < seq, "{key} is at seq {got}, beyond {seq}");
        }
        assert!(
            Instant::now() < deadline,
            "{key} did not reach seq {seq} in time"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
