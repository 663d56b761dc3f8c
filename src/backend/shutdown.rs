//! Process shutdown as layers that wait see it: the server calls
//! [`begin`] on SIGINT/SIGTERM, and a layer that sleeps or waits
//! (the delay filter) wakes at once and fails its request with ESHUTDOWN,
//! so the process exits without waiting out the delay.

use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

static STATE: Mutex<bool> = Mutex::new(false);
static WAKE: Condvar = Condvar::new();

/// Shutdown has begun: wake every [`sleep`].
pub fn begin() {
    *STATE.lock().unwrap_or_else(|e| e.into_inner()) = true;
    WAKE.notify_all();
}

/// Shutdown has begun.
pub fn begun() -> bool {
    *STATE.lock().unwrap_or_else(|e| e.into_inner())
}

type Hook = Box<dyn Fn() + Send + Sync>;
static REQUESTED: Mutex<bool> = Mutex::new(false);
static HOOKS: Mutex<Vec<Hook>> = Mutex::new(Vec::new());

/// A layer asks the server to shut down gracefully (nbdkit's
/// `nbdkit_shutdown`): stop accepting, let connections end, exit 0.
/// Every server of the process registered with [`on_request`] hears
/// it, including ones registered later.
pub fn request() {
    *REQUESTED.lock().unwrap_or_else(|e| e.into_inner()) = true;
    for h in HOOKS.lock().unwrap_or_else(|e| e.into_inner()).iter() {
        h();
    }
}

/// The server's side of [`request`]: `hook` runs on the requesting
/// thread (at once if a request came before).
pub fn on_request(hook: impl Fn() + Send + Sync + 'static) {
    if *REQUESTED.lock().unwrap_or_else(|e| e.into_inner()) {
        hook();
    }
    HOOKS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(Box::new(hook));
}

/// How to tell that this thread's client has hung up.
pub type ClientProbe = std::sync::Arc<dyn Fn() -> bool + Send + Sync>;

thread_local! {
    static CLIENT: std::cell::RefCell<Option<ClientProbe>> =
        const { std::cell::RefCell::new(None) };
}

/// The server tells the layers, on a thread that runs a connection's
/// requests, how to check that its client is still there (None when
/// the thread stops serving it), so that a [`sleep`] ends when the
/// client hangs up, as nbdkit's `nbdkit_nanosleep`.
pub fn set_client_probe(p: Option<ClientProbe>) {
    CLIENT.with(|c| *c.borrow_mut() = p);
}

thread_local! {
    static SERVER_CALL: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Run `f` as a call the server makes on its own, not a client's
/// request (the flush of a connection's data at shutdown): a layer
/// that reports requests (the log filter) passes it on unreported, as
/// nbdkit's log filter shows only what the client sent.
pub fn server_call<T>(f: impl FnOnce() -> T) -> T {
    SERVER_CALL.with(|c| c.set(true));
    let r = f();
    SERVER_CALL.with(|c| c.set(false));
    r
}

/// This thread is inside [`server_call`].
pub fn in_server_call() -> bool {
    SERVER_CALL.with(|c| c.get())
}

/// How often a [`sleep`] checks whether its client hung up.
const PROBE_EVERY: Duration = Duration::from_millis(100);

/// Sleep for `d`, or until shutdown begins or this thread's client
/// hangs up: false when interrupted.
pub fn sleep(d: Duration) -> bool {
    let end = Instant::now() + d;
    let probe = CLIENT.with(|c| c.borrow().clone());
    let mut down = STATE.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        if *down {
            return false;
        }
        let now = Instant::now();
        if now >= end {
            return true;
        }
        let mut wait = end - now;
        if let Some(p) = &probe {
            if p() {
                return false;
            }
            wait = wait.min(PROBE_EVERY);
        }
        down = WAKE
            .wait_timeout(down, wait)
            .unwrap_or_else(|e| e.into_inner())
            .0;
    }
}
