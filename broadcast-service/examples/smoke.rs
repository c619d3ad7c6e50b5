//! Lead's smoke check: two clients draw, both converge. `cargo run -p broadcast-service --example smoke -- ws://127.0.0.1:PORT`
use futures::{SinkExt, StreamExt};
use protocol::{codec, ClientMsg, Op, Point, Raster, ServerMsg};
use tokio_tungstenite::tungstenite::Message;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let base = std::env::args()
        .nth(1)
        .unwrap_or("ws://127.0.0.1:8080".into());
    let url = format!(
        "{base}/pictures/smoke{}/ws?width=64&height=48",
        std::process::id()
    );
    let mut clients = Vec::new();
    for _ in 0..2 {
        let (ws, _) = tokio_tungstenite::connect_async(&url).await?;
        clients.push(ws);
    }
    let mut rasters = Vec::new();
    let mut seqs = Vec::new();
    for ws in clients.iter_mut() {
        let Some(Ok(Message::Binary(b))) = ws.next().await else {
            anyhow::bail!("no welcome")
        };
        let ServerMsg::Welcome {
            snapshot_png,
            pending,
            snapshot_seq,
            client_id,
            ..
        } = codec::decode_server(&b)?
        else {
            anyhow::bail!("not welcome")
        };
        let mut r = protocol::snapshot::decode_png(&snapshot_png, 4096)?.raster;
        let mut s = snapshot_seq;
        for u in pending {
            r.apply(&u.op);
            s = u.seq;
        }
        println!("welcome client {client_id} at {snapshot_seq}");
        rasters.push(r);
        seqs.push(s);
    }
    for i in 0..50u64 {
        let op = Op::Stroke {
            color: [200, (i * 5) as u8, 10, 100],
            width: 3,
            points: vec![Point::new(i as i32, 0), Point::new(60 - i as i32, 40)],
        };
        let ws = &mut clients[(i % 2) as usize];
        ws.send(Message::Binary(
            codec::encode(&ClientMsg::Draw { client_seq: i, op }).into(),
        ))
        .await?;
    }
    for (k, ws) in clients.iter_mut().enumerate() {
        while seqs[k] < 50 {
            let Some(Ok(m)) = ws.next().await else {
                anyhow::bail!("closed")
            };
            if let Message::Binary(b) = m {
                match codec::decode_server(&b)? {
                    ServerMsg::Updates(us) => {
                        for u in us {
                            assert_eq!(u.seq, seqs[k] + 1, "gap");
                            seqs[k] = u.seq;
                            rasters[k].apply(&u.op);
                        }
                    }
                    other => println!("client {k}: {other:?}"),
                }
            }
        }
    }
    assert!(rasters[0] == rasters[1]);
    let r: &Raster = &rasters[0];
    println!("converged at seq 50; pixel(30,20) = {:?}", r.pixel(30, 20));
    Ok(())
}
