//! Counts the heap allocations this process makes while counting is on. Off (one
//! relaxed load per allocation) everywhere but `roomstate-bench in-process`, so the
//! floor and the load generator run as before.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

pub struct Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
/// `malloc`s and `realloc`s (a growing buffer's copies cost as much as new ones).
static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

// SAFETY: every call goes to the system allocator unchanged; counting has no effect on
// what it returns.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count();
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

fn count() {
    if COUNTING.load(Ordering::Relaxed) {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
    }
}

/// Counting from `start` to `stop`: the allocations made in between, on any thread.
pub struct Counted {
    before: u64,
}

impl Counted {
    pub fn start() -> Self {
        let before = ALLOCATIONS.load(Ordering::Relaxed);
        COUNTING.store(true, Ordering::Relaxed);
        Counted { before }
    }

    pub fn stop(self) -> u64 {
        COUNTING.store(false, Ordering::Relaxed);
        ALLOCATIONS.load(Ordering::Relaxed) - self.before
    }
}
