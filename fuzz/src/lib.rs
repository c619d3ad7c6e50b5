//! What every fuzz target links: an allocator that stops the run on any single allocation
//! over [`ALLOCATION_LIMIT`].
//!
//! libFuzzer's own `-malloc_limit_mb` needs a sanitizer's malloc hooks, which stable Rust
//! cannot build; `-rss_limit_mb` alone would let a decoder that trusts a length prefix
//! reserve gigabytes it never touches. No input of at most `-max_len` (16 KiB) bytes needs
//! anything near this: the pictures are at most 72x72 and every length is bounded by the
//! frame, so an allocation this large means memory that grows with what a peer *claims*
//! rather than with what it sends. The abort is reported by libFuzzer as a crash, with the
//! input.

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::Write;

/// The largest single allocation allowed (64 MiB).
pub const ALLOCATION_LIMIT: usize = 64 << 20;

/// The system allocator, with [`ALLOCATION_LIMIT`].
pub struct Capped;

fn check(size: usize) {
    if size > ALLOCATION_LIMIT {
        // Nothing here may allocate: a fixed message, written unbuffered.
        let _ = std::io::stderr()
            .write_all(b"fuzz: an allocation over ALLOCATION_LIMIT (64 MiB); aborting\n");
        std::process::abort();
    }
}

// SAFETY: every call is passed on unchanged to the system allocator, after a size check that
// only ever aborts.
unsafe impl GlobalAlloc for Capped {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        check(layout.size());
        // SAFETY: the caller's contract is the system allocator's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        check(layout.size());
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        check(new_size);
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Capped = Capped;
