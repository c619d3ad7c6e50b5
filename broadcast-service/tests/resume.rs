//! The opt-in extensions of PROTOCOL.md §10 (`Durable`) and §11 (`?since=`, `?session=`)
//! through real servers and real WebSocket clients over loopback: a `Durable` seq is never ahead
//! of the stored picture; a client whose connection is cut mid-burst resumes without losing or
//! doubling an op (on one broadcast service, and moving between two of a cluster); a `since` the
//! log cannot serve gets a full `Welcome`; a session's new connection replaces the old one; bad
//! parameters are refused before the upgrade; and a client that asks for none of it receives
//! exactly what it did before (no variant 7 or 8).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod nodes;
mod procs;
mod s3;

use std::collections::BTreeMap;

use common::{deadline, draw_acked, logged_client, raw_send, CutProxy, Raw, Server};
use futures::StreamExt;
use protocol::{codec, ClientMsg, Op, ServerMsg};
use rand::SeedableRng;
use raster_client::{Client, ConnectOptions, Event, LogEntry, Profile};
use tokio_tungstenite::tungstenite::Message;

const SIZE: (u32, u32) = (160, 120);

fn options(durable: bool, session: bool) -> ConnectOptions {
    let options = ConnectOptions {
        size: Some(SIZE),
        keep_log: true,
        durable,
        ..ConnectOptions::default()
    };
    if session {
        options.resumable()
    } else {
        options
    }
}

/// A full-`Welcome` (PNG) joiner's picture at `seq`, which it then leaves.
async fn fresh_picture(url: &str, picture: &str, seq: u64) -> protocol::Raster {
    let options = ConnectOptions {
        snapshot_lz4: false,
        ..ConnectOptions::default()
    };
    let mut fresh = Client::connect_with(url, picture, options).await.unwrap();
    assert!(fresh.receiver().snapshot_seq() <= seq);
    fresh.sync_to(seq, deadline()).await.unwrap();
    assert_eq!(fresh.last_seq(), seq);
    let raster = fresh.raster().unwrap().clone();
    fresh.close(deadline()).await.unwrap();
    raster
}

/// The `client_seq`s of `client_id` in `log`, in seq order.
fn client_seqs(log: &[LogEntry], client_id: u64) -> Vec<u64> {
    let mut by_seq: BTreeMap<u64, u64> = BTreeMap::new();
    for entry in log.iter().filter(|e| e.client_id == client_id) {
        if let Some(other) = by_seq.insert(entry.seq, entry.client_seq) {
            assert_eq!(other, entry.client_seq, "seq {} seen as two ops", entry.seq);
        }
    }
    by_seq.into_values().collect()
}

/// Reads events until `until` holds; on every `Durable` checks `on_durable(seq)`.
async fn read_until(
    client: &mut Client,
    what: &str,
    mut on_durable: impl FnMut(u64, &Client),
    until: impl Fn(&Client) -> bool,
) {
    let deadline = deadline();
    while !until(client) {
        let event = tokio::time::timeout_at(deadline, client.next_event())
            .await
            .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
            .unwrap();
        match event {
            Event::Durable(seq) => on_durable(seq, client),
            Event::Rejected { client_seq, reason } => panic!("op {client_seq} rejected: {reason}"),
            Event::Closed { code, reason } => panic!("closed {code:?} {reason} waiting for {what}"),
            Event::Resynced => panic!("resynced waiting for {what}"),
            _ => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_is_never_ahead_of_the_store() {
    const PICTURE: &str = "durable";
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--flush-interval", "30ms"]).await;
    let mut client = Client::connect_with(&server.url, PICTURE, options(true, false))
        .await
        .unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(10);
    let mut told: Vec<u64> = Vec::new();
    let store = dir.path().to_path_buf();
    let mut check = |seq: u64, client: &Client| {
        // The picture service reports a flush once the file is in place: it is at seq or later.
        let stored = common::stored(&store, PICTURE).expect("durable before anything is stored");
        assert!(
            stored.seq.unwrap() >= seq,
            "Durable {seq} with the store at {:?}",
            stored.seq
        );
        assert!(
            seq <= client.last_seq(),
            "Durable {seq} ahead of what was sent"
        );
        assert!(
            told.last().is_none_or(|&last| seq > last),
            "Durable went back"
        );
        told.push(seq);
    };
    for round in 0..12 {
        for _ in 0..25 {
            let op = raster_client::random_op(&mut rng, SIZE.0, SIZE.1, Profile::Mixed);
            client.draw(op).await.unwrap();
        }
        let last = client.last_client_seq();
        read_until(&mut client, "own echoes", &mut check, |c| {
            c.receiver().own_acked() >= last
        })
        .await;
        if round % 3 == 0 {
            // A pause longer than the flush interval: some Durable comes mid-drawing.
            tokio::time::sleep(std::time::Duration::from_millis(60)).await;
        }
    }
    let last = client.last_seq();
    assert_eq!(last, 300);
    // Once the picture is flushed, durable reaches the last seq.
    read_until(&mut client, "durable 300", &mut check, |c| {
        c.durable_seq() == last
    })
    .await;
    assert!(told.len() >= 2, "Durable came only {told:?}");
    assert_eq!(told.last(), Some(&last));
    let stored = common::wait_stored(dir.path(), PICTURE, last).await;
    assert!(&stored.raster == client.raster().unwrap());
    // A joiner that asks is told at once (after its Welcome) how far storage is; one that
    // does not ask is never told.
    let mut late = Client::connect_with(&server.url, PICTURE, options(true, false))
        .await
        .unwrap();
    read_until(
        &mut late,
        "the late joiner's Durable",
        |_, _| {},
        |c| c.durable_seq() == last,
    )
    .await;
    late.close(deadline()).await.unwrap();
    client.close(deadline()).await.unwrap();
    server.stop().await;
}

/// Draws `burst` random ops through `proxy`, cuts the connection once `cut_after` of them were
/// echoed, tries to draw `after_cut` more into the dead connection, waits for the client to see
/// the connection gone, and resumes at `resume_url`. Returns what the resume did.
async fn burst_cut_resume(
    drawer: &mut Client,
    proxy: &CutProxy,
    resume_url: &str,
    picture: &str,
    seed: u64,
    (burst, cut_after, after_cut): (u64, u64, u64),
) -> raster_client::Resumed {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let start = drawer.last_client_seq();
    for _ in 0..burst {
        let op = raster_client::random_op(&mut rng, SIZE.0, SIZE.1, Profile::Mixed);
        drawer.draw(op).await.unwrap();
    }
    read_until(
        drawer,
        "echoes before the cut",
        |_, _| {},
        |c| c.receiver().own_acked() >= start + cut_after,
    )
    .await;
    proxy.cut();
    for _ in 0..after_cut {
        let op = raster_client::random_op(&mut rng, SIZE.0, SIZE.1, Profile::Mixed);
        if drawer.draw(op).await.is_err() {
            break;
        }
    }
    // The old connection ends (what was still buffered on it is applied).
    let deadline = deadline();
    loop {
        match tokio::time::timeout_at(deadline, drawer.next_event())
            .await
            .expect("the cut connection never ended")
        {
            Ok(Event::Closed { .. }) | Err(_) => break,
            Ok(_) => {}
        }
    }
    let sent = drawer.last_client_seq();
    let since = drawer.last_seq();
    let unacked = drawer.unacked();
    assert_eq!(
        unacked,
        ((drawer.receiver().own_acked() + 1)..=sent).collect::<Vec<_>>(),
        "the ops kept for a resume are the ones not echoed"
    );
    let resumed = drawer.resume(resume_url, picture, deadline).await.unwrap();
    assert!(resumed.last_client_seq <= sent);
    if resumed.kept_picture {
        assert_eq!(
            resumed.snapshot_seq, since,
            "a resumed Welcome is at our since"
        );
    }
    // Exactly the ops the server had not sequenced are sent again, once, in order.
    assert_eq!(
        resumed.resent,
        ((resumed.last_client_seq + 1)..=sent).collect::<Vec<_>>()
    );
    assert_eq!(drawer.client_id(), drawer.session().unwrap());
    resumed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_mid_burst_resumes_without_losing_or_doubling_an_op() {
    const PICTURE: &str = "resume";
    let dir = tempfile::tempdir().unwrap();
    // No flush while the test runs: the log holds everything, so the resume keeps the picture.
    let server = Server::start(dir.path(), &["--flush-interval", "1h"]).await;
    let mut observer = logged_client(&server, PICTURE, Some(SIZE)).await;
    let proxy = CutProxy::start(&server.url).await;
    let mut drawer = Client::connect_with(&proxy.url, PICTURE, options(false, true))
        .await
        .unwrap();
    let session = drawer.session().unwrap();
    assert_eq!(drawer.client_id(), session);
    draw_acked(&mut drawer, 40, 1).await;
    let resumed =
        burst_cut_resume(&mut drawer, &proxy, &server.url, PICTURE, 2, (300, 60, 50)).await;
    eprintln!("resumed: {resumed:?}");
    assert!(resumed.kept_picture, "{resumed:?}");
    // Ops were in flight at the cut: some of them are sent again.
    assert!(!resumed.resent.is_empty(), "{resumed:?}");
    // And draw on after the resume.
    let last = draw_acked(&mut drawer, 30, 3).await;
    let total = drawer.last_client_seq();
    observer.sync_to(last, deadline()).await.unwrap();
    assert_eq!(observer.last_seq(), last);
    // Every op of the session sequenced exactly once, in order: in the observer's log (one
    // connection from before the first op) and in the drawer's over both its connections.
    let all: Vec<u64> = (1..=total).collect();
    assert_eq!(client_seqs(observer.log(), session), all);
    assert_eq!(client_seqs(drawer.log(), session), all);
    assert_eq!(last, total, "only the drawer draws");
    let fresh = fresh_picture(&server.url, PICTURE, last).await;
    assert!(
        drawer.raster().unwrap() == &fresh,
        "resumed picture differs"
    );
    assert!(observer.raster().unwrap() == &fresh);
    drawer.close(deadline()).await.unwrap();
    observer.close(deadline()).await.unwrap();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_client_resumes_on_another_broadcast_service() {
    const PICTURE: &str = "resume-relay";
    let dir = tempfile::tempdir().unwrap();
    let storage = nodes::Storage::Dir(dir.path().to_path_buf());
    let cluster =
        nodes::Cluster::start(storage, 1, 2, "2s", &["--flush-interval", "100ms"], &[]).await;
    let (a, b) = (cluster.bs[0].ws(), cluster.bs[1].ws());
    // One observer on each: the first opens the picture on `a` (which sequences it), the
    // second makes `b` relay it, so both rooms exist when the drawer moves.
    let mut observers = Vec::new();
    for url in [&a, &b] {
        let client = Client::connect_with(url, PICTURE, options(false, false))
            .await
            .unwrap();
        observers.push(client);
    }
    let (to_a, to_b) = (CutProxy::start(&a).await, CutProxy::start(&b).await);
    let mut drawer = Client::connect_with(&to_a.url, PICTURE, options(true, true))
        .await
        .unwrap();
    let session = drawer.session().unwrap();
    draw_acked(&mut drawer, 20, 4).await;
    // Cut on `a`, resume on `b` (through its proxy); cut there, resume on `a`.
    let first = burst_cut_resume(&mut drawer, &to_a, &to_b.url, PICTURE, 5, (200, 40, 30)).await;
    draw_acked(&mut drawer, 10, 6).await;
    let second = burst_cut_resume(&mut drawer, &to_b, &a, PICTURE, 7, (200, 40, 30)).await;
    let last = draw_acked(&mut drawer, 10, 8).await;
    let total = drawer.last_client_seq();
    eprintln!("through a relay: {first:?}\nback to the sequencer: {second:?}");
    let all: Vec<u64> = (1..=total).collect();
    for observer in &mut observers {
        observer.sync_to(last, deadline()).await.unwrap();
        assert_eq!(client_seqs(observer.log(), session), all);
        assert!(observer.raster() == drawer.raster());
    }
    let own = client_seqs(drawer.log(), session);
    if first.kept_picture && second.kept_picture {
        assert_eq!(own, all);
    } else {
        // A resume the log could not serve got a full `Welcome` (PROTOCOL.md §11): its
        // snapshot holds what the drawer's log then lacks. Still, no op twice.
        assert!(own.windows(2).all(|w| w[0] < w[1]), "{own:?}");
        assert_eq!(own.last(), Some(&total));
    }
    assert_eq!(last, total);
    for url in [&a, &b] {
        let fresh = fresh_picture(url, PICTURE, last).await;
        assert!(
            drawer.raster().unwrap() == &fresh,
            "picture on {url} differs"
        );
    }
    // `Durable` through the relay link too: never ahead of the store, and it reaches the end.
    let storage = &cluster.storage;
    let mut durables = Vec::new();
    read_until(
        &mut drawer,
        "durable at the last seq",
        |seq, _| durables.push(seq),
        |c| c.durable_seq() == last,
    )
    .await;
    for seq in durables {
        let (stored, _) = nodes::stored(storage, PICTURE).await.unwrap();
        assert!(stored >= seq);
    }
    let stored = nodes::wait_stored(storage, PICTURE, last).await;
    assert!(&stored == drawer.raster().unwrap());
    drawer.close(deadline()).await.unwrap();
    for observer in observers {
        observer.close(deadline()).await.unwrap();
    }
}

/// A raw socket to `picture` with `query`.
async fn raw(server: &Server, picture: &str, query: &str) -> Raw {
    let url = format!("{}/pictures/{picture}/ws?{query}", server.url);
    tokio_tungstenite::connect_async(url.as_str())
        .await
        .unwrap()
        .0
}

/// The next binary frame on a raw socket (pings skipped), or the close code.
async fn raw_frame(socket: &mut Raw) -> Result<Vec<u8>, Option<u16>> {
    loop {
        match tokio::time::timeout_at(deadline(), socket.next())
            .await
            .expect("timed out on a raw socket")
        {
            Some(Ok(Message::Binary(frame))) => return Ok(frame.to_vec()),
            Some(Ok(Message::Close(frame))) => return Err(frame.map(|f| u16::from(f.code))),
            None | Some(Err(_)) => return Err(None),
            Some(Ok(_)) => {}
        }
    }
}

async fn raw_msg(socket: &mut Raw) -> ServerMsg {
    match raw_frame(socket).await {
        Ok(frame) => codec::decode_server(&frame).unwrap(),
        Err(code) => panic!("closed ({code:?}) instead of a message"),
    }
}

/// The `Welcome` of a raw socket just opened: (snapshot_seq, snapshot_png, pending seqs).
async fn raw_welcome(socket: &mut Raw) -> (u64, Vec<u8>, Vec<u64>) {
    match raw_msg(socket).await {
        ServerMsg::Welcome {
            snapshot_seq,
            snapshot_png,
            pending,
            ..
        } => (
            snapshot_seq,
            snapshot_png.to_vec(),
            pending.iter().map(|u| u.seq).collect(),
        ),
        other => panic!("expected a PNG Welcome, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_since_the_log_cannot_serve_gets_a_full_welcome() {
    const PICTURE: &str = "since";
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--flush-interval", "30ms"]).await;
    // A picture that never existed: there is nothing to resume from.
    let mut socket = raw(&server, "never-was", "width=8&height=8&since=5").await;
    let (seq, png, pending) = raw_welcome(&mut socket).await;
    assert_eq!((seq, pending.len()), (0, 0));
    let blank = protocol::snapshot::decode_png(&png, 4096).unwrap();
    assert_eq!((blank.raster.width(), blank.raster.height()), (8, 8));
    socket.close(None).await.unwrap();

    let mut drawer = Client::connect_with(&server.url, PICTURE, options(true, false))
        .await
        .unwrap();
    let last = draw_acked(&mut drawer, 50, 11).await;
    assert_eq!(last, 50);
    // Once stored, the log is trimmed up to 50: a since behind it cannot be served.
    read_until(
        &mut drawer,
        "durable 50",
        |_, _| {},
        |c| c.durable_seq() == 50,
    )
    .await;
    let picture = drawer.raster().unwrap().clone();
    for (since, resumed) in [
        // Behind the log: a full Welcome.
        ("10", false),
        ("0", false),
        // Beyond the last seq sequenced (the picture went back, or a made-up seq): never
        // resumed, a full Welcome at the picture's own seq.
        ("51", false),
        ("1000", false),
        ("18446744073709551615", false),
        // Exactly where the log starts: resumed, nothing pending.
        ("50", true),
    ] {
        let mut socket = raw(&server, PICTURE, &format!("since={since}")).await;
        let (seq, png, pending) = raw_welcome(&mut socket).await;
        assert_eq!(seq, 50, "since={since}");
        assert!(pending.is_empty(), "since={since}: pending {pending:?}");
        if resumed {
            assert!(png.is_empty(), "since={since}: a snapshot");
        } else {
            assert!(!png.is_empty(), "since={since}: no snapshot");
            let full = protocol::snapshot::decode_png(&png, 4096).unwrap();
            assert_eq!(full.seq, Some(50));
            assert!(full.raster == picture, "since={since}: another picture");
        }
        socket.close(None).await.unwrap();
    }
    drawer.close(deadline()).await.unwrap();
    server.stop().await;
}

fn draw(client_seq: u64, x: i32) -> Vec<u8> {
    codec::encode(&ClientMsg::Draw {
        client_seq,
        op: Op::Rect {
            x,
            y: 0,
            w: 3,
            h: 3,
            color: [10, 200, 30, 120],
        },
    })
}

/// Reads until the `Session` message; the messages before it must be `Presence`, `Updates`
/// or `Durable`.
async fn raw_session(socket: &mut Raw, session: u64) -> u64 {
    loop {
        match raw_msg(socket).await {
            ServerMsg::Session {
                session: got,
                last_client_seq,
            } => {
                assert_eq!(got, session);
                return last_client_seq;
            }
            ServerMsg::Presence { .. } | ServerMsg::Updates(_) | ServerMsg::Durable { .. } => {}
            other => panic!("expected Session, got {other:?}"),
        }
    }
}

/// Reads until our own echo of `client_seq`; returns every (client_id, client_seq) of the
/// updates seen meanwhile.
async fn raw_until_echo(socket: &mut Raw, session: u64, client_seq: u64) -> Vec<(u64, u64)> {
    let mut seen = Vec::new();
    loop {
        match raw_msg(socket).await {
            ServerMsg::Updates(updates) => {
                seen.extend(updates.iter().map(|u| (u.client_id, u.client_seq)));
                if seen.contains(&(session, client_seq)) {
                    return seen;
                }
            }
            ServerMsg::Rejected { client_seq, reason } => {
                panic!("{client_seq} rejected: {reason}")
            }
            _ => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sessions_new_connection_replaces_the_old_one() {
    const PICTURE: &str = "replace";
    const SESSION: u64 = 0xfeed_beef_0000_0077;
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]).await;
    let query = format!("width=64&height=64&session={SESSION}");
    let mut first = raw(&server, PICTURE, &query).await;
    match raw_msg(&mut first).await {
        ServerMsg::Welcome { client_id, .. } => assert_eq!(client_id, SESSION),
        other => panic!("expected Welcome, got {other:?}"),
    }
    assert_eq!(raw_session(&mut first, SESSION).await, 0);
    for client_seq in 1..=3 {
        raw_send(&mut first, draw(client_seq, client_seq as i32 * 4)).await;
    }
    let seen = raw_until_echo(&mut first, SESSION, 3).await;
    assert_eq!(seen, vec![(SESSION, 1), (SESSION, 2), (SESSION, 3)]);

    // The same session again: the first connection is closed with 4001.
    let mut second = raw(&server, PICTURE, &query).await;
    let welcome_seq = match raw_msg(&mut second).await {
        ServerMsg::Welcome {
            client_id,
            snapshot_seq,
            pending,
            ..
        } => {
            assert_eq!(client_id, SESSION);
            pending.last().map_or(snapshot_seq, |u| u.seq)
        }
        other => panic!("expected Welcome, got {other:?}"),
    };
    assert_eq!(welcome_seq, 3);
    assert_eq!(raw_session(&mut second, SESSION).await, 3);
    let code = loop {
        match raw_frame(&mut first).await {
            Ok(_) => continue,
            Err(code) => break code,
        }
    };
    assert_eq!(code, Some(4001), "the replaced connection's close code");

    // Ops 2 and 3 sent again (a client that never saw their echoes) are dropped: the session
    // already has them. Op 4 is sequenced next, at seq 4.
    for client_seq in [2, 3, 4] {
        raw_send(&mut second, draw(client_seq, 40)).await;
    }
    let seen = raw_until_echo(&mut second, SESSION, 4).await;
    assert_eq!(seen, vec![(SESSION, 4)]);
    let (seq, _) = common::snapshot(&server, PICTURE).await;
    assert_eq!(seq, 4);

    // A client without a session cannot take the session's id, and vice versa nobody is
    // disturbed by it: the session client carries on.
    let mut plain = raw(&server, PICTURE, "").await;
    match raw_msg(&mut plain).await {
        ServerMsg::Welcome { client_id, .. } => assert_ne!(client_id, SESSION),
        other => panic!("expected Welcome, got {other:?}"),
    }
    plain.close(None).await.unwrap();
    raw_send(&mut second, draw(5, 50)).await;
    raw_until_echo(&mut second, SESSION, 5).await;
    second.close(None).await.unwrap();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_extension_parameters_are_400_before_upgrade() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]).await;
    let cases = [
        ("durable=2", "durable"),
        ("durable=", "durable"),
        ("durable=yes", "durable"),
        ("since=abc", "since"),
        ("since=-1", "since"),
        ("since=", "since"),
        ("since=18446744073709551616", "since"),
        ("session=0", "session"),
        ("session=abc", "session"),
        ("session=", "session"),
        ("session=-5", "session"),
        ("session=18446744073709551616", "session"),
    ];
    for picture in ["exists-or-not", "exists-or-not"] {
        for (query, name) in cases {
            let url = format!("{}/pictures/{picture}/ws?{query}", server.url);
            match tokio_tungstenite::connect_async(url.as_str()).await {
                Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                    assert_eq!(response.status().as_u16(), 400, "?{query}");
                    let body = String::from_utf8_lossy(response.body().as_deref().unwrap_or(&[]))
                        .to_string();
                    assert!(
                        body.starts_with(&format!("{name} must be")),
                        "?{query}: the reason names the parameter: {body:?}"
                    );
                }
                Err(other) => panic!("?{query}: expected HTTP 400, got {other}"),
                Ok(_) => panic!("?{query}: upgraded"),
            }
        }
        // The picture now exists: the second round asks about an existing one.
        let mut ok = raw(&server, picture, "width=4&height=4&durable=0").await;
        raw_welcome(&mut ok).await;
        ok.close(None).await.unwrap();
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_without_the_parameters_sees_no_extension() {
    const PICTURE: &str = "plain";
    const SESSION: u64 = 99;
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--flush-interval", "30ms"]).await;
    let mut plain = raw(&server, PICTURE, "width=64&height=64").await;
    let mut extended = raw(
        &server,
        PICTURE,
        &format!("width=64&height=64&durable=1&session={SESSION}"),
    )
    .await;
    raw_welcome(&mut extended).await;
    assert_eq!(raw_session(&mut extended, SESSION).await, 0);
    for client_seq in 1..=30 {
        raw_send(&mut extended, draw(client_seq, client_seq as i32 * 2)).await;
    }
    // The extended client: every update, and Durable up to 30.
    let mut updates_ext = Vec::new();
    let (mut seq, mut durable) = (0, 0);
    while seq < 30 || durable < 30 {
        let frame = raw_frame(&mut extended).await.unwrap();
        match codec::decode_server(&frame).unwrap() {
            ServerMsg::Updates(updates) => {
                seq = updates.last().unwrap().seq;
                updates_ext.push(frame);
            }
            ServerMsg::Durable { seq: d } => durable = d,
            ServerMsg::Presence { .. } => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    // The plain client: exactly what it got before the extensions existed, to its close.
    plain.close(None).await.unwrap();
    let mut variants = Vec::new();
    let mut updates_plain = Vec::new();
    while let Ok(frame) = raw_frame(&mut plain).await {
        variants.push(u32::from_le_bytes(frame[..4].try_into().unwrap()));
        if variants.last() == Some(&1) {
            updates_plain.push(frame);
        }
    }
    assert_eq!(variants[0], 0, "Welcome first");
    assert!(
        variants.iter().all(|v| [0, 1, 5].contains(v)),
        "variants {variants:?}"
    );
    // The same Updates frames, byte for byte.
    assert_eq!(updates_plain, updates_ext);
    extended.close(None).await.unwrap();
    server.stop().await;
}

/// The broadcast service that sequences a picture is SIGKILLed while a session client is
/// mid-burst, and restarted: its session memory is gone with it, but the picture service hands
/// the new sequencer the session trail of the updates it holds (`--session-trail`), so the
/// client's `Session` message still covers every op the picture has, and the picture ends with
/// each op exactly once (its last seq is the number of ops drawn, its pixels the replay of the
/// ops in order).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_resumes_exactly_once_after_its_broadcast_service_is_killed() {
    let dir = tempfile::tempdir().unwrap();
    let storage = nodes::Storage::Dir(dir.path().to_path_buf());
    let mut cluster =
        nodes::Cluster::start(storage, 1, 1, "1s", &["--flush-interval", "1h"], &[]).await;
    session_resumes_exactly_once_after_a_kill(&mut cluster.bs[0], "resume-killed").await;
}

/// The same with the embedded service: picture service and sequencer die together, and the
/// trail comes back from the write-ahead log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_resumes_exactly_once_after_the_embedded_service_is_killed() {
    let dir = tempfile::tempdir().unwrap();
    let port = procs::free_port();
    let args = [
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--data-dir",
        &dir.path().display().to_string(),
        "--flush-interval",
        "1h",
    ]
    .map(String::from)
    .to_vec();
    let mut node = nodes::Node::start(nodes::bs_binary(), port, args, Vec::new());
    node.healthy().await;
    session_resumes_exactly_once_after_a_kill(&mut node, "resume-killed-embedded").await;
}

/// Draws 200 ops as a session client whose echoes are lost after the 20th, SIGKILLs `node`
/// (the picture's sequencer) once the picture service has them all, restarts it and resumes.
async fn session_resumes_exactly_once_after_a_kill(node: &mut nodes::Node, picture: &str) {
    let url = node.ws();
    let proxy = CutProxy::start(&url).await;
    let mut drawer = Client::connect_with(&proxy.url, picture, options(false, true))
        .await
        .unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(21);
    let mut ops: Vec<Op> = Vec::new();
    let mut draw = async |drawer: &mut Client, ops: &mut Vec<Op>| {
        let op = raster_client::random_op(&mut rng, SIZE.0, SIZE.1, Profile::Mixed);
        let before = drawer.last_client_seq();
        let sent = drawer.draw(op.clone()).await;
        // An op the dead connection did not take is still kept for the resume.
        if drawer.last_client_seq() > before {
            ops.push(op);
        }
        sent.is_ok()
    };
    let mut observer = Client::connect_with(&url, picture, options(false, false))
        .await
        .unwrap();
    for _ in 0..20 {
        draw(&mut drawer, &mut ops).await;
    }
    observer.sync_to(20, deadline()).await.unwrap();
    // The drawer's echoes are lost from here on: it comes back without them although the
    // picture service holds every op (the observer saw them all, and a sequencer publishes
    // only what the picture service has).
    proxy.lose_downstream();
    for _ in 20..200 {
        draw(&mut drawer, &mut ops).await;
    }
    observer.sync_to(200, deadline()).await.unwrap();
    node.kill().await;
    // Draws into the dead connection until the client notices.
    for _ in 0..20 {
        if !draw(&mut drawer, &mut ops).await {
            break;
        }
    }
    let deadline = deadline();
    loop {
        match tokio::time::timeout_at(deadline, drawer.next_event())
            .await
            .expect("the killed connection never ended")
        {
            Ok(Event::Closed { .. }) | Err(_) => break,
            Ok(_) => {}
        }
    }
    let acked = drawer.receiver().own_acked();
    let sent = drawer.last_client_seq();
    assert_eq!(sent, ops.len() as u64);
    node.restart();
    node.healthy().await;
    let resumed = drawer.resume(&url, picture, deadline).await.unwrap();
    // The new sequencer knows all 200 are in the picture (without the trail it answers 0, and
    // the client sends again every op it saw no echo of: drawn twice).
    assert_eq!(
        resumed.last_client_seq, 200,
        "the new sequencer's Session message ({} echoes had come)",
        acked
    );
    assert_eq!(
        resumed.resent,
        ((resumed.last_client_seq + 1)..=sent).collect::<Vec<_>>()
    );
    for _ in 0..10 {
        draw(&mut drawer, &mut ops).await;
    }
    let total = ops.len() as u64;
    assert_eq!(drawer.last_client_seq(), total);
    read_until(
        &mut drawer,
        "every op echoed",
        |_, _| {},
        |c| c.receiver().own_acked() == total,
    )
    .await;
    // One drawer: the picture's seqs are its ops, each once, in client_seq order.
    assert_eq!(
        drawer.last_seq(),
        total,
        "an op was sequenced twice or lost"
    );
    let mut expected = protocol::Raster::new(SIZE.0, SIZE.1);
    for op in &ops {
        expected.apply(op);
    }
    let fresh = fresh_picture(&url, picture, total).await;
    assert!(
        fresh == expected,
        "the picture is not the replay of the ops"
    );
    eprintln!(
        "killed after {acked} echoes of {sent} sent; the new sequencer had up to client_seq {}, {} sent again",
        resumed.last_client_seq,
        resumed.resent.len()
    );
    drawer.close(deadline).await.unwrap();
    observer.close(deadline).await.unwrap();
}
