//! `GET /pictures/{id}/snapshot.png`: the picture as the server has it, with the last seq it
//! includes (read-your-writes: every update sequenced before the request is in it).

use crate::error::ClientError;

/// The server's picture: `(X-Picture-Seq, PNG bytes)`.
pub async fn snapshot(base_url: &str, picture: &str) -> Result<(u64, Vec<u8>), ClientError> {
    snapshot_with_token(base_url, picture, None).await
}

/// [`snapshot`] from a service that asks for a token (PROTOCOL.md §13), sent as an
/// `Authorization: Bearer` header; a `view` token is enough.
pub async fn snapshot_with_token(
    base_url: &str,
    picture: &str,
    token: Option<&str>,
) -> Result<(u64, Vec<u8>), ClientError> {
    let url = format!(
        "{}/pictures/{picture}/snapshot.png",
        crate::http_base(base_url)
    );
    let mut request = reqwest::Client::new().get(&url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await?;
    let status = response.status();
    if !status.is_success() {
        return Err(ClientError::Http {
            status: status.as_u16(),
        });
    }
    let seq = response
        .headers()
        .get("x-picture-seq")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .ok_or_else(|| {
            ClientError::Protocol("snapshot.png without a decimal X-Picture-Seq header".into())
        })?;
    let png = response.bytes().await?;
    Ok((seq, png.to_vec()))
}

/// One answer of `GET /pictures/{id}/updates` (PROTOCOL.md §14).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Poll {
    /// The updates after the asked `since`, up to `last` (`X-Picture-Seq`); none when the wait
    /// ran out (`last == since`).
    Updates {
        last: u64,
        updates: Vec<protocol::Sequenced>,
    },
    /// `410 Gone`: the service no longer holds the updates after `since`; start again from
    /// `snapshot.png`.
    Gone,
}

/// `GET /pictures/{id}/updates?since=SEQ&wait=SECONDS` once, in the bincode form, checking
/// that the updates continue `since` (consecutive seqs from `since + 1` to `X-Picture-Seq`).
pub async fn updates(
    http: &reqwest::Client,
    base_url: &str,
    picture: &str,
    since: u64,
    wait: std::time::Duration,
    token: Option<&str>,
) -> Result<Poll, ClientError> {
    let url = format!(
        "{}/pictures/{picture}/updates?since={since}&wait={}",
        crate::http_base(base_url),
        wait.as_secs_f64()
    );
    let mut request = http.get(&url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await?;
    let status = response.status();
    if status == reqwest::StatusCode::GONE {
        return Ok(Poll::Gone);
    }
    if !status.is_success() {
        return Err(ClientError::Http {
            status: status.as_u16(),
        });
    }
    let last = picture_seq(response.headers())?;
    let body = response.bytes().await?;
    let updates = match protocol::codec::decode_server(&body)? {
        protocol::ServerMsg::Updates(updates) => updates,
        other => {
            return Err(ClientError::Protocol(format!(
                "updates answered with {other:?}"
            )))
        }
    };
    // Every seq after `since` exactly once, in order, up to what the header says.
    let mut expect = since + 1;
    for update in &updates {
        if update.seq != expect {
            return Err(ClientError::Protocol(format!(
                "updates after {since}: expected seq {expect}, got {}",
                update.seq
            )));
        }
        expect += 1;
    }
    // `expect - 1` is the last seq the body holds (`since` when it holds none).
    if expect - 1 != last {
        return Err(ClientError::Protocol(format!(
            "updates after {since} end at {} but X-Picture-Seq says {last}",
            expect - 1
        )));
    }
    Ok(Poll::Updates { last, updates })
}

fn picture_seq(headers: &reqwest::header::HeaderMap) -> Result<u64, ClientError> {
    headers
        .get("x-picture-seq")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .ok_or_else(|| {
            ClientError::Protocol("answer without a decimal X-Picture-Seq header".into())
        })
}

/// What one [`Follower::step`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// These updates were applied (none: the wait ran out).
    Updates(Vec<protocol::Sequenced>),
    /// The service answered `410 Gone`: the picture was fetched again from `snapshot.png`,
    /// at this seq.
    Resynced { seq: u64 },
}

/// Follows a picture over plain HTTP (PROTOCOL.md §14): `snapshot.png` once, then long-polls
/// of `updates` applied to a local raster; a `410 Gone` fetches the snapshot again and
/// carries on from its `X-Picture-Seq`. The local picture is the server's at [`Follower::seq`].
pub struct Follower {
    http: reqwest::Client,
    base_url: String,
    picture: String,
    token: Option<String>,
    max_side: u32,
    raster: protocol::raster::Raster,
    seq: u64,
    resyncs: u64,
}

impl Follower {
    /// Fetches the picture's snapshot to start from.
    pub async fn start(
        base_url: &str,
        picture: &str,
        token: Option<String>,
    ) -> Result<Follower, ClientError> {
        let mut follower = Follower {
            http: reqwest::Client::new(),
            base_url: base_url.to_string(),
            picture: picture.to_string(),
            token,
            max_side: 4096,
            raster: protocol::raster::Raster::new(1, 1),
            seq: 0,
            resyncs: 0,
        };
        follower.fetch_snapshot().await?;
        Ok(follower)
    }

    async fn fetch_snapshot(&mut self) -> Result<(), ClientError> {
        let (seq, png) =
            snapshot_with_token(&self.base_url, &self.picture, self.token.as_deref()).await?;
        let decoded = protocol::snapshot::decode_png(&png, self.max_side)?;
        self.raster = decoded.raster;
        self.seq = seq;
        Ok(())
    }

    /// One long-poll (waiting up to `wait`), applied.
    pub async fn step(&mut self, wait: std::time::Duration) -> Result<Step, ClientError> {
        let poll = updates(
            &self.http,
            &self.base_url,
            &self.picture,
            self.seq,
            wait,
            self.token.as_deref(),
        )
        .await?;
        match poll {
            Poll::Updates { last, updates } => {
                for update in &updates {
                    self.raster.apply(&update.op);
                }
                self.seq = last;
                Ok(Step::Updates(updates))
            }
            Poll::Gone => {
                self.fetch_snapshot().await?;
                self.resyncs += 1;
                Ok(Step::Resynced { seq: self.seq })
            }
        }
    }

    /// Polls until the local picture includes `seq` (or `deadline`).
    pub async fn catch_up(
        &mut self,
        seq: u64,
        deadline: tokio::time::Instant,
    ) -> Result<(), ClientError> {
        while self.seq < seq {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return Err(ClientError::Timeout(format!(
                    "the follower to reach seq {seq} (at {})",
                    self.seq
                )));
            }
            self.step(left.min(std::time::Duration::from_secs(5)))
                .await?;
        }
        Ok(())
    }

    /// The local picture, the server's at [`Follower::seq`].
    pub fn raster(&self) -> &protocol::raster::Raster {
        &self.raster
    }

    /// The last seq applied.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// How many times a `410 Gone` made it fetch the snapshot again.
    pub fn resyncs(&self) -> u64 {
        self.resyncs
    }
}
