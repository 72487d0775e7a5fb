//! Flush tickets: how [`Tracer::flush`](crate::Tracer::flush) knows that the
//! flusher has handed over every span finished before the call, and how
//! `shutdown` waits for the flusher to exit.
//!
//! A caller takes a ticket (`requested + 1`) under the lock and waits until
//! `done` reaches it. The flusher, each pass, reads the highest ticket
//! requested (`requests`), *then* drains every ring and delivers, *then*
//! completes exactly the ticket it read (`complete`). A span finished
//! before `flush` was called was pushed (ring `Release`) before the caller
//! took the lock; the flusher's read of the ticket takes the same lock
//! afterwards, so its drain sees the push. Completing a ticket the pass did
//! not read would let a caller return before its spans were drained — the
//! `flush_completes_unread_tickets` mutant does exactly that, and the loom
//! model `flush_requests::spans_finished_before_flush_are_delivered_first` catches
//! it.
//!
//! Not hidden: this module is `pub` only so that `loom-tests` can drive it.

use crate::sync::{Condvar, Mutex};
use std::time::Instant;

/// The flush and shutdown requests between callers and the flusher.
#[derive(Debug, Default)]
pub struct FlushControl {
    state: Mutex<State>,
    changed: Condvar,
}

#[derive(Debug, Default)]
struct State {
    /// The last ticket handed out. Invariant: `done <= requested`.
    requested: u64,
    /// Every ticket up to this one is complete.
    done: u64,
    shutdown: bool,
    /// The flusher has exited (its final drain done); no ticket will be
    /// served any more. Invariant: once set, `done == requested`.
    exited: bool,
}

/// Why a wait ended without success.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitError {
    /// The deadline passed first.
    Timeout,
    /// The flusher exited (before the ticket was taken).
    Closed,
}

impl FlushControl {
    /// No requests yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Holds the lock across a `fork()` (see `fork.rs`): the child then
    /// finds it consistent and unlocked.
    #[cfg(all(unix, not(spanrec_loom)))]
    pub(crate) fn lock_for_fork(&self) -> impl Sized + '_ {
        self.state.lock()
    }

    /// Takes a flush ticket (caller side).
    pub fn request_flush(&self) -> Result<u64, WaitError> {
        let mut s = self.state.lock();
        if s.exited {
            return Err(WaitError::Closed);
        }
        s.requested += 1;
        Ok(s.requested)
    }

    /// Waits until `ticket` is complete, or `deadline` (`None`: forever).
    pub fn wait(&self, ticket: u64, deadline: Option<Instant>) -> Result<(), WaitError> {
        let mut s = self.state.lock();
        while s.done < ticket {
            if s.exited {
                return Err(WaitError::Closed);
            }
            let timed_out = match deadline {
                Some(d) => self.changed.wait_until(&mut s, d).timed_out(),
                None => {
                    self.changed.wait(&mut s);
                    false
                }
            };
            if timed_out && s.done < ticket {
                return Err(WaitError::Timeout);
            }
        }
        Ok(())
    }

    /// Asks the flusher to drain and exit (caller side).
    pub fn request_shutdown(&self) {
        self.state.lock().shutdown = true;
    }

    /// Waits until the flusher has exited, or `deadline`.
    pub fn wait_exited(&self, deadline: Option<Instant>) -> Result<(), WaitError> {
        let mut s = self.state.lock();
        while !s.exited {
            let timed_out = match deadline {
                Some(d) => self.changed.wait_until(&mut s, d).timed_out(),
                None => {
                    self.changed.wait(&mut s);
                    false
                }
            };
            if timed_out && !s.exited {
                return Err(WaitError::Timeout);
            }
        }
        Ok(())
    }

    /// Whether the flusher has exited.
    pub fn has_exited(&self) -> bool {
        self.state.lock().exited
    }

    /// Flusher side, at the start of a pass: (the highest ticket requested,
    /// whether shutdown was requested). The pass must drain after this.
    pub fn requests(&self) -> (u64, bool) {
        let s = self.state.lock();
        (s.requested, s.shutdown)
    }

    /// Flusher side, after a pass that began with `requests() == (ticket,
    /// _)` has drained and delivered: tickets up to `ticket` are complete.
    pub fn complete(&self, ticket: u64) {
        let mut s = self.state.lock();
        #[cfg(not(spanrec_loom_mutant = "flush_completes_unread_tickets"))]
        let served = ticket;
        // Mutant: also completes tickets taken after this pass began.
        #[cfg(spanrec_loom_mutant = "flush_completes_unread_tickets")]
        let served = {
            let _ = ticket;
            s.requested
        };
        s.done = s.done.max(served);
        self.changed.notify_all();
    }

    /// Flusher side, after its final drain: every ticket is complete and
    /// no more will be served.
    pub fn exited(&self) {
        let mut s = self.state.lock();
        s.exited = true;
        s.done = s.requested;
        self.changed.notify_all();
    }
}
