//! History and timelapse (PROTOCOL.md §15), end to end over HTTP, on the filesystem store and on
//! S3 (LocalStack): versions written at release and at the history interval, the listing's
//! exact JSON, retention, `history/{seq}.png` byte for byte, 404s, and the timelapse decoded
//! frame by frame against the stored versions scaled as the protocol defines.
//!
//! The S3 tests need `S3_TEST_ENDPOINT` (and `S3_TEST_BUCKET`, default `raster-test`); without
//! it they fail unless `S3_TESTS=skip`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod s3;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use common::*;
use primary_picture_service::store::fs::FsStore;
use primary_picture_service::store::s3::S3Store;
use primary_picture_service::store::Store;
use primary_picture_service::{Pps, PpsConfig};
use protocol::snapshot::decode_png;
use raster_client::Client;
use tokio::time::Instant;

/// A listed version: (seq, time_ms, size).
type Entry = (u64, u64, u64);

fn server_config(interval: Duration, keep: usize, flush: Duration) -> PpsConfig {
    PpsConfig {
        flush_interval: flush,
        history_interval: interval,
        history_keep: keep,
        ..PpsConfig::default()
    }
}

/// `GET /pictures/{id}/history`, parsed (and checked to be exactly the documented shape).
async fn history(server: &Server, picture: &str) -> Vec<Entry> {
    let response = reqwest::get(format!("{}/pictures/{picture}/history", server.http))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"].to_str().unwrap(),
        "application/json"
    );
    let text = response.text().await.unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(json["picture"], picture, "{text}");
    let entries: Vec<Entry> = json["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            assert_eq!(v.as_object().unwrap().len(), 3, "{text}");
            (
                v["seq"].as_u64().unwrap(),
                v["time_ms"].as_u64().unwrap(),
                v["size"].as_u64().unwrap(),
            )
        })
        .collect();
    // The exact text, field order and all.
    let rebuilt: Vec<String> = entries
        .iter()
        .map(|(seq, time, size)| format!(r#"{{"seq":{seq},"time_ms":{time},"size":{size}}}"#))
        .collect();
    assert_eq!(
        text,
        format!(
            "{{\"picture\":\"{picture}\",\"versions\":[{}]}}\n",
            rebuilt.join(",")
        )
    );
    entries
}

fn seqs(entries: &[Entry]) -> Vec<u64> {
    entries.iter().map(|e| e.0).collect()
}

/// Waits until the history's seqs satisfy `done`.
async fn wait_history(
    server: &Server,
    picture: &str,
    what: &str,
    done: impl Fn(&[u64]) -> bool,
) -> Vec<Entry> {
    let deadline = deadline();
    loop {
        let listed = history(server, picture).await;
        if done(&seqs(&listed)) {
            return listed;
        }
        assert!(
            Instant::now() < deadline,
            "{picture}: never {what} (have {:?})",
            seqs(&listed)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until the history lists `seq`.
async fn wait_version(server: &Server, picture: &str, seq: u64) -> Vec<Entry> {
    wait_history(server, picture, &format!("listed {seq}"), |seqs| {
        seqs.contains(&seq)
    })
    .await
}

/// Waits until storage holds `picture` at `seq`; returns its bytes.
async fn wait_picture(store: &dyn Store, picture: &str, seq: u64) -> Bytes {
    let deadline = deadline();
    loop {
        if let Some(stored) = store
            .load(&protocol::PictureId::parse(picture).unwrap())
            .await
            .unwrap()
        {
            if stored.meta.seq == seq {
                return stored.png;
            }
        }
        assert!(Instant::now() < deadline, "{picture} not stored at {seq}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `GET /pictures/{id}/history/{seq}.png`: (status, body, X-Picture-Seq).
async fn version(server: &Server, picture: &str, name: &str) -> (u16, Bytes, Option<u64>) {
    let response = reqwest::get(format!("{}/pictures/{picture}/history/{name}", server.http))
        .await
        .unwrap();
    let status = response.status().as_u16();
    let seq = response
        .headers()
        .get("x-picture-seq")
        .map(|v| v.to_str().unwrap().parse().unwrap());
    (status, response.bytes().await.unwrap(), seq)
}

/// The protocol's nearest-neighbour scaling (PROTOCOL.md §15), written again from its text.
fn scaled(rgba: &[u8], w: u32, h: u32, width: u32) -> (u32, Vec<u8>) {
    let (w64, h64, width64) = (u64::from(w), u64::from(h), u64::from(width));
    let height = ((h64 * width64 + w64 / 2) / w64).max(1);
    let mut out = Vec::new();
    for y in 0..height {
        for x in 0..width64 {
            let (sx, sy) = (x * w64 / width64, y * h64 / height);
            let at = ((sy * w64 + sx) * 4) as usize;
            out.extend_from_slice(&rgba[at..at + 4]);
        }
    }
    (height as u32, out)
}

/// Fetches the timelapse and decodes it frame by frame: (frames header, size, frames).
async fn timelapse(server: &Server, picture: &str, query: &str) -> (u64, (u32, u32), Vec<Vec<u8>>) {
    let delay: u16 = query
        .split('&')
        .find_map(|p| p.strip_prefix("delay="))
        .map_or(200, |d| d.parse().unwrap());
    let response = reqwest::get(format!(
        "{}/pictures/{picture}/timelapse?{query}",
        server.http
    ))
    .await
    .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "image/apng");
    let announced: u64 = response.headers()["x-timelapse-frames"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let body = response.bytes().await.unwrap();
    let mut reader = png::Decoder::new(std::io::Cursor::new(&body[..]))
        .read_info()
        .unwrap();
    let info = reader.info();
    let size = (info.width, info.height);
    let control = info.animation_control.unwrap();
    assert_eq!(u64::from(control.num_frames), announced);
    assert_eq!(control.num_plays, 0);
    let mut frames = Vec::new();
    for _ in 0..control.num_frames {
        let mut buf = vec![0; reader.output_buffer_size()];
        let frame = reader.next_frame(&mut buf).unwrap();
        // Every frame is whole (the full size, at 0,0).
        let fc = reader.info().frame_control.unwrap();
        assert_eq!(
            (fc.width, fc.height, fc.x_offset, fc.y_offset),
            (size.0, size.1, 0, 0)
        );
        assert_eq!(fc.dispose_op, png::DisposeOp::None);
        assert_eq!(fc.blend_op, png::BlendOp::Source);
        assert_eq!((fc.delay_num, fc.delay_den), (delay, 1000));
        buf.truncate(frame.buffer_size());
        frames.push(buf);
    }
    (announced, size, frames)
}

/// Five sessions of two ops each on one picture, each ended by its client leaving (a release):
/// a version at every release whatever the interval, the oldest pruned beyond `keep` = 3;
/// then the endpoints, and the timelapse.
async fn releases_make_versions_and_retention_prunes(store: Arc<dyn Store>) {
    let dir = tempfile::tempdir().unwrap();
    // The interval is long and flushes happen only at release: every version is a release's.
    let config = server_config(Duration::from_secs(600), 3, Duration::from_secs(3600));
    let server = Server::start_with(dir.path(), &[], Pps::new(config, store.clone())).await;
    let picture = "hist";
    let mut stored: BTreeMap<u64, Bytes> = BTreeMap::new();
    for round in 1..=5u64 {
        let mut client = Client::connect(&server.url, picture, Some((20, 12)))
            .await
            .unwrap();
        let last = draw_acked(&mut client, 2, round).await;
        assert_eq!(last, 2 * round);
        client.close(deadline()).await.unwrap();
        stored.insert(last, wait_picture(store.as_ref(), picture, last).await);
        // The newest three releases' versions, once the prune after this one is done.
        let want: Vec<u64> = (round.saturating_sub(2).max(1)..=round)
            .map(|r| 2 * r)
            .collect();
        wait_history(&server, picture, &format!("{want:?}"), |seqs| seqs == want).await;
    }
    let listed = history(&server, picture).await;
    assert_eq!(seqs(&listed), vec![6, 8, 10]);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    for &(seq, time_ms, size) in &listed {
        assert_eq!(size, stored[&seq].len() as u64, "seq {seq}");
        assert!(
            time_ms <= now + 1_000 && time_ms + 120_000 > now,
            "{time_ms}"
        );
        // Byte for byte what the release stored, and what storage holds for the version.
        let (status, body, header) = version(&server, picture, &format!("{seq}.png")).await;
        assert_eq!((status, header), (200, Some(seq)));
        assert_eq!(body, stored[&seq], "seq {seq}");
        assert_eq!(
            store
                .get_version(&protocol::PictureId::parse(picture).unwrap(), seq)
                .await
                .unwrap(),
            Some(stored[&seq].clone())
        );
    }
    // Pruned, never written, malformed, another picture.
    assert_eq!(version(&server, picture, "2.png").await.0, 404);
    assert_eq!(version(&server, picture, "7.png").await.0, 404);
    assert_eq!(version(&server, picture, "x.png").await.0, 400);
    assert_eq!(version(&server, picture, "6").await.0, 400);
    assert_eq!(version(&server, "other", "6.png").await.0, 404);
    assert_eq!(history(&server, "other").await, vec![]);

    // The timelapse: every version, at its own width, then scaled, then sampled.
    let decoded: Vec<(u32, u32, Vec<u8>)> = [6u64, 8, 10]
        .iter()
        .map(|seq| {
            let d = decode_png(&stored[seq], 4096).unwrap();
            (
                d.raster.width(),
                d.raster.height(),
                d.raster.pixels().to_vec(),
            )
        })
        .collect();
    let (announced, size, frames) = timelapse(&server, picture, "delay=50").await;
    assert_eq!((announced, size), (3, (20, 12)));
    for (i, (w, h, rgba)) in decoded.iter().enumerate() {
        assert_eq!(frames[i], scaled(rgba, *w, *h, 20).1, "frame {i}");
    }
    for width in [7u32, 45] {
        let (announced, size, frames) =
            timelapse(&server, picture, &format!("width={width}")).await;
        let want_height = scaled(&decoded[0].2, 20, 12, width).0;
        assert_eq!((announced, size), (3, (width, want_height)));
        for (i, (w, h, rgba)) in decoded.iter().enumerate() {
            assert_eq!(
                frames[i],
                scaled(rgba, *w, *h, width).1,
                "width {width} frame {i}"
            );
        }
    }
    // Two frames of three versions: the first and the last.
    let (announced, _, frames) = timelapse(&server, picture, "frames=2&width=10").await;
    assert_eq!(announced, 2);
    assert_eq!(frames[0], scaled(&decoded[0].2, 20, 12, 10).1);
    assert_eq!(frames[1], scaled(&decoded[2].2, 20, 12, 10).1);
    // Bounds are checked, and a picture without history has no timelapse.
    for query in [
        "width=0",
        "width=1025",
        "frames=0",
        "frames=301",
        "delay=5",
        "delay=x",
    ] {
        let response = reqwest::get(format!(
            "{}/pictures/{picture}/timelapse?{query}",
            server.http
        ))
        .await
        .unwrap();
        assert_eq!(response.status(), 400, "{query}");
    }
    let response = reqwest::get(format!("{}/pictures/other/timelapse", server.http))
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    server.stop().await;
}

/// With interval 0 a version is stored at every flush, while clients are still drawing.
async fn interval_zero_stores_every_flush(store: Arc<dyn Store>) {
    let dir = tempfile::tempdir().unwrap();
    let config = server_config(Duration::ZERO, 100, Duration::from_millis(50));
    let server = Server::start_with(dir.path(), &[], Pps::new(config, store.clone())).await;
    let picture = "often";
    let mut client = Client::connect(&server.url, picture, Some((16, 16)))
        .await
        .unwrap();
    for round in 1..=3u64 {
        let last = draw_acked(&mut client, 3, round).await;
        // Still connected: the version comes from a periodic flush, not a release.
        let listed = wait_version(&server, picture, last).await;
        let seqs = seqs(&listed);
        assert!(
            seqs.windows(2).all(|w| w[0] < w[1]) && seqs.last() == Some(&last),
            "{seqs:?}"
        );
        // The version is the picture as that flush stored it.
        let png = wait_picture(store.as_ref(), picture, last).await;
        assert_eq!(
            version(&server, picture, &format!("{last}.png")).await.1,
            png
        );
    }
    client.close(deadline()).await.unwrap();
    server.stop().await;
}

/// With a long interval, a changing picture gets one version (its first flush) and then one at
/// release, nothing in between.
async fn long_interval_stores_first_flush_and_release(store: Arc<dyn Store>) {
    let dir = tempfile::tempdir().unwrap();
    let config = server_config(Duration::from_secs(600), 100, Duration::from_millis(50));
    let server = Server::start_with(dir.path(), &[], Pps::new(config, store.clone())).await;
    let picture = "seldom";
    let mut client = Client::connect(&server.url, picture, Some((16, 16)))
        .await
        .unwrap();
    let last = draw_acked(&mut client, 3, 1).await;
    wait_picture(store.as_ref(), picture, last).await;
    let deadline = deadline();
    let first = loop {
        let listed = history(&server, picture).await;
        if let Some(&(seq, _, _)) = listed.first() {
            break seq;
        }
        assert!(Instant::now() < deadline, "no first version");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let last = draw_acked(&mut client, 3, 2).await;
    assert_eq!(last, 6);
    wait_picture(store.as_ref(), picture, last).await;
    client.close(deadline).await.unwrap();
    let listed = wait_version(&server, picture, last).await;
    assert_eq!(seqs(&listed), vec![first, last]);
    // The release's version, not a later flush's: nothing else comes.
    assert_eq!(seqs(&history(&server, picture).await), vec![first, last]);
    server.stop().await;
}

fn fs_store() -> (Arc<dyn Store>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    (Arc::new(FsStore::new(dir.path())), dir)
}

async fn s3_store(case: &str) -> Option<Arc<dyn Store>> {
    let s3 = s3::s3().await?;
    let prefix = s3::unique_prefix(&format!("history-{case}"));
    Some(Arc::new(S3Store::new(s3.client, s3.bucket, &prefix)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fs_releases_make_versions_and_retention_prunes() {
    let (store, _dir) = fs_store();
    releases_make_versions_and_retention_prunes(store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fs_interval_zero_stores_every_flush() {
    let (store, _dir) = fs_store();
    interval_zero_stores_every_flush(store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fs_long_interval_stores_first_flush_and_release() {
    let (store, _dir) = fs_store();
    long_interval_stores_first_flush_and_release(store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_releases_make_versions_and_retention_prunes() {
    let Some(store) = s3_store("release").await else {
        return;
    };
    releases_make_versions_and_retention_prunes(store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_interval_zero_stores_every_flush() {
    let Some(store) = s3_store("interval").await else {
        return;
    };
    interval_zero_stores_every_flush(store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_long_interval_stores_first_flush_and_release() {
    let Some(store) = s3_store("long").await else {
        return;
    };
    long_interval_stores_first_flush_and_release(store).await;
}

/// Services mode: the broadcast service asks the picture service over the link (the new
/// `History` and `Version` requests); the files lie where PROTOCOL.md §15 says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_mode_serves_history_over_the_link() {
    let pps_dir = tempfile::tempdir().unwrap();
    let config = PpsConfig {
        lease_timeout: Duration::from_secs(2),
        ..server_config(Duration::ZERO, 10, Duration::from_secs(3600))
    };
    let pps = PpsServer::start(pps_dir.path(), config).await;
    let bs_dir = tempfile::tempdir().unwrap();
    let server = Server::start(bs_dir.path(), &["--pps-url", &pps.url]).await;
    let picture = "remote";
    let mut client = Client::connect(&server.url, picture, Some((9, 5)))
        .await
        .unwrap();
    let last = draw_acked(&mut client, 4, 9).await;
    client.close(deadline()).await.unwrap();
    let listed = wait_version(&server, picture, last).await;
    assert_eq!(seqs(&listed), vec![last]);
    let file = pps_dir
        .path()
        .join(format!("pictures/{picture}.history/{last:020}.png"));
    let on_disk = std::fs::read(&file).unwrap();
    assert_eq!(listed[0].2, on_disk.len() as u64);
    let (status, body, seq) = version(&server, picture, &format!("{last}.png")).await;
    assert_eq!((status, seq), (200, Some(last)));
    assert_eq!(body, on_disk);
    assert_eq!(version(&server, picture, "1.png").await.0, 404);
    let (announced, size, frames) = timelapse(&server, picture, "").await;
    let d = decode_png(&on_disk, 4096).unwrap();
    assert_eq!((announced, size), (1, (9, 5)));
    assert_eq!(frames, vec![d.raster.pixels().to_vec()]);
    // The in-process API the admin revert builds on: decoded size and exact bytes.
    use link::PictureService;
    let image = pps.pps.version(picture.to_string(), last).await.unwrap();
    assert_eq!((image.seq, image.width, image.height), (last, 9, 5));
    assert_eq!(image.png, on_disk);
    assert_eq!(
        pps.pps.version(picture.to_string(), last + 1).await,
        Err(protocol::pps::PpsError::NotFound)
    );
    server.stop().await;
    pps.stop().await;
}

/// Tokens (PROTOCOL.md §13) guard the history as they guard `snapshot.png`: `view` is enough.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_endpoints_need_a_view_token() {
    use raster_client::token::{mint, Role};
    const SECRET: &str = "history-test-secret-of-enough-length";
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        dir.path(),
        &["--token-secret", SECRET, "--history-interval", "0s"],
    )
    .await;
    let token =
        |picture: &str, role| mint(SECRET, picture, role, Duration::from_secs(600)).unwrap();
    let mut client = Client::connect_with(
        &server.url,
        "guarded",
        raster_client::ConnectOptions {
            token: Some(token("guarded", Role::Draw)),
            ..raster_client::ConnectOptions::default()
        },
    )
    .await
    .unwrap();
    let last = draw_acked(&mut client, 2, 3).await;
    client.close(deadline()).await.unwrap();
    let base = format!("{}/pictures/guarded", server.http);
    let view = token("guarded", Role::View);
    let other = token("other", Role::View);
    let deadline = deadline();
    for path in [
        "history".to_string(),
        format!("history/{last}.png"),
        "timelapse".into(),
    ] {
        let get = |query: String| {
            let url = format!("{base}/{path}{query}");
            async move { reqwest::get(url).await.unwrap().status().as_u16() }
        };
        assert_eq!(get(String::new()).await, 401, "{path}");
        assert_eq!(get(format!("?token={other}")).await, 401, "{path}");
        // The release's version may still be on its way.
        loop {
            let status = get(format!("?token={view}")).await;
            if status == 200 {
                break;
            }
            assert!(
                status == 404 && Instant::now() < deadline,
                "{path}: {status}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    server.stop().await;
}

/// `raster timelapse`: the file it saves is the endpoint's animation byte for byte, and its
/// progress bar reaches every frame. Runs `target/debug/raster` (`cargo build --bins` first).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raster_timelapse_saves_the_animation_with_progress() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--history-interval", "10m"]).await;
    let picture = "cli";
    for round in 1..=2u64 {
        let mut client = Client::connect(&server.url, picture, Some((12, 8)))
            .await
            .unwrap();
        let last = draw_acked(&mut client, 2, round).await;
        client.close(deadline()).await.unwrap();
        wait_version(&server, picture, last).await;
    }
    let out = dir.path().join("out.png");
    let bin = std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("raster");
    let output = tokio::process::Command::new(&bin)
        .args(["--url", &server.url, "timelapse", picture, "-o"])
        .arg(&out)
        .args(["--width", "6", "--delay", "40"])
        .output()
        .await
        .unwrap_or_else(|e| panic!("running {}: {e} (cargo build --bins first)", bin.display()));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    let saved = std::fs::read(&out).unwrap();
    let served = reqwest::get(format!(
        "{}/pictures/{picture}/timelapse?width=6&delay=40",
        server.http
    ))
    .await
    .unwrap()
    .bytes()
    .await
    .unwrap();
    assert_eq!(saved, served);
    assert_eq!(
        stdout,
        format!("2 frames ({} bytes) -> {}\n", saved.len(), out.display())
    );
    assert!(stderr.contains("] 2/2 frames"), "{stderr}");
    assert!(!dir.path().join("out.png.part").exists());
    // A picture without history: an error, and no file.
    let missing = dir.path().join("none.png");
    let output = tokio::process::Command::new(&bin)
        .args(["--url", &server.url, "timelapse", "nohistory", "-o"])
        .arg(&missing)
        .output()
        .await
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("404"));
    assert!(!missing.exists() && !dir.path().join("none.png.part").exists());
    server.stop().await;
}

/// A version that storage refuses is not the picture's problem: the picture is stored all the
/// same, and the history catches up at the next flush.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_version_is_retried_at_the_next_flush_and_never_hurts_the_picture() {
    use primary_picture_service::store::memory::MemoryStore;
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(MemoryStore::new());
    store.set_versions_failing(true);
    let config = server_config(Duration::ZERO, 10, Duration::from_millis(50));
    let server = Server::start_with(dir.path(), &[], Pps::new(config, store.clone())).await;
    let picture = "sick";
    let mut client = Client::connect(&server.url, picture, Some((8, 8)))
        .await
        .unwrap();
    let first = draw_acked(&mut client, 3, 1).await;
    wait_picture(store.as_ref(), picture, first).await;
    let deadline = deadline();
    while store.version_puts() == 0 {
        assert!(Instant::now() < deadline, "no version was attempted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(history(&server, picture).await, vec![]);
    store.set_versions_failing(false);
    let last = draw_acked(&mut client, 2, 2).await;
    let png = wait_picture(store.as_ref(), picture, last).await;
    let listed = wait_version(&server, picture, last).await;
    assert_eq!(seqs(&listed), vec![last]);
    assert_eq!(
        version(&server, picture, &format!("{last}.png")).await.1,
        png
    );
    // The picture was never held back: every update is there.
    let (seq, raster) = snapshot(&server, picture).await;
    assert_eq!((seq, &raster), (last, client.raster().unwrap()));
    client.close(deadline).await.unwrap();
    server.stop().await;
}

/// A picture that keeps changing gets versions no closer than the interval (the filesystem's
/// mtimes are to the millisecond): each version is written once the previous is that old.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fs_versions_are_at_least_the_interval_apart() {
    let (store, _store_dir) = fs_store();
    let dir = tempfile::tempdir().unwrap();
    let interval = Duration::from_millis(300);
    let config = server_config(interval, 100, Duration::from_millis(20));
    let server = Server::start_with(dir.path(), &[], Pps::new(config, store.clone())).await;
    let picture = "steady";
    let mut client = Client::connect(&server.url, picture, Some((16, 16)))
        .await
        .unwrap();
    let deadline = deadline();
    let mut round = 0;
    let listed = loop {
        round += 1;
        draw_acked(&mut client, 1, round).await;
        let listed = history(&server, picture).await;
        if listed.len() >= 4 {
            break listed;
        }
        assert!(Instant::now() < deadline, "only {} versions", listed.len());
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    for pair in listed.windows(2) {
        let gap = pair[1].1 - pair[0].1;
        assert!(
            gap >= interval.as_millis() as u64,
            "versions {} and {} are {gap} ms apart",
            pair[0].0,
            pair[1].0
        );
    }
    // Flushes came every few ops; versions were far fewer.
    assert!(listed.last().unwrap().0 > listed.len() as u64, "{listed:?}");
    client.close(deadline).await.unwrap();
    server.stop().await;
}

/// `--timelapse-concurrency`: one timelapse more than allowed is answered 503 at once, and the
/// next after it is done is served. (A slow store holds the first one: of two requests sent
/// together, whichever comes first renders for two seconds, the other is refused.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timelapses_beyond_the_concurrency_limit_are_refused() {
    use primary_picture_service::store::memory::MemoryStore;
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(MemoryStore::new());
    let config = server_config(Duration::ZERO, 10, Duration::from_secs(3600));
    let server = Server::start_with(
        dir.path(),
        &["--timelapse-concurrency", "1"],
        Pps::new(config, store.clone()),
    )
    .await;
    let picture = "busy";
    let mut client = Client::connect(&server.url, picture, Some((8, 8)))
        .await
        .unwrap();
    let last = draw_acked(&mut client, 2, 1).await;
    client.close(deadline()).await.unwrap();
    wait_version(&server, picture, last).await;
    store.set_delay(Some(Duration::from_secs(2)));
    let url = format!("{}/pictures/{picture}/timelapse", server.http);
    let get = || async {
        let response = reqwest::get(&url).await.unwrap();
        let status = response.status().as_u16();
        let retry = response
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_string());
        let body = response.bytes().await.unwrap();
        (status, retry, body.len())
    };
    let (a, b) = tokio::join!(get(), get());
    let mut statuses = [(a.0, a.1.clone()), (b.0, b.1.clone())];
    statuses.sort();
    assert_eq!(
        statuses,
        [(200, None), (503, Some("5".to_string()))],
        "{a:?} {b:?}"
    );
    store.set_delay(None);
    assert_eq!(get().await.0, 200);
    server.stop().await;
}
