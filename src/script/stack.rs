//! The stack script calls run on: a call that starts on a connection or
//! worker thread (2 MiB stacks) switches to a big stack of that thread's own
//! (reserved once per thread, pages taken only as they are touched), so
//! recursion inside rhai and in deep values (clone, drop, size checks) fits
//! under the depth limits of `state.rs`. Nested calls (a filter reaching a
//! script below it) stay on the stack they are on. Only `src/script/` uses it.

use std::cell::{Cell, RefCell};
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};

/// Bytes reserved for the script stack of each thread that runs scripts.
pub const STACK_SIZE: usize = 256 << 20;

/// Bytes kept resident after a call that went deep (the rest is given back).
const KEEP: usize = 1 << 20;

/// One mapping: a guard page at the bottom, then the stack.
struct BigStack {
    base: *mut libc::c_void,
    len: usize,
}

impl BigStack {
    fn new() -> Option<BigStack> {
        let page = 4096;
        let len = STACK_SIZE + page;
        // SAFETY: a fresh anonymous private mapping; checked below.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE | libc::MAP_STACK,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return None;
        }
        // SAFETY: the first page of our own mapping becomes the guard.
        unsafe { libc::mprotect(base, page, libc::PROT_NONE) };
        Some(BigStack { base, len })
    }

    /// Give back the pages below the top `KEEP` bytes.
    fn release(&self) {
        let page = 4096;
        // SAFETY: inside our own mapping, and not in use (called between calls).
        unsafe {
            libc::madvise(
                self.base.cast::<u8>().add(page).cast(),
                self.len - page - KEEP,
                libc::MADV_DONTNEED,
            )
        };
    }
}

impl Drop for BigStack {
    fn drop(&mut self) {
        let _ = BASE.try_with(|b| b.set((std::ptr::null_mut(), 0)));
        // SAFETY: our own mapping, no longer in use (the thread is ending).
        unsafe { libc::munmap(self.base, self.len) };
    }
}

thread_local! {
    static STACK: RefCell<Option<BigStack>> = const { RefCell::new(None) };
    static ON_STACK: Cell<bool> = const { Cell::new(false) };
    /// `STACK`'s base and length once mapped (null before): read on every
    /// call without borrowing the `RefCell`.
    static BASE: Cell<(*mut libc::c_void, usize)> = const { Cell::new((std::ptr::null_mut(), 0)) };
}

/// Run `f` on this thread's big script stack (directly when already on it,
/// or when the stack cannot be had). The switch is a few instructions
/// (`psm`): no system call, where `swapcontext` made three
/// (`rt_sigprocmask` in getcontext, swapcontext and the return through
/// `uc_link`) on every script call: ramdisk.rhai 4k randread QD16 x1 spent
/// about 1 µs more CPU per request than before the big stack.
pub fn run<R>(f: impl FnOnce() -> R) -> R {
    if ON_STACK.with(|s| s.get()) {
        return f();
    }
    let (mut base, mut len) = BASE.with(|b| b.get());
    if base.is_null() {
        let Some((b, l)) = STACK.with(|s| {
            let mut s = s.borrow_mut();
            if s.is_none() {
                *s = BigStack::new();
            }
            s.as_ref().map(|b| (b.base, b.len))
        }) else {
            return f();
        };
        BASE.with(|c| c.set((b, l)));
        (base, len) = (b, l);
    }
    let page = 4096;
    ON_STACK.with(|s| s.set(true));
    // SAFETY: the stack is our own page-aligned mapping above its guard
    // page, used by no one else while we are on it (ON_STACK keeps nested
    // calls from switching again); a panic is caught on it and resumed
    // here, so no unwinding crosses the switch.
    let r = unsafe {
        psm::on_stack(base.cast::<u8>().add(page), len - page, || {
            catch_unwind(AssertUnwindSafe(f))
        })
    };
    ON_STACK.with(|s| s.set(false));
    match r {
        Ok(v) => v,
        Err(p) => resume_unwind(p),
    }
}

/// Give back the stack pages a deep call touched (after a failed or long
/// call; a no-op on a thread without a script stack or while on it).
pub fn release() {
    if ON_STACK.with(|s| s.get()) {
        return;
    }
    STACK.with(|s| {
        if let Some(b) = s.borrow().as_ref() {
            b.release();
        }
    });
}

#[cfg(test)]
mod tests {
    #[test]
    fn runs_deep_recursion_and_returns() {
        fn depth(n: u64) -> u64 {
            let pad = std::hint::black_box([0u8; 256]);
            if n == 0 {
                pad[0] as u64
            } else {
                depth(n - 1) + 1 + pad[1] as u64
            }
        }
        // ~100k frames of 300+ bytes: far more than a 2 MiB thread stack.
        let r = std::thread::Builder::new()
            .stack_size(1 << 20)
            .spawn(|| super::run(|| super::run(|| depth(100_000))))
            .unwrap()
            .join()
            .unwrap();
        assert_eq!(r, 100_000);
        super::release();
    }

    #[test]
    fn panics_come_back_to_the_caller() {
        let r = std::panic::catch_unwind(|| super::run(|| panic!("inside")));
        assert!(r.is_err());
        assert_eq!(super::run(|| 7), 7);
    }
}
