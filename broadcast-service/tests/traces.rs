//! OTLP trace export: the real binary started with the standard `OTEL_*` variables sends its
//! spans to a collector (here a small OTLP/HTTP receiver on loopback that decodes the
//! protobuf requests): one `join` per client join, one `apply_batch` per batch the picture
//! service applies, one `flush` per write to storage, under the service's name.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod procs;

use std::path::Path;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use common::{deadline, raw_next, RawEvent};
use futures::SinkExt;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use procs::{free_port, wait_healthy, Process};
use prost::Message as _;
use protocol::{codec, ClientMsg, Op, Point, ServerMsg};
use tokio_tungstenite::tungstenite::Message;

/// A span as the collector received it: its service, name and attributes (as text).
#[derive(Debug, Clone)]
struct Span {
    service: String,
    name: String,
    attributes: Vec<(String, String)>,
}

impl Span {
    fn get(&self, key: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

fn text(attributes: &[KeyValue]) -> Vec<(String, String)> {
    attributes
        .iter()
        .map(|kv| {
            let value = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(Value::StringValue(s)) => s.clone(),
                Some(Value::IntValue(i)) => i.to_string(),
                Some(Value::BoolValue(b)) => b.to_string(),
                other => format!("{other:?}"),
            };
            (kv.key.clone(), value)
        })
        .collect()
}

type Received = Arc<Mutex<Vec<Span>>>;

async fn receive(State(received): State<Received>, body: Bytes) -> &'static str {
    let request = ExportTraceServiceRequest::decode(body).unwrap();
    let mut received = received.lock().unwrap();
    for resource_spans in request.resource_spans {
        let service = resource_spans
            .resource
            .as_ref()
            .map(|r| text(&r.attributes))
            .and_then(|a| a.into_iter().find(|(k, _)| k == "service.name"))
            .map(|(_, v)| v)
            .unwrap_or_default();
        for scope in resource_spans.scope_spans {
            for span in scope.spans {
                received.push(Span {
                    service: service.clone(),
                    name: span.name,
                    attributes: text(&span.attributes),
                });
            }
        }
    }
    ""
}

/// An OTLP/HTTP receiver on loopback: its endpoint, and the spans it received.
async fn collector() -> (String, Received) {
    let received = Received::default();
    let app = axum::Router::new()
        .route("/v1/traces", post(receive))
        .with_state(received.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (endpoint, received)
}

#[tokio::test]
async fn spans_of_joins_batches_and_flushes_reach_an_otlp_collector() {
    let (endpoint, received) = collector().await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let http = format!("http://127.0.0.1:{port}");
    let token = "admin-token-for-the-trace-test";
    let args: Vec<String> = [
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--data-dir",
        &dir.path().display().to_string(),
        "--flush-interval",
        "1h",
        "--admin-token",
        token,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut bs = Process::spawn_with_env(
        Path::new(env!("CARGO_BIN_EXE_broadcast-service")),
        &args,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ],
    );
    wait_healthy(&http).await;

    let url = format!("ws://127.0.0.1:{port}/pictures/traced/ws?width=16&height=16");
    let (mut socket, _) = tokio_tungstenite::connect_async(url.as_str())
        .await
        .unwrap();
    let client_id = match raw_next(&mut socket, deadline()).await {
        RawEvent::Msg(ServerMsg::Welcome { client_id, .. }) => client_id,
        other => panic!("expected a welcome, got {other:?}"),
    };
    for client_seq in 1..=3 {
        let draw = ClientMsg::Draw {
            client_seq,
            op: Op::Pixels {
                color: [1, 2, 3, 255],
                points: vec![Point { x: 1, y: 1 }],
            },
        };
        socket
            .send(Message::Binary(codec::encode(&draw).into()))
            .await
            .unwrap();
    }
    let mut echoed = 0;
    while echoed < 3 {
        if let RawEvent::Msg(ServerMsg::Updates(updates)) = raw_next(&mut socket, deadline()).await
        {
            echoed += updates.iter().filter(|u| u.client_id == client_id).count();
        }
    }
    let flushed = reqwest::Client::new()
        .post(format!("{http}/admin/pictures/traced/flush"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let flushed: serde_json::Value = serde_json::from_str(&flushed).unwrap();
    assert_eq!(flushed["flushed_seq"], 3);

    // A graceful stop exports what the batch processor still holds.
    bs.signal("-TERM");
    assert!(bs.wait().await, "the service did not stop cleanly");

    let spans = received.lock().unwrap().clone();
    assert!(
        spans.iter().all(|s| s.service == "broadcast-service"),
        "{spans:?}"
    );
    let named = |name: &str| -> Vec<&Span> { spans.iter().filter(|s| s.name == name).collect() };
    let joins = named("join");
    assert_eq!(joins.len(), 1, "{spans:?}");
    assert_eq!(joins[0].get("picture"), Some("traced"));
    assert_eq!(joins[0].get("client"), Some(client_id.to_string().as_str()));
    // Every batch applied, together exactly the three updates, in order.
    let batches = named("apply_batch");
    assert!(!batches.is_empty(), "{spans:?}");
    let mut next = 1;
    for batch in &batches {
        assert_eq!(batch.get("picture"), Some("traced"));
        let first: u64 = batch.get("first_seq").unwrap().parse().unwrap();
        let last: u64 = batch.get("last_seq").unwrap().parse().unwrap();
        assert_eq!(first, next, "{batches:?}");
        next = last + 1;
    }
    assert_eq!(next, 4, "{batches:?}");
    // The blank picture taken when it opened, the admin flush at 3.
    let flushes = named("flush");
    assert!(
        flushes
            .iter()
            .any(|f| f.get("picture") == Some("traced") && f.get("seq") == Some("3")),
        "{flushes:?}"
    );
    assert!(
        flushes
            .iter()
            .any(|f| f.get("seq") == Some("0") && f.get("takeover") == Some("true")),
        "{flushes:?}"
    );
}
