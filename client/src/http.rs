//! `GET /pictures/{id}/snapshot.png`: the picture as the server has it, with the last seq it
//! includes (read-your-writes: every update sequenced before the request is in it); its history
//! as an animated PNG; and following a picture with long-polls of `updates` (PROTOCOL.md §16).

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

/// What to ask of `GET /pictures/{id}/timelapse` (PROTOCOL.md §15); `None`: the server's
/// default.
#[derive(Clone, Debug, Default)]
pub struct TimelapseOptions {
    /// Width of the animation in pixels (nearest-neighbour scaling).
    pub width: Option<u32>,
    /// Most frames, sampled evenly over the history.
    pub frames: Option<u32>,
    /// Milliseconds per frame.
    pub delay_ms: Option<u32>,
    /// For a service that asks for one (PROTOCOL.md §13); `view` is enough.
    pub token: Option<String>,
}

/// How far a timelapse download is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimelapseProgress {
    /// Frames received whole so far.
    pub frames: u64,
    /// Frames the animation has (`X-Timelapse-Frames`).
    pub total: u64,
    /// Bytes received so far.
    pub bytes: u64,
}

/// Downloads the picture's timelapse (an animated PNG) into `out` as it streams, calling
/// `progress` after every chunk. Returns the final progress.
pub async fn timelapse(
    base_url: &str,
    picture: &str,
    options: &TimelapseOptions,
    out: &mut impl std::io::Write,
    mut progress: impl FnMut(TimelapseProgress),
) -> Result<TimelapseProgress, ClientError> {
    let mut url = format!(
        "{}/pictures/{picture}/timelapse?",
        crate::http_base(base_url)
    );
    for (name, value) in [
        ("width", options.width),
        ("frames", options.frames),
        ("delay", options.delay_ms),
    ] {
        if let Some(value) = value {
            url.push_str(&format!("{name}={value}&"));
        }
    }
    let mut request = reqwest::Client::new().get(url.trim_end_matches(['?', '&']));
    if let Some(token) = &options.token {
        request = request.bearer_auth(token);
    }
    let mut response = request.send().await?;
    let status = response.status();
    if !status.is_success() {
        return Err(ClientError::Http {
            status: status.as_u16(),
        });
    }
    let total = response
        .headers()
        .get("x-timelapse-frames")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .ok_or_else(|| {
            ClientError::Protocol("timelapse without a decimal X-Timelapse-Frames header".into())
        })?;
    let mut counter = FrameCounter::default();
    let mut done = TimelapseProgress {
        frames: 0,
        total,
        bytes: 0,
    };
    progress(done);
    while let Some(chunk) = response.chunk().await? {
        out.write_all(&chunk)
            .map_err(|e| ClientError::Protocol(format!("writing the timelapse: {e}")))?;
        counter.feed(&chunk);
        done.bytes += chunk.len() as u64;
        done.frames = counter.frames;
        progress(done);
    }
    if !counter.ended {
        return Err(ClientError::Protocol(
            "the timelapse ended before its IEND chunk".into(),
        ));
    }
    Ok(done)
}

/// Counts an APNG's frames as its bytes stream by: a frame is whole once the next frame's
/// `fcTL` chunk (or `IEND`) starts. Reads chunk headers only.
#[derive(Debug, Default)]
struct FrameCounter {
    /// Bytes of the stream seen so far.
    seen: u64,
    /// Where the next chunk header starts (after the 8-byte signature).
    next: u64,
    /// The current chunk header's bytes, while it is split between two reads.
    header: Vec<u8>,
    /// `fcTL` chunks seen: frames started.
    started: u64,
    /// Frames complete.
    frames: u64,
    ended: bool,
}

impl FrameCounter {
    fn feed(&mut self, mut bytes: &[u8]) {
        if self.next == 0 {
            self.next = 8;
        }
        while !bytes.is_empty() && !self.ended {
            if self.header.is_empty() {
                // Skip to the next chunk header.
                let end = self.seen + bytes.len() as u64;
                if end <= self.next {
                    self.seen = end;
                    return;
                }
                let skip = (self.next - self.seen) as usize;
                bytes = &bytes[skip..];
                self.seen = self.next;
            }
            // Gather its 8 bytes (length, type), maybe over several reads.
            let want = 8 - self.header.len();
            let take = want.min(bytes.len());
            self.header.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            self.seen += take as u64;
            if self.header.len() < 8 {
                return;
            }
            let length = u32::from_be_bytes([
                self.header[0],
                self.header[1],
                self.header[2],
                self.header[3],
            ]);
            match &self.header[4..8] {
                b"fcTL" => {
                    self.frames = self.started;
                    self.started += 1;
                }
                b"IEND" => {
                    self.frames = self.started;
                    self.ended = true;
                }
                _ => {}
            }
            self.header.clear();
            // Data and CRC follow the header.
            self.next = self.seen + u64::from(length) + 4;
        }
    }
}

/// One answer of `GET /pictures/{id}/updates` (PROTOCOL.md §16).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Poll {
    /// The updates after the asked `since`, up to `last` (`X-Picture-Seq`); none when the wait
    /// ran out (`last == since`).
    Updates {
        /// The answer's `X-Picture-Seq`: the last seq the follower now has.
        last: u64,
        /// The updates `since+1 ..= last`, consecutive (checked).
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
    Resynced {
        /// The new snapshot's `X-Picture-Seq`.
        seq: u64,
    },
}

/// Follows a picture over plain HTTP (PROTOCOL.md §16): `snapshot.png` once, then long-polls
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// A minimal chunk stream: signature, then chunks of the given types and lengths.
    fn stream(chunks: &[(&[u8; 4], usize)]) -> Vec<u8> {
        let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
        for (kind, len) in chunks {
            out.extend_from_slice(&(*len as u32).to_be_bytes());
            out.extend_from_slice(*kind);
            out.extend(std::iter::repeat_n(7u8, *len));
            out.extend_from_slice(&[0, 0, 0, 0]);
        }
        out
    }

    #[test]
    fn frames_are_counted_whatever_the_chunking() {
        let bytes = stream(&[
            (b"IHDR", 13),
            (b"acTL", 8),
            (b"fcTL", 26),
            (b"IDAT", 100),
            (b"fcTL", 26),
            (b"fdAT", 50),
            (b"fdAT", 3),
            (b"fcTL", 26),
            (b"fdAT", 0),
            (b"IEND", 0),
        ]);
        for step in [1, 2, 3, 7, 13, 64, bytes.len()] {
            let mut counter = FrameCounter::default();
            for piece in bytes.chunks(step) {
                counter.feed(piece);
                // A frame is counted once the next one starts (or the image ends).
                if !counter.ended {
                    assert_eq!(
                        counter.frames,
                        counter.started.saturating_sub(1),
                        "step {step}"
                    );
                }
            }
            assert_eq!((counter.frames, counter.ended), (3, true), "step {step}");
        }
    }
}
