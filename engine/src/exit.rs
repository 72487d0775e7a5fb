//! Delivery at process exit.
//!
//! A tracer shuts down when its last handle drops. A process can end
//! without that drop: `std::process::exit`, or a tracer kept in a `static`
//! (as a process-wide tracer is), whose destructor never runs. Its spans
//! would then die in the rings, uncounted. So the first tracer built
//! installs an `atexit` handler: at exit (returning from `main` or
//! `std::process::exit`) every tracer still alive in the process is shut
//! down as its last drop would do it, waiting at most
//! [`DROP_SHUTDOWN_TIMEOUT`] in all.
//!
//! The C library runs the exiting thread's thread-local destructors before
//! `atexit` handlers, so that thread's slot is already marked exited and
//! its spans are drained too. Spans other threads finish after the
//! handler ran are counted under `DropReason::Shutdown`. Not covered: a
//! process killed by a signal, `abort`, or `_exit`.
//!
//! [`DROP_SHUTDOWN_TIMEOUT`]: crate::DROP_SHUTDOWN_TIMEOUT

/// Shuts down every live tracer; the `atexit` handler.
#[cfg(all(unix, not(spanrec_loom)))]
extern "C" fn at_exit() {
    // A panic must not unwind into C.
    let _ = std::panic::catch_unwind(|| {
        let deadline = std::time::Instant::now() + crate::shared::DROP_SHUTDOWN_TIMEOUT;
        for shared in crate::sync::directory::all::<crate::shared::Shared>() {
            // Errors are the same as a drop's: a timeout (counted as in
            // flight), or a forked child or the flusher thread itself
            // calling `exit` (nothing to wait for).
            let _ = shared.shutdown(deadline);
        }
    });
}

/// Installs the `atexit` handler, once per process.
pub(crate) fn install_hook() {
    #[cfg(all(unix, not(spanrec_loom)))]
    {
        static ONCE: std::sync::Once = std::sync::Once::new();
        extern "C" {
            // C89; in the C library std already links.
            fn atexit(f: extern "C" fn()) -> std::ffi::c_int;
        }
        ONCE.call_once(|| {
            // SAFETY: `atexit` takes any function pointer that stays valid
            // until exit; `at_exit` is a plain `extern "C" fn` of this
            // program that does not unwind. Its result (only ENOMEM) is
            // ignored: delivery at exit then needs an explicit `shutdown`.
            let _ = unsafe { atexit(at_exit) };
        });
    }
}
