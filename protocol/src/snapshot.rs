//! The PNG form of a picture (PROTOCOL.md §6): RGBA8, with a `tEXt` chunk `seq` holding the
//! decimal last included sequence number, so that the file alone is self-describing.

use crate::raster::Raster;

/// How hard the encoder works. `Fast` is the default everywhere: a 2048² picture takes tens of
/// milliseconds instead of most of a second at zlib level 6, for a somewhat larger file.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Compression {
    #[default]
    Fast,
    Default,
    Best,
}

#[derive(Debug, thiserror::Error)]
pub enum PngError {
    #[error("png encoding failed: {0}")]
    Encode(#[from] png::EncodingError),
    #[error("png decoding failed: {0}")]
    Decode(#[from] png::DecodingError),
    #[error("png is {0:?} at {1:?} bits; only 8-bit RGBA pictures are accepted")]
    Format(png::ColorType, png::BitDepth),
    #[error("png is {width}x{height}; the largest accepted side is {max}")]
    TooLarge { width: u32, height: u32, max: u32 },
    #[error("png tEXt seq {0:?} is not a decimal u64")]
    BadSeq(String),
}

/// A decoded picture and the `seq` its `tEXt` chunk names, if any.
#[derive(Debug)]
pub struct Decoded {
    pub raster: Raster,
    pub seq: Option<u64>,
}

/// Encodes `raster` as RGBA8 PNG carrying `seq`.
pub fn encode_png(raster: &Raster, seq: u64, level: Compression) -> Result<Vec<u8>, PngError> {
    let mut out = Vec::with_capacity(raster.pixels().len() / 8 + 1024);
    {
        let mut encoder = png::Encoder::new(&mut out, raster.width(), raster.height());
        encoder.set_color(png::ColorType::Rgba);
        encoder.set_depth(png::BitDepth::Eight);
        encoder.set_compression(match level {
            Compression::Fast => png::Compression::Fast,
            Compression::Default => png::Compression::Default,
            Compression::Best => png::Compression::Best,
        });
        encoder.add_text_chunk("seq".to_string(), seq.to_string())?;
        let mut writer = encoder.write_header()?;
        writer.write_image_data(raster.pixels())?;
        writer.finish()?;
    }
    Ok(out)
}

/// Decodes an RGBA8 PNG of at most `max_side` pixels a side (the bound is checked before the
/// pixel buffer is allocated).
pub fn decode_png(bytes: &[u8], max_side: u32) -> Result<Decoded, PngError> {
    let mut decoder = png::Decoder::new(std::io::Cursor::new(bytes));
    let max_bytes = max_side as usize * max_side as usize * 4;
    decoder.set_limits(png::Limits {
        bytes: max_bytes + (1 << 20),
    });
    let mut reader = decoder.read_info()?;
    let (width, height) = (reader.info().width, reader.info().height);
    if width > max_side || height > max_side {
        return Err(PngError::TooLarge {
            width,
            height,
            max: max_side,
        });
    }
    let (color, depth) = reader.output_color_type();
    if color != png::ColorType::Rgba || depth != png::BitDepth::Eight {
        return Err(PngError::Format(color, depth));
    }
    let mut pixels = vec![0; reader.output_buffer_size()];
    reader.next_frame(&mut pixels)?;
    reader.finish()?;
    pixels.truncate(width as usize * height as usize * 4);
    let seq = reader
        .info()
        .uncompressed_latin1_text
        .iter()
        .find(|t| t.keyword == "seq")
        .map(|t| {
            t.text
                .parse::<u64>()
                .map_err(|_| PngError::BadSeq(t.text.clone()))
        })
        .transpose()?;
    let raster = Raster::from_rgba(width, height, pixels).ok_or(PngError::TooLarge {
        width,
        height,
        max: max_side,
    })?;
    Ok(Decoded { raster, seq })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::Op;

    #[test]
    fn round_trip_keeps_pixels_and_seq() {
        let mut raster = Raster::new(7, 5);
        raster.apply(&Op::Rect {
            x: 1,
            y: 1,
            w: 3,
            h: 2,
            color: [10, 20, 30, 77],
        });
        for level in [Compression::Fast, Compression::Default] {
            let png = encode_png(&raster, 12_345_678_901, level).unwrap();
            let decoded = decode_png(&png, 4096).unwrap();
            assert_eq!(decoded.seq, Some(12_345_678_901));
            assert_eq!(decoded.raster, raster);
        }
    }

    #[test]
    fn oversized_and_garbage_are_errors() {
        let png = encode_png(&Raster::new(20, 2), 0, Compression::Fast).unwrap();
        assert!(matches!(
            decode_png(&png, 10),
            Err(PngError::TooLarge { width: 20, .. })
        ));
        assert!(decode_png(b"not a png", 10).is_err());
        assert!(decode_png(&png[..png.len() / 2], 4096).is_err());
    }
}
