//! What can go wrong talking to the service. A broken protocol guarantee has its own variant
//! ([`ClientError::Protocol`]) so tests can tell a server bug from a network failure.

/// Every error of the client library.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("bad url {url:?}: {reason}")]
    Url { url: String, reason: String },
    /// Boxed: tungstenite's error carries a whole HTTP response and would bloat every `Result`.
    #[error("websocket: {0}")]
    WebSocket(Box<tokio_tungstenite::tungstenite::Error>),
    #[error("server answered http status {status}")]
    Http { status: u16 },
    #[error("server error {code}: {message}")]
    Server { code: u16, message: String },
    /// The server broke a guarantee of PROTOCOL.md (gap, duplicate, reordering, bad frame).
    #[error("protocol violation: {0}")]
    Protocol(String),
    #[error("undecodable server frame: {0}")]
    Decode(#[from] protocol::DecodeError),
    #[error("snapshot png: {0}")]
    Png(#[from] protocol::snapshot::PngError),
    #[error("snapshot lz4: {0}")]
    Lz4(#[from] protocol::snapshot::Lz4Error),
    #[error("op {client_seq} rejected: {reason}")]
    Rejected { client_seq: u64, reason: String },
    #[error("connection closed (code {code:?}): {reason}")]
    Closed { code: Option<u16>, reason: String },
    /// Making a token (PROTOCOL.md §13) failed.
    #[error("token: {0}")]
    Token(String),
    #[error("timed out waiting for {0}")]
    Timeout(String),
    /// The server replaced our picture with a fresh `Welcome` while we waited for an echo that
    /// may now be folded into the snapshot, so it may never arrive.
    #[error("resynced by the server while waiting for {0}")]
    Resynced(String),
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
