//! Ops in the JSON form of the shared test vectors (`../shared/vectors/README.md` beside the repository): an enum
//! is an object with one key, a point is `[x, y]`, a byte string is hex under a `_hex` key.
//! `raster draw --script FILE` reads one op per line; [`parse_raster_cases`] and
//! [`parse_wire_cases`] read whole vector files, so tests can replay them through a server.

use bytes::Bytes;
use protocol::{Op, Point, Rgba};
use serde::{Deserialize, Serialize};

/// Why a script could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ScriptError {
    /// A line is not the JSON of an op.
    #[error("line {line}: {source}")]
    Json {
        /// 1-based line number.
        line: usize,
        /// What the JSON parser found.
        source: serde_json::Error,
    },
    /// A `Patch`'s `rgba_hex` is not hex.
    #[error("line {line}: rgba_hex: {source}")]
    Hex {
        /// 1-based line number.
        line: usize,
        /// What the hex decoder found.
        source: hex::FromHexError,
    },
}

/// The JSON form of an [`Op`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum JsonOp {
    /// [`Op::Pixels`].
    Pixels {
        /// `[r, g, b, a]`.
        color: Rgba,
        /// Each point as `[x, y]`, in pixels.
        points: Vec<[i32; 2]>,
    },
    /// [`Op::Rect`].
    Rect {
        /// Left column.
        x: i32,
        /// Top row.
        y: i32,
        /// Width in pixels.
        w: u32,
        /// Height in pixels.
        h: u32,
        /// `[r, g, b, a]`.
        color: Rgba,
    },
    /// [`Op::Stroke`].
    Stroke {
        /// `[r, g, b, a]`.
        color: Rgba,
        /// Pen diameter in pixels.
        width: u16,
        /// The spine's vertices as `[x, y]`, in pixels.
        points: Vec<[i32; 2]>,
    },
    /// [`Op::Patch`].
    Patch {
        /// Left column.
        x: i32,
        /// Top row.
        y: i32,
        /// Width in pixels.
        w: u32,
        /// Height in pixels.
        h: u32,
        /// The `w*h*4` RGBA8 bytes, row-major, as hex.
        rgba_hex: String,
    },
    /// [`Op::Clear`].
    Clear {
        /// `[r, g, b, a]`.
        color: Rgba,
    },
}

fn points(points: &[[i32; 2]]) -> Vec<Point> {
    points.iter().map(|&[x, y]| Point::new(x, y)).collect()
}

fn pairs(points: &[Point]) -> Vec<[i32; 2]> {
    points.iter().map(|p| [p.x, p.y]).collect()
}

impl JsonOp {
    /// The op; fails only on bad hex.
    pub fn to_op(&self) -> Result<Op, hex::FromHexError> {
        Ok(match self {
            JsonOp::Pixels { color, points: p } => Op::Pixels {
                color: *color,
                points: points(p),
            },
            JsonOp::Rect { x, y, w, h, color } => Op::Rect {
                x: *x,
                y: *y,
                w: *w,
                h: *h,
                color: *color,
            },
            JsonOp::Stroke {
                color,
                width,
                points: p,
            } => Op::Stroke {
                color: *color,
                width: *width,
                points: points(p),
            },
            JsonOp::Patch {
                x,
                y,
                w,
                h,
                rgba_hex,
            } => Op::Patch {
                x: *x,
                y: *y,
                w: *w,
                h: *h,
                rgba: Bytes::from(hex::decode(rgba_hex)?),
            },
            JsonOp::Clear { color } => Op::Clear { color: *color },
        })
    }

    /// The JSON form of `op`.
    pub fn from_op(op: &Op) -> JsonOp {
        match op {
            Op::Pixels { color, points } => JsonOp::Pixels {
                color: *color,
                points: pairs(points),
            },
            Op::Rect { x, y, w, h, color } => JsonOp::Rect {
                x: *x,
                y: *y,
                w: *w,
                h: *h,
                color: *color,
            },
            Op::Stroke {
                color,
                width,
                points,
            } => JsonOp::Stroke {
                color: *color,
                width: *width,
                points: pairs(points),
            },
            Op::Patch { x, y, w, h, rgba } => JsonOp::Patch {
                x: *x,
                y: *y,
                w: *w,
                h: *h,
                rgba_hex: hex::encode(rgba),
            },
            Op::Clear { color } => JsonOp::Clear { color: *color },
        }
    }
}

/// Parses JSON lines, one op per line; blank lines and lines starting with `#` are skipped.
pub fn parse_script(text: &str) -> Result<Vec<Op>, ScriptError> {
    let mut ops = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let json: JsonOp = serde_json::from_str(line).map_err(|source| ScriptError::Json {
            line: i + 1,
            source,
        })?;
        ops.push(json.to_op().map_err(|source| ScriptError::Hex {
            line: i + 1,
            source,
        })?);
    }
    Ok(ops)
}

/// One case of a raster vector file (`raster.json`): ops applied in order to a fresh picture.
#[derive(Clone, Debug, Deserialize)]
pub struct RasterCase {
    /// The case's name, for failure messages.
    pub name: String,
    /// Picture width in pixels.
    pub width: u32,
    /// Picture height in pixels.
    pub height: u32,
    /// The ops, in the order they are applied.
    pub ops: Vec<JsonOp>,
    /// SHA-256 (lowercase hex) of the final RGBA8 bytes.
    pub rgba_sha256: String,
    /// The final RGBA8 bytes in hex, for pictures of at most 8×8.
    #[serde(default)]
    pub rgba_hex: Option<String>,
}

/// One case of a wire vector file (`wire.json`); only what replaying the frame needs.
#[derive(Clone, Debug, Deserialize)]
pub struct WireCase {
    /// The case's name, for failure messages.
    pub name: String,
    /// `ClientMsg` or `ServerMsg`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The whole binary frame.
    pub bincode_hex: String,
}

/// Parses a raster vector file.
pub fn parse_raster_cases(text: &str) -> Result<Vec<RasterCase>, serde_json::Error> {
    serde_json::from_str(text)
}

/// Parses a wire vector file.
pub fn parse_wire_cases(text: &str) -> Result<Vec<WireCase>, serde_json::Error> {
    serde_json::from_str(text)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_vector_forms() {
        let text = r#"
# a comment
{"Pixels": {"color": [200, 100, 50, 0], "points": [[0, 0], [1, -2]]}}
{"Rect": {"x": -1, "y": 2, "w": 3, "h": 4, "color": [1, 2, 3, 4]}}
{"Stroke": {"color": [1, 2, 3, 4], "width": 3, "points": [[5, 6]]}}
{"Patch": {"x": 0, "y": 0, "w": 1, "h": 1, "rgba_hex": "0a0b0c0d"}}
{"Clear": {"color": [9, 9, 9, 9]}}
"#;
        let ops = parse_script(text).unwrap();
        assert_eq!(ops.len(), 5);
        assert_eq!(
            ops[0],
            Op::Pixels {
                color: [200, 100, 50, 0],
                points: vec![Point::new(0, 0), Point::new(1, -2)]
            }
        );
        assert_eq!(
            ops[3],
            Op::Patch {
                x: 0,
                y: 0,
                w: 1,
                h: 1,
                rgba: Bytes::from_static(&[10, 11, 12, 13])
            }
        );
        for op in &ops {
            assert_eq!(&JsonOp::from_op(op).to_op().unwrap(), op);
        }
        assert!(matches!(
            parse_script("{\"Nope\": {}}"),
            Err(ScriptError::Json { line: 1, .. })
        ));
    }
}
