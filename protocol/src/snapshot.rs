//! The PNG form of a picture (PROTOCOL.md §6): RGBA8, with a `tEXt` chunk `seq` holding the
//! decimal last included sequence number, so that the file alone is self-describing. A stored
//! picture also names its owner in `tEXt` chunks ([`Ownership`], docs/scaling.md), so that the
//! bytes, and with them a store's version of the object, change with every change of owner.
//!
//! And the LZ4 form that joiners may ask for instead (the project's PROTOCOL.md §8): one LZ4
//! block of the raw RGBA8 bytes, which decodes in about a third of the PNG's time.

use crate::raster::Raster;

/// How hard the encoder works. `Fast` is the default everywhere: a 2048² picture takes tens of
/// milliseconds instead of most of a second at zlib level 6, for a somewhat larger file.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Compression {
    /// zlib's fastest level; an incompressible picture is stored without deflate at all.
    #[default]
    Fast,
    /// zlib level 6.
    Default,
    /// zlib's best (slowest) level.
    Best,
}

/// Why a PNG could not be encoded, read or accepted as a picture.
#[derive(Debug, thiserror::Error)]
pub enum PngError {
    /// The encoder failed.
    #[error("png encoding failed: {0}")]
    Encode(#[from] png::EncodingError),
    /// The decoder rejected the bytes.
    #[error("png decoding failed: {0}")]
    Decode(#[from] png::DecodingError),
    /// A valid PNG, but not 8-bit RGBA: pictures are RGBA8 only (§6).
    #[error("png is {0:?} at {1:?} bits; only 8-bit RGBA pictures are accepted")]
    Format(png::ColorType, png::BitDepth),
    /// A side is over the caller's `max_side`.
    #[error("png is {width}x{height}; the largest accepted side is {max}")]
    TooLarge {
        /// Width in pixels, from IHDR.
        width: u32,
        /// Height in pixels, from IHDR.
        height: u32,
        /// Largest side accepted, in pixels.
        max: u32,
    },
    /// The `tEXt` `seq` chunk's text is not a decimal `u64`.
    #[error("png tEXt seq {0:?} is not a decimal u64")]
    BadSeq(String),
    /// The chunks are not a well-formed picture (signature, lengths, CRCs, order, a zero side,
    /// a bad ownership chunk), found without inflating.
    #[error("malformed png: {0}")]
    Malformed(String),
}

/// Why an LZ4 snapshot (§8) could not be made or read.
#[derive(Debug, thiserror::Error)]
pub enum Lz4Error {
    /// The size it claims is not a picture's: a side of 0 or over `max`.
    #[error("lz4 snapshot of {width}x{height}: sides must be 1..={max}")]
    Size {
        /// Width in pixels.
        width: u32,
        /// Height in pixels.
        height: u32,
        /// Largest side accepted, in pixels.
        max: u32,
    },
    /// The block does not decode to exactly `width*height*4` bytes.
    #[error("lz4 snapshot is not a {width}x{height} RGBA8 picture: {reason}")]
    Corrupt {
        /// Width in pixels the message claimed.
        width: u32,
        /// Height in pixels the message claimed.
        height: u32,
        /// What the decoder found.
        reason: String,
    },
    /// The encoder failed.
    #[error("lz4 encoding failed: {0}")]
    Encode(String),
}

/// What a PNG's chunks say about it, read without inflating anything.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PngHeader {
    /// From IHDR.
    pub width: u32,
    /// From IHDR.
    pub height: u32,
    /// From the `tEXt` `seq` chunk, when there is one before the image data.
    pub seq: Option<u64>,
    /// From the `tEXt` chunks `epoch`, `owner` and `released`, when `epoch` is there.
    pub ownership: Option<Ownership>,
}

/// Who owns a stored picture (docs/scaling.md): written by the owning picture service with
/// every write, in `tEXt` chunks `epoch` (decimal), `owner` (16 hex digits) and `released`
/// (`0` or `1`), before the image data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ownership {
    /// Bumped by every takeover: strictly increasing per picture.
    pub epoch: u64,
    /// The owner's id (`placement::node_id` of its advertise URL).
    pub owner: u64,
    /// The owner let the picture go cleanly: the next one takes it without waiting.
    pub released: bool,
}

impl Ownership {
    /// A picture stored before owners existed, or never stored: free to take.
    pub const NONE: Ownership = Ownership {
        epoch: 0,
        owner: 0,
        released: true,
    };
}

/// The text of the `owner` chunk (and metadata) for an owner id.
pub fn owner_text(owner: u64) -> String {
    format!("{owner:016x}")
}

/// How far [`walk_chunks`] looks.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Walk {
    /// IHDR and the chunks before the image data: a header read, microseconds.
    Header,
    /// Every chunk up to IEND, each one's CRC verified, and IHDR must describe what
    /// [`decode_png`] accepts: a file that passes decodes unless its compressed stream itself
    /// was written wrong. Costs a CRC-32 pass over the file (about a millisecond for 16 MB).
    Verify { max_side: u32 },
}

/// Reads IHDR and the `tEXt` `seq` chunk without decompressing anything (what storage needs
/// to describe a stored picture).
pub fn png_header(png: &[u8]) -> Result<PngHeader, PngError> {
    walk_chunks(png, Walk::Header)
}

/// Checks a PNG's structure and every chunk's CRC without decompressing it: cheap enough to
/// do before handing stored bytes to joiners while the pixels are still being decoded.
pub fn check_png(png: &[u8], max_side: u32) -> Result<PngHeader, PngError> {
    walk_chunks(png, Walk::Verify { max_side })
}

fn walk_chunks(png: &[u8], walk: Walk) -> Result<PngHeader, PngError> {
    const SIGNATURE: &[u8] = b"\x89PNG\r\n\x1a\n";
    let bad = |reason: &str| PngError::Malformed(reason.to_string());
    let mut rest = png
        .strip_prefix(SIGNATURE)
        .ok_or_else(|| bad("bad signature"))?;
    let mut header: Option<PngHeader> = None;
    let mut image_data = false;
    loop {
        if rest.len() < 12 {
            return Err(bad("ends before IEND"));
        }
        let len = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        let kind = &rest[4..8];
        let chunk = rest
            .get(4..8usize.saturating_add(len).saturating_add(4))
            .ok_or_else(|| bad("a chunk runs past the end"))?;
        let (typed_data, crc) = chunk.split_at(chunk.len() - 4);
        let data = &typed_data[4..];
        if let Walk::Verify { .. } = walk {
            if crc32fast::hash(typed_data).to_be_bytes() != crc {
                return Err(PngError::Malformed(format!(
                    "CRC mismatch in chunk {}",
                    String::from_utf8_lossy(kind)
                )));
            }
        }
        match (kind, header.as_mut()) {
            (b"IHDR", None) if len == 13 => {
                let width = u32::from_be_bytes([data[0], data[1], data[2], data[3]]);
                let height = u32::from_be_bytes([data[4], data[5], data[6], data[7]]);
                if width == 0 || height == 0 {
                    return Err(PngError::Malformed(format!("png is {width}x{height}")));
                }
                if let Walk::Verify { max_side } = walk {
                    if width > max_side || height > max_side {
                        return Err(PngError::TooLarge {
                            width,
                            height,
                            max: max_side,
                        });
                    }
                    // bit depth 8, colour type 6 (RGBA), compression 0, filter 0, no interlace
                    if data[8..13] != [8, 6, 0, 0, 0] {
                        return Err(bad("not 8-bit non-interlaced RGBA"));
                    }
                }
                header = Some(PngHeader {
                    width,
                    height,
                    seq: None,
                    ownership: None,
                });
            }
            (_, None) => return Err(bad("does not start with IHDR")),
            (b"tEXt", Some(header)) if !image_data => {
                if let Some(text) = data.strip_prefix(b"seq\0") {
                    let text = String::from_utf8_lossy(text);
                    header.seq = Some(
                        text.parse::<u64>()
                            .map_err(|_| PngError::BadSeq(text.into_owned()))?,
                    );
                } else {
                    read_ownership(data, header)?;
                }
            }
            (b"IDAT", Some(_)) if walk == Walk::Header => break,
            (b"IDAT", Some(_)) => image_data = true,
            (b"IEND", Some(_)) => {
                if !image_data && walk != Walk::Header {
                    return Err(bad("no image data"));
                }
                break;
            }
            _ => {}
        }
        rest = &rest[8 + len + 4..];
    }
    header.ok_or_else(|| bad("no IHDR"))
}

/// Reads one `tEXt` chunk of [`Ownership`] into `header` (other chunks are left alone): a
/// picture with none of them has no owner.
fn read_ownership(data: &[u8], header: &mut PngHeader) -> Result<(), PngError> {
    let Some(split) = data.iter().position(|&b| b == 0) else {
        return Ok(());
    };
    let (keyword, text) = (&data[..split], &data[split + 1..]);
    if ![&b"epoch"[..], b"owner", b"released"].contains(&keyword) {
        return Ok(());
    }
    let text = std::str::from_utf8(text).unwrap_or("");
    let bad = || {
        PngError::Malformed(format!(
            "png tEXt {} {text:?}",
            String::from_utf8_lossy(keyword)
        ))
    };
    let record = header.ownership.get_or_insert(Ownership {
        epoch: 0,
        owner: 0,
        released: false,
    });
    match keyword {
        b"epoch" => record.epoch = text.parse().map_err(|_| bad())?,
        b"owner" => record.owner = u64::from_str_radix(text, 16).map_err(|_| bad())?,
        _ => {
            record.released = match text {
                "1" => true,
                "0" => false,
                _ => return Err(bad()),
            }
        }
    }
    Ok(())
}

/// `png` with its [`Ownership`] chunks replaced by `ownership` (right after IHDR), every other
/// chunk unchanged: what an owner writes, without encoding the pixels again.
pub fn with_ownership(png: &[u8], ownership: &Ownership) -> Result<Vec<u8>, PngError> {
    const SIGNATURE: &[u8] = b"\x89PNG\r\n\x1a\n";
    let bad = |reason: &str| PngError::Malformed(reason.to_string());
    let mut rest = png
        .strip_prefix(SIGNATURE)
        .ok_or_else(|| bad("bad signature"))?;
    let mut out = Vec::with_capacity(png.len() + 128);
    out.extend_from_slice(SIGNATURE);
    let mut first = true;
    while !rest.is_empty() {
        if rest.len() < 12 {
            return Err(bad("ends inside a chunk"));
        }
        let len = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        let whole = rest
            .get(..len.saturating_add(12))
            .ok_or_else(|| bad("a chunk runs past the end"))?;
        let (kind, data) = (&whole[4..8], &whole[8..8 + len]);
        let ours = kind == b"tEXt"
            && [&b"epoch\0"[..], b"owner\0", b"released\0"]
                .iter()
                .any(|k| data.starts_with(k));
        if !ours {
            out.extend_from_slice(whole);
        }
        if first {
            if kind != b"IHDR" {
                return Err(bad("does not start with IHDR"));
            }
            first = false;
            for (keyword, text) in [
                ("epoch", ownership.epoch.to_string()),
                ("owner", owner_text(ownership.owner)),
                (
                    "released",
                    if ownership.released { "1" } else { "0" }.to_string(),
                ),
            ] {
                let mut chunk = Vec::with_capacity(4 + keyword.len() + 1 + text.len());
                chunk.extend_from_slice(b"tEXt");
                chunk.extend_from_slice(keyword.as_bytes());
                chunk.push(0);
                chunk.extend_from_slice(text.as_bytes());
                out.extend_from_slice(&((chunk.len() - 4) as u32).to_be_bytes());
                out.extend_from_slice(&chunk);
                out.extend_from_slice(&crc32fast::hash(&chunk).to_be_bytes());
            }
        }
        rest = &rest[whole.len()..];
    }
    Ok(out)
}

/// A decoded picture and the `seq` its `tEXt` chunk names, if any.
#[derive(Debug)]
pub struct Decoded {
    /// The pixels.
    pub raster: Raster,
    /// From the `tEXt` `seq` chunk; `None` when the PNG has none.
    pub seq: Option<u64>,
}

/// Encodes `raster` as RGBA8 PNG carrying `seq`.
pub fn encode_png(raster: &Raster, seq: u64, level: Compression) -> Result<Vec<u8>, PngError> {
    let stored = level == Compression::Fast && incompressible(raster);
    // Sized for the expected file, so that it does not grow by copying.
    let mut out = Vec::with_capacity(if stored {
        stored_size(raster) + 1024
    } else {
        raster.pixels().len() / 8 + 1024
    });
    {
        let mut encoder = png::Encoder::new(&mut out, raster.width(), raster.height());
        encoder.set_color(png::ColorType::Rgba);
        encoder.set_depth(png::BitDepth::Eight);
        encoder.set_compression(match level {
            Compression::Fast => png::Compression::Fast,
            Compression::Default => png::Compression::Default,
            Compression::Best => png::Compression::Best,
        });
        if level == Compression::Fast {
            // `Up` instead of the default `Sub`: on a 2048² picture with 10 k strokes, decoding
            // (what every joiner pays) is 17 % faster, encoding 10 % faster, the file 7 %
            // smaller (measured with png 0.17.16 on this project's pictures).
            encoder.set_filter(png::FilterType::Up);
        }
        encoder.add_text_chunk("seq".to_string(), seq.to_string())?;
        let mut writer = encoder.write_header()?;
        if stored {
            // What the png crate would write after compressing in vain: unfiltered rows in
            // stored deflate blocks. Known in advance, it skips the vain compression.
            writer.write_chunk(png::chunk::IDAT, &stored_zlib(raster)?)?;
        } else {
            writer.write_image_data(raster.pixels())?;
        }
        writer.finish()?;
    }
    Ok(out)
}

/// Rows sampled by [`incompressible`].
const SAMPLE_ROWS: usize = 32;

/// Whether `Fast` compression would not make the picture smaller (noise, photos of noise):
/// judged from [`SAMPLE_ROWS`] rows spread over the picture, `Up`-filtered and compressed as
/// the encoder would. On a 2048² noise picture the png crate compresses all 16 MB, finds the
/// result larger than the input and starts again with stored blocks; that vain pass was most
/// of the encode (`pps_bench`, "encode dense").
fn incompressible(raster: &Raster) -> bool {
    let stride = raster.width() as usize * 4;
    let rows = raster.height() as usize;
    if rows < 2 * SAMPLE_ROWS {
        return false;
    }
    let pixels = raster.pixels();
    let mut sample = Vec::with_capacity(SAMPLE_ROWS * (stride + 1));
    for i in 0..SAMPLE_ROWS {
        let row = 1 + i * (rows - 1) / SAMPLE_ROWS;
        let (above, this) = (
            &pixels[(row - 1) * stride..row * stride],
            &pixels[row * stride..(row + 1) * stride],
        );
        sample.push(2); // the `Up` filter's type byte
        sample.extend(this.iter().zip(above).map(|(a, b)| a.wrapping_sub(*b)));
    }
    // Stored blocks cost 5 bytes per 64 KiB: compressed at 98 % or more, storing wins.
    fdeflate::compress_to_vec(&sample).len() * 100 >= sample.len() * 98
}

/// The length of [`stored_zlib`]'s stream.
fn stored_size(raster: &Raster) -> usize {
    // A row is its filter byte and its pixels.
    let row_bytes = raster.width() as usize * 4 + 1;
    fdeflate::StoredOnlyCompressor::<()>::compressed_size(row_bytes * raster.height() as usize)
}

/// The zlib stream of the picture's rows, unfiltered, in stored blocks.
fn stored_zlib(raster: &Raster) -> Result<Vec<u8>, PngError> {
    let stride = raster.width() as usize * 4;
    let out = std::io::Cursor::new(Vec::with_capacity(stored_size(raster)));
    let mut zlib = fdeflate::StoredOnlyCompressor::new(out).map_err(png::EncodingError::from)?;
    for row in raster.pixels().chunks_exact(stride) {
        zlib.write_data(&[0]).map_err(png::EncodingError::from)?;
        zlib.write_data(row).map_err(png::EncodingError::from)?;
    }
    Ok(zlib
        .finish()
        .map_err(png::EncodingError::from)?
        .into_inner())
}

/// The picture's RGBA8 bytes as one LZ4 block (no frame, no size prefix: the size is the
/// picture's).
pub fn encode_lz4(raster: &Raster) -> Result<Vec<u8>, Lz4Error> {
    lz4::block::compress(
        raster.pixels(),
        Some(lz4::block::CompressionMode::DEFAULT),
        false,
    )
    .map_err(|e| Lz4Error::Encode(e.to_string()))
}

/// Decodes an LZ4 block that must hold exactly `width*height*4` bytes of RGBA8, each side at
/// most `max_side` (checked before the pixel buffer is allocated). Malformed input is an error,
/// never a read or write outside the buffers.
pub fn decode_lz4(
    bytes: &[u8],
    width: u32,
    height: u32,
    max_side: u32,
) -> Result<Raster, Lz4Error> {
    if width == 0 || height == 0 || width > max_side || height > max_side {
        return Err(Lz4Error::Size {
            width,
            height,
            max: max_side,
        });
    }
    let corrupt = |reason: String| Lz4Error::Corrupt {
        width,
        height,
        reason,
    };
    let len = width as usize * height as usize * 4;
    let size = i32::try_from(len).map_err(|_| corrupt("too large for an lz4 block".into()))?;
    let mut pixels = vec![0; len];
    let n = lz4::block::decompress_to_buffer(bytes, Some(size), &mut pixels)
        .map_err(|e| corrupt(e.to_string()))?;
    if n != len {
        return Err(corrupt(format!("{n} bytes instead of {len}")));
    }
    Raster::from_rgba(width, height, pixels).ok_or_else(|| corrupt("size".into()))
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
    use crate::wire::{Op, Point};

    #[test]
    fn lz4_round_trip_keeps_pixels() {
        let mut raster = Raster::new(300, 200);
        raster.apply(&Op::Stroke {
            color: [200, 10, 30, 128],
            width: 9,
            points: vec![Point::new(-5, 7), Point::new(290, 180)],
        });
        let lz4 = encode_lz4(&raster).unwrap();
        assert!(
            lz4.len() < raster.pixels().len() / 10,
            "{} bytes",
            lz4.len()
        );
        let back = decode_lz4(&lz4, 300, 200, 4096).unwrap();
        assert_eq!(back.pixels(), raster.pixels());
        // The block is plain LZ4: the reference decoder agrees (size given, no prefix).
        let plain = lz4::block::decompress(&lz4, Some(300 * 200 * 4)).unwrap();
        assert_eq!(plain, raster.pixels());
    }

    #[test]
    fn lz4_rejects_wrong_sizes_and_garbage() {
        let raster = Raster::new(64, 32);
        let lz4 = encode_lz4(&raster).unwrap();
        // Sides over the limit or zero: refused before any allocation.
        assert!(matches!(
            decode_lz4(&lz4, 5000, 32, 4096),
            Err(Lz4Error::Size { .. })
        ));
        assert!(matches!(
            decode_lz4(&lz4, 0, 32, 4096),
            Err(Lz4Error::Size { .. })
        ));
        // A block of another size: too short or too long for the picture.
        assert!(matches!(
            decode_lz4(&lz4, 64, 31, 4096),
            Err(Lz4Error::Corrupt { .. })
        ));
        assert!(matches!(
            decode_lz4(&lz4, 64, 33, 4096),
            Err(Lz4Error::Corrupt { .. })
        ));
        // Truncated, garbage, empty: errors, no panic.
        assert!(decode_lz4(&lz4[..lz4.len() / 2], 64, 32, 4096).is_err());
        assert!(decode_lz4(&[0xff; 64], 64, 32, 4096).is_err());
        assert!(decode_lz4(&[], 64, 32, 4096).is_err());
        // A match reaching back before the start of the output.
        assert!(decode_lz4(&[0x0f, 0xff, 0xff, 0x00], 64, 32, 4096).is_err());
    }

    /// A noise picture (xorshift bytes) that compression cannot shrink.
    fn noise(width: u32, height: u32) -> Raster {
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let bytes = (0..width as usize * height as usize * 4)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 24) as u8
            })
            .collect();
        Raster::from_rgba(width, height, bytes).unwrap()
    }

    /// The png crate's own encoding, as `encode_png` did before it learned to skip the vain
    /// compression of incompressible pictures.
    fn png_crate_fast(raster: &Raster, seq: u64) -> Vec<u8> {
        let mut out = Vec::new();
        let mut encoder = png::Encoder::new(&mut out, raster.width(), raster.height());
        encoder.set_color(png::ColorType::Rgba);
        encoder.set_depth(png::BitDepth::Eight);
        encoder.set_compression(png::Compression::Fast);
        encoder.set_filter(png::FilterType::Up);
        encoder
            .add_text_chunk("seq".to_string(), seq.to_string())
            .unwrap();
        let mut writer = encoder.write_header().unwrap();
        writer.write_image_data(raster.pixels()).unwrap();
        writer.finish().unwrap();
        out
    }

    #[test]
    fn incompressible_pictures_are_stored_as_the_png_crate_would() {
        let raster = noise(300, 200);
        assert!(incompressible(&raster));
        let png = encode_png(&raster, 77, Compression::Fast).unwrap();
        // Byte for byte what the png crate writes after compressing in vain.
        assert_eq!(png, png_crate_fast(&raster, 77));
        assert!(
            png.len() > raster.pixels().len(),
            "stored: {} bytes",
            png.len()
        );
        let decoded = decode_png(&png, 4096).unwrap();
        assert_eq!(decoded.seq, Some(77));
        assert_eq!(decoded.raster.pixels(), raster.pixels());
        // Drawn pictures, blank ones and tiny ones take the compressing path, as before.
        let mut drawn = Raster::new(300, 200);
        drawn.apply(&Op::Stroke {
            color: [9, 99, 199, 255],
            width: 30,
            points: vec![Point::new(0, 0), Point::new(299, 199)],
        });
        for raster in [drawn, Raster::new(300, 200), noise(300, 40)] {
            assert!(!incompressible(&raster));
            let png = encode_png(&raster, 5, Compression::Fast).unwrap();
            assert_eq!(png, png_crate_fast(&raster, 5));
        }
    }

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
    fn header_reads_size_and_seq_without_decoding() {
        let png = encode_png(&Raster::new(7, 3), 42, Compression::Fast).unwrap();
        let want = PngHeader {
            width: 7,
            height: 3,
            seq: Some(42),
            ownership: None,
        };
        assert_eq!(png_header(&png).unwrap(), want);
        assert_eq!(check_png(&png, 7).unwrap(), want);
        assert!(png_header(b"garbage").is_err());
        assert!(png_header(&png[..20]).is_err());
    }

    #[test]
    fn ownership_is_written_into_the_png_and_read_back() {
        let raster = noise(9, 5);
        let png = encode_png(&raster, 42, Compression::Fast).unwrap();
        let owned = Ownership {
            epoch: 7,
            owner: 0x1fa5_41e3_3399_0d3e,
            released: false,
        };
        let first = with_ownership(&png, &owned).unwrap();
        let header = check_png(&first, 9).unwrap();
        assert_eq!(header.seq, Some(42));
        assert_eq!(header.ownership, Some(owned));
        // Replacing the record keeps one of each chunk and every other byte of the picture.
        let released = Ownership {
            epoch: 8,
            released: true,
            ..owned
        };
        let second = with_ownership(&first, &released).unwrap();
        assert_eq!(png_header(&second).unwrap().ownership, Some(released));
        assert_eq!(second.len(), first.len());
        assert_ne!(second, first, "a new owner record changes the bytes");
        let decoded = decode_png(&second, 9).unwrap();
        assert!(decoded.raster == raster);
        assert_eq!(decoded.seq, Some(42));
        assert_eq!(
            with_ownership(&with_ownership(&png, &released).unwrap(), &released).unwrap(),
            second
        );
        // Damaged records are errors, not silently someone else's picture.
        let mut bad = first.clone();
        let at = bad.windows(6).position(|w| w == b"epoch\0").unwrap() + 6;
        bad[at] = b'x';
        assert!(png_header(&bad).is_err());
        assert!(with_ownership(b"not a png", &owned).is_err());
        assert!(with_ownership(&png[..png.len() - 3], &owned).is_err());
    }

    #[test]
    fn check_finds_every_damaged_byte_and_wrong_format() {
        let png = encode_png(&Raster::new(40, 30), 5, Compression::Fast).unwrap();
        // Flipping any one byte after the signature breaks a CRC, a length or the structure.
        for i in 8..png.len() {
            let mut bad = png.clone();
            bad[i] ^= 0x10;
            assert!(check_png(&bad, 4096).is_err(), "byte {i} of {}", png.len());
        }
        for cut in [0, 8, 20, 33, png.len() - 12, png.len() - 1] {
            assert!(check_png(&png[..cut], 4096).is_err(), "cut at {cut}");
        }
        assert!(matches!(
            check_png(&png, 39),
            Err(PngError::TooLarge {
                width: 40,
                height: 30,
                max: 39
            })
        ));
        let mut grey = Vec::new();
        {
            let mut encoder = png::Encoder::new(&mut grey, 4, 4);
            encoder.set_color(png::ColorType::Grayscale);
            let mut writer = encoder.write_header().unwrap();
            writer.write_image_data(&[0; 16]).unwrap();
        }
        assert!(matches!(
            check_png(&grey, 4096),
            Err(PngError::Malformed(_))
        ));
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
