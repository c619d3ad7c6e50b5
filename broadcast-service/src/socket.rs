//! What a client's connection runs over: an upgraded HTTP connection, or an in-process pipe.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

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
