//! Server WebSocket frames as bytes (RFC 6455 §5.2): built once, shared by every client they
//! go to (see [`crate::outbox`]), and the one check the outbox needs of tungstenite's own
//! frames (whether they close the connection).

use bytes::{Bytes, BytesMut};

/// Frames `payload` as one unmasked binary message (FIN set).
pub(crate) fn binary_frame(payload: &[u8]) -> Bytes {
    frame(0x2, payload)
}

/// Room in front of a message for the longest frame header (see [`binary_frame_in`]).
pub(crate) const HEADROOM: usize = 10;

/// Frames the message that follows [`HEADROOM`] bytes of `buf` (a `codec::*_frame_after`)
/// as [`binary_frame`] would, writing the header into the headroom instead of copying the
/// message.
pub(crate) fn binary_frame_in(mut buf: BytesMut) -> Bytes {
    let (header, len) = header(0x2, buf.len().saturating_sub(HEADROOM));
    let start = HEADROOM - len;
    buf[start..HEADROOM].copy_from_slice(&header[..len]);
    buf.freeze().slice(start..)
}

/// A ping frame carrying `payload` (at most 125 bytes).
pub(crate) fn ping_frame(payload: &[u8]) -> Bytes {
    frame(0x9, &payload[..payload.len().min(125)])
}

/// A close frame with `code` and `reason` (at most 123 bytes of it, cut at a char boundary).
pub(crate) fn close_frame(code: u16, reason: &str) -> Bytes {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let mut payload = code.to_be_bytes().to_vec();
    payload.extend_from_slice(&reason.as_bytes()[..end]);
    frame(0x8, &payload)
}

fn frame(opcode: u8, payload: &[u8]) -> Bytes {
    let (header, len) = header(opcode, payload.len());
    let mut out = BytesMut::with_capacity(len + payload.len());
    out.extend_from_slice(&header[..len]);
    out.extend_from_slice(payload);
    out.freeze()
}

/// The header of a final, unmasked frame of `opcode` carrying `len` bytes, and its length.
fn header(opcode: u8, len: usize) -> ([u8; HEADROOM], usize) {
    let mut header = [0; HEADROOM];
    header[0] = 0x80 | opcode;
    if len < 126 {
        header[1] = len as u8;
        (header, 2)
    } else if let Ok(len) = u16::try_from(len) {
        header[1] = 126;
        header[2..4].copy_from_slice(&len.to_be_bytes());
        (header, 4)
    } else {
        header[1] = 127;
        header[2..10].copy_from_slice(&(len as u64).to_be_bytes());
        (header, 10)
    }
}

/// Whether `bytes`, whole server frames as tungstenite writes them, include a close frame.
pub(crate) fn has_close_frame(mut bytes: &[u8]) -> bool {
    while bytes.len() >= 2 {
        let opcode = bytes[0] & 0x0f;
        if opcode == 0x8 {
            return true;
        }
        let (header, len) = match bytes[1] & 0x7f {
            126 if bytes.len() >= 4 => (4, u64::from(u16::from_be_bytes([bytes[2], bytes[3]]))),
            127 if bytes.len() >= 10 => (
                10,
                u64::from_be_bytes(bytes[2..10].try_into().unwrap_or([0xff; 8])),
            ),
            126 | 127 => return false,
            len => (2, u64::from(len)),
        };
        let masked = if bytes[1] & 0x80 != 0 { 4 } else { 0 };
        let Some(total) = usize::try_from(len)
            .ok()
            .and_then(|len| len.checked_add(header + masked))
        else {
            return false;
        };
        if total > bytes.len() {
            return false;
        }
        bytes = &bytes[total..];
    }
    false
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn frames_have_the_rfc_6455_header() {
        assert_eq!(&binary_frame(b"hi")[..], b"\x82\x02hi");
        let medium = binary_frame(&[7; 300]);
        assert_eq!(&medium[..4], &[0x82, 126, 1, 44]);
        assert_eq!(medium.len(), 304);
        let big = binary_frame(&vec![7; 70_000]);
        assert_eq!(&big[..10], &[0x82, 127, 0, 0, 0, 0, 0, 1, 0x11, 0x70]);
        assert_eq!(big.len(), 70_010);
        assert_eq!(&close_frame(1013, "busy")[..], b"\x88\x06\x03\xf5busy");
        assert_eq!(&ping_frame(b"hi")[..], b"\x89\x02hi");
        // Framing in place gives the same bytes.
        for n in [0, 1, 125, 126, 300, 65_535, 65_536, 70_000] {
            let payload: Vec<u8> = (0..n).map(|i| i as u8).collect();
            let mut buf = BytesMut::from(&[0u8; HEADROOM][..]);
            buf.extend_from_slice(&payload);
            assert_eq!(binary_frame_in(buf), binary_frame(&payload), "{n} bytes");
        }
        // A reason is cut to fit a control frame, at a char boundary.
        let long = close_frame(1000, &"é".repeat(100));
        assert_eq!(long[1], 2 + 122);
    }

    #[test]
    fn close_frames_are_found_among_others() {
        let pong = frame(0xa, b"ping data");
        let close = close_frame(1000, "");
        assert!(!has_close_frame(&pong));
        assert!(has_close_frame(&close));
        assert!(has_close_frame(&[&pong[..], &close[..]].concat()));
        assert!(!has_close_frame(
            &[&binary_frame(&[1; 200])[..], &pong[..]].concat()
        ));
        assert!(!has_close_frame(&binary_frame(&[1; 200])[..50]));
        assert!(!has_close_frame(b""));
    }
}
