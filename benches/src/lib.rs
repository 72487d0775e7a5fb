//! Shared helpers for spanrec's criterion benches (see `benches/`).

pub mod cpu;

use cpu::{BackgroundMeter, CpuReport};
use spanrec::{NullRecorder, Tracer};
use std::time::{Duration, Instant};

/// A tracer with the default configuration and a counting [`NullRecorder`].
pub fn null_tracer() -> (Tracer, NullRecorder) {
    let recorder = NullRecorder::new();
    let tracer = Tracer::builder()
        .service_name("bench")
        .recorder(recorder.clone())
        .build()
        .expect("default configuration is valid");
    (tracer, recorder)
}

/// Flushes `tracer` and prints how many spans were created, received by the
/// recorder and dropped, so a reader can see that nothing was lost (or how
/// much was, which would make the time per span look better than it is).
pub fn report(id: &str, tracer: &Tracer, recorder: &NullRecorder) {
    let _ = tracer.flush(Instant::now() + Duration::from_secs(30));
    let s = tracer.stats();
    println!(
        "{id}: spans finished {} received {} dropped {} (ring_full {}) buffers allocated {}",
        s.finished,
        recorder.received(),
        s.dropped.total(),
        s.dropped.ring_full,
        s.buffers_allocated
    );
}

/// Runs `run` (a bench of spanrec spans on `tracer`), then [`report`]s and
/// saves the whole-process CPU report of the window as `group/id`: spans
/// finished and received in it, and the flusher's CPU. `request_ns`, if
/// given, measures the request threads' CPU over the window (else the
/// table takes criterion's median per span).
pub fn measure_spanrec(
    group: &str,
    id: &str,
    tracer: &Tracer,
    recorder: &NullRecorder,
    run: impl FnOnce(),
) {
    let meter = BackgroundMeter::start(cpu::threads::SPANREC);
    let finished = tracer.stats().finished;
    let received = recorder.received();
    run();
    report(&format!("{group}/{id}"), tracer, recorder);
    CpuReport {
        created: tracer.stats().finished - finished,
        delivered: recorder.received() - received,
        background_ns: meter.stop(),
        request_ns: None,
    }
    .save(group, id);
}

/// [`measure_spanrec`] for a peer whose background threads are named with
/// one of `threads`: `run` benches it, flushes it and returns the spans
/// created and received in the window.
pub fn measure_peer(
    group: &str,
    id: &str,
    threads: &'static [&'static str],
    run: impl FnOnce() -> (u64, u64),
) {
    let meter = BackgroundMeter::start(threads);
    let (created, delivered) = run();
    println!(
        "{group}/{id}: spans created {created} received {delivered} lost {}",
        created.saturating_sub(delivered)
    );
    CpuReport {
        created,
        delivered,
        background_ns: meter.stop(),
        request_ns: None,
    }
    .save(group, id);
}
