//! The WebSocket plumbing under a client connection, split by direction.
//!
//! Reading is tungstenite's: frame parsing, unmasking, fragments, size limits, ping replies and
//! the close handshake. Writing is ours, because every client of a picture is sent the very
//! same bytes: a server frame is a 2–10 byte header and the payload, unmasked, so
//! [`binary_frame`] frames a message once and each client's socket gets a reference to the one
//! buffer (see [`crate::outbox`]), where tungstenite would copy the message into a buffer of
//! its own for each client. Frames tungstenite itself writes (pongs, close replies) pass
//! through [`Reading`] into the client's outbox untouched, in order with ours.
//!
//! The handshake (RFC 6455 §4.2) is done here too: axum's WebSocket keeps the upgraded stream
//! to itself.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::extract::Request;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Version};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf, ReadHalf};

pub(crate) use crate::frame::{binary_frame, binary_frame_in, HEADROOM};
use crate::outbox::Outbox;
pub(crate) use crate::socket::Socket;

/// Why an upgrade request is refused: the answer's status and text.
#[derive(Debug)]
pub(crate) struct Refusal(StatusCode, &'static str);

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let mut response = (self.0, format!("{}\n", self.1)).into_response();
        if self.0 == StatusCode::UPGRADE_REQUIRED {
            response.headers_mut().insert(
                header::SEC_WEBSOCKET_VERSION,
                HeaderValue::from_static("13"),
            );
        }
        response
    }
}

/// Checks a WebSocket upgrade request (HTTP/1.1, as RFC 6455 §4.2.1) and returns the `101`
/// answer.
pub(crate) fn accept(request: &Request) -> Result<Response, Refusal> {
    let headers = request.headers();
    if request.version() != Version::HTTP_11 {
        return Err(Refusal(
            StatusCode::HTTP_VERSION_NOT_SUPPORTED,
            "WebSocket upgrades need HTTP/1.1",
        ));
    }
    if request.method() != Method::GET {
        return Err(Refusal(
            StatusCode::METHOD_NOT_ALLOWED,
            "WebSocket upgrades use GET",
        ));
    }
    if !header_has_token(headers, header::CONNECTION, "upgrade")
        || !header_has_token(headers, header::UPGRADE, "websocket")
    {
        return Err(Refusal(
            StatusCode::UPGRADE_REQUIRED,
            "this is a WebSocket endpoint: send Connection: Upgrade and Upgrade: websocket",
        ));
    }
    if headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .is_none_or(|v| v.as_bytes() != b"13")
    {
        return Err(Refusal(
            StatusCode::UPGRADE_REQUIRED,
            "Sec-WebSocket-Version must be 13",
        ));
    }
    let Some(key) = headers.get(header::SEC_WEBSOCKET_KEY) else {
        return Err(Refusal(
            StatusCode::BAD_REQUEST,
            "Sec-WebSocket-Key is missing",
        ));
    };
    let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
    let accept = HeaderValue::from_str(&accept)
        .map_err(|_| Refusal(StatusCode::BAD_REQUEST, "bad Sec-WebSocket-Key"))?;
    Ok((
        StatusCode::SWITCHING_PROTOCOLS,
        [
            (header::CONNECTION, HeaderValue::from_static("upgrade")),
            (header::UPGRADE, HeaderValue::from_static("websocket")),
            (header::SEC_WEBSOCKET_ACCEPT, accept),
        ],
    )
        .into_response())
}

/// Whether a comma-separated header has `token` (ASCII case-insensitive).
fn header_has_token(headers: &HeaderMap, name: HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|value| {
        value
            .as_bytes()
            .split(|&b| b == b',')
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
    })
}

/// Splits an upgraded connection into our writer (the [`Outbox`], which also carries the frames
/// tungstenite writes) and tungstenite's reader, which takes messages of at most `max_message`
/// bytes. Reads are small: frames from clients and relays are a few KB, and tungstenite
/// zero-fills its whole read buffer before every read.
pub(crate) async fn server_stream(
    socket: Socket,
    max_message: usize,
) -> (Outbox, tokio_tungstenite::WebSocketStream<Reading>) {
    let (read_half, write_half) = tokio::io::split(socket);
    let outbox = Outbox::spawn(write_half);
    let config = tungstenite::protocol::WebSocketConfig::default()
        .max_message_size(Some(max_message))
        .max_frame_size(Some(max_message))
        .read_buffer_size(4 * 1024);
    let reading = Reading {
        socket: read_half,
        outbox: outbox.clone(),
    };
    let stream = tokio_tungstenite::WebSocketStream::from_raw_socket(
        reading,
        tungstenite::protocol::Role::Server,
        Some(config),
    )
    .await;
    (outbox, stream)
}

/// The stream tungstenite reads a client from. What tungstenite writes (whole frames: pongs,
/// close replies) is queued on the client's outbox.
pub(crate) struct Reading {
    pub(crate) socket: ReadHalf<Socket>,
    pub(crate) outbox: Outbox,
}

impl AsyncRead for Reading {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.socket).poll_read(cx, buf)
    }
}

impl AsyncWrite for Reading {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.outbox.send_raw(Bytes::copy_from_slice(buf));
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
