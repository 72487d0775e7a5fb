//! A global allocator that itself records spans (issue 13): every free made
//! while the test has switched it on starts and finishes a span. The span
//! path frees memory only outside its `&mut` to the thread's slot (the
//! `LAST` invariant in `engine/src/thread_slots.rs`), so the hook's spans re-enter
//! safely; this file drives the paths that free (ring full with a full
//! spare list, unsampled spans, builders dropped) and checks that the
//! ledger stays exact and nothing crashes. Runs under memcheck in CI with
//! the misuse tests' binary's settings (`ci/memcheck.sh`).

use spanrec::{InMemoryRecorder, OverflowPolicy, Sampler, Tracer};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

static TRACER: OnceLock<Tracer> = OnceLock::new();

thread_local! {
    static HOOK_ON: Cell<bool> = const { Cell::new(false) };
    static IN_HOOK: Cell<bool> = const { Cell::new(false) };
}

struct Recording;

// SAFETY: every method forwards to `System` with the caller's arguments.
unsafe impl GlobalAlloc for Recording {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded; the caller upholds `GlobalAlloc::alloc`'s contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded; the caller upholds `GlobalAlloc::dealloc`'s contract.
        unsafe { System.dealloc(ptr, layout) };
        let on = HOOK_ON.try_with(Cell::get).unwrap_or(false);
        if on && !IN_HOOK.try_with(Cell::get).unwrap_or(true) {
            IN_HOOK.with(|h| h.set(true));
            if let Some(t) = TRACER.get() {
                let mut s = t.start_span("allocator.free");
                s.set_tag("bytes", layout.size() as u64);
                s.finish();
            }
            IN_HOOK.with(|h| h.set(false));
        }
    }
}

#[global_allocator]
static GLOBAL: Recording = Recording;

#[test]
fn an_allocator_that_records_spans_reenters_the_span_path_safely() {
    // A slow recorder: the rings overflow whatever the scheduling.
    let recorder = InMemoryRecorder::new();
    recorder.set_delay(Duration::from_millis(20));
    let t = TRACER.get_or_init(|| {
        Tracer::builder()
            .service_name("alloc")
            .recorder(recorder.clone())
            .ring_capacity(64)
            .max_batch_size(64)
            .flush_interval(Duration::from_secs(60))
            .overflow(OverflowPolicy::DropNewest)
            .sampler(Sampler::Ratio(0.5))
            .build()
            .unwrap()
    });
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                HOOK_ON.with(|h| h.set(true));
                for i in 0..20_000u64 {
                    // Many tags: an extension, freed when the ring refuses
                    // the span and the spare list is full.
                    let mut span = t.start_span("work");
                    for k in 0..12 {
                        span.set_tag(
                            ["a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k", "l"][k],
                            i,
                        );
                    }
                    span.log("event", [("owned", String::from("freed on the flusher"))]);
                    if i % 7 == 0 {
                        drop(t.span("never started"));
                    }
                    span.finish();
                }
                HOOK_ON.with(|h| h.set(false));
            });
        }
    });
    t.flush(Instant::now() + Duration::from_secs(30)).unwrap();
    let s = t.stats();
    assert!(s.finished >= 40_000, "{s:?}");
    assert!(
        s.dropped.ring_full > 0,
        "the test must overflow the ring: {s:?}"
    );
    assert_eq!(s.recorded + s.dropped.total(), s.finished, "{s:?}");
}
