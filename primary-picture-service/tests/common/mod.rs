//! Shared helpers of the integration tests: building batches, computing the expected raster,
//! and waiting for conditions with a deadline.

#![allow(dead_code, clippy::unwrap_used)]

use std::time::Duration;

use bytes::Bytes;
use link::PictureService;
use protocol::pps::{AcquireRequest, Acquired, ApplyBatch, Lease, Snapshot};
use protocol::snapshot::{decode_png, encode_png, Compression};
use protocol::{Op, Raster, Sequenced};

pub(crate) const W: u32 = 16;
pub(crate) const H: u32 = 8;

/// A translucent rectangle, different for every seq, so that applying an update twice (or
/// skipping one) changes pixels.
pub(crate) fn op(seq: u64) -> Op {
    Op::Rect {
        x: (seq % 5) as i32,
        y: (seq % 3) as i32,
        w: 6,
        h: 4,
        color: [(seq * 37 % 256) as u8, (seq * 91 % 256) as u8, 200, 128],
    }
}

pub(crate) fn update(seq: u64) -> Sequenced {
    Sequenced {
        seq,
        client_id: 1,
        client_seq: seq,
        op: op(seq),
    }
}

/// The lease a picture service grants first for a picture that nobody owned (its takeover
/// writes epoch 1; the first grant of an epoch is 1).
pub(crate) const FIRST_LEASE: Lease = Lease { epoch: 1, grant: 1 };

/// Asks `pps` for `picture`'s sequencer lease as the broadcast service at `holder`, creating
/// the picture at W×H if it exists nowhere.
pub(crate) async fn acquire_as(
    pps: &dyn PictureService,
    picture: &str,
    holder: &str,
) -> Result<Acquired, protocol::pps::PpsError> {
    pps.acquire(AcquireRequest {
        picture: picture.to_string(),
        create: Some((W, H)),
        holder: holder.to_string(),
        claim: None,
        force: false,
    })
    .await
}

/// The lease of `picture` for the test's sequencer (which must get it), and the seq it
/// continues after.
pub(crate) async fn acquire(pps: &dyn PictureService, picture: &str) -> (Lease, u64) {
    match acquire_as(pps, picture, "http://test-sequencer")
        .await
        .unwrap()
    {
        Acquired::Granted { lease, seq, .. } => (lease, seq),
        held => panic!("lease not granted: {held:?}"),
    }
}

/// The batch of updates `first..=last`, under the first lease ([`FIRST_LEASE`]).
pub(crate) fn batch(picture: &str, first: u64, last: u64) -> ApplyBatch {
    batch_with(FIRST_LEASE, picture, first, last)
}

/// The batch of updates `first..=last` under `lease`.
pub(crate) fn batch_with(lease: Lease, picture: &str, first: u64, last: u64) -> ApplyBatch {
    let updates: Vec<Sequenced> = (first..=last).map(update).collect();
    ApplyBatch {
        picture: picture.to_string(),
        lease,
        width: W,
        height: H,
        first_seq: first,
        last_seq: last,
        updates: Bytes::from(protocol::codec::encode(&updates)),
    }
}

/// `base` with updates `first..=last` applied once each, in order.
pub(crate) fn expected_from(mut base: Raster, first: u64, last: u64) -> Raster {
    for seq in first..=last {
        base.apply(&op(seq));
    }
    base
}

/// The blank picture with updates `1..=last`.
pub(crate) fn expected(last: u64) -> Raster {
    expected_from(Raster::new(W, H), 1, last)
}

/// Asserts that `png` is exactly `raster` at `seq`.
pub(crate) fn assert_png(png: &[u8], raster: &Raster, seq: u64) {
    let decoded = decode_png(png, 4096).unwrap();
    assert_eq!(decoded.seq, Some(seq), "png seq");
    assert_eq!(decoded.raster.width(), raster.width());
    assert_eq!(decoded.raster.height(), raster.height());
    assert!(
        decoded.raster.pixels() == raster.pixels(),
        "png pixels differ from the expected raster at seq {seq}"
    );
}

pub(crate) fn assert_snapshot(snapshot: &Snapshot, raster: &Raster, seq: u64) {
    assert_eq!(snapshot.seq, seq);
    assert_eq!(
        (snapshot.width, snapshot.height),
        (raster.width(), raster.height())
    );
    let png = snapshot.image.png().expect("a png snapshot");
    assert_png(png, raster, seq);
}

pub(crate) fn png_of(raster: &Raster, seq: u64) -> Bytes {
    Bytes::from(encode_png(raster, seq, Compression::Fast).unwrap())
}

/// Waits until `condition` holds, failing the test after `deadline`.
pub(crate) async fn eventually(
    what: &str,
    deadline: Duration,
    mut condition: impl FnMut() -> bool,
) {
    let give_up = tokio::time::Instant::now() + deadline;
    while !condition() {
        assert!(
            tokio::time::Instant::now() < give_up,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
