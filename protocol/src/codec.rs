//! bincode 1.x encoding (PROTOCOL.md §2) and bounded decoding of untrusted frames.
//!
//! Decoding is strict: little-endian fixed-width integers, every length checked against the
//! bytes left in the frame before anything is allocated for it, and bytes left over after the
//! message make the frame undecodable. Vectors of structured values are decoded without
//! trusting their length prefix for preallocation (see [`bounded_vec`]), so a frame that claims
//! 2^60 points costs no more memory than the points it really carries.
//!
//! The frame builders ([`updates_frame`], [`welcome_frame_after`]) splice updates that were encoded
//! once ([`encode_sequenced`]) into a frame, so a sequenced update is serialized exactly once
//! however many clients receive it and however many frames carry it.

use bincode::Options;
use bytes::{BufMut, Bytes, BytesMut};
use serde::de::DeserializeOwned;
use serde::Serialize;

pub use crate::bounded::bounded_vec;
use crate::pps::SnapshotImage;
use crate::wire::{ClientMsg, Sequenced, ServerMsg};

/// Why a frame could not be decoded. The text is safe to send back to the peer.
#[derive(Debug, thiserror::Error)]
#[error("undecodable frame: {0}")]
pub struct DecodeError(String);

/// `ServerMsg` variant indices, for the frame builders.
const WELCOME_TAG: u32 = 0;
const UPDATES_TAG: u32 = 1;
const WELCOME_LZ4_TAG: u32 = 6;

/// Encodes any protocol value with the default `bincode::serialize` layout.
#[allow(
    clippy::expect_used,
    reason = "serializing derived types into a Vec cannot fail (see below)"
)]
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // Serializing our own derived types into a Vec cannot fail: every sequence has a known
    // length and no type has a fallible `Serialize`.
    bincode::serialize(value).expect("bincode encoding of protocol types is infallible")
}

/// Decodes one value from a whole frame of untrusted bytes.
pub fn decode<T: DeserializeOwned>(frame: &[u8]) -> Result<T, DecodeError> {
    bincode::DefaultOptions::new()
        .with_fixint_encoding()
        .with_little_endian()
        .reject_trailing_bytes()
        .with_limit(frame.len() as u64)
        .deserialize(frame)
        .map_err(|e| DecodeError(e.to_string()))
}

/// Decodes a frame from a client (see [`decode`]).
pub fn decode_client(frame: &[u8]) -> Result<ClientMsg, DecodeError> {
    decode(frame)
}

/// Decodes a frame from the broadcast service (see [`decode`]).
pub fn decode_server(frame: &[u8]) -> Result<ServerMsg, DecodeError> {
    decode(frame)
}

/// The encoding of one sequenced update, as it appears inside `Updates` and `Welcome.pending`.
pub fn encode_sequenced(update: &Sequenced) -> Bytes {
    Bytes::from(encode(update))
}

/// Offset of the op inside a `ClientMsg::Draw` frame: `u32` variant tag, then `u64` client_seq.
const DRAW_OP_OFFSET: usize = 4 + 8;

/// The op of a `ClientMsg::Draw` frame that [`decode_client`] accepted, as the bytes it came in
/// (the encoding a [`sequenced_entry`] splices in), without copying.
pub fn draw_op(frame: &Bytes) -> Bytes {
    frame.slice(DRAW_OP_OFFSET.min(frame.len())..)
}

/// The encoding of `Sequenced { seq, client_id, client_seq, op }` from the op's own encoding:
/// the sequencer builds every update this way, so an op is never decoded and re-encoded.
pub fn sequenced_entry(seq: u64, client_id: u64, client_seq: u64, op: &[u8]) -> Bytes {
    let mut entry = BytesMut::with_capacity(24 + op.len());
    entry.put_u64_le(seq);
    entry.put_u64_le(client_id);
    entry.put_u64_le(client_seq);
    entry.put_slice(op);
    entry.freeze()
}

/// Offset of the op inside a `RelayUp::Draw` frame: `u32` variant tag, `u64` client_id, `u64`
/// client_seq.
const RELAY_DRAW_OP_OFFSET: usize = 4 + 8 + 8;

/// `RelayUp` variant indices of the two draws (same layout).
const RELAY_DRAW_TAG: u32 = 0;
const RELAY_SESSION_DRAW_TAG: u32 = 2;

/// `RelayUp::Draw { client_id, client_seq, op }` (or `RelayUp::SessionDraw`, for a client with
/// a session key) from the op's own encoding (as [`draw_op`] sliced it out of the client's
/// frame): a relay forwards a draw without re-encoding it.
pub fn relay_draw(session: bool, client_id: u64, client_seq: u64, op: &[u8]) -> Bytes {
    let mut frame = BytesMut::with_capacity(RELAY_DRAW_OP_OFFSET + op.len());
    frame.put_u32_le(if session {
        RELAY_SESSION_DRAW_TAG
    } else {
        RELAY_DRAW_TAG
    });
    frame.put_u64_le(client_id);
    frame.put_u64_le(client_seq);
    frame.put_slice(op);
    frame.freeze()
}

/// The op of a `RelayUp::Draw` (or `SessionDraw`) frame that `decode::<RelayUp>` accepted,
/// without copying.
pub fn relay_draw_op(frame: &Bytes) -> Bytes {
    frame.slice(RELAY_DRAW_OP_OFFSET.min(frame.len())..)
}

/// `ServerMsg::Updates` made of pre-encoded updates (each from [`encode_sequenced`]).
pub fn updates_frame<'a>(entries: impl ExactSizeIterator<Item = &'a Bytes> + Clone) -> Bytes {
    updates_frame_after(0, entries).freeze()
}

/// [`updates_frame`] after `headroom` zero bytes, room for a transport's header in the same
/// buffer (the broadcast service writes a WebSocket frame header there instead of copying the
/// message behind one).
pub fn updates_frame_after<'a>(
    headroom: usize,
    entries: impl ExactSizeIterator<Item = &'a Bytes> + Clone,
) -> BytesMut {
    let body: usize = entries.clone().map(Bytes::len).sum();
    let mut out = BytesMut::with_capacity(headroom + 4 + 8 + body);
    out.put_bytes(0, headroom);
    out.put_u32_le(UPDATES_TAG);
    put_entries(&mut out, entries);
    out
}

/// `ServerMsg::Welcome` (or `WelcomeLz4`, by the snapshot's form) with pre-encoded pending
/// updates (each from [`encode_sequenced`]), after `headroom` zero bytes (see
/// [`updates_frame_after`]): a 2048² snapshot is megabytes, copied once into the frame, header
/// included.
pub fn welcome_frame_after<'a>(
    headroom: usize,
    client_id: u64,
    width: u32,
    height: u32,
    snapshot_seq: u64,
    snapshot: &SnapshotImage,
    pending: impl ExactSizeIterator<Item = &'a Bytes> + Clone,
) -> BytesMut {
    let (tag, image) = match snapshot {
        SnapshotImage::Png(png) => (WELCOME_TAG, png),
        SnapshotImage::Lz4(lz4) => (WELCOME_LZ4_TAG, lz4),
    };
    let body: usize = pending.clone().map(Bytes::len).sum();
    let mut out = BytesMut::with_capacity(headroom + 4 + 8 + 8 + 8 + 8 + image.len() + 8 + body);
    out.put_bytes(0, headroom);
    out.put_u32_le(tag);
    out.put_u64_le(client_id);
    out.put_u32_le(width);
    out.put_u32_le(height);
    out.put_u64_le(snapshot_seq);
    out.put_u64_le(image.len() as u64);
    out.put_slice(image);
    put_entries(&mut out, pending);
    out
}

/// A `Vec<Sequenced>` made of pre-encoded updates: the body of a batch sent to the picture
/// service. Decode it with `decode::<Vec<Sequenced>>`.
pub fn sequenced_vec<'a>(entries: impl ExactSizeIterator<Item = &'a Bytes> + Clone) -> Bytes {
    let body: usize = entries.clone().map(Bytes::len).sum();
    let mut out = BytesMut::with_capacity(8 + body);
    put_entries(&mut out, entries);
    out.freeze()
}

fn put_entries<'a>(out: &mut BytesMut, entries: impl ExactSizeIterator<Item = &'a Bytes>) {
    out.put_u64_le(entries.len() as u64);
    for entry in entries {
        out.put_slice(entry);
    }
}

/// The header of one update inside an `Updates` frame, found by [`scan_updates`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UpdateHeader {
    /// The update's sequence number.
    pub seq: u64,
    /// The id of the client that drew it.
    pub client_id: u64,
    /// That client's number for the op.
    pub client_seq: u64,
    /// Where the update's encoded op lies in the frame.
    pub op: (usize, usize),
    /// Where the whole encoded update (as [`encode_sequenced`] makes it) lies in the frame.
    pub entry: (usize, usize),
}

/// Walks a `ServerMsg::Updates` frame without decoding the ops: for readers that need only who
/// sent what in which order (load generators counting millions of deliveries per second).
/// `Ok(None)`: the frame is another message. Every length is checked against the frame; a
/// frame that `decode_server` rejects is an error here too, except that op *contents* (a
/// `Patch` length that disagrees with `w*h*4`, say) are not validated.
pub fn scan_updates(frame: &[u8]) -> Result<Option<Vec<UpdateHeader>>, DecodeError> {
    let mut r = Cursor { frame, at: 0 };
    if r.u32()? != UPDATES_TAG {
        return Ok(None);
    }
    let count = r.u64()?;
    let mut out = Vec::new();
    for _ in 0..count {
        let entry_start = r.at;
        let (seq, client_id, client_seq) = (r.u64()?, r.u64()?, r.u64()?);
        let start = r.at;
        match r.u32()? {
            0 => {
                r.skip(4)?;
                let n = r.u64()?;
                r.skip_n(n, 8)?;
            }
            1 => r.skip(20)?,
            2 => {
                r.skip(6)?;
                let n = r.u64()?;
                r.skip_n(n, 8)?;
            }
            3 => {
                r.skip(16)?;
                let n = r.u64()?;
                r.skip_n(n, 1)?;
            }
            4 => r.skip(4)?,
            tag => return Err(DecodeError(format!("unknown op variant {tag}"))),
        }
        out.push(UpdateHeader {
            seq,
            client_id,
            client_seq,
            op: (start, r.at),
            entry: (entry_start, r.at),
        });
    }
    if r.at != frame.len() {
        return Err(DecodeError("bytes left over after the message".into()));
    }
    Ok(Some(out))
}

struct Cursor<'a> {
    frame: &'a [u8],
    at: usize,
}

impl Cursor<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], DecodeError> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&end| end <= self.frame.len())
            .ok_or_else(|| DecodeError("length beyond the end of the frame".into()))?;
        let bytes = &self.frame[self.at..end];
        self.at = end;
        Ok(bytes)
    }

    fn skip(&mut self, n: usize) -> Result<(), DecodeError> {
        self.take(n).map(|_| ())
    }

    fn skip_n(&mut self, count: u64, size: usize) -> Result<(), DecodeError> {
        let n = usize::try_from(count)
            .ok()
            .and_then(|c| c.checked_mul(size))
            .ok_or_else(|| DecodeError("length beyond the end of the frame".into()))?;
        self.skip(n)
    }

    fn u32(&mut self) -> Result<u32, DecodeError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self) -> Result<u64, DecodeError> {
        let b = self.take(8)?;
        let mut a = [0; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{Op, Point};

    fn seqd(seq: u64) -> Sequenced {
        Sequenced {
            seq,
            client_id: 3,
            client_seq: seq * 2,
            op: Op::Stroke {
                color: [1, 2, 3, 4],
                width: 5,
                points: vec![Point::new(1, -1), Point::new(7, 9)],
            },
        }
    }

    #[test]
    fn spliced_frames_equal_bincode() {
        let updates: Vec<Sequenced> = (1..=3).map(seqd).collect();
        let entries: Vec<Bytes> = updates.iter().map(encode_sequenced).collect();
        assert_eq!(
            updates_frame(entries.iter()).as_ref(),
            encode(&ServerMsg::Updates(updates.clone()))
        );
        let png = Bytes::from_static(b"\x89PNG fake");
        let welcome = ServerMsg::Welcome {
            client_id: 9,
            width: 640,
            height: 480,
            snapshot_seq: 41,
            snapshot_png: png.clone(),
            pending: updates.clone(),
        };
        assert_eq!(
            &welcome_frame_after(
                0,
                9,
                640,
                480,
                41,
                &SnapshotImage::Png(png.clone()),
                entries.iter()
            )[..],
            encode(&welcome).as_slice()
        );
        let lz4 = Bytes::from_static(b"\x1f\xff\xff\xff\xff");
        let welcome_lz4 = ServerMsg::WelcomeLz4 {
            client_id: 9,
            width: 640,
            height: 480,
            snapshot_seq: 41,
            snapshot_lz4: lz4.clone(),
            pending: updates.clone(),
        };
        let frame = welcome_frame_after(
            0,
            9,
            640,
            480,
            41,
            &SnapshotImage::Lz4(lz4.clone()),
            entries.iter(),
        );
        assert_eq!(&frame[..], encode(&welcome_lz4).as_slice());
        // The extension's variant index is 6, and its layout is Welcome's.
        assert_eq!(&frame[..4], &6u32.to_le_bytes());
        let same_bytes = ServerMsg::Welcome {
            client_id: 9,
            width: 640,
            height: 480,
            snapshot_seq: 41,
            snapshot_png: lz4.clone(),
            pending: updates.clone(),
        };
        assert_eq!(&frame[4..], &encode(&same_bytes)[4..]);
        assert_eq!(decode_server(&frame).unwrap(), welcome_lz4);
        let body = sequenced_vec(entries.iter());
        assert_eq!(decode::<Vec<Sequenced>>(&body).unwrap(), updates);
        // With headroom: zeros, then exactly the same message.
        let after = updates_frame_after(10, entries.iter());
        assert_eq!(&after[..10], &[0; 10]);
        assert_eq!(&after[10..], updates_frame(entries.iter()).as_ref());
        let after = welcome_frame_after(
            3,
            9,
            640,
            480,
            41,
            &SnapshotImage::Png(png.clone()),
            entries.iter(),
        );
        assert_eq!(&after[..3], &[0; 3]);
        assert_eq!(&after[3..], encode(&welcome).as_slice());
    }

    #[test]
    fn a_draw_op_spliced_into_an_entry_is_the_sequenced_encoding() {
        let update = seqd(7);
        let draw = Bytes::from(encode(&ClientMsg::Draw {
            client_seq: update.client_seq,
            op: update.op.clone(),
        }));
        let op = draw_op(&draw);
        assert_eq!(decode::<crate::wire::Op>(&op).unwrap(), update.op);
        let entry = sequenced_entry(update.seq, update.client_id, update.client_seq, &op);
        assert_eq!(entry, encode_sequenced(&update));
    }

    #[test]
    fn a_relayed_draw_is_the_relay_up_encoding() {
        let update = seqd(3);
        let frame = relay_draw(
            true,
            update.client_id,
            update.client_seq,
            &encode(&update.op),
        );
        assert_eq!(
            decode::<crate::relay::RelayUp>(&frame).unwrap(),
            crate::relay::RelayUp::SessionDraw {
                client_id: update.client_id,
                client_seq: update.client_seq,
                op: update.op.clone(),
            }
        );
        assert_eq!(relay_draw_op(&frame), encode(&update.op));
        let frame = relay_draw(
            false,
            update.client_id,
            update.client_seq,
            &encode(&update.op),
        );
        assert_eq!(
            decode::<crate::relay::RelayUp>(&frame).unwrap(),
            crate::relay::RelayUp::Draw {
                client_id: update.client_id,
                client_seq: update.client_seq,
                op: update.op.clone(),
            }
        );
        assert_eq!(relay_draw_op(&frame), encode(&update.op));
    }

    #[test]
    fn scan_finds_every_header_and_op() {
        let ops = [
            Op::Pixels {
                color: [1, 2, 3, 4],
                points: vec![Point::new(1, 2); 3],
            },
            Op::Rect {
                x: -1,
                y: 2,
                w: 3,
                h: 4,
                color: [5; 4],
            },
            seqd(9).op,
            Op::Patch {
                x: 0,
                y: 0,
                w: 1,
                h: 2,
                rgba: Bytes::from_static(&[7; 8]),
            },
            Op::Clear { color: [0; 4] },
        ];
        let updates: Vec<Sequenced> = ops
            .iter()
            .enumerate()
            .map(|(i, op)| Sequenced {
                seq: 10 + i as u64,
                client_id: 3,
                client_seq: i as u64,
                op: op.clone(),
            })
            .collect();
        let frame = encode(&ServerMsg::Updates(updates.clone()));
        let headers = scan_updates(&frame).unwrap().unwrap();
        assert_eq!(headers.len(), updates.len());
        for (h, u) in headers.iter().zip(&updates) {
            assert_eq!(
                (h.seq, h.client_id, h.client_seq),
                (u.seq, u.client_id, u.client_seq)
            );
            assert_eq!(decode::<Op>(&frame[h.op.0..h.op.1]).unwrap(), u.op);
            assert_eq!(&frame[h.entry.0..h.entry.1], &encode_sequenced(u)[..]);
        }
        for cut in 0..frame.len() {
            assert!(scan_updates(&frame[..cut]).is_err(), "cut at {cut}");
        }
        let mut long = frame.clone();
        long.push(0);
        assert!(scan_updates(&long).is_err());
        let pong = encode(&ServerMsg::Pong { nonce: 1 });
        assert_eq!(scan_updates(&pong).unwrap(), None);
    }

    #[test]
    fn extension_variants_are_appended() {
        // PROTOCOL.md §10 and §11: variants 7 and 8, after WelcomeLz4 (6).
        let durable = encode(&ServerMsg::Durable { seq: 0x0102 });
        assert_eq!(durable, [7, 0, 0, 0, 2, 1, 0, 0, 0, 0, 0, 0]);
        let session = encode(&ServerMsg::Session {
            session: 5,
            last_client_seq: 9,
        });
        let mut expect = vec![8, 0, 0, 0];
        expect.extend_from_slice(&5u64.to_le_bytes());
        expect.extend_from_slice(&9u64.to_le_bytes());
        assert_eq!(session, expect);
        assert_eq!(
            encode(&crate::relay::RelayUp::SessionQuery { session: 5 })[..4],
            [3, 0, 0, 0]
        );
    }

    #[test]
    fn huge_length_prefix_is_an_error_not_an_allocation() {
        // Draw { client_seq: 0, op: Pixels { color, points: <2^60 elements> } }
        let mut frame = vec![0, 0, 0, 0];
        frame.extend_from_slice(&0u64.to_le_bytes());
        frame.extend_from_slice(&0u32.to_le_bytes());
        frame.extend_from_slice(&[1, 2, 3, 4]);
        frame.extend_from_slice(&(1u64 << 60).to_le_bytes());
        frame.extend_from_slice(&[0; 8]);
        assert!(decode_client(&frame).is_err());
        // Patch with a 2^60-byte rgba string.
        let mut frame = vec![0, 0, 0, 0];
        frame.extend_from_slice(&0u64.to_le_bytes());
        frame.extend_from_slice(&3u32.to_le_bytes());
        frame.extend_from_slice(&[0; 16]);
        frame.extend_from_slice(&(1u64 << 60).to_le_bytes());
        assert!(decode_client(&frame).is_err());
    }

    #[test]
    fn trailing_bytes_and_unknown_tags_are_errors() {
        let mut frame = encode(&ClientMsg::Ping { nonce: 5 });
        assert_eq!(decode_client(&frame).unwrap(), ClientMsg::Ping { nonce: 5 });
        frame.push(0);
        assert!(decode_client(&frame).is_err());
        let mut unknown = 2u32.to_le_bytes().to_vec();
        unknown.extend_from_slice(&[0; 8]);
        assert!(decode_client(&unknown).is_err());
        assert!(decode_client(&[]).is_err());
    }
}
