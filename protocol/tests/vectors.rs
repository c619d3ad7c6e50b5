//! The shared vectors of an independent implementation (`../shared/vectors`), and the
//! project's own `vectors/raster-extra.json`, run against the rasterizer and the codec.

mod common;

use anyhow::{bail, Context, Result};
use common::{extra, json};
use protocol::codec::{decode_client, decode_server, encode};
use protocol::raster::StrokeStrategy;
use protocol::Raster;
use serde_json::Value;

/// Runs every case of a raster vector file with every stroke strategy; returns the names of
/// failing cases with what differed.
fn check_raster_file(path: &str) -> Result<usize> {
    let cases = common::read_json(path)?;
    let cases = cases.as_array().context("vector file is not an array")?;
    let mut failures = Vec::new();
    for case in cases {
        let name = case["name"].as_str().context("case without name")?;
        let (w, h) = (
            case["width"].as_u64().context("width")? as u32,
            case["height"].as_u64().context("height")? as u32,
        );
        let ops = case["ops"]
            .as_array()
            .context("ops")?
            .iter()
            .map(json::op)
            .collect::<Result<Vec<_>>>()
            .with_context(|| format!("case {name}"))?;
        for strategy in [
            StrokeStrategy::Auto,
            StrokeStrategy::Stamp,
            StrokeStrategy::DistanceTransform,
        ] {
            let mut raster = Raster::new(w, h);
            for op in &ops {
                raster.apply_with(op, strategy);
            }
            let got = common::sha256_hex(&raster);
            if got != case["rgba_sha256"].as_str().context("rgba_sha256")? {
                failures.push(format!("{name} ({strategy:?}): sha256 {got}"));
            }
            if let Some(want) = case.get("rgba_hex").and_then(Value::as_str) {
                let got = hex::encode(raster.pixels());
                if got != want {
                    failures.push(format!("{name} ({strategy:?}): rgba {got} != {want}"));
                }
            }
        }
    }
    if !failures.is_empty() {
        bail!("{} failing cases:\n{}", failures.len(), failures.join("\n"));
    }
    Ok(cases.len())
}

#[test]
fn shared_raster_vectors() -> Result<()> {
    let n = check_raster_file(&format!("{}/raster.json", common::SHARED_VECTORS))?;
    assert!(n >= 40, "only {n} cases");
    Ok(())
}

#[test]
fn own_raster_vectors() -> Result<()> {
    let n = check_raster_file(&format!("{}/raster-extra.json", common::OWN_VECTORS))?;
    assert!(n >= 30, "only {n} cases");
    Ok(())
}

#[test]
fn shared_wire_vectors() -> Result<()> {
    let cases = common::read_json(&format!("{}/wire.json", common::SHARED_VECTORS))?;
    let cases = cases.as_array().context("vector file is not an array")?;
    let mut failures = Vec::new();
    for case in cases {
        let name = case["name"].as_str().context("case without name")?;
        let frame = hex::decode(case["bincode_hex"].as_str().context("bincode_hex")?)?;
        let (encoded, decoded_ok) = match case["type"].as_str() {
            Some("ClientMsg") => {
                let msg = json::client_msg(&case["message"]).with_context(|| name.to_owned())?;
                (encode(&msg), decode_client(&frame).ok() == Some(msg))
            }
            Some("ServerMsg") => {
                let msg = json::server_msg(&case["message"]).with_context(|| name.to_owned())?;
                (encode(&msg), decode_server(&frame).ok() == Some(msg))
            }
            other => bail!("case {name}: unknown type {other:?}"),
        };
        if encoded != frame {
            failures.push(format!("{name}: encoded {}", hex::encode(&encoded)));
        }
        if !decoded_ok {
            failures.push(format!(
                "{name}: decoding gave a different message or an error"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(cases.len() >= 10, "only {} cases", cases.len());
    Ok(())
}

/// The committed `vectors/raster-extra.json` is exactly what `examples/gen_vectors.rs` writes
/// today: regenerate it (see that example) after changing the cases or the rasterizer.
#[test]
fn own_raster_vectors_are_current() -> Result<()> {
    let path = format!("{}/raster-extra.json", common::OWN_VECTORS);
    let committed = std::fs::read_to_string(&path).with_context(|| path.clone())?;
    let fresh = extra::file_text();
    assert!(
        committed == fresh,
        "{path} is stale: run `cargo run -p raster-protocol --example gen_vectors > protocol/vectors/raster-extra.json`"
    );
    Ok(())
}
