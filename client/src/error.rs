//! What can go wrong talking to the service. A broken protocol guarantee has its own variant
//! ([`ClientError::Protocol`]) so tests can tell a server bug from a network failure.

/// Every error of the client library.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// A URL the client cannot use. Nothing in this crate returns it at present.
    #[error("bad url {url:?}: {reason}")]
    Url {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Boxed: tungstenite's error carries a whole HTTP response and would bloat every `Result`.
    #[error("websocket: {0}")]
    WebSocket(Box<tokio_tungstenite::tungstenite::Error>),
    /// The server answered an HTTP request, or refused a WebSocket upgrade, with a status
    /// other than the one expected (400 bad id or size, 401 token, 404, 429/503 admission
    /// limits of PROTOCOL.md §12, ...).
    #[error("server answered http status {status}")]
    Http {
        /// The HTTP status code.
        status: u16,
    },
    /// The server sent `ServerMsg::Error` (PROTOCOL.md §2, §7) before closing.
    #[error("server error {code}: {message}")]
    Server {
        /// HTTP-like code: 400, 413, 429, 500 or 503 (PROTOCOL.md §5), 409 for a session
        /// clash (§11).
        code: u16,
        /// The server's message.
        message: String,
    },
    /// The server broke a guarantee of PROTOCOL.md (gap, duplicate, reordering, bad frame).
    #[error("protocol violation: {0}")]
    Protocol(String),
    /// A frame from the server did not decode as a `ServerMsg` (PROTOCOL.md §2).
    #[error("undecodable server frame: {0}")]
    Decode(#[from] protocol::DecodeError),
    /// A snapshot PNG did not decode as an RGBA8 picture (PROTOCOL.md §6).
    #[error("snapshot png: {0}")]
    Png(#[from] protocol::snapshot::PngError),
    /// A `WelcomeLz4` snapshot did not decode to the picture's size (PROTOCOL.md §8).
    #[error("snapshot lz4: {0}")]
    Lz4(#[from] protocol::snapshot::Lz4Error),
    /// The op waited for was answered `Rejected` (PROTOCOL.md §3.4).
    #[error("op {client_seq} rejected: {reason}")]
    Rejected {
        /// The rejected op's `client_seq`.
        client_seq: u64,
        /// The server's reason.
        reason: String,
    },
    /// The connection ended while something was awaited.
    #[error("connection closed (code {code:?}): {reason}")]
    Closed {
        /// The WebSocket close code (1012 restart, 1013 try again, 4001 session replaced,
        /// 4401 token expired, ...); `None` when the connection ended without a close frame.
        code: Option<u16>,
        /// The close frame's reason, or what ended the connection.
        reason: String,
    },
    /// Making a token (PROTOCOL.md §13) failed.
    #[error("token: {0}")]
    Token(String),
    /// A wait ran past its deadline; the text names what was awaited.
    #[error("timed out waiting for {0}")]
    Timeout(String),
    /// The server replaced our picture with a fresh `Welcome` while we waited for an echo that
    /// may now be folded into the snapshot, so it may never arrive.
    #[error("resynced by the server while waiting for {0}")]
    Resynced(String),
    /// An HTTP request failed below the status (connect, read, body).
    #[error("http request: {0}")]
    Request(#[from] reqwest::Error),
}

impl From<tokio_tungstenite::tungstenite::Error> for ClientError {
    fn from(error: tokio_tungstenite::tungstenite::Error) -> Self {
        match error {
            tokio_tungstenite::tungstenite::Error::Http(response) => ClientError::Http {
                status: response.status().as_u16(),
            },
            other => ClientError::WebSocket(Box::new(other)),
        }
    }
}
