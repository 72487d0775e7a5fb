//! One span with a huge payload must not keep its memory in the thread's
//! pool of span buffers: a buffer that grew past the pool's keep limit
//! (16 KiB per part: arena, tags, logs, owned strings...) is trimmed before it is used again, whether its span
//! reached the flusher or went no further (a builder dropped before
//! `start`: the thread's spare list). Checked by the bytes live in the
//! process, counted by a global allocator, before and after.

use spanrec::{NullRecorder, OverflowPolicy, SpanLimits, Tracer};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::{Duration, Instant};

static LIVE: AtomicIsize = AtomicIsize::new(0);

struct Counting;

// SAFETY: every method forwards to `System` with the caller's arguments.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded; the caller upholds `GlobalAlloc::alloc`'s contract.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded; the caller upholds `GlobalAlloc::dealloc`'s contract.
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const HUGE: usize = SpanLimits::MAX.max_value_bytes;
/// Below what the smallest case would keep (1,024 tags: 24 KiB of `Field`s
/// or of owned-key `String`s), above the noise.
const SLACK: isize = 8 << 10;

fn flush(t: &Tracer) {
    t.flush(Instant::now() + Duration::from_secs(30)).unwrap();
}

/// Spans that take a buffer (a copied string), enough to cycle every
/// buffer of the thread's pool through the flusher and back.
fn ordinary(t: &Tracer) {
    let text = String::from("ordinary");
    for _ in 0..3 {
        for _ in 0..64 {
            let mut s = t.start_span("ordinary");
            s.set_tag("text", text.as_str());
            s.log("event", [("text", text.as_str())]);
            s.finish();
        }
        flush(t);
    }
}

fn live() -> isize {
    LIVE.load(Ordering::Relaxed)
}

#[test]
fn a_huge_span_leaves_no_huge_buffer_in_the_pool() {
    let t = Tracer::builder()
        .recorder(NullRecorder::new())
        .overflow(OverflowPolicy::Block {
            timeout: Duration::from_secs(30),
        })
        .limits(SpanLimits::MAX)
        .build()
        .unwrap();
    let huge = "x".repeat(HUGE);
    // Warm: the pool, the rings, the flusher's batch.
    for _ in 0..3 {
        ordinary(&t);
    }
    let before = live();

    type Case = fn(&Tracer, &str);
    let cases: [(&str, Case); 5] = [
        ("a copied huge value, finished", |t, huge| {
            let mut s = t.start_span("huge");
            s.set_tag("huge", huge);
            s.finish();
        }),
        ("an owned huge value, finished", |t, huge| {
            let mut s = t.start_span("huge");
            s.set_tag("huge", huge.to_owned());
            s.finish();
        }),
        ("many tags, finished", |t, _| {
            let mut s = t.start_span("many");
            for i in 0..1_024u64 {
                s.set_tag(format!("k{i}"), i);
            }
            s.finish();
        }),
        ("many logs, finished", |t, _| {
            let mut s = t.start_span("many");
            for i in 0..1_024u64 {
                s.log("i", [("i", i)]);
            }
            s.finish();
        }),
        ("a copied huge value, builder dropped", |t, huge| {
            drop(t.span("huge").with_tag("huge", huge));
        }),
    ];
    for (name, case) in cases {
        case(&t, &huge);
        flush(&t);
        // Spans that reuse the buffer and never reach the flusher either:
        // only the owner's thread can trim it for them.
        let text = String::from("dropped");
        for _ in 0..64 {
            drop(t.span("dropped").with_tag("text", text.as_str()));
        }
        let kept = live() - before;
        assert!(
            kept < SLACK,
            "{name}: {kept} bytes more live than before (the buffer kept what it grew)"
        );
        ordinary(&t);
    }
    let s = t.stats();
    assert_eq!(s.recorded + s.dropped.total(), s.finished);
}
