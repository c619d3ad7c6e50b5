//! The admin API (PROTOCOL.md §14) against a real service on loopback: off without
//! `--admin-token`, 401 without the token, the list of open pictures with their seqs, a flush
//! that stores now, closing a picture's clients, and a cleared rectangle that every client
//! receives as a sequenced op.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{deadline, draw_acked, logged_client, raw_join, raw_next, RawEvent, Server};
use protocol::{Op, ServerMsg};
use serde_json::Value;

const TOKEN: &str = "admin-token-for-tests-0123456789";

fn admin_args() -> Vec<&'static str> {
    vec!["--admin-token", TOKEN, "--flush-interval", "1h"]
}

async fn call(server: &Server, method: &str, path: &str, token: Option<&str>) -> (u16, Value) {
    let client = reqwest::Client::new();
    let url = format!("{}{path}", server.http);
    let mut request = match method {
        "GET" => client.get(url),
        _ => client.post(url),
    };
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let body = response.text().await.unwrap();
    let json = serde_json::from_str(&body)
        .unwrap_or_else(|e| panic!("{method} {path}: not JSON ({e}): {body:?}"));
    (status, json)
}

async fn admin(server: &Server, method: &str, path: &str) -> Value {
    let (status, json) = call(server, method, path, Some(TOKEN)).await;
    assert_eq!(status, 200, "{method} {path}: {json}");
    json
}

fn picture<'a>(list: &'a Value, id: &str) -> &'a Value {
    list["pictures"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["picture"] == id)
        .unwrap_or_else(|| panic!("{id} not listed in {list}"))
}

#[tokio::test]
async fn the_admin_api_is_off_without_its_token_flag() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &[]).await;
    let (status, json) = call(&server, "GET", "/admin/pictures", Some(TOKEN)).await;
    assert_eq!(status, 404);
    assert!(json["error"].as_str().unwrap().contains("--admin-token"));
    server.stop().await;
}

#[tokio::test]
async fn admin_calls_need_the_admin_token() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &admin_args()).await;
    for (method, path) in [
        ("GET", "/admin/pictures"),
        ("POST", "/admin/pictures/a/flush"),
        ("POST", "/admin/pictures/a/close"),
        ("POST", "/admin/pictures/a/clear?x=0&y=0&w=1&h=1"),
        ("POST", "/admin/pictures/a/revert?seq=1"),
    ] {
        for token in [None, Some("wrong-token-wrong-token-wrong-tok"), Some("")] {
            let (status, json) = call(&server, method, path, token).await;
            assert_eq!(status, 401, "{method} {path} with {token:?}: {json}");
        }
    }
    // The refusal says how to authenticate.
    let response = reqwest::get(format!("{}/admin/pictures", server.http))
        .await
        .unwrap();
    assert_eq!(
        response.headers()["www-authenticate"],
        "Bearer realm=\"admin\""
    );
    // Nothing was created by the refused clear.
    let (status, _) = call(&server, "GET", "/admin/pictures", Some(TOKEN)).await;
    assert_eq!(status, 200);
    let metrics = reqwest::get(format!("{}/metrics", server.http))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(r#"bs_admin_requests_total{action="clear",outcome="unauthorized"} 3"#),
        "{metrics}"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_short_admin_token_stops_the_binary() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_broadcast-service"))
        .args(["--listen", "127.0.0.1:0", "--admin-token", "short"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("at least 16 characters"), "{stderr}");
}

#[tokio::test]
async fn open_pictures_are_listed_and_flushed_on_demand() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &admin_args()).await;
    let mut a1 = logged_client(&server, "a", Some((64, 32))).await;
    let _a2 = logged_client(&server, "a", None).await;
    let _b = logged_client(&server, "b", Some((8, 8))).await;
    let last = draw_acked(&mut a1, 5, 1).await;
    assert_eq!(last, 5);

    let list = admin(&server, "GET", "/admin/pictures").await;
    let ids: Vec<&str> = list["pictures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["picture"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["a", "b"]);
    let a = picture(&list, "a");
    assert_eq!(a["role"], "sequencer");
    assert_eq!(a["clients"], 2);
    assert_eq!(
        (a["width"].as_u64(), a["height"].as_u64()),
        (Some(64), Some(32))
    );
    assert_eq!(a["seq"], 5);
    // Periodic flushes are off: nothing stored yet.
    assert_eq!(a["durable_seq"], 0);
    assert_eq!(a["last_flush_unix_ms"], Value::Null);
    assert_eq!(a["pending"], 5);
    // (Storage has the picture as it was taken, blank.)
    assert_eq!(common::stored(dir.path(), "a").unwrap().seq, Some(0));
    let b = picture(&list, "b");
    assert_eq!(
        (b["clients"].as_u64(), b["seq"].as_u64()),
        (Some(1), Some(0))
    );

    // The flush answers once storage has everything.
    let flushed = admin(&server, "POST", "/admin/pictures/a/flush").await;
    assert_eq!(flushed["flushed_seq"], 5);
    let stored = common::stored(dir.path(), "a").unwrap();
    assert_eq!(stored.seq, Some(5));
    assert_eq!(&stored.raster, a1.raster().unwrap());
    // The room hears of it and trims its log.
    let deadline = deadline();
    loop {
        let list = admin(&server, "GET", "/admin/pictures").await;
        let a = picture(&list, "a");
        if a["durable_seq"] == 5 && a["pending"] == 0 {
            assert!(a["last_flush_unix_ms"].as_u64().unwrap() > 1_700_000_000_000);
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{a}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // A picture not open anywhere has nothing to store.
    let (status, _) = call(
        &server,
        "POST",
        "/admin/pictures/nowhere/flush",
        Some(TOKEN),
    )
    .await;
    assert_eq!(status, 404);
    let (status, _) = call(
        &server,
        "POST",
        "/admin/pictures/bad%20id/flush",
        Some(TOKEN),
    )
    .await;
    assert_eq!(status, 400);
    server.stop().await;
}

#[tokio::test]
async fn closing_a_picture_closes_every_client_of_it_with_the_code() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &admin_args()).await;
    let (mut one, _) = raw_join(&server, "p").await;
    let (mut two, _) = raw_join(&server, "p").await;
    let (mut other, _) = raw_join(&server, "q").await;

    let closed = admin(&server, "POST", "/admin/pictures/p/close").await;
    assert_eq!(
        (closed["closed"].as_u64(), closed["code"].as_u64()),
        (Some(2), Some(4403))
    );
    for socket in [&mut one, &mut two] {
        loop {
            match raw_next(socket, deadline()).await {
                RawEvent::Close(code) => {
                    assert_eq!(code, Some(4403));
                    break;
                }
                RawEvent::Msg(_) => {}
                RawEvent::Ended(why) => panic!("ended without a close frame: {why}"),
            }
        }
    }
    // The other picture's client carries on.
    common::raw_send(
        &mut other,
        protocol::codec::encode(&protocol::ClientMsg::Ping { nonce: 7 }),
    )
    .await;
    loop {
        match raw_next(&mut other, deadline()).await {
            RawEvent::Msg(ServerMsg::Pong { nonce }) => {
                assert_eq!(nonce, 7);
                break;
            }
            RawEvent::Msg(_) => {}
            other => panic!("q's client was disturbed: {other:?}"),
        }
    }
    // Another code, and the bad ones.
    let (mut three, _) = raw_join(&server, "q").await;
    drop(other);
    let closed = admin(
        &server,
        "POST",
        "/admin/pictures/q/close?code=4000&reason=bye",
    )
    .await;
    assert_eq!(closed["code"], 4000);
    loop {
        match raw_next(&mut three, deadline()).await {
            RawEvent::Close(code) => break assert_eq!(code, Some(4000)),
            RawEvent::Msg(_) => {}
            RawEvent::Ended(why) => panic!("ended without a close frame: {why}"),
        }
    }
    for code in ["1006", "3000", "5000", "x"] {
        let path = format!("/admin/pictures/q/close?code={code}");
        let (status, _) = call(&server, "POST", &path, Some(TOKEN)).await;
        assert_eq!(status, 400, "code {code}");
    }
    let (status, _) = call(&server, "POST", "/admin/pictures/none/close", Some(TOKEN)).await;
    assert_eq!(status, 404);
    server.stop().await;
}

#[tokio::test]
async fn a_cleared_rectangle_is_a_sequenced_op_every_client_sees() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &admin_args()).await;
    let mut drawer = logged_client(&server, "m", Some((40, 30))).await;
    let mut watcher = logged_client(&server, "m", None).await;
    let before = draw_acked(&mut drawer, 20, 7).await;

    let cleared = admin(
        &server,
        "POST",
        "/admin/pictures/m/clear?x=5&y=4&w=10&h=8&color=102030",
    )
    .await;
    let seq = cleared["seqs"][0].as_u64().unwrap();
    assert_eq!(cleared["seqs"].as_array().unwrap().len(), 1);
    assert_eq!(seq, before + 1);

    // Both clients receive it in order, as a Rect from a client of its own.
    for client in [&mut drawer, &mut watcher] {
        client.sync_to(seq, deadline()).await.unwrap();
        let entry = client.log().iter().find(|e| e.seq == seq).unwrap();
        assert_ne!(entry.client_id, client.client_id());
        let raster = client.raster().unwrap();
        for y in 0..30 {
            for x in 0..40 {
                if (5..15).contains(&x) && (4..12).contains(&y) {
                    assert_eq!(raster.pixel(x, y), Some([16, 32, 48, 255]), "({x}, {y})");
                }
            }
        }
    }
    assert_eq!(drawer.raster(), watcher.raster());
    // A late joiner gets the same picture.
    let late = logged_client(&server, "m", None).await;
    assert_eq!(late.raster(), drawer.raster());
    assert!(late.last_seq() >= seq);

    // The op itself, as a raw client sees it.
    let (mut raw, _) = raw_join(&server, "m").await;
    let again = admin(&server, "POST", "/admin/pictures/m/clear?x=0&y=0&w=1&h=1").await;
    let seq2 = again["seqs"][0].as_u64().unwrap();
    loop {
        match raw_next(&mut raw, deadline()).await {
            RawEvent::Msg(ServerMsg::Updates(updates)) => {
                if let Some(update) = updates.iter().find(|u| u.seq == seq2) {
                    assert_eq!(
                        update.op,
                        Op::Rect {
                            x: 0,
                            y: 0,
                            w: 1,
                            h: 1,
                            color: [255, 255, 255, 255]
                        }
                    );
                    break;
                }
            }
            RawEvent::Msg(_) => {}
            other => panic!("{other:?}"),
        }
    }

    // Bad requests change nothing; a picture that does not exist is not created.
    for query in [
        "x=0&y=0&w=1&h=1&color=ff000080",
        "x=0&y=0&w=1",
        "x=0&y=0&w=0&h=1",
        "x=0&y=0&w=1&h=1&color=red",
        "x=a&y=0&w=1&h=1",
    ] {
        let path = format!("/admin/pictures/m/clear?{query}");
        let (status, json) = call(&server, "POST", &path, Some(TOKEN)).await;
        assert_eq!(status, 400, "{query}: {json}");
    }
    let (status, _) = call(
        &server,
        "POST",
        "/admin/pictures/ghost/clear?x=0&y=0&w=1&h=1",
        Some(TOKEN),
    )
    .await;
    assert_eq!(status, 404);
    let list = admin(&server, "GET", "/admin/pictures").await;
    assert!(list["pictures"]
        .as_array()
        .unwrap()
        .iter()
        .all(|p| p["picture"] != "ghost"));
    let response = reqwest::get(format!("{}/pictures/ghost/snapshot.png", server.http))
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    let list = admin(&server, "GET", "/admin/pictures").await;
    assert_eq!(picture(&list, "m")["seq"], seq2);
    server.stop().await;
}

/// Waits until picture `id` has a stored version at `seq`; returns its PNG.
async fn version_png(server: &Server, id: &str, seq: u64) -> Vec<u8> {
    let deadline = deadline();
    loop {
        let response = reqwest::get(format!("{}/pictures/{id}/history/{seq}.png", server.http))
            .await
            .unwrap();
        if response.status() == 200 {
            return response.bytes().await.unwrap().to_vec();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no version {seq} of {id}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_revert_draws_a_stored_version_for_every_client() {
    let dir = tempfile::tempdir().unwrap();
    let mut args = admin_args();
    args.extend(["--history-interval", "0s"]);
    let server = Server::start(dir.path(), &args).await;
    // 300x20: two tiles wide.
    let mut drawer = logged_client(&server, "r", Some((300, 20))).await;
    let mut watcher = logged_client(&server, "r", None).await;
    let at = draw_acked(&mut drawer, 30, 3).await;
    let flushed = admin(&server, "POST", "/admin/pictures/r/flush").await;
    assert_eq!(flushed["flushed_seq"], at);
    let png = version_png(&server, "r", at).await;
    let version = protocol::snapshot::decode_png(&png, 4096).unwrap().raster;
    assert_eq!(&version, drawer.raster().unwrap());
    let later = draw_acked(&mut drawer, 30, 4).await;
    assert_ne!(&version, drawer.raster().unwrap());

    let reverted = admin(
        &server,
        "POST",
        &format!("/admin/pictures/r/revert?seq={at}"),
    )
    .await;
    assert_eq!(reverted["version"], at);
    assert_eq!(reverted["tiles"], 2);
    assert_eq!(reverted["first_seq"], later + 1);
    assert_eq!(reverted["last_seq"], later + 2);
    for client in [&mut drawer, &mut watcher] {
        client.sync_to(later + 2, deadline()).await.unwrap();
        assert_eq!(client.raster().unwrap(), &version);
    }
    let late = logged_client(&server, "r", None).await;
    assert_eq!(late.raster().unwrap(), &version);

    // A version that does not exist; no seq at all.
    let (status, _) = call(
        &server,
        "POST",
        "/admin/pictures/r/revert?seq=7",
        Some(TOKEN),
    )
    .await;
    assert_eq!(status, 404);
    let (status, _) = call(&server, "POST", "/admin/pictures/r/revert", Some(TOKEN)).await;
    assert_eq!(status, 400);

    // A version with translucent pixels cannot be redrawn exactly: refused, nothing drawn.
    drawer
        .draw(Op::Clear {
            color: [0, 0, 0, 0],
        })
        .await
        .unwrap();
    let cleared = later + 3;
    drawer.sync_to(cleared, deadline()).await.unwrap();
    admin(&server, "POST", "/admin/pictures/r/flush").await;
    version_png(&server, "r", cleared).await;
    let (status, json) = call(
        &server,
        "POST",
        &format!("/admin/pictures/r/revert?seq={cleared}"),
        Some(TOKEN),
    )
    .await;
    assert_eq!(status, 409, "{json}");
    let list = admin(&server, "GET", "/admin/pictures").await;
    assert_eq!(picture(&list, "r")["seq"], cleared);
    server.stop().await;
}
