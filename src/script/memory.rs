//! A script's memory budget (`--script-memory`): the process's global
//! allocator counts, per thread, the bytes allocated and freed while a
//! script call runs, into that script's `Budget` (its state, handles, a
//! call's temporaries and its `disk()` storage all come from its calls).
//! Blobs crossing a call's edge (a `pwrite` buffer in, a `pread` result
//! out) move between budgets explicitly. Over the budget, the next
//! operation stops the call (ENOMEM) and host functions that allocate a
//! lot check before they do. Only `src/script/` may import rhai.

use super::raise::{raise_limit, RResult};
use crate::backend::Errno;
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicI64, Ordering::Relaxed};

/// The system allocator, counting into the budget of the script call
/// running on the current thread (if any).
pub struct Counting;

/// This thread's accounting, in one thread-local (const-initialized, no
/// destructor: each access is a plain offset from the thread pointer).
struct Tls {
    /// The budget of the scope running on this thread (null: none).
    current: Cell<*const Budget>,
    /// The budget that was current when the running scope began.
    caller: Cell<*const Budget>,
    /// Bytes counted on this thread and not yet added to the current
    /// budget's shared total (discarded when no budget is current), plus
    /// `FLUSH`: one unsigned comparison tells when they leave ±`FLUSH`.
    pending: Cell<i64>,
    /// How far the pending bytes may grow before the current budget is
    /// over: its limit minus its shared total when this thread last read
    /// it (at every add to it, and when a scope begins or ends), plus
    /// `FLUSH` like `pending`; `i64::MAX` when no budget (or no limit)
    /// applies. So the check rhai makes at every operation is one
    /// comparison.
    room: Cell<i64>,
}

thread_local! {
    static T: Tls = const {
        Tls {
            current: Cell::new(std::ptr::null()),
            caller: Cell::new(std::ptr::null()),
            pending: Cell::new(FLUSH),
            room: Cell::new(i64::MAX),
        }
    };
}

/// Counted bytes a thread keeps to itself, either way, before adding them
/// to its budget's shared total: one atomic add per this many bytes, not
/// one per allocation (a rhai call makes dozens; ramdisk.rhai 4k randread
/// QD16 x1 spent 3% of its CPU in the counting allocator). Another thread
/// sees the total late by at most this much per thread, and a thread reads
/// the others' share when it adds its own (every this many bytes it
/// allocates or frees) and when a scope begins; the thread itself and
/// every scope's end see it exact.
const FLUSH: i64 = 64 << 10;

/// Count `delta` bytes on this thread: an add and a compare, the rest
/// (every `FLUSH` bytes) out of line. Counted with no budget current, the
/// bytes are dropped there (and when a scope begins).
#[inline(always)]
fn account(delta: isize) {
    // `try_with`: never panics, even while the thread is being torn down.
    let _ = T.try_with(|t| {
        let v = t.pending.get().wrapping_add(delta as i64);
        t.pending.set(v);
        // Pending bytes (v - FLUSH) at or above FLUSH, or below -FLUSH.
        if v as u64 >= (2 * FLUSH) as u64 {
            settle(t);
        }
    });
}

/// Add what this thread has counted to the current budget's total (if
/// any), and read that total back into `room`.
#[cold]
#[inline(never)]
fn settle(t: &Tls) {
    let v = t.pending.replace(FLUSH).wrapping_sub(FLUSH);
    let b = t.current.get();
    if !b.is_null() {
        // SAFETY: set by `scope`, which outlives every allocation made
        // while it is current.
        let b = unsafe { &*b };
        let used = b.used.fetch_add(v, Relaxed).saturating_add(v);
        t.room.set(b.room(used).saturating_add(FLUSH));
    }
}

/// Make `b` (null: none) this thread's current budget, with nothing
/// pending and its room read fresh.
#[inline(always)]
fn enter(t: &Tls, b: *const Budget) {
    t.current.set(b);
    t.pending.set(FLUSH);
    t.room.set(if b.is_null() {
        i64::MAX
    } else {
        // SAFETY: as in `settle`: `b` is the budget of a running scope.
        let b = unsafe { &*b };
        b.room(b.used.load(Relaxed)).saturating_add(FLUSH)
    });
}

/// Add what this thread counted to `b`'s total (the current budget).
#[inline(always)]
fn add_pending(t: &Tls, b: *const Budget) {
    let v = t.pending.replace(FLUSH).wrapping_sub(FLUSH);
    if !b.is_null() && v != 0 {
        // SAFETY: as in `settle`.
        unsafe { &*b }.used.fetch_add(v, Relaxed);
    }
}

// SAFETY: every call is forwarded to `System`; only counting is added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let p = System.alloc(l);
        if !p.is_null() {
            account(l.size() as isize);
        }
        p
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        let p = System.alloc_zeroed(l);
        if !p.is_null() {
            account(l.size() as isize);
        }
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        System.dealloc(p, l);
        account(-(l.size() as isize));
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        let q = System.realloc(p, l, new);
        if !q.is_null() {
            account(new as isize - l.size() as isize);
        }
        q
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// One script's memory: what its calls hold, against its limit.
#[derive(Debug)]
pub struct Budget {
    used: AtomicI64,
    /// Bytes (0 = unlimited).
    limit: i64,
}

impl Budget {
    pub fn new(limit: u64) -> Budget {
        Budget {
            used: AtomicI64::new(0),
            limit: limit.min(i64::MAX as u64) as i64,
        }
    }

    /// Bytes the script holds now.
    pub fn used(&self) -> u64 {
        self.held().max(0) as u64
    }

    /// The shared total, and what this thread has not yet added to it
    /// when this is the current budget.
    fn held(&self) -> i64 {
        let mut u = self.used.load(Relaxed);
        if std::ptr::eq(T.with(|t| t.current.get()), self) {
            u += T.with(|t| t.pending.get() - FLUSH);
        }
        u
    }

    /// What is left under the limit when the shared total is `used`.
    fn room(&self, used: i64) -> i64 {
        if self.limit > 0 {
            self.limit.saturating_sub(used)
        } else {
            i64::MAX
        }
    }

    pub fn limit(&self) -> u64 {
        self.limit as u64
    }

    fn over_by(&self, more: u64) -> bool {
        self.limit > 0 && self.held().saturating_add(more as i64) > self.limit
    }
}

/// Run `f` with `b` counting this thread's allocations (nested calls
/// count into their own script's budget, then this one resumes).
pub fn scope<R>(b: &Budget, f: impl FnOnce() -> R) -> R {
    let (prev, prev_caller) = T.with(|t| {
        let prev = t.current.get();
        add_pending(t, prev);
        enter(t, b);
        (prev, t.caller.replace(prev))
    });
    struct Restore(*const Budget, *const Budget, *const Budget);
    impl Drop for Restore {
        fn drop(&mut self) {
            let _ = T.try_with(|t| {
                add_pending(t, self.0);
                enter(t, self.1);
                t.caller.set(self.2);
            });
        }
    }
    let _r = Restore(b, prev, prev_caller);
    f()
}

/// Count `bytes` handed in to the running call (a `pwrite` buffer made
/// before it began) in the current budget, as if it had allocated them
/// (kept by this thread like any allocation, so no shared atomic add per
/// call), and take them out of the caller's budget, if any (a filter's
/// script above this one).
#[inline]
pub fn receive(bytes: usize) {
    account(bytes as isize);
    if let Some(c) = caller() {
        c.used.fetch_sub(bytes as i64, Relaxed);
    }
}

/// Charge the running call for a buffer made outside any call (a read
/// buffer the server recycled) that it now holds, as if it had allocated
/// it: its free, or its `transfer` out at the call's edge, counts it back.
pub fn adopt(bytes: usize) {
    account(bytes as isize);
}

/// A buffer of `count` bytes for a read that overwrites all of them,
/// charged to the running call: the thread's recycled read buffer when it
/// fits (no allocation, no zero-fill), else a new one.
pub fn read_buffer(count: usize) -> Vec<u8> {
    match crate::backend::take_spare(count) {
        Some(v) => {
            adopt(v.capacity());
            v
        }
        None => vec![0u8; count],
    }
}

/// Move `bytes` (a Blob's capacity) from the budget current on this thread
/// (if any) into `to` (if any): a buffer changing owner at a call's edge.
pub fn transfer(bytes: usize, to: Option<&Budget>) {
    account(-(bytes as isize));
    if let Some(b) = to {
        b.used.fetch_add(bytes as i64, Relaxed);
    }
}

/// The budget of the script call running on this thread, if any.
fn current() -> Option<&'static Budget> {
    let b = T.with(|t| t.current.get());
    // SAFETY: valid for the duration of the `scope` that set it, which
    // encloses every caller of this function.
    (!b.is_null()).then(|| unsafe { &*b })
}

/// The budget of the call that called the running one (a filter's script
/// above a script plugin), if any: where a result handed up goes.
pub fn caller() -> Option<&'static Budget> {
    let b = T.with(|t| t.caller.get());
    // SAFETY: as `current`: the caller's scope encloses this call.
    (!b.is_null()).then(|| unsafe { &*b })
}

/// Whether the running call's script is over its budget: what this
/// thread counted beyond the room it last read (rhai asks at every
/// operation; one comparison).
#[inline]
pub fn over() -> bool {
    T.with(|t| t.pending.get() > t.room.get())
}

/// The value that stops a call over its budget (with the message).
#[derive(Clone)]
pub struct MemoryStop(pub String);

/// The message for a script over its budget.
pub fn over_message() -> String {
    match current() {
        Some(b) => format!(
            "over the script's memory budget: it holds {} MiB of {} MiB (--script-memory)",
            b.used() >> 20,
            b.limit() >> 20
        ),
        None => "over the script's memory budget (--script-memory)".into(),
    }
}

/// Before allocating `bytes` at once: fail (ENOMEM) when that would take
/// the running call's script over its budget.
pub fn reserve(bytes: u64, what: &str) -> RResult<()> {
    match current() {
        Some(b) if b.over_by(bytes) => Err(raise_limit(
            Errno::NoMem,
            format!(
                "{what}: {bytes} more bytes would take the script over its memory budget: it holds {} MiB of {} MiB (--script-memory)",
                b.used() >> 20,
                b.limit() >> 20
            ),
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_what_a_scope_allocates_and_frees() {
        let b = Budget::new(1 << 20);
        let v = scope(&b, || vec![0u8; 100_000]);
        assert!(b.used() >= 100_000, "{}", b.used());
        assert!(!scope(&b, over));
        let big = scope(&b, || vec![1u8; 2 << 20]);
        assert!(scope(&b, over));
        assert!(scope(&b, || reserve(1, "x")).is_err());
        scope(&b, || drop(big));
        scope(&b, || drop(v));
        assert!(b.used() < 1000, "{}", b.used());
        // Outside a scope nothing is counted; a transfer moves bytes in.
        let w = vec![0u8; 1 << 20];
        assert!(b.used() < 1000);
        transfer(w.capacity(), Some(&b));
        assert!(b.used() >= 1 << 20);
        scope(&b, || drop(w));
        assert!(b.used() < 1000, "{}", b.used());
    }

    #[test]
    fn small_allocations_count_at_once_here_and_at_scope_end_elsewhere() {
        let b = Budget::new(20_000);
        let v = scope(&b, || {
            let v = vec![0u8; 10_000]; // under FLUSH: kept by this thread
            assert!(b.used() >= 10_000, "{}", b.used());
            assert!(!over());
            assert!(reserve(20_000, "x").is_err());
            let w = vec![0u8; 15_000];
            assert!(over(), "{}", b.used());
            drop(w);
            assert!(!over());
            v
        });
        let seen = std::thread::scope(|s| s.spawn(|| b.used()).join().unwrap());
        assert!(seen >= 10_000, "another thread sees {seen}");
        scope(&b, || drop(v));
        assert!(b.used() < 1000, "{}", b.used());
    }
}
