//! The JSON forms of the shared test vectors (`../shared/vectors/README.md` beside the repository), both ways.
//!
//! serde's default JSON for our types differs (points are objects, byte strings are arrays),
//! so the vectors get their own small converter; the vector generator example includes this
//! file too, so what it writes is read back by the same code.

#![allow(dead_code)]

use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use protocol::{ClientMsg, Op, Point, Rgba, Sequenced, ServerMsg};
use serde_json::{json, Value};

fn variant(v: &Value) -> Result<(&str, &Value)> {
    let obj = v.as_object().context("enum value is not an object")?;
    if obj.len() != 1 {
        bail!("enum object must have exactly one key: {v}");
    }
    let (k, inner) = obj.iter().next().context("empty enum object")?;
    Ok((k.as_str(), inner))
}

fn field<'a>(v: &'a Value, name: &str) -> Result<&'a Value> {
    v.get(name)
        .with_context(|| format!("missing field {name} in {v}"))
}

fn int<T: TryFrom<i128>>(v: &Value, name: &str) -> Result<T> {
    let f = field(v, name)?;
    let n: i128 = if let Some(u) = f.as_u64() {
        i128::from(u)
    } else if let Some(i) = f.as_i64() {
        i128::from(i)
    } else {
        bail!("{name} is not an integer: {f}");
    };
    T::try_from(n).map_err(|_| anyhow!("{name} out of range: {n}"))
}

fn as_int<T: TryFrom<i128>>(v: &Value) -> Result<T> {
    int(&json!({ "v": v }), "v")
}

pub(crate) fn rgba(v: &Value) -> Result<Rgba> {
    let a = v.as_array().context("rgba is not an array")?;
    if a.len() != 4 {
        bail!("rgba needs 4 values: {v}");
    }
    Ok([
        as_int(&a[0])?,
        as_int(&a[1])?,
        as_int(&a[2])?,
        as_int(&a[3])?,
    ])
}

pub(crate) fn points(v: &Value) -> Result<Vec<Point>> {
    v.as_array()
        .context("points is not an array")?
        .iter()
        .map(|p| {
            let p = p.as_array().context("point is not an array")?;
            if p.len() != 2 {
                bail!("point needs 2 values");
            }
            Ok(Point::new(as_int(&p[0])?, as_int(&p[1])?))
        })
        .collect()
}

fn hex_bytes(v: &Value, name: &str) -> Result<Bytes> {
    let s = field(v, name)?.as_str().context("hex is not a string")?;
    Ok(Bytes::from(hex::decode(s)?))
}

fn string(v: &Value, name: &str) -> Result<String> {
    Ok(field(v, name)?.as_str().context("not a string")?.to_owned())
}

pub(crate) fn op(v: &Value) -> Result<Op> {
    let (kind, f) = variant(v)?;
    Ok(match kind {
        "Pixels" => Op::Pixels {
            color: rgba(field(f, "color")?)?,
            points: points(field(f, "points")?)?,
        },
        "Rect" => Op::Rect {
            x: int(f, "x")?,
            y: int(f, "y")?,
            w: int(f, "w")?,
            h: int(f, "h")?,
            color: rgba(field(f, "color")?)?,
        },
        "Stroke" => Op::Stroke {
            color: rgba(field(f, "color")?)?,
            width: int(f, "width")?,
            points: points(field(f, "points")?)?,
        },
        "Patch" => Op::Patch {
            x: int(f, "x")?,
            y: int(f, "y")?,
            w: int(f, "w")?,
            h: int(f, "h")?,
            rgba: hex_bytes(f, "rgba_hex")?,
        },
        "Clear" => Op::Clear {
            color: rgba(field(f, "color")?)?,
        },
        other => bail!("unknown op {other}"),
    })
}

pub(crate) fn sequenced(v: &Value) -> Result<Sequenced> {
    Ok(Sequenced {
        seq: int(v, "seq")?,
        client_id: int(v, "client_id")?,
        client_seq: int(v, "client_seq")?,
        op: op(field(v, "op")?)?,
    })
}

fn sequenced_list(v: &Value) -> Result<Vec<Sequenced>> {
    v.as_array()
        .context("not an array of updates")?
        .iter()
        .map(sequenced)
        .collect()
}

pub(crate) fn client_msg(v: &Value) -> Result<ClientMsg> {
    let (kind, f) = variant(v)?;
    Ok(match kind {
        "Draw" => ClientMsg::Draw {
            client_seq: int(f, "client_seq")?,
            op: op(field(f, "op")?)?,
        },
        "Ping" => ClientMsg::Ping {
            nonce: int(f, "nonce")?,
        },
        other => bail!("unknown ClientMsg {other}"),
    })
}

pub(crate) fn server_msg(v: &Value) -> Result<ServerMsg> {
    let (kind, f) = variant(v)?;
    Ok(match kind {
        "Welcome" => ServerMsg::Welcome {
            client_id: int(f, "client_id")?,
            width: int(f, "width")?,
            height: int(f, "height")?,
            snapshot_seq: int(f, "snapshot_seq")?,
            snapshot_png: hex_bytes(f, "snapshot_png_hex")?,
            pending: sequenced_list(field(f, "pending")?)?,
        },
        "Updates" => ServerMsg::Updates(sequenced_list(f)?),
        "Rejected" => ServerMsg::Rejected {
            client_seq: int(f, "client_seq")?,
            reason: string(f, "reason")?,
        },
        "Error" => ServerMsg::Error {
            code: int(f, "code")?,
            message: string(f, "message")?,
        },
        "Pong" => ServerMsg::Pong {
            nonce: int(f, "nonce")?,
        },
        "Presence" => ServerMsg::Presence {
            clients: int(f, "clients")?,
        },
        other => bail!("unknown ServerMsg {other}"),
    })
}

fn points_text(points: &[Point]) -> String {
    let items: Vec<String> = points
        .iter()
        .map(|p| format!("[{}, {}]", p.x, p.y))
        .collect();
    format!("[{}]", items.join(", "))
}

fn rgba_text(c: &Rgba) -> String {
    format!("[{}, {}, {}, {}]", c[0], c[1], c[2], c[3])
}

/// An op in the vectors' JSON form, on one line, fields in the README's order (the layout of
/// `raster.json`).
pub(crate) fn op_text(op: &Op) -> String {
    match op {
        Op::Pixels { color, points } => format!(
            r#"{{"Pixels": {{"color": {}, "points": {}}}}}"#,
            rgba_text(color),
            points_text(points)
        ),
        Op::Rect { x, y, w, h, color } => format!(
            r#"{{"Rect": {{"x": {x}, "y": {y}, "w": {w}, "h": {h}, "color": {}}}}}"#,
            rgba_text(color)
        ),
        Op::Stroke {
            color,
            width,
            points,
        } => format!(
            r#"{{"Stroke": {{"color": {}, "width": {width}, "points": {}}}}}"#,
            rgba_text(color),
            points_text(points)
        ),
        Op::Patch { x, y, w, h, rgba } => format!(
            r#"{{"Patch": {{"x": {x}, "y": {y}, "w": {w}, "h": {h}, "rgba_hex": "{}"}}}}"#,
            hex::encode(rgba)
        ),
        Op::Clear { color } => format!(r#"{{"Clear": {{"color": {}}}}}"#, rgba_text(color)),
    }
}
