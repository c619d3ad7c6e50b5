//! `GET /pictures/{id}/timelapse` (PROTOCOL.md §15): the picture's history as an animated PNG.
//!
//! APNG rather than GIF: it is lossless, so a frame is exactly the stored version (scaled), where
//! GIF would quantize every frame to 256 colours; and the `png` crate writes it frame by frame
//! into any `Write`, so the animation streams as it is rendered.
//!
//! Memory is bounded by a few frames whatever the history's length: one render thread fetches
//! one version at a time (its PNG), decodes it, scales it, encodes it and forgets it, keeping
//! only the previous scaled frame (repeated if a version is pruned mid-way: the frame count
//! was announced in the header). The encoded bytes go to the response through a channel of
//! [`CHUNKS_IN_FLIGHT`] chunks: a slow reader slows the rendering down instead of buffering it.
//!
//! Scaling is nearest neighbour, defined exactly so that tests (and anyone) can reproduce a
//! frame: an animation `W` wide of a `w`×`h` picture is `H = max(1, (h·W + w/2) / w)` high, and
//! its pixel `(x, y)` is the version's pixel `(x·w / W, y·h / H)` (integer division).

use std::collections::HashMap;
use std::io::Write;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use protocol::pps::{PpsError, VersionImage};
use protocol::snapshot::decode_png;
use tokio::sync::mpsc;

use crate::edge::{ask_storage, bad_request, history_error, refuse_read};
use crate::AppState;

/// Encoded chunks between the render thread and the response.
const CHUNKS_IN_FLIGHT: usize = 4;

/// Bytes the render thread gathers before handing a chunk to the response.
const CHUNK_BYTES: usize = 64 << 10;

/// Default `?delay=`, in milliseconds per frame.
const DEFAULT_DELAY_MS: u32 = 200;

/// Default `?frames=` (before the `--timelapse-max-frames` cap).
const DEFAULT_FRAMES: u32 = 100;

/// What `?delay=` accepts, in milliseconds.
const DELAY_RANGE: std::ops::RangeInclusive<u32> = 10..=10_000;

/// The height of an animation `width` wide of a `w`×`h` picture (see the module doc).
pub(crate) fn scaled_height(w: u32, h: u32, width: u32) -> u32 {
    let (w, h, width) = (u64::from(w.max(1)), u64::from(h), u64::from(width));
    u32::try_from(((h * width + w / 2) / w).max(1)).unwrap_or(u32::MAX)
}

/// `rgba` (`w`×`h`) scaled to `width`×`height` by nearest neighbour (see the module doc).
pub(crate) fn scale(rgba: &[u8], w: u32, h: u32, width: u32, height: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(width as usize * height as usize * 4);
    for y in 0..u64::from(height) {
        let sy = (y * u64::from(h) / u64::from(height)) as usize;
        for x in 0..u64::from(width) {
            let sx = (x * u64::from(w) / u64::from(width)) as usize;
            let at = (sy * w as usize + sx) * 4;
            out.extend_from_slice(rgba.get(at..at + 4).unwrap_or(&[0, 0, 0, 0]));
        }
    }
    out
}

/// Which of `n` versions make `frames` frames: evenly spread, the first and the last included.
pub(crate) fn sample(n: usize, frames: usize) -> Vec<usize> {
    let k = frames.min(n);
    match k {
        0 => Vec::new(),
        1 => vec![n - 1],
        _ => (0..k).map(|i| i * (n - 1) / (k - 1)).collect(),
    }
}

/// A query parameter as a number in `range`, or `default` when absent.
fn param(
    query: &HashMap<String, String>,
    name: &str,
    range: std::ops::RangeInclusive<u32>,
    default: u32,
) -> Result<u32, String> {
    match query.get(name) {
        None => Ok(default),
        Some(value) => value
            .parse::<u32>()
            .ok()
            .filter(|v| range.contains(v))
            .ok_or_else(|| {
                format!(
                    "{name} must be an integer in {}..={}, got {value:?}",
                    range.start(),
                    range.end()
                )
            }),
    }
}

/// `GET /pictures/{id}/timelapse?width=W&frames=N&delay=MS`.
pub(crate) async fn timelapse(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    if let Some(refused) = refuse_read(&state, &id, &query, &headers) {
        return refused;
    }
    let max_width = state.config.timelapse_max_width.max(1);
    let max_frames = state.config.timelapse_max_frames.max(1);
    let width = match param(&query, "width", 1..=max_width, 0) {
        Ok(width) => width,
        Err(message) => return bad_request(message),
    };
    let frames = match param(
        &query,
        "frames",
        1..=max_frames,
        DEFAULT_FRAMES.min(max_frames),
    ) {
        Ok(frames) => frames,
        Err(message) => return bad_request(message),
    };
    let delay = match param(&query, "delay", DELAY_RANGE, DEFAULT_DELAY_MS) {
        Ok(delay) => delay,
        Err(message) => return bad_request(message),
    };
    // Held until the render thread is done (moved into it below).
    let Ok(permit) = state.timelapses.clone().try_acquire_owned() else {
        metrics::counter!("bs_timelapses_refused_total").increment(1);
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, HeaderValue::from_static("5"))],
            "too many timelapses being rendered (--timelapse-concurrency); try again soon\n",
        )
            .into_response();
    };
    let picture = id.clone();
    let versions = match ask_storage(&state, &id, |pps| pps.history(picture.clone())).await {
        Ok(versions) => versions,
        Err(error) => return history_error(error),
    };
    let seqs: Vec<u64> = sample(versions.len(), frames as usize)
        .into_iter()
        .map(|i| versions[i].seq)
        .collect();
    let Some(&first_seq) = seqs.first() else {
        return (StatusCode::NOT_FOUND, "the picture has no history\n").into_response();
    };
    // The first version fixes the animation's size; failing here is still a clean status.
    let first = match ask_storage(&state, &id, |pps| pps.version(picture.clone(), first_seq)).await
    {
        Ok(first) => first,
        Err(error) => return history_error(error),
    };
    let width = if width == 0 {
        first.width.min(max_width)
    } else {
        width
    };
    let height = scaled_height(first.width, first.height, width);
    if height > state.config.max_side {
        return bad_request(format!(
            "a timelapse {width} wide would be {height} high, more than --max-side"
        ));
    }
    let frame_count = seqs.len();
    let (chunks, body) = mpsc::channel::<Result<Bytes, std::io::Error>>(CHUNKS_IN_FLIGHT);
    let render = Render {
        state: state.clone(),
        picture: id,
        seqs,
        first,
        width,
        height,
        delay,
    };
    let runtime = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
        let errors = chunks.clone();
        if let Err(error) = render.run(&runtime, ChunkWriter::new(chunks)) {
            if errors.is_closed() {
                // The client went away: nothing wrong here.
                tracing::debug!(%error, "timelapse abandoned by its client");
                return;
            }
            // Headers are gone: the best left is to cut the body short, which the client sees.
            tracing::warn!(%error, "timelapse cut short");
            let _ = errors.blocking_send(Err(std::io::Error::other(error)));
        }
    });
    metrics::counter!("bs_timelapses_total").increment(1);
    let stream = futures::stream::unfold(body, |mut body| async move {
        body.recv().await.map(|chunk| (chunk, body))
    });
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static("image/apng")),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
            (
                header::HeaderName::from_static("x-timelapse-frames"),
                HeaderValue::from(frame_count),
            ),
            (
                header::HeaderName::from_static("x-timelapse-size"),
                HeaderValue::from_str(&format!("{width}x{height}"))
                    .unwrap_or(HeaderValue::from_static("0x0")),
            ),
        ],
        Body::from_stream(stream),
    )
        .into_response()
}

/// One animation being rendered, on a blocking thread.
struct Render {
    state: Arc<AppState>,
    picture: String,
    /// The versions to show, in order.
    seqs: Vec<u64>,
    /// The first of them, fetched already.
    first: VersionImage,
    width: u32,
    height: u32,
    delay: u32,
}

impl Render {
    fn run(self, runtime: &tokio::runtime::Handle, out: ChunkWriter) -> Result<(), String> {
        let mut encoder = png::Encoder::new(out, self.width, self.height);
        encoder.set_color(png::ColorType::Rgba);
        encoder.set_depth(png::BitDepth::Eight);
        encoder.set_compression(png::Compression::Fast);
        let frames = u32::try_from(self.seqs.len()).map_err(|e| e.to_string())?;
        encoder
            .set_animated(frames, 0)
            .and_then(|()| encoder.set_frame_delay(self.delay as u16, 1000))
            // Whole frames that replace the previous one (as PROTOCOL.md §15 promises).
            .and_then(|()| encoder.set_dispose_op(png::DisposeOp::None))
            .and_then(|()| encoder.set_blend_op(png::BlendOp::Source))
            .map_err(|e| e.to_string())?;
        let mut writer = encoder.write_header().map_err(|e| e.to_string())?;
        let max_side = self.state.config.max_side;
        let mut previous: Option<Vec<u8>> = None;
        let mut first = Some(self.first.png.clone());
        for &seq in &self.seqs {
            let png = match first.take() {
                Some(png) => Some(png),
                None => {
                    let picture = self.picture.clone();
                    let fetched =
                        runtime.block_on(ask_storage(&self.state, &self.picture, |pps| {
                            pps.version(picture.clone(), seq)
                        }));
                    match fetched {
                        Ok(version) => Some(version.png),
                        // Pruned since the listing: the previous frame shows a little longer.
                        Err(PpsError::NotFound) => None,
                        Err(error) => return Err(error.to_string()),
                    }
                }
            };
            let frame = match png {
                Some(png) => {
                    let decoded = decode_png(&png, max_side).map_err(|e| e.to_string())?;
                    drop(png);
                    let raster = decoded.raster;
                    scale(
                        raster.pixels(),
                        raster.width(),
                        raster.height(),
                        self.width,
                        self.height,
                    )
                }
                None => previous
                    .take()
                    .ok_or_else(|| format!("version {seq} vanished"))?,
            };
            writer.write_image_data(&frame).map_err(|e| e.to_string())?;
            previous = Some(frame);
        }
        writer.finish().map_err(|e| e.to_string())
    }
}

/// Hands what the encoder writes to the response in chunks, waiting while the response's
/// channel is full (backpressure from the client). Fails once the client is gone.
struct ChunkWriter {
    chunks: mpsc::Sender<Result<Bytes, std::io::Error>>,
    buffer: Vec<u8>,
}

impl ChunkWriter {
    fn new(chunks: mpsc::Sender<Result<Bytes, std::io::Error>>) -> Self {
        Self {
            chunks,
            buffer: Vec::with_capacity(CHUNK_BYTES),
        }
    }

    fn send(&mut self) -> std::io::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(
            &mut self.buffer,
            Vec::with_capacity(CHUNK_BYTES),
        ));
        self.chunks
            .blocking_send(Ok(chunk))
            .map_err(|_| std::io::Error::other("the client went away"))
    }
}

impl Write for ChunkWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.buffer.extend_from_slice(bytes);
        if self.buffer.len() >= CHUNK_BYTES {
            self.send()?;
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.send()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_are_even_and_keep_both_ends() {
        assert_eq!(sample(0, 5), Vec::<usize>::new());
        assert_eq!(sample(3, 5), vec![0, 1, 2]);
        assert_eq!(sample(10, 1), vec![9]);
        assert_eq!(sample(10, 2), vec![0, 9]);
        assert_eq!(sample(10, 4), vec![0, 3, 6, 9]);
        assert_eq!(sample(5, 5), vec![0, 1, 2, 3, 4]);
    }

    #[test]
    fn scaling_is_nearest_neighbour_as_documented() {
        assert_eq!(scaled_height(4, 2, 2), 1);
        assert_eq!(scaled_height(3, 2, 2), 1); // (4 + 1) / 3
        assert_eq!(scaled_height(100, 1, 10), 1);
        assert_eq!(scaled_height(2, 3, 4), 6);
        // 2x2 -> 4x4: every pixel doubled.
        let px = |v: u8| [v, v, v, 255];
        let src: Vec<u8> = [px(1), px(2), px(3), px(4)].concat();
        let up = scale(&src, 2, 2, 4, 4);
        let row = |a: u8, b: u8| [px(a), px(a), px(b), px(b)].concat();
        assert_eq!(up, [row(1, 2), row(1, 2), row(3, 4), row(3, 4)].concat());
        // 4x4 -> 2x2: pixels (0,0), (2,0), (0,2), (2,2).
        let big: Vec<u8> = (0..16u8).flat_map(px).collect();
        assert_eq!(
            scale(&big, 4, 4, 2, 2),
            [px(0), px(2), px(8), px(10)].concat()
        );
    }
}
