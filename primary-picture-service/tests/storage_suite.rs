//! One storage test suite, run against every [`Store`]: memory, filesystem (a temp dir) and
//! S3 on a real LocalStack.
//!
//! Each case in [`cases`] is written once against a [`Fixture`] (two handles on one storage
//! namespace, so that two writers can race, plus a way to plant a corrupt object); the
//! `suite!` macro instantiates every case for every backend, so a test is named
//! `<backend>::<case>`, e.g. `s3::racing_writers_exactly_one_wins`.
//!
//! S3 needs `S3_TEST_ENDPOINT` (e.g. `http://127.0.0.1:4566`; start one with
//! `scripts/localstack.sh start 4566`) and optionally `S3_TEST_BUCKET` (default
//! `raster-test`). Without an endpoint the S3 tests FAIL, unless `S3_TESTS=skip` is set
//! explicitly. Every S3 case writes under its own key prefix, unique per run.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use primary_picture_service::store::fs::FsStore;
use primary_picture_service::store::memory::MemoryStore;
use primary_picture_service::store::s3::{client_from_sdk_config, S3Options, S3Store};
use primary_picture_service::store::{Store, StoreError, StoredMeta, Version};
use protocol::snapshot::{encode_png, Compression};
use protocol::{Op, PictureId, Raster};

type PlantFn = Box<dyn Fn(String, Bytes) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

/// What a case gets: one storage namespace seen through two independent handles.
struct Fixture {
    /// The store under test.
    store: Arc<dyn Store>,
    /// A second, independently constructed store over the same namespace: the "other
    /// writer" (another process, another PPS replica).
    other: Arc<dyn Store>,
    /// Writes raw bytes as picture `id`'s object, bypassing the store; `None` where the
    /// backend has no bytes that could be corrupt (memory).
    plant: Option<PlantFn>,
    /// Keeps the temp dir (fs) alive for the duration of the case.
    _guard: Option<tempfile::TempDir>,
}

/// A small picture whose pixels depend on `seq`, so two versions never have equal bytes
/// (S3 ETags are content hashes: equal bytes would give equal versions).
fn picture(seq: u64, width: u32, height: u32) -> (Bytes, StoredMeta) {
    let mut raster = Raster::new(width, height);
    raster.apply(&Op::Rect {
        x: (seq % u64::from(width)) as i32,
        y: 0,
        w: 1,
        h: height,
        color: [(seq % 251) as u8, 7, 9, 255],
    });
    let png = encode_png(&raster, seq, Compression::Fast).unwrap();
    (Bytes::from(png), StoredMeta::new(seq, width, height))
}

/// A picture id (the cases' ids are valid: the check is the edge's, `PictureId::parse`).
fn id(text: &str) -> PictureId {
    PictureId::parse(text).unwrap()
}

fn is_conflict(result: &Result<Version, StoreError>) -> bool {
    matches!(result, Err(StoreError::Conflict { .. }))
}

/// The cases, each run against every backend.
mod cases {
    use super::*;

    pub(crate) async fn load_missing_is_none(f: Fixture) {
        assert!(f.store.load(&id("never-saved")).await.unwrap().is_none());
    }

    pub(crate) async fn first_save_creates_and_a_second_create_conflicts(f: Fixture) {
        let (png1, meta1) = picture(1, 8, 4);
        let (png2, meta2) = picture(2, 8, 4);
        let v1 = f
            .store
            .save(&id("p"), png1.clone(), &meta1, None)
            .await
            .unwrap();
        let second = f.store.save(&id("p"), png2, &meta2, None).await;
        assert!(is_conflict(&second), "{second:?}");
        let loaded = f.store.load(&id("p")).await.unwrap().unwrap();
        assert_eq!(loaded.png, png1);
        assert_eq!(loaded.meta, meta1);
        assert_eq!(loaded.version, v1);
    }

    pub(crate) async fn save_with_current_version_replaces_and_stale_conflicts(f: Fixture) {
        let (png1, meta1) = picture(1, 8, 4);
        let (png2, meta2) = picture(2, 8, 4);
        let (png3, meta3) = picture(3, 8, 4);
        let v1 = f
            .store
            .save(&id("p"), png1, &meta1, Some(&Version("x".into())))
            .await;
        assert!(
            is_conflict(&v1),
            "expected version on a missing picture: {v1:?}"
        );
        let v1 = f
            .store
            .save(&id("p"), picture(1, 8, 4).0, &meta1, None)
            .await
            .unwrap();
        let v2 = f
            .store
            .save(&id("p"), png2.clone(), &meta2, Some(&v1))
            .await
            .unwrap();
        assert_ne!(v1, v2);
        let stale = f.store.save(&id("p"), png3, &meta3, Some(&v1)).await;
        assert!(is_conflict(&stale), "{stale:?}");
        let loaded = f.store.load(&id("p")).await.unwrap().unwrap();
        assert_eq!((loaded.png, loaded.meta, loaded.version), (png2, meta2, v2));
    }

    pub(crate) async fn load_returns_exact_bytes_meta_and_version(f: Fixture) {
        let (png, meta) = picture(12_345_678_901, 33, 17);
        let version = f
            .store
            .save(&id("exact"), png.clone(), &meta, None)
            .await
            .unwrap();
        for store in [&f.store, &f.other] {
            let loaded = store.load(&id("exact")).await.unwrap().unwrap();
            assert_eq!(loaded.png, png);
            assert_eq!(loaded.meta, StoredMeta::new(12_345_678_901, 33, 17));
            assert_eq!(loaded.version, version);
        }
    }

    pub(crate) async fn ids_with_dash_and_underscore_are_separate_pictures(f: Fixture) {
        let long = "a".repeat(64);
        let ids = ["a-b_C-9", "-", "_", "a_b", "a-b", long.as_str()];
        for (i, text) in ids.iter().enumerate() {
            let (png, meta) = picture(i as u64 + 1, 4, 4);
            f.store.save(&id(text), png, &meta, None).await.unwrap();
        }
        for (i, text) in ids.iter().enumerate() {
            let loaded = f.store.load(&id(text)).await.unwrap().unwrap();
            assert_eq!(loaded.png, picture(i as u64 + 1, 4, 4).0, "{text}");
            assert_eq!(loaded.meta.seq, i as u64 + 1, "{text}");
        }
        assert!(f.store.load(&id("a-b_C")).await.unwrap().is_none());
    }

    pub(crate) async fn racing_writers_exactly_one_wins(f: Fixture) {
        // Round 0 races two creates; later rounds race two updates from the same version.
        let mut current: Option<Version> = None;
        let race = id("race");
        for round in 0..8u64 {
            let (png_a, meta_a) = picture(round * 2 + 1, 8, 4);
            let (png_b, meta_b) = picture(round * 2 + 2, 8, 4);
            let (a, b) = tokio::join!(
                f.store
                    .save(&race, png_a.clone(), &meta_a, current.as_ref()),
                f.other
                    .save(&race, png_b.clone(), &meta_b, current.as_ref()),
            );
            let (winner, png, meta) = match (a, b) {
                (Ok(v), Err(StoreError::Conflict { .. })) => (v, png_a, meta_a),
                (Err(StoreError::Conflict { .. }), Ok(v)) => (v, png_b, meta_b),
                other => panic!("round {round}: expected exactly one winner, got {other:?}"),
            };
            for store in [&f.store, &f.other] {
                let loaded = store.load(&id("race")).await.unwrap().unwrap();
                assert_eq!(loaded.png, png, "round {round}");
                assert_eq!(loaded.meta, meta, "round {round}");
                assert_eq!(loaded.version, winner, "round {round}");
            }
            current = Some(winner);
        }
    }

    fn now_ms() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64
    }

    pub(crate) async fn versions_put_list_get_delete(f: Fixture) {
        assert_eq!(f.store.list_versions(&id("p")).await.unwrap(), vec![]);
        assert_eq!(f.store.get_version(&id("p"), 5).await.unwrap(), None);
        let before = now_ms();
        let versions: Vec<(u64, Bytes)> = [20u64, 5, 3]
            .iter()
            .map(|&seq| (seq, picture(seq, 8 + seq as u32, 4).0))
            .collect();
        for (seq, png) in &versions {
            f.store
                .put_version(&id("p"), *seq, png.clone())
                .await
                .unwrap();
        }
        let after = now_ms();
        for store in [&f.store, &f.other] {
            let listed = store.list_versions(&id("p")).await.unwrap();
            let seqs_sizes: Vec<(u64, u64)> = listed.iter().map(|v| (v.seq, v.size)).collect();
            let want = |seq: u64| versions.iter().find(|(s, _)| *s == seq).unwrap().1.len() as u64;
            assert_eq!(seqs_sizes, vec![(3, want(3)), (5, want(5)), (20, want(20))]);
            for v in &listed {
                // S3 keeps times to the second.
                assert!(
                    v.time_ms + 1_000 >= before && v.time_ms <= after + 1_000,
                    "{v:?} not within {before}..{after}"
                );
            }
            for (seq, png) in &versions {
                assert_eq!(
                    store.get_version(&id("p"), *seq).await.unwrap().as_ref(),
                    Some(png)
                );
            }
        }
        // Versions are not pictures, and belong to their picture only.
        assert!(f.store.load(&id("p")).await.unwrap().is_none());
        assert_eq!(f.store.list_versions(&id("p-1")).await.unwrap(), vec![]);
        assert_eq!(f.store.get_version(&id("p"), 4).await.unwrap(), None);
        f.store.delete_version(&id("p"), 5).await.unwrap();
        // Deleting what is not there is fine (a prune retried, or raced).
        f.store.delete_version(&id("p"), 5).await.unwrap();
        f.store.delete_version(&id("p"), 999).await.unwrap();
        let seqs: Vec<u64> = f
            .other
            .list_versions(&id("p"))
            .await
            .unwrap()
            .iter()
            .map(|v| v.seq)
            .collect();
        assert_eq!(seqs, vec![3, 20]);
        assert_eq!(f.other.get_version(&id("p"), 5).await.unwrap(), None);
    }

    pub(crate) async fn versions_are_created_once_and_never_replaced(f: Fixture) {
        let (first, _) = picture(7, 8, 4);
        let (second, _) = picture(8, 8, 4);
        f.store
            .put_version(&id("v"), 7, first.clone())
            .await
            .unwrap();
        let again = f.other.put_version(&id("v"), 7, second.clone()).await;
        assert!(
            matches!(again, Err(StoreError::Conflict { .. })),
            "{again:?}"
        );
        assert_eq!(f.store.get_version(&id("v"), 7).await.unwrap(), Some(first));
        // Two writers racing on one new version: exactly one wins, and its bytes are stored.
        let v = id("v");
        for seq in 100..104u64 {
            let (a, b) = (picture(seq, 8, 4).0, picture(seq + 50, 8, 4).0);
            let (ra, rb) = tokio::join!(
                f.store.put_version(&v, seq, a.clone()),
                f.other.put_version(&v, seq, b.clone()),
            );
            let stored = match (ra, rb) {
                (Ok(()), Err(StoreError::Conflict { .. })) => a,
                (Err(StoreError::Conflict { .. }), Ok(())) => b,
                other => panic!("seq {seq}: expected exactly one winner, got {other:?}"),
            };
            assert_eq!(
                f.store.get_version(&id("v"), seq).await.unwrap(),
                Some(stored)
            );
        }
        let seqs: Vec<u64> = f
            .store
            .list_versions(&id("v"))
            .await
            .unwrap()
            .iter()
            .map(|v| v.seq)
            .collect();
        assert_eq!(seqs, vec![7, 100, 101, 102, 103]);
    }

    pub(crate) async fn versions_sit_beside_the_picture_and_leave_it_alone(f: Fixture) {
        let (png, meta) = picture(9, 8, 4);
        let version = f
            .store
            .save(&id("q"), png.clone(), &meta, None)
            .await
            .unwrap();
        f.store.put_version(&id("q"), 9, png.clone()).await.unwrap();
        f.store
            .put_version(&id("q_2"), 1, picture(1, 8, 4).0)
            .await
            .unwrap();
        let loaded = f.store.load(&id("q")).await.unwrap().unwrap();
        assert_eq!((loaded.png, loaded.version), (png.clone(), version));
        assert_eq!(f.store.get_version(&id("q"), 9).await.unwrap(), Some(png));
        let seqs = |list: Vec<primary_picture_service::store::VersionInfo>| {
            list.iter().map(|v| v.seq).collect::<Vec<_>>()
        };
        assert_eq!(
            seqs(f.store.list_versions(&id("q")).await.unwrap()),
            vec![9]
        );
        assert_eq!(
            seqs(f.store.list_versions(&id("q_2")).await.unwrap()),
            vec![1]
        );
        // Ids that could leave the history's directory or prefix never reach a store: they are
        // no `PictureId`.
        assert!(PictureId::parse("../q").is_err());
    }

    pub(crate) async fn corrupt_object_is_corrupt(f: Fixture) {
        let Some(plant) = &f.plant else {
            // Memory holds typed values: there are no bytes to be corrupt.
            return;
        };
        plant("garbage".into(), Bytes::from_static(b"this is not a png")).await;
        let result = f.store.load(&id("garbage")).await;
        assert!(
            matches!(&result, Err(StoreError::Corrupt { picture, .. }) if picture == "garbage"),
            "{result:?}"
        );
        // A truncated PNG: the header is cut in the middle.
        let (png, _) = picture(5, 8, 4);
        plant("cut".into(), png.slice(..20)).await;
        let result = f.store.load(&id("cut")).await;
        assert!(
            matches!(result, Err(StoreError::Corrupt { .. })),
            "{result:?}"
        );
        // The other pictures are unaffected.
        assert!(f.store.load(&id("fine")).await.unwrap().is_none());
    }
}

macro_rules! suite {
    ($backend:ident, $fixture:path) => {
        mod $backend {
            use super::*;
            suite!(@cases $fixture;
                load_missing_is_none,
                first_save_creates_and_a_second_create_conflicts,
                save_with_current_version_replaces_and_stale_conflicts,
                load_returns_exact_bytes_meta_and_version,
                ids_with_dash_and_underscore_are_separate_pictures,
                racing_writers_exactly_one_wins,
                corrupt_object_is_corrupt,
                versions_put_list_get_delete,
                versions_are_created_once_and_never_replaced,
                versions_sit_beside_the_picture_and_leave_it_alone,
            );
        }
    };
    (@cases $fixture:path; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                if let Some(fixture) = $fixture(stringify!($case)).await {
                    cases::$case(fixture).await;
                }
            }
        )*
    };
}

suite!(memory, memory_fixture);
suite!(fs, fs_fixture);
suite!(s3, s3_fixture);

async fn memory_fixture(_case: &str) -> Option<Fixture> {
    let store = Arc::new(MemoryStore::new());
    Some(Fixture {
        store: store.clone(),
        other: store,
        plant: None,
        _guard: None,
    })
}

async fn fs_fixture(_case: &str) -> Option<Fixture> {
    let dir = tempfile::tempdir().unwrap();
    let root: PathBuf = dir.path().to_path_buf();
    let plant: PlantFn = Box::new(move |id, bytes| {
        let path = root.join("pictures").join(format!("{id}.png"));
        Box::pin(async move {
            tokio::fs::create_dir_all(path.parent().unwrap())
                .await
                .unwrap();
            tokio::fs::write(&path, &bytes).await.unwrap();
        })
    });
    Some(Fixture {
        store: Arc::new(FsStore::new(dir.path())),
        other: Arc::new(FsStore::new(dir.path())),
        plant: Some(plant),
        _guard: Some(dir),
    })
}

/// Where the S3 tests run, from the environment; `None` when they are explicitly skipped.
fn s3_target() -> Option<(String, String)> {
    match std::env::var("S3_TEST_ENDPOINT") {
        Ok(endpoint) if !endpoint.is_empty() => {
            let bucket = std::env::var("S3_TEST_BUCKET").unwrap_or_else(|_| "raster-test".into());
            Some((endpoint, bucket))
        }
        _ if std::env::var("S3_TESTS").as_deref() == Ok("skip") => {
            eprintln!("S3_TESTS=skip: not running the S3 storage tests");
            None
        }
        _ => panic!(
            "S3_TEST_ENDPOINT is not set: the S3 storage tests need LocalStack. Run \
             `scripts/localstack.sh start 4566` and set S3_TEST_ENDPOINT=http://127.0.0.1:4566 \
             (S3_TEST_BUCKET defaults to raster-test), or set S3_TESTS=skip to skip them \
             explicitly."
        ),
    }
}

/// An S3 client for `endpoint` with LocalStack's dummy credentials, built the way the
/// service builds its own (path style, bounded timeouts and retries).
async fn s3_client(endpoint: &str, options: &S3Options) -> aws_sdk_s3::Client {
    use aws_sdk_s3::config::{Credentials, Region};
    let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .credentials_provider(Credentials::new(
            "test",
            "test",
            None,
            None,
            "storage-suite",
        ))
        .load()
        .await;
    client_from_sdk_config(&sdk, options)
}

/// A key prefix no other run or case shares, so runs can share a bucket.
fn unique_prefix(case: &str) -> String {
    static RUN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let run = RUN.get_or_init(|| {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        format!("suite-{}-{nanos}", std::process::id())
    });
    format!("{run}/{case}/")
}

async fn s3_fixture(case: &str) -> Option<Fixture> {
    let (endpoint, bucket) = s3_target()?;
    let prefix = unique_prefix(case);
    let options = S3Options::default();
    let client = s3_client(&endpoint, &options).await;
    let store = S3Store::new(client.clone(), bucket.clone(), &prefix);
    // A second client too: the other writer shares nothing with the first.
    let other = S3Store::new(
        s3_client(&endpoint, &options).await,
        bucket.clone(),
        &prefix,
    );
    let keys = store.clone();
    let plant: PlantFn = Box::new(move |id, bytes| {
        let (client, bucket, key) = (client.clone(), bucket.clone(), keys.key(&id));
        Box::pin(async move {
            client
                .put_object()
                .bucket(bucket)
                .key(key)
                .body(bytes.into())
                .send()
                .await
                .unwrap();
        })
    });
    Some(Fixture {
        store: Arc::new(store),
        other: Arc::new(other),
        plant: Some(plant),
        _guard: None,
    })
}

/// S3-only behaviour: what the object looks like to other tools, and failure classes.
mod s3_only {
    use super::*;

    async fn setup(case: &str) -> Option<(aws_sdk_s3::Client, String, S3Store)> {
        let (endpoint, bucket) = s3_target()?;
        let client = s3_client(&endpoint, &S3Options::default()).await;
        let store = S3Store::new(client.clone(), bucket.clone(), &unique_prefix(case));
        Some((client, bucket, store))
    }

    #[tokio::test]
    async fn object_has_key_content_type_and_metadata() {
        let Some((client, bucket, store)) = setup("object_metadata").await else {
            return;
        };
        let (png, meta) = picture(77, 12, 5);
        let version = store
            .save(&id("meta-1"), png.clone(), &meta, None)
            .await
            .unwrap();
        let head = client
            .head_object()
            .bucket(&bucket)
            .key(format!("{}meta-1.png", store.prefix()))
            .send()
            .await
            .unwrap();
        assert_eq!(head.content_type(), Some("image/png"));
        assert_eq!(head.content_length(), Some(png.len() as i64));
        assert_eq!(head.e_tag(), Some(version.0.as_str()));
        let metadata = head.metadata().unwrap();
        assert_eq!(metadata.get("seq").map(String::as_str), Some("77"));
        assert_eq!(metadata.get("width").map(String::as_str), Some("12"));
        assert_eq!(metadata.get("height").map(String::as_str), Some("5"));
    }

    #[tokio::test]
    async fn missing_metadata_falls_back_to_the_png_and_mismatch_is_corrupt() {
        let Some((client, bucket, store)) = setup("metadata_fallback").await else {
            return;
        };
        let (png, _) = picture(9, 6, 3);
        client
            .put_object()
            .bucket(&bucket)
            .key(store.key("bare"))
            .body(png.clone().into())
            .send()
            .await
            .unwrap();
        let loaded = store.load(&id("bare")).await.unwrap().unwrap();
        assert_eq!(loaded.png, png);
        assert_eq!(loaded.meta, StoredMeta::new(9, 6, 3));
        client
            .put_object()
            .bucket(&bucket)
            .key(store.key("liar"))
            .metadata("seq", "10")
            .body(png.into())
            .send()
            .await
            .unwrap();
        let result = store.load(&id("liar")).await;
        assert!(
            matches!(result, Err(StoreError::Corrupt { .. })),
            "{result:?}"
        );
    }

    #[tokio::test]
    async fn object_over_the_size_bound_is_corrupt() {
        let Some((_, _, store)) = setup("size_bound").await else {
            return;
        };
        let (png, meta) = picture(1, 64, 64);
        store
            .save(&id("big"), png.clone(), &meta, None)
            .await
            .unwrap();
        let bounded = store.clone().with_max_object_bytes(png.len() as u64 - 1);
        let result = bounded.load(&id("big")).await;
        assert!(
            matches!(result, Err(StoreError::Corrupt { .. })),
            "{result:?}"
        );
        let exact = store.with_max_object_bytes(png.len() as u64);
        assert_eq!(exact.load(&id("big")).await.unwrap().unwrap().png, png);
    }

    #[tokio::test]
    async fn missing_bucket_is_refused() {
        let Some((endpoint, _)) = s3_target() else {
            return;
        };
        let client = s3_client(&endpoint, &S3Options::default()).await;
        let store = S3Store::new(client, "raster-no-such-bucket", "x/");
        let result = store.load(&id("p")).await;
        assert!(matches!(result, Err(StoreError::Refused(_))), "{result:?}");
        let (png, meta) = picture(1, 4, 4);
        let result = store.save(&id("p"), png, &meta, None).await;
        assert!(matches!(result, Err(StoreError::Refused(_))), "{result:?}");
    }

    /// `from_url` configured by the standard AWS variables alone (endpoint, region, keys),
    /// as the binary is. The environment is process-wide, so the real work runs in a child
    /// process (this test binary again, filtered to this test) with those variables set.
    #[tokio::test]
    async fn from_url_uses_the_standard_aws_environment() {
        const CHILD: &str = "STORAGE_SUITE_FROM_URL_CHILD";
        if let Ok(url) = std::env::var(CHILD) {
            let store = S3Store::from_url(&url, false).await.unwrap();
            assert_eq!(store.describe(), url);
            let (png, meta) = picture(3, 5, 5);
            let version = store
                .save(&id("env"), png.clone(), &meta, None)
                .await
                .unwrap();
            let loaded = store.load(&id("env")).await.unwrap().unwrap();
            assert_eq!(
                (loaded.png, loaded.meta, loaded.version),
                (png, meta, version)
            );
            return;
        }
        let Some((endpoint, bucket)) = s3_target() else {
            return;
        };
        let url = format!("s3://{bucket}/{}", unique_prefix("from_url"));
        let output = tokio::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "s3_only::from_url_uses_the_standard_aws_environment",
                "--exact",
                "--nocapture",
            ])
            .env(CHILD, &url)
            .env("AWS_ENDPOINT_URL", &endpoint)
            .env("AWS_REGION", "us-east-1")
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env_remove("AWS_PROFILE")
            .output()
            .await
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success() && stdout.contains("1 passed"),
            "child failed: {}\n{stdout}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// Needs no LocalStack: the endpoint accepts connections and never answers, the way a
    /// wedged proxy does; the operation timeout must end the wait.
    #[tokio::test]
    async fn silent_endpoint_times_out_as_unavailable() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        // Accept and hold every connection without reading or writing.
        let holder = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                held.push(socket);
            }
        });
        let options = S3Options {
            max_attempts: 2,
            connect_timeout_ms: 1_000,
            operation_timeout_ms: 2_000,
            ..S3Options::default()
        };
        let store = S3Store::new(
            s3_client(&format!("http://{addr}"), &options).await,
            "raster-test",
            "",
        );
        let started = Instant::now();
        let loaded = store.load(&id("p")).await;
        let elapsed = started.elapsed();
        holder.abort();
        assert!(
            matches!(loaded, Err(StoreError::Unavailable(_))),
            "{loaded:?}"
        );
        assert!(
            elapsed >= Duration::from_millis(1_900) && elapsed < Duration::from_secs(5),
            "took {elapsed:?}"
        );
    }

    /// Needs no LocalStack: the endpoint is a port nobody listens on.
    #[tokio::test]
    async fn unreachable_endpoint_is_unavailable_quickly() {
        let closed = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap()
        };
        let options = S3Options {
            max_attempts: 2,
            connect_timeout_ms: 1_000,
            operation_timeout_ms: 5_000,
            ..S3Options::default()
        };
        let client = s3_client(&format!("http://{closed}"), &options).await;
        let store = S3Store::new(client, "raster-test", "");
        let started = Instant::now();
        let loaded = store.load(&id("p")).await;
        let (png, meta) = picture(1, 4, 4);
        let saved = store.save(&id("p"), png, &meta, None).await;
        let elapsed = started.elapsed();
        assert!(
            matches!(loaded, Err(StoreError::Unavailable(_))),
            "{loaded:?}"
        );
        assert!(
            matches!(saved, Err(StoreError::Unavailable(_))),
            "{saved:?}"
        );
        // Two operations, each bounded by the 5 s operation timeout.
        assert!(elapsed < Duration::from_secs(11), "took {elapsed:?}");
    }
}
