//! The `WelcomeLz4` extension (PROTOCOL.md §8) through a real server and real WebSocket
//! clients: a joiner that asks with `?snapshot=lz4` gets the picture as an LZ4 block once the
//! picture service has that form, byte-identical to what a PNG joiner gets; the first asker
//! after a fresh encoding gets the PNG `Welcome` (the LZ4 form is never waited for); a joiner
//! that does not ask never gets variant 6.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{deadline, draw_concurrently, raw_next, snapshot, RawEvent, Server};
use protocol::ServerMsg;
use raster_client::{Client, ConnectOptions};

const PICTURE: &str = "lz4-welcome";
const SIZE: (u32, u32) = (300, 200);

async fn join(server: &Server, lz4: bool) -> Client {
    let options = ConnectOptions {
        size: Some(SIZE),
        snapshot_lz4: lz4,
        ..ConnectOptions::default()
    };
    Client::connect_with(&server.url, PICTURE, options)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lz4_joiners_get_the_same_picture() {
    let dir = tempfile::tempdir().unwrap();
    // A long reuse window: the third join below must reuse the encoding that has the LZ4 form
    // however slow the machine is.
    let server = Server::start(dir.path(), &["--snapshot-reuse", "1h"]).await;
    let drawer = join(&server, false).await;
    let mut drawer = draw_concurrently(drawer, 300, 7, None, false).await;
    drawer.sync_to(300, deadline()).await.unwrap();

    // Read-your-writes: the picture service applies all 300 and encodes exactly at 300.
    let (seq, picture) = snapshot(&server, PICTURE).await;
    assert_eq!(seq, 300);
    assert_eq!(picture.pixels(), drawer.raster().unwrap().pixels());

    // That encoding has no LZ4 form yet: the first asker gets the PNG, without waiting.
    let first = join(&server, true).await;
    assert!(!first.receiver().welcome_was_lz4());
    assert_eq!(first.receiver().snapshot_seq(), 300);
    assert_eq!(first.raster().unwrap().pixels(), picture.pixels());
    // The picture service made it right after: the next asker gets `WelcomeLz4`.
    let second = join(&server, true).await;
    assert!(second.receiver().welcome_was_lz4());
    assert_eq!(second.receiver().snapshot_seq(), 300);
    assert_eq!(second.last_seq(), 300);
    assert_eq!(second.raster().unwrap().pixels(), picture.pixels());
    // Not asked, not given.
    let plain = join(&server, false).await;
    assert!(!plain.receiver().welcome_was_lz4());
    assert_eq!(plain.raster().unwrap().pixels(), picture.pixels());

    // More drawing: an LZ4 joiner now gets the LZ4 snapshot at 300 plus exactly 301..=350 as
    // pending, and ends with the drawer's picture.
    let mut drawer = draw_concurrently(drawer, 50, 8, None, false).await;
    drawer.sync_to(350, deadline()).await.unwrap();
    let mut third = join(&server, true).await;
    assert!(third.receiver().welcome_was_lz4());
    assert_eq!(third.receiver().snapshot_seq(), 300);
    assert_eq!(third.last_seq(), 350);
    assert_eq!(
        third.raster().unwrap().pixels(),
        drawer.raster().unwrap().pixels()
    );
    let mut second = second;
    second.sync_to(350, deadline()).await.unwrap();
    assert_eq!(
        second.raster().unwrap().pixels(),
        drawer.raster().unwrap().pixels()
    );
    third.sync_to(350, deadline()).await.unwrap();

    for client in [drawer, first, second, plain, third] {
        client.close(deadline()).await.unwrap();
    }
    server.stop().await;
}

/// On the wire: `?snapshot=lz4` gives variant 6 with an LZ4 block that decodes to the picture;
/// `?snapshot=png` and no parameter give variant 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_query_parameter_chooses_the_variant() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--snapshot-reuse", "1h"]).await;
    let drawer = join(&server, false).await;
    let mut drawer = draw_concurrently(drawer, 40, 9, None, false).await;
    drawer.sync_to(40, deadline()).await.unwrap();
    let (seq, picture) = snapshot(&server, PICTURE).await;
    assert_eq!(seq, 40);
    // One asker to make the picture service encode the LZ4 form.
    join(&server, true).await.close(deadline()).await.unwrap();

    for (query, lz4) in [
        ("?snapshot=lz4", true),
        ("?snapshot=png", false),
        ("", false),
    ] {
        let url = format!("{}/pictures/{PICTURE}/ws{query}", server.url);
        let (mut socket, _) = tokio_tungstenite::connect_async(url.as_str())
            .await
            .unwrap();
        match raw_next(&mut socket, deadline()).await {
            RawEvent::Msg(ServerMsg::WelcomeLz4 {
                width,
                height,
                snapshot_seq,
                snapshot_lz4,
                pending,
                ..
            }) => {
                assert!(lz4, "{query:?}: got WelcomeLz4");
                assert_eq!((width, height, snapshot_seq), (SIZE.0, SIZE.1, 40));
                assert!(pending.is_empty());
                let raster =
                    protocol::snapshot::decode_lz4(&snapshot_lz4, width, height, 4096).unwrap();
                assert_eq!(raster.pixels(), picture.pixels());
            }
            RawEvent::Msg(ServerMsg::Welcome {
                snapshot_seq,
                snapshot_png,
                ..
            }) => {
                assert!(!lz4, "{query:?}: got a PNG Welcome");
                assert_eq!(snapshot_seq, 40);
                let decoded = protocol::snapshot::decode_png(&snapshot_png, 4096).unwrap();
                assert_eq!(decoded.raster.pixels(), picture.pixels());
            }
            other => panic!("{query:?}: expected a welcome, got {other:?}"),
        }
    }
    drawer.close(deadline()).await.unwrap();
    server.stop().await;
}

/// `--snapshot-lz4 false`: the parameter is accepted and ignored, every joiner gets the PNG.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_can_turn_it_off() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        dir.path(),
        &["--snapshot-reuse", "1h", "--snapshot-lz4", "false"],
    )
    .await;
    let drawer = join(&server, false).await;
    let mut drawer = draw_concurrently(drawer, 40, 10, None, false).await;
    drawer.sync_to(40, deadline()).await.unwrap();
    let (seq, picture) = snapshot(&server, PICTURE).await;
    assert_eq!(seq, 40);
    for _ in 0..3 {
        let joiner = join(&server, true).await;
        assert!(!joiner.receiver().welcome_was_lz4());
        assert_eq!(joiner.raster().unwrap().pixels(), picture.pixels());
        joiner.close(deadline()).await.unwrap();
    }
    drawer.close(deadline()).await.unwrap();
    server.stop().await;
}
