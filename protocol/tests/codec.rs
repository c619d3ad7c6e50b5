//! The codec on random messages and on hostile bytes (proptest): every message survives an
//! encode/decode round trip; no input makes decoding panic; a length prefix larger than the
//! bytes left in the frame is an error, never an allocation.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests and benches may unwrap (common brief)

use proptest::prelude::*;
use protocol::codec::{decode, decode_client, decode_server, encode};
use protocol::{ClientMsg, Op, Point, Sequenced, ServerMsg};

fn op() -> impl Strategy<Value = Op> {
    let point = (any::<i32>(), any::<i32>()).prop_map(|(x, y)| Point::new(x, y));
    prop_oneof![
        (any::<[u8; 4]>(), prop::collection::vec(point.clone(), 0..8))
            .prop_map(|(color, points)| Op::Pixels { color, points }),
        (
            any::<i32>(),
            any::<i32>(),
            any::<u32>(),
            any::<u32>(),
            any::<[u8; 4]>()
        )
            .prop_map(|(x, y, w, h, color)| Op::Rect { x, y, w, h, color }),
        (
            any::<[u8; 4]>(),
            any::<u16>(),
            prop::collection::vec(point, 0..8)
        )
            .prop_map(|(color, width, points)| Op::Stroke {
                color,
                width,
                points
            }),
        (
            any::<i32>(),
            any::<i32>(),
            any::<u32>(),
            any::<u32>(),
            prop::collection::vec(any::<u8>(), 0..40)
        )
            .prop_map(|(x, y, w, h, rgba)| Op::Patch {
                x,
                y,
                w,
                h,
                rgba: rgba.into()
            }),
        any::<[u8; 4]>().prop_map(|color| Op::Clear { color }),
    ]
}

fn sequenced() -> impl Strategy<Value = Sequenced> {
    (any::<u64>(), any::<u64>(), any::<u64>(), op()).prop_map(|(seq, client_id, client_seq, op)| {
        Sequenced {
            seq,
            client_id,
            client_seq,
            op,
        }
    })
}

fn client_msg() -> impl Strategy<Value = ClientMsg> {
    prop_oneof![
        (any::<u64>(), op()).prop_map(|(client_seq, op)| ClientMsg::Draw { client_seq, op }),
        any::<u64>().prop_map(|nonce| ClientMsg::Ping { nonce }),
    ]
}

fn server_msg() -> impl Strategy<Value = ServerMsg> {
    prop_oneof![
        (
            any::<u64>(),
            any::<u32>(),
            any::<u32>(),
            any::<u64>(),
            prop::collection::vec(any::<u8>(), 0..64),
            prop::collection::vec(sequenced(), 0..4)
        )
            .prop_map(|(client_id, width, height, snapshot_seq, png, pending)| {
                ServerMsg::Welcome {
                    client_id,
                    width,
                    height,
                    snapshot_seq,
                    snapshot_png: png.into(),
                    pending,
                }
            }),
        prop::collection::vec(sequenced(), 0..4).prop_map(ServerMsg::Updates),
        (any::<u64>(), ".{0,20}")
            .prop_map(|(client_seq, reason)| ServerMsg::Rejected { client_seq, reason }),
        (any::<u16>(), ".{0,20}").prop_map(|(code, message)| ServerMsg::Error { code, message }),
        any::<u64>().prop_map(|nonce| ServerMsg::Pong { nonce }),
        any::<u32>().prop_map(|clients| ServerMsg::Presence { clients }),
        any::<u64>().prop_map(|seq| ServerMsg::Durable { seq }),
        (any::<u64>(), any::<u64>()).prop_map(|(session, last_client_seq)| ServerMsg::Session {
            session,
            last_client_seq
        }),
    ]
}

/// A change to a valid frame: flip a byte, cut it short, or add a byte.
#[derive(Clone, Debug)]
enum Mutation {
    Set(usize, u8),
    Truncate(usize),
    Insert(usize, u8),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Set(i, b)),
        any::<usize>().prop_map(Mutation::Truncate),
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Insert(i, b)),
    ]
}

fn mutate(frame: &mut Vec<u8>, mutations: &[Mutation]) {
    for m in mutations {
        let len = frame.len();
        match *m {
            Mutation::Set(i, b) if len > 0 => frame[i % len] = b,
            Mutation::Truncate(i) => frame.truncate(i % (len + 1)),
            Mutation::Insert(i, b) => frame.insert(i % (len + 1), b),
            Mutation::Set(..) => {}
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn client_msg_round_trip(msg in client_msg()) {
        let frame = encode(&msg);
        prop_assert_eq!(decode_client(&frame).ok(), Some(msg));
    }

    #[test]
    fn server_msg_round_trip(msg in server_msg()) {
        let frame = encode(&msg);
        prop_assert_eq!(decode_server(&frame).ok(), Some(msg));
    }

    #[test]
    fn random_bytes_never_panic(frame in prop::collection::vec(any::<u8>(), 0..200)) {
        let _ = decode_client(&frame);
        let _ = decode_server(&frame);
        let _ = decode::<Vec<Sequenced>>(&frame);
    }

    #[test]
    fn mutated_frames_never_panic(
        client in client_msg(),
        server in server_msg(),
        mutations in prop::collection::vec(mutation(), 1..4),
    ) {
        let mut frame = encode(&client);
        mutate(&mut frame, &mutations);
        if let Ok(msg) = decode_client(&frame) {
            // Whatever decodes must be exactly what the bytes say.
            prop_assert_eq!(encode(&msg), frame);
        }
        let mut frame = encode(&server);
        mutate(&mut frame, &mutations);
        if let Ok(msg) = decode_server(&frame) {
            prop_assert_eq!(encode(&msg), frame);
        }
    }

    /// Every `u64` length prefix of a valid frame, replaced by a value larger than the bytes
    /// left after it, makes the frame undecodable (bincode would otherwise try to allocate it).
    #[test]
    fn lengths_beyond_the_frame_are_errors(
        msg in server_msg(),
        excess in prop_oneof![1u64..16, Just(1u64 << 32), Just(1u64 << 60), Just(u64::MAX / 2)],
    ) {
        let frame = encode(&msg);
        for at in length_prefix_offsets(&msg) {
            let mut bad = frame.clone();
            let left = (frame.len() - at - 8) as u64;
            bad[at..at + 8].copy_from_slice(&left.saturating_add(excess).to_le_bytes());
            prop_assert!(decode_server(&bad).is_err(), "length at {} accepted", at);
        }
    }
}

/// Byte offsets of the length prefixes of `Welcome.snapshot_png`, `Welcome.pending` and
/// `Updates` in their encoding.
fn length_prefix_offsets(msg: &ServerMsg) -> Vec<usize> {
    match msg {
        ServerMsg::Welcome { snapshot_png, .. } => vec![28, 36 + snapshot_png.len()],
        ServerMsg::Updates(_) => vec![4],
        _ => vec![],
    }
}

#[test]
fn huge_point_count_is_an_error() {
    // Draw { client_seq: 1, op: Stroke { color, width: 3, points: <claims 2^61> } } with only
    // two points present.
    let mut frame = 0u32.to_le_bytes().to_vec();
    frame.extend_from_slice(&1u64.to_le_bytes());
    frame.extend_from_slice(&2u32.to_le_bytes());
    frame.extend_from_slice(&[0, 0, 0, 255]);
    frame.extend_from_slice(&3u16.to_le_bytes());
    frame.extend_from_slice(&(1u64 << 61).to_le_bytes());
    frame.extend_from_slice(&[0; 16]);
    assert!(decode_client(&frame).is_err());
    // The same frame with the true count decodes.
    frame[22..30].copy_from_slice(&2u64.to_le_bytes());
    assert_eq!(
        decode_client(&frame).unwrap(),
        ClientMsg::Draw {
            client_seq: 1,
            op: Op::Stroke {
                color: [0, 0, 0, 255],
                width: 3,
                points: vec![Point::new(0, 0); 2],
            },
        }
    );
}
