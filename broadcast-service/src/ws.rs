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
use bytes::{Bytes, BytesMut};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf, ReadHalf};

use crate::outbox::Outbox;

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

/// A client's connection: an upgraded HTTP connection, or an in-process pipe (the admin API's
/// own client, `crate::admin`).
pub(crate) enum Socket {
    Upgraded(TokioIo<hyper::upgrade::Upgraded>),
    Internal(tokio::io::DuplexStream),
}

impl AsyncRead for Socket {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Socket::Upgraded(io) => Pin::new(io).poll_read(cx, buf),
            Socket::Internal(io) => Pin::new(io).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Socket {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Socket::Upgraded(io) => Pin::new(io).poll_write(cx, buf),
            Socket::Internal(io) => Pin::new(io).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Socket::Upgraded(io) => Pin::new(io).poll_write_vectored(cx, bufs),
            Socket::Internal(io) => Pin::new(io).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Socket::Upgraded(io) => io.is_write_vectored(),
            Socket::Internal(io) => io.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Socket::Upgraded(io) => Pin::new(io).poll_flush(cx),
            Socket::Internal(io) => Pin::new(io).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Socket::Upgraded(io) => Pin::new(io).poll_shutdown(cx),
            Socket::Internal(io) => Pin::new(io).poll_shutdown(cx),
        }
    }
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

/// Frames `payload` as one unmasked binary message (FIN set).
pub(crate) fn binary_frame(payload: &[u8]) -> Bytes {
    frame(0x2, payload)
}

/// Room in front of a message for the longest frame header (see [`binary_frame_in`]).
pub(crate) const HEADROOM: usize = 10;

/// Frames the message that follows [`HEADROOM`] bytes of `buf` (a `codec::*_frame_after`)
/// as [`binary_frame`] would, writing the header into the headroom instead of copying the
/// message.
pub(crate) fn binary_frame_in(mut buf: BytesMut) -> Bytes {
    let (header, len) = header(0x2, buf.len().saturating_sub(HEADROOM));
    let start = HEADROOM - len;
    buf[start..HEADROOM].copy_from_slice(&header[..len]);
    buf.freeze().slice(start..)
}

/// A ping frame carrying `payload` (at most 125 bytes).
pub(crate) fn ping_frame(payload: &[u8]) -> Bytes {
    frame(0x9, &payload[..payload.len().min(125)])
}

/// A close frame with `code` and `reason` (at most 123 bytes of it, cut at a char boundary).
pub(crate) fn close_frame(code: u16, reason: &str) -> Bytes {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let mut payload = code.to_be_bytes().to_vec();
    payload.extend_from_slice(&reason.as_bytes()[..end]);
    frame(0x8, &payload)
}

fn frame(opcode: u8, payload: &[u8]) -> Bytes {
    let (header, len) = header(opcode, payload.len());
    let mut out = BytesMut::with_capacity(len + payload.len());
    out.extend_from_slice(&header[..len]);
    out.extend_from_slice(payload);
    out.freeze()
}

/// The header of a final, unmasked frame of `opcode` carrying `len` bytes, and its length.
fn header(opcode: u8, len: usize) -> ([u8; HEADROOM], usize) {
    let mut header = [0; HEADROOM];
    header[0] = 0x80 | opcode;
    if len < 126 {
        header[1] = len as u8;
        (header, 2)
    } else if let Ok(len) = u16::try_from(len) {
        header[1] = 126;
        header[2..4].copy_from_slice(&len.to_be_bytes());
        (header, 4)
    } else {
        header[1] = 127;
        header[2..10].copy_from_slice(&(len as u64).to_be_bytes());
        (header, 10)
    }
}

/// Whether `bytes`, whole server frames as tungstenite writes them, include a close frame.
pub(crate) fn has_close_frame(mut bytes: &[u8]) -> bool {
    while bytes.len() >= 2 {
        let opcode = bytes[0] & 0x0f;
        if opcode == 0x8 {
            return true;
        }
        let (header, len) = match bytes[1] & 0x7f {
            126 if bytes.len() >= 4 => (4, u64::from(u16::from_be_bytes([bytes[2], bytes[3]]))),
            127 if bytes.len() >= 10 => (
                10,
                u64::from_be_bytes(bytes[2..10].try_into().unwrap_or([0xff; 8])),
            ),
            126 | 127 => return false,
            len => (2, u64::from(len)),
        };
        let masked = if bytes[1] & 0x80 != 0 { 4 } else { 0 };
        let Some(total) = usize::try_from(len)
            .ok()
            .and_then(|len| len.checked_add(header + masked))
        else {
            return false;
        };
        if total > bytes.len() {
            return false;
        }
        bytes = &bytes[total..];
    }
    false
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn frames_have_the_rfc_6455_header() {
        assert_eq!(&binary_frame(b"hi")[..], b"\x82\x02hi");
        let medium = binary_frame(&[7; 300]);
        assert_eq!(&medium[..4], &[0x82, 126, 1, 44]);
        assert_eq!(medium.len(), 304);
        let big = binary_frame(&vec![7; 70_000]);
        assert_eq!(&big[..10], &[0x82, 127, 0, 0, 0, 0, 0, 1, 0x11, 0x70]);
        assert_eq!(big.len(), 70_010);
        assert_eq!(&close_frame(1013, "busy")[..], b"\x88\x06\x03\xf5busy");
        assert_eq!(&ping_frame(b"hi")[..], b"\x89\x02hi");
        // Framing in place gives the same bytes.
        for n in [0, 1, 125, 126, 300, 65_535, 65_536, 70_000] {
            let payload: Vec<u8> = (0..n).map(|i| i as u8).collect();
            let mut buf = BytesMut::from(&[0u8; HEADROOM][..]);
            buf.extend_from_slice(&payload);
            assert_eq!(binary_frame_in(buf), binary_frame(&payload), "{n} bytes");
        }
        // A reason is cut to fit a control frame, at a char boundary.
        let long = close_frame(1000, &"é".repeat(100));
        assert_eq!(long[1], 2 + 122);
    }

    #[test]
    fn close_frames_are_found_among_others() {
        let pong = frame(0xa, b"ping data");
        let close = close_frame(1000, "");
        assert!(!has_close_frame(&pong));
        assert!(has_close_frame(&close));
        assert!(has_close_frame(&[&pong[..], &close[..]].concat()));
        assert!(!has_close_frame(
            &[&binary_frame(&[1; 200])[..], &pong[..]].concat()
        ));
        assert!(!has_close_frame(&binary_frame(&[1; 200])[..50]));
        assert!(!has_close_frame(b""));
    }
}
