//! A span's extension buffer is pooled and recycled forever, and recycling
//! resets only what a span used (the cold part of the buffer only when a
//! span wrote to it). Whatever one span put in a buffer must not show in
//! the next span that takes it: random mixes of spans on one thread, some
//! with extra tags, copied and owned strings, logs, baggage, an extra
//! reference, a remote parent with baggage and a `tracestate`, others with
//! nothing but tags, each checked against exactly what it was given (the
//! documented meaning of each call), live and as recorded.

use spanrec::{InMemoryRecorder, OverflowPolicy, OwnedValue, SpanContext, Tracer};
use std::time::{Duration, Instant};

/// A small deterministic generator (xorshift64*), so a failure repeats.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }
}

const KEYS: [&str; 5] = ["k0", "k1", "k2", "k3", "k4"];

#[derive(Default)]
struct Expected {
    tags: Vec<(String, OwnedValue)>,
    logs: usize,
    baggage: Vec<(String, String)>,
    references: usize,
}

#[test]
fn a_recycled_buffer_carries_nothing_from_one_span_to_the_next() {
    for seed in [1u64, 7, 0x5eed, 0xdead_beef] {
        let rec = InMemoryRecorder::new();
        let t = Tracer::builder()
            .recorder(rec.clone())
            .overflow(OverflowPolicy::Block {
                timeout: Duration::from_secs(30),
            })
            .build()
            .unwrap();
        let mut remote = SpanContext::new(0xabc, 0xdef, true).with_baggage_item("tenant", "acme");
        remote.trace_state = "rojo=1".into();
        let path = String::from("/machines/0");
        let mut rng = Rng(seed);
        let mut expected = Vec::new();
        for i in 0..4_000u64 {
            let mut want = Expected::default();
            let from_remote = rng.below(4) == 0;
            let mut span = if from_remote {
                want.references = 1;
                want.baggage.push(("tenant".into(), "acme".into()));
                t.span("s").child_of(&remote).start()
            } else {
                t.start_span("s")
            };
            span.set_tag("i", i);
            want.tags.push(("i".into(), OwnedValue::U64(i)));
            for (j, key) in KEYS.iter().enumerate().take(rng.below(6) as usize) {
                span.set_tag(*key, j as i64);
                want.tags.push((key.to_string(), OwnedValue::I64(j as i64)));
            }
            if rng.below(3) == 0 {
                span.set_tag("path", path.as_str());
                want.tags
                    .push(("path".into(), OwnedValue::Str(path.clone())));
            }
            if rng.below(5) == 0 {
                span.set_tag("owned", format!("o{i}"));
                want.tags
                    .push(("owned".into(), OwnedValue::Str(format!("o{i}"))));
            }
            for j in 0..rng.below(4) {
                span.log("event", [("j", j)]);
                want.logs += 1;
            }
            for j in 0..rng.below(3) {
                let key = format!("b{j}");
                span.set_baggage_item(&key, "v");
                want.baggage.push((key, "v".into()));
            }
            if rng.below(5) == 0 {
                span.add_follows_from(&SpanContext::new(5, 6, true));
                want.references += 1;
            }
            // Live: the span's own context shows only what it was given.
            let live = span.context();
            let want_state = if from_remote { "rojo=1" } else { "" };
            assert_eq!(live.trace_state, want_state, "seed {seed} span {i}");
            let mut live_baggage = live.baggage.clone();
            live_baggage.sort();
            want.baggage.sort();
            assert_eq!(
                live_baggage, want.baggage,
                "seed {seed} span {i}: live baggage"
            );
            span.finish();
            expected.push(want);
            if i % 500 == 499 {
                t.flush(Instant::now() + Duration::from_secs(30)).unwrap();
            }
        }
        t.flush(Instant::now() + Duration::from_secs(30)).unwrap();
        let mut spans = rec.spans();
        assert_eq!(spans.len(), expected.len(), "seed {seed}");
        spans.sort_by_key(|s| match s.tag("i") {
            Some(OwnedValue::U64(i)) => *i,
            other => panic!("seed {seed}: span without its index: {other:?}"),
        });
        for (i, (got, mut want)) in spans.into_iter().zip(expected).enumerate() {
            let mut tags = got.tags.clone();
            tags.sort_by(|a, b| a.0.cmp(&b.0));
            want.tags.sort_by(|a, b| a.0.cmp(&b.0));
            assert_eq!(tags, want.tags, "seed {seed} span {i}: tags");
            assert_eq!(got.logs.len(), want.logs, "seed {seed} span {i}: logs");
            let mut baggage = got.baggage.clone();
            baggage.sort();
            assert_eq!(baggage, want.baggage, "seed {seed} span {i}: baggage");
            assert_eq!(
                got.references.len(),
                want.references,
                "seed {seed} span {i}: references"
            );
            assert_eq!(got.truncations, Default::default(), "seed {seed} span {i}");
        }
    }
}
