//! The stack script calls run on: a call that starts on a connection or
//! worker thread (2 MiB stacks) switches to a big stack of that thread's own
//! (reserved once per thread, pages taken only as they are touched), so
//! recursion inside rhai and in deep values (clone, drop, size checks) fits
//! under the depth limits of `state.rs`. Nested calls (a filter reaching a
//! script below it) stay on the stack they are on. Only `src/script/` uses it.

use std::any::Any;
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
        // SAFETY: our own mapping, no longer in use (the thread is ending).
        unsafe { libc::munmap(self.base, self.len) };
    }
}

struct Trampoline<'a> {
    f: &'a mut dyn FnMut(),
    panic: Option<Box<dyn Any + Send>>,
}

thread_local! {
    static STACK: RefCell<Option<BigStack>> = const { RefCell::new(None) };
    static ON_STACK: Cell<bool> = const { Cell::new(false) };
    static ENTRY: Cell<*mut Trampoline<'static>> = const { Cell::new(std::ptr::null_mut()) };
}

extern "C" fn entry() {
    let t = ENTRY.with(|e| e.get());
    // SAFETY: set by `run` just before switching here; it outlives the call.
    let t = unsafe { &mut *t };
    if let Err(p) = catch_unwind(AssertUnwindSafe(|| (t.f)())) {
        t.panic = Some(p);
    }
    // Returning resumes `uc_link`: the caller's context.
}

/// Run `f` on this thread's big script stack (directly when already on it,
/// or when the stack cannot be had).
pub fn run<R>(f: impl FnOnce() -> R) -> R {
    if ON_STACK.with(|s| s.get()) {
        return f();
    }
    let base = STACK.with(|s| {
        let mut s = s.borrow_mut();
        if s.is_none() {
            *s = BigStack::new();
        }
        s.as_ref().map(|b| (b.base, b.len))
    });
    let Some((base, len)) = base else {
        return f();
    };
    let mut f = Some(f);
    let mut out = None;
    let mut call = || out = f.take().map(|f| f());
    let mut t = Trampoline {
        f: &mut call,
        panic: None,
    };
    // SAFETY: the context runs `entry` on our own mapping, which no one
    // else uses while we are switched to it; `t` lives on this frame until
    // `swapcontext` returns, which is after `entry` has returned.
    unsafe {
        let mut back: libc::ucontext_t = std::mem::zeroed();
        let mut ctx: libc::ucontext_t = std::mem::zeroed();
        if libc::getcontext(&mut ctx) != 0 {
            drop(t);
            return f.take().map(|f| f()).expect("not yet called");
        }
        ctx.uc_stack.ss_sp = base.cast::<u8>().add(4096).cast();
        ctx.uc_stack.ss_size = len - 4096;
        ctx.uc_link = &mut back;
        libc::makecontext(&mut ctx, entry, 0);
        let tp: *mut Trampoline<'_> = &mut t;
        ENTRY.with(|e| e.set(tp.cast()));
        ON_STACK.with(|s| s.set(true));
        let rc = libc::swapcontext(&mut back, &ctx);
        ON_STACK.with(|s| s.set(false));
        ENTRY.with(|e| e.set(std::ptr::null_mut()));
        if rc != 0 {
            drop(t);
            return f.take().map(|f| f()).expect("not yet called");
        }
    }
    if let Some(p) = t.panic.take() {
        resume_unwind(p);
    }
    drop(t);
    out.expect("the script call ran")
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
