//! The picture actor through [`Pps`] with a [`MemoryStore`]: exact pixels, exact seqs.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use link::{PictureService, PpsEvent};
use primary_picture_service::store::memory::MemoryStore;
use primary_picture_service::store::StoredMeta;
use primary_picture_service::{Pps, PpsConfig};
use protocol::pps::{Lease, PpsError, ReleaseRequest, Snapshot, SnapshotRequest};
use tokio::sync::broadcast;

const WAIT: Duration = Duration::from_secs(10);

fn config() -> PpsConfig {
    PpsConfig {
        workers: 2,
        // Long enough not to flush by itself unless a test wants it.
        flush_interval: Duration::from_secs(3600),
        min_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(50),
        ..PpsConfig::default()
    }
}

fn setup(config: PpsConfig) -> (Arc<Pps>, Arc<MemoryStore>) {
    let store = Arc::new(MemoryStore::new());
    (Pps::new(config, store.clone()), store)
}

fn open(picture: &str, min_seq: u64) -> SnapshotRequest {
    SnapshotRequest {
        picture: picture.to_string(),
        create: Some((W, H)),
        min_seq,
        lz4: false,
        latest: false,
        force: false,
    }
}

fn existing(picture: &str, min_seq: u64) -> SnapshotRequest {
    SnapshotRequest {
        picture: picture.to_string(),
        create: None,
        min_seq,
        lz4: false,
        latest: false,
        force: false,
    }
}

async fn flushed_event(events: &mut broadcast::Receiver<PpsEvent>, picture: &str, seq: u64) {
    let wait = async {
        loop {
            match events.recv().await.unwrap() {
                PpsEvent::Flushed { picture: p, seq: s } if p == picture && s >= seq => return s,
                _ => {}
            }
        }
    };
    let got = tokio::time::timeout(WAIT, wait)
        .await
        .expect("no Flushed event");
    assert_eq!(got, seq);
}

#[tokio::test]
async fn applied_batches_give_the_exact_snapshot() {
    let (pps, _store) = setup(config());
    acquire(pps.as_ref(), "p").await;
    let blank = pps.snapshot(open("p", 0)).await.unwrap();
    assert_snapshot(&blank, &expected(0), 0);
    assert_eq!(pps.apply(batch("p", 1, 3)).await, Ok(3));
    assert_eq!(pps.apply(batch("p", 4, 5)).await, Ok(5));
    let snapshot = pps.snapshot(existing("p", 5)).await.unwrap();
    assert_snapshot(&snapshot, &expected(5), 5);
}

/// The LZ4 form (PROTOCOL.md §8) is never waited for: the first asker gets the PNG, PPS then
/// encodes the LZ4 form of that same encoding, and the next askers get it instead of the PNG,
/// equal to the picture at the snapshot's seq. Those who do not ask never get it; a new
/// encoding starts without one.
#[tokio::test]
async fn lz4_form_follows_the_first_asker() {
    let (pps, _store) = setup(config());
    acquire(pps.as_ref(), "p").await;
    let lz4 = |mut request: SnapshotRequest| {
        request.lz4 = true;
        request
    };
    let lz4_pixels = |snapshot: &Snapshot| {
        let block = snapshot.image.lz4().expect("the lz4 form");
        protocol::snapshot::decode_lz4(block, W, H, 4096).unwrap()
    };
    pps.snapshot(open("p", 0)).await.unwrap();
    assert_eq!(pps.apply(batch("p", 1, 5)).await, Ok(5));
    // The first asker must not wait for the LZ4 form: it gets the PNG.
    let first = pps.snapshot(lz4(existing("p", 5))).await.unwrap();
    assert_snapshot(&first, &expected(5), 5);
    let second = pps.snapshot(lz4(existing("p", 5))).await.unwrap();
    assert_eq!((second.width, second.height, second.seq), (W, H, 5));
    assert_eq!(lz4_pixels(&second).pixels(), expected(5).pixels());
    // Not asked: the PNG of the same encoding, even with the LZ4 form at hand.
    let plain = pps.snapshot(existing("p", 5)).await.unwrap();
    assert_eq!(plain.image, first.image, "the same encoding");
    // A newer encoding starts without one again.
    assert_eq!(pps.apply(batch("p", 6, 7)).await, Ok(7));
    let newer = pps.snapshot(lz4(existing("p", 7))).await.unwrap();
    assert_snapshot(&newer, &expected(7), 7);
    let again = pps.snapshot(lz4(existing("p", 7))).await.unwrap();
    assert_eq!(again.seq, 7);
    assert_eq!(lz4_pixels(&again).pixels(), expected(7).pixels());
}

#[tokio::test]
async fn duplicates_and_overlaps_are_applied_once() {
    let (pps, _store) = setup(config());
    acquire(pps.as_ref(), "p").await;
    pps.snapshot(open("p", 0)).await.unwrap();
    assert_eq!(pps.apply(batch("p", 1, 3)).await, Ok(3));
    // Pure duplicate: acknowledged with what PPS has.
    assert_eq!(pps.apply(batch("p", 1, 3)).await, Ok(3));
    assert_eq!(pps.apply(batch("p", 2, 2)).await, Ok(3));
    // Overlap: only the new tail counts.
    assert_eq!(pps.apply(batch("p", 2, 6)).await, Ok(6));
    let snapshot = pps.snapshot(existing("p", 6)).await.unwrap();
    assert_snapshot(&snapshot, &expected(6), 6);
}

#[tokio::test]
async fn a_gap_is_refused() {
    let (pps, _store) = setup(config());
    acquire(pps.as_ref(), "p").await;
    assert_eq!(pps.apply(batch("p", 1, 2)).await, Ok(2));
    assert_eq!(
        pps.apply(batch("p", 4, 5)).await,
        Err(PpsError::Gap {
            have: 2,
            first_seq: 4
        })
    );
    // Nothing of the refused batch was kept.
    assert_eq!(pps.apply(batch("p", 3, 3)).await, Ok(3));
    let snapshot = pps.snapshot(existing("p", 3)).await.unwrap();
    assert_snapshot(&snapshot, &expected(3), 3);
}

#[tokio::test]
async fn malformed_batches_are_bad_requests() {
    let (pps, _store) = setup(config());
    acquire(pps.as_ref(), "p").await;
    let mut lying = batch("p", 1, 3);
    lying.last_seq = 4;
    assert!(matches!(
        pps.apply(lying).await,
        Err(PpsError::BadRequest(_))
    ));
    let mut garbage = batch("p", 1, 1);
    garbage.updates = bytes::Bytes::from_static(b"\x01\x02");
    assert!(matches!(
        pps.apply(garbage).await,
        Err(PpsError::BadRequest(_))
    ));
    let bad_id = SnapshotRequest {
        picture: "../x".to_string(),
        create: Some((W, H)),
        min_seq: 0,
        lz4: false,
        latest: false,
        force: false,
    };
    assert!(matches!(
        pps.snapshot(bad_id).await,
        Err(PpsError::BadRequest(_))
    ));
    assert!(matches!(
        pps.snapshot(SnapshotRequest {
            picture: "big".to_string(),
            create: Some((5000, 5)),
            min_seq: 0,
            lz4: false,
            latest: false,
            force: false,
        })
        .await,
        Err(PpsError::BadRequest(_))
    ));
}

#[tokio::test]
async fn snapshot_waits_for_its_min_seq() {
    let (pps, _store) = setup(config());
    acquire(pps.as_ref(), "p").await;
    pps.snapshot(open("p", 0)).await.unwrap();
    // Enqueued before the batches exist: it must wait for them rather than answer at seq 0.
    let waiting = pps.snapshot(existing("p", 4));
    assert_eq!(pps.apply(batch("p", 1, 2)).await, Ok(2));
    assert_eq!(pps.apply(batch("p", 3, 5)).await, Ok(5));
    let snapshot = waiting.await.unwrap();
    assert!(snapshot.seq >= 4);
    assert_snapshot(&snapshot, &expected(snapshot.seq), snapshot.seq);
}

#[tokio::test]
async fn snapshot_gives_up_when_min_seq_never_arrives() {
    let (pps, _store) = setup(PpsConfig {
        snapshot_wait: Duration::from_millis(100),
        ..config()
    });
    pps.snapshot(open("p", 0)).await.unwrap();
    let result = pps.snapshot(existing("p", 10)).await;
    assert!(
        matches!(result, Err(PpsError::Unavailable(_))),
        "{result:?}"
    );
}

#[tokio::test]
async fn missing_picture_without_create_is_not_found_and_not_kept() {
    let (pps, _store) = setup(config());
    assert_eq!(
        pps.snapshot(existing("nope", 0)).await,
        Err(PpsError::NotFound)
    );
    eventually("the actor to exit", WAIT, || !pps.is_open("nope")).await;
}

#[tokio::test]
async fn release_flushes_exactly_and_unloads() {
    let (pps, store) = setup(config());
    acquire(pps.as_ref(), "p").await;
    let mut events = pps.events();
    assert_eq!(pps.apply(batch("p", 1, 4)).await, Ok(4));
    let release = ReleaseRequest {
        picture: "p".to_string(),
        lease: FIRST_LEASE,
        last_seq: 4,
    };
    assert_eq!(pps.release(release).await, Ok(4));
    let stored = store.get("p").expect("stored");
    assert_eq!(
        (stored.meta.seq, stored.meta.width, stored.meta.height),
        (4, W, H)
    );
    assert_png(&stored.png, &expected(4), 4);
    flushed_event(&mut events, "p", 4).await;
    eventually("the picture to unload", WAIT, || !pps.is_open("p")).await;
    assert_eq!(pps.open_pictures(), 0);

    // Stored as released, so the next lease takes it at once with a new epoch; reopened from
    // storage, exactly as it was, and it continues from there.
    assert_eq!(stored.meta.ownership.epoch, 1);
    assert!(stored.meta.ownership.released);
    let (lease, seq) = acquire(pps.as_ref(), "p").await;
    assert_eq!((lease, seq), (Lease { epoch: 2, grant: 1 }, 4));
    assert_eq!(pps.apply(batch_with(lease, "p", 3, 6)).await, Ok(6));
    let snapshot = pps.snapshot(existing("p", 6)).await.unwrap();
    assert_snapshot(&snapshot, &expected(6), 6);
    assert_eq!(store.loads(), 2);
}

#[tokio::test]
async fn release_ahead_of_the_batches_is_a_gap() {
    let (pps, _store) = setup(config());
    acquire(pps.as_ref(), "p").await;
    assert_eq!(pps.apply(batch("p", 1, 2)).await, Ok(2));
    let release = ReleaseRequest {
        picture: "p".to_string(),
        lease: FIRST_LEASE,
        last_seq: 5,
    };
    assert_eq!(
        pps.release(release).await,
        Err(PpsError::Gap {
            have: 2,
            first_seq: 5
        })
    );
}

#[tokio::test]
async fn failing_store_never_opens_blank_and_heals() {
    let (pps, store) = setup(config());
    let stored = expected(7);
    store.put("p", png_of(&stored, 7), StoredMeta::new(7, W, H));
    store.set_failing(true);
    let result = pps.snapshot(open("p", 0)).await;
    assert!(matches!(result, Err(PpsError::Storage(_))), "{result:?}");
    store.set_failing(false);
    let snapshot = pps.snapshot(open("p", 0)).await.unwrap();
    assert_snapshot(&snapshot, &stored, 7);
}

/// A picture whose load fails is never opened blank: a lease request is refused (the broadcast
/// service asks again), a batch waits for the load and is then checked against the stored seq.
#[tokio::test]
async fn a_failing_load_refuses_the_lease_and_heals() {
    let (pps, store) = setup(config());
    let stored = expected(5);
    store.put("p", png_of(&stored, 5), StoredMeta::new(5, W, H));
    store.set_failing(true);
    let refused = acquire_as(pps.as_ref(), "p", "http://test-sequencer").await;
    assert!(matches!(refused, Err(PpsError::Storage(_))), "{refused:?}");
    store.set_failing(false);
    assert_eq!(acquire(pps.as_ref(), "p").await, (FIRST_LEASE, 5));
    // Overlaps the stored seq: only 6..=8 are new.
    assert_eq!(pps.apply(batch("p", 4, 8)).await, Ok(8));
    let snapshot = pps.snapshot(existing("p", 8)).await.unwrap();
    assert_snapshot(&snapshot, &expected_from(stored, 6, 8), 8);
}

#[tokio::test]
async fn flush_retries_until_the_store_heals() {
    let (pps, store) = setup(PpsConfig {
        flush_interval: Duration::from_millis(20),
        ..config()
    });
    acquire(pps.as_ref(), "p").await;
    let mut events = pps.events();
    assert_eq!(pps.apply(batch("p", 1, 3)).await, Ok(3));
    store.set_failing(true);
    eventually("failed flush attempts", WAIT, || store.save_attempts() >= 4).await;
    // Only the blank picture the lease's takeover wrote.
    assert_eq!(store.get("p").map(|s| s.meta.seq), Some(0));
    store.set_failing(false);
    flushed_event(&mut events, "p", 3).await;
    let stored = store.get("p").expect("stored");
    assert_eq!(stored.meta.seq, 3);
    assert_png(&stored.png, &expected(3), 3);
}

#[tokio::test]
async fn fifty_concurrent_snapshots_load_once() {
    let (pps, store) = setup(config());
    let stored = expected(9);
    store.put("p", png_of(&stored, 9), StoredMeta::new(9, W, H));
    store.set_delay(Some(Duration::from_millis(50)));
    let requests: Vec<_> = (0..50).map(|_| pps.snapshot(existing("p", 0))).collect();
    let snapshots = futures::future::join_all(requests).await;
    for snapshot in snapshots {
        assert_snapshot(&snapshot.unwrap(), &stored, 9);
    }
    assert_eq!(store.loads(), 1);
}

#[tokio::test]
async fn periodic_flush_happens() {
    let (pps, store) = setup(PpsConfig {
        flush_interval: Duration::from_millis(50),
        ..config()
    });
    acquire(pps.as_ref(), "p").await;
    let mut events = pps.events();
    assert_eq!(pps.apply(batch("p", 1, 2)).await, Ok(2));
    flushed_event(&mut events, "p", 2).await;
    assert_png(&store.get("p").unwrap().png, &expected(2), 2);
    // More updates make it dirty again; the next periodic flush carries them.
    assert_eq!(pps.apply(batch("p", 3, 5)).await, Ok(5));
    flushed_event(&mut events, "p", 5).await;
    assert_png(&store.get("p").unwrap().png, &expected(5), 5);
    // The takeover (the blank picture, ours) and the two flushes.
    assert_eq!(store.saves(), 3);
}

/// A picture opened only to be read (no sequencer holds its lease) is dropped from memory once
/// idle; one with a sequencer is in use however quiet (the sequencer releases it).
#[tokio::test]
async fn idle_pictures_without_a_sequencer_are_unloaded() {
    let (pps, store) = setup(PpsConfig {
        flush_interval: Duration::from_millis(10),
        idle_unload: Duration::from_millis(100),
        ..config()
    });
    store.put("read", png_of(&expected(2), 2), StoredMeta::new(2, W, H));
    let snapshot = pps.snapshot(existing("read", 0)).await.unwrap();
    assert_snapshot(&snapshot, &expected(2), 2);
    acquire(pps.as_ref(), "used").await;
    assert_eq!(pps.apply(batch("used", 1, 2)).await, Ok(2));
    eventually("idle unload", WAIT, || !pps.is_open("read")).await;
    assert!(
        pps.is_open("used"),
        "a picture with a sequencer was unloaded"
    );
    let snapshot = pps.snapshot(existing("read", 0)).await.unwrap();
    assert_snapshot(&snapshot, &expected(2), 2);
}

#[tokio::test]
async fn shutdown_flushes_every_dirty_picture() {
    let (pps, store) = setup(config());
    for picture in ["a", "b", "c"] {
        acquire(pps.as_ref(), picture).await;
    }
    let pictures = ["a", "b", "c"];
    for (i, picture) in pictures.iter().enumerate() {
        let last = 2 + i as u64;
        assert_eq!(pps.apply(batch(picture, 1, last)).await, Ok(last));
    }
    // A clean, open picture needs no write.
    pps.snapshot(open("clean", 0)).await.unwrap();
    let summary = pps.shutdown(WAIT).await;
    assert_eq!(summary.pictures, 4);
    assert_eq!(summary.flushed, 4);
    assert_eq!(summary.failed, 0);
    for (i, picture) in pictures.iter().enumerate() {
        let last = 2 + i as u64;
        let stored = store.get(picture).unwrap();
        assert_eq!(stored.meta.seq, last);
        assert_png(&stored.png, &expected(last), last);
    }
    assert!(store.get("clean").is_none());
    assert_eq!(
        pps.apply(batch("a", 3, 3)).await,
        Err(PpsError::ShuttingDown)
    );
    assert!(!pps.is_ready());
}

/// Storage is the last fence (docs/scaling.md): once someone else has written the picture, our
/// write is refused and our copy dropped, whatever its seq; the stored picture is never
/// replaced by ours (the sequencer still holds what we had not stored, and resends it to the
/// new owner).
#[tokio::test]
async fn a_write_refused_by_storage_drops_our_copy() {
    for their_seq in [1, 10] {
        let (pps, store) = setup(config());
        acquire(pps.as_ref(), "p").await;
        assert_eq!(pps.apply(batch("p", 1, 3)).await, Ok(3));
        store.put(
            "p",
            png_of(&expected(their_seq), their_seq),
            StoredMeta::new(their_seq, W, H),
        );
        let release = ReleaseRequest {
            picture: "p".to_string(),
            lease: FIRST_LEASE,
            last_seq: 3,
        };
        assert_eq!(
            pps.release(release).await,
            Err(PpsError::Unavailable(
                "the picture moved to another picture service".to_string()
            ))
        );
        // Their copy stands, and is what PPS serves from now on.
        assert_eq!(store.get("p").unwrap().meta.seq, their_seq);
        let snapshot = pps.snapshot(existing("p", 0)).await.unwrap();
        assert_snapshot(&snapshot, &expected(their_seq), their_seq);
        // The old lease is worth nothing now.
        assert!(matches!(
            pps.apply(batch("p", 4, 4)).await,
            Err(PpsError::NotHolder { .. })
        ));
    }
}

#[tokio::test]
async fn slow_apply_knob_makes_pps_lag_but_stay_exact() {
    let (pps, _store) = setup(PpsConfig {
        apply_delay: Some(Duration::from_millis(20)),
        ..config()
    });
    acquire(pps.as_ref(), "p").await;
    for first in (1..=20).step_by(2) {
        assert_eq!(pps.apply(batch("p", first, first + 1)).await, Ok(first + 1));
    }
    let snapshot = pps.snapshot(existing("p", 20)).await.unwrap();
    assert_snapshot(&snapshot, &expected(20), 20);
}

#[tokio::test]
async fn a_recent_encoding_is_reused_unless_min_seq_demands_more() {
    let (pps, _store) = setup(PpsConfig {
        snapshot_reuse: Duration::from_secs(3600),
        ..config()
    });
    acquire(pps.as_ref(), "p").await;
    let blank = pps.snapshot(open("p", 0)).await.unwrap();
    assert_snapshot(&blank, &expected(0), 0);
    assert_eq!(pps.apply(batch("p", 1, 3)).await, Ok(3));
    // Recent enough: the same bytes again (BS's log holds 1..=3 for the joiner).
    let reused = pps.snapshot(existing("p", 0)).await.unwrap();
    assert_eq!(reused, blank);
    // Read-your-writes: a fresh encoding that includes seq 2 (and the rest of its batch).
    let fresh = pps.snapshot(existing("p", 2)).await.unwrap();
    assert_snapshot(&fresh, &expected(3), 3);
}

#[tokio::test]
async fn a_joiner_is_served_before_a_long_apply_queue() {
    let (pps, _store) = setup(PpsConfig {
        apply_delay: Some(Duration::from_millis(30)),
        apply_chunk: 1,
        // Always encode afresh, so the seq shows how far the applies had got.
        snapshot_reuse: Duration::ZERO,
        ..config()
    });
    acquire(pps.as_ref(), "p").await;
    pps.snapshot(open("p", 0)).await.unwrap();
    // Acknowledged as they are queued, even while earlier ones are being applied.
    for seq in 1..=30 {
        assert_eq!(pps.apply(batch("p", seq, seq)).await, Ok(seq));
    }
    // min_seq 0: served from what is applied now, not after the whole queue (~1 s of work).
    let snapshot = pps.snapshot(existing("p", 0)).await.unwrap();
    assert!(snapshot.seq < 30, "snapshot waited for the whole queue");
    assert_snapshot(&snapshot, &expected(snapshot.seq), snapshot.seq);
    let last = pps.snapshot(existing("p", 30)).await.unwrap();
    assert_snapshot(&last, &expected(30), 30);
}

#[tokio::test]
async fn a_cold_joiner_gets_the_stored_bytes_without_waiting_for_the_decode() {
    const DECODE: Duration = Duration::from_secs(3);
    let (pps, store) = setup(PpsConfig {
        decode_delay: Some(DECODE),
        ..config()
    });
    let stored_png = png_of(&expected(7), 7);
    let meta = StoredMeta::new(7, W, H);
    store.put("p", stored_png.clone(), meta);
    let started = std::time::Instant::now();
    let (first, second) = tokio::join!(pps.snapshot(open("p", 0)), pps.snapshot(existing("p", 7)));
    // Both joiners (the one that triggered the load and one arriving while it runs) are
    // answered with exactly the stored bytes, long before the decode could have ended.
    let elapsed = started.elapsed();
    assert!(elapsed < DECODE / 2, "waited {elapsed:?} for the decode");
    for snapshot in [first.unwrap(), second.unwrap()] {
        assert_eq!(snapshot.image.png(), Some(&stored_png));
        assert_snapshot(&snapshot, &expected(7), 7);
    }
    // Drawing goes on from the stored seq once the picture is decoded.
    assert_eq!(acquire(pps.as_ref(), "p").await, (FIRST_LEASE, 7));
    assert_eq!(pps.apply(batch("p", 8, 9)).await, Ok(9));
    let after = pps.snapshot(existing("p", 9)).await.unwrap();
    assert_snapshot(&after, &expected(9), 9);
    assert!(started.elapsed() >= DECODE);
}

#[tokio::test]
async fn a_stored_picture_with_a_bad_crc_is_never_served() {
    let (pps, store) = setup(config());
    let mut png = png_of(&expected(7), 7).to_vec();
    let last_idat_byte = png.len() - 12 - 5;
    png[last_idat_byte] ^= 1;
    store.put("p", png.into(), StoredMeta::new(7, W, H));
    let result = pps.snapshot(existing("p", 0)).await;
    match result {
        Err(PpsError::Storage(message)) => assert!(message.contains("CRC"), "{message}"),
        other => panic!("a corrupt picture was served: {other:?}"),
    }
}
