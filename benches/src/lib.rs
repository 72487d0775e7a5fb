//! Shared helpers for spanrec's criterion benches (see `benches/`).

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
