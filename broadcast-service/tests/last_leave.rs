//! Last leave: when the last client leaves, the picture is stored with every update and its
//! last seq; a later client starts from exactly that picture and the seqs continue from it,
//! also after the service restarts on the same data directory.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{deadline, logged_client, snapshot, stored, wait_stored, Server};
use protocol::{Op, Point, Raster};
use rand::SeedableRng;
use raster_client::{random_op, Client, Profile};

const SIZE: (u32, u32) = (96, 64);

/// Draws `n` random ops and waits for the last echo.
async fn draw(client: &mut Client, n: u64, seed: u64) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut last = 0;
    for _ in 0..n {
        last = client
            .draw(random_op(&mut rng, SIZE.0, SIZE.1, Profile::Mixed))
            .await
            .unwrap();
    }
    client.wait_own(last, deadline()).await.unwrap();
}

fn translucent_dot(x: i32, y: i32) -> Op {
    Op::Stroke {
        color: [10, 200, 30, 100],
        width: 3,
        points: vec![Point::new(x, y)],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn last_leave_stores_the_final_picture_and_seqs_continue_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let picture = "last-leave";
    let server = Server::start(dir.path(), &[]).await;

    let mut a = logged_client(&server, picture, Some(SIZE)).await;
    let mut b = logged_client(&server, picture, Some(SIZE)).await;
    draw(&mut a, 60, 1).await;
    draw(&mut b, 60, 2).await;
    a.sync_to(120, deadline()).await.unwrap();
    b.sync_to(120, deadline()).await.unwrap();
    assert_eq!((a.last_seq(), b.last_seq()), (120, 120));
    let final_picture = a.raster().unwrap().clone();
    assert!(b.raster().unwrap() == &final_picture);
    a.close(deadline()).await.unwrap();
    b.close(deadline()).await.unwrap();

    // Stored with the last seq in its tEXt chunk and exactly the final pixels.
    let file = wait_stored(dir.path(), picture, 120).await;
    assert!(file.raster == final_picture, "stored picture differs");

    // A later client gets that picture; its first op is seq 121.
    let mut c = logged_client(&server, picture, Some((10, 10))).await;
    assert_eq!(c.last_seq(), 120);
    assert_eq!(
        (c.receiver().width(), c.receiver().height()),
        SIZE,
        "an existing picture keeps its size"
    );
    assert!(c.raster().unwrap() == &final_picture);
    let own = c.draw(translucent_dot(5, 5)).await.unwrap();
    c.wait_own(own, deadline()).await.unwrap();
    assert_eq!(c.log().last().unwrap().seq, 121);
    let after_c = c.raster().unwrap().clone();
    assert!(after_c != final_picture);
    c.close(deadline()).await.unwrap();
    wait_stored(dir.path(), picture, 121).await;

    // Restart on the same data directory: the picture and its seqs survive.
    server.stop().await;
    assert_eq!(stored(dir.path(), picture).unwrap().seq, Some(121));
    let server = Server::start(dir.path(), &[]).await;
    let (seq, snap) = snapshot(&server, picture).await;
    assert_eq!(seq, 121);
    assert!(snap == after_c);
    let mut d = logged_client(&server, picture, None).await;
    assert_eq!(d.last_seq(), 121);
    assert!(d.raster().unwrap() == &after_c);
    let own = d.draw(translucent_dot(6, 6)).await.unwrap();
    d.wait_own(own, deadline()).await.unwrap();
    assert_eq!(d.log().last().unwrap().seq, 122);
    let mut expected = after_c.clone();
    expected.apply(&translucent_dot(6, 6));
    assert!(d.raster().unwrap() == &expected);
    d.close(deadline()).await.unwrap();
    let file = wait_stored(dir.path(), picture, 122).await;
    assert!(file.raster == expected);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_stores_open_pictures() {
    let dir = tempfile::tempdir().unwrap();
    let picture = "shutdown-flush";
    let server = Server::start(dir.path(), &[]).await;
    let mut a = logged_client(&server, picture, Some(SIZE)).await;
    draw(&mut a, 40, 3).await;
    let final_picture = a.raster().unwrap().clone();
    // The client stays connected: shutdown itself must close it (1012) and store the picture.
    let watcher = tokio::spawn(async move {
        loop {
            match a.next_event().await {
                Ok(raster_client::Event::Closed { code, .. }) => return code,
                Ok(_) => {}
                Err(e) => panic!("client failed before the close: {e}"),
            }
        }
    });
    server.stop().await;
    assert_eq!(watcher.await.unwrap(), Some(1012));
    let file = stored(dir.path(), picture).expect("picture stored on shutdown");
    assert_eq!(file.seq, Some(40));
    assert!(file.raster == final_picture);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_of_a_picture_that_never_existed_is_404() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]).await;
    match raster_client::snapshot(&server.url, "never-drawn").await {
        Err(raster_client::ClientError::Http { status: 404 }) => {}
        other => panic!("expected 404, got {other:?}"),
    }
    // A fresh picture is blank at seq 0.
    let client = logged_client(&server, "fresh", Some((3, 2))).await;
    assert_eq!(client.last_seq(), 0);
    assert!(client.raster().unwrap() == &Raster::new(3, 2));
    let (seq, snap) = snapshot(&server, "fresh").await;
    assert_eq!((seq, snap), (0, Raster::new(3, 2)));
    client.close(deadline()).await.unwrap();
    server.stop().await;
}
