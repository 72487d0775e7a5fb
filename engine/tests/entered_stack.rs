//! The thread's stack of entered spans against a model written from the
//! documentation of `Span::enter` and `Tracer::active_context`: while a
//! guard lives its span is entered; the innermost entered span of a tracer
//! is what `active_context` returns and what a new span without a
//! reference is a child of (ids, sampling, baggage, `tracestate`); a guard
//! dropped out of order leaves only its own entry; a leaked guard leaves
//! its span entered for good.
//!
//! Random sequences of enters, out-of-order drops and leaks, two tracers
//! interleaved, nesting 40 deep (past the entries kept without a
//! `RefCell`), spans with and without baggage and a shared remote context.

use spanrec::{Format, InMemoryRecorder, Span, SpanContext, Tracer};
use std::collections::HashMap;

fn tracer(name: &'static str) -> Tracer {
    Tracer::builder()
        .service_name(name)
        .recorder(InMemoryRecorder::new())
        .build()
        .unwrap()
}

/// A deterministic stream of choices (an LCG; the seed names a case).
struct Choices(u64);

impl Choices {
    fn below(&mut self, n: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 33) % n as u64) as usize
    }
}

/// Spans of both tracers: ids only, own baggage, a remote context with
/// baggage and `tracestate` (shared, not copied), and both.
fn spans(tracers: &[Tracer; 2]) -> Vec<(usize, Span)> {
    let mut out = Vec::new();
    for i in 0..24 {
        let which = i % 2;
        let t = &tracers[which];
        let mut span = match i % 4 {
            0 | 1 => t.span(format!("plain-{i}")).root().start(),
            _ => {
                let mut headers = HashMap::new();
                headers.insert(
                    "traceparent".to_string(),
                    format!("00-{:032x}-{:016x}-01", 0xabc0 + i, 0x77 + i),
                );
                headers.insert("tracestate".to_string(), format!("k{i}=v{i}"));
                headers.insert("baggage".to_string(), format!("remote={i}"));
                if i % 8 == 2 {
                    // Joined from the headers: the span shares the remote
                    // context's block.
                    t.join_or_start(format!("joined-{i}"), &headers)
                } else {
                    let parent = t.extract(Format::W3c, &headers).unwrap().unwrap();
                    t.span(format!("child-{i}")).child_of(&parent).start()
                }
            }
        };
        if i % 3 == 0 {
            span.set_baggage_item("own", &format!("item-{i}"));
        }
        out.push((which, span));
    }
    out
}

fn sorted(mut ctx: SpanContext) -> SpanContext {
    ctx.baggage.sort();
    ctx
}

/// What the model says against what the stack says, for both tracers.
fn check(tracers: &[Tracer; 2], model: &[(usize, SpanContext)], step: usize) {
    for (which, t) in tracers.iter().enumerate() {
        let expected = model
            .iter()
            .rev()
            .find(|(w, _)| *w == which)
            .map(|(_, c)| sorted(c.clone()));
        assert_eq!(
            t.active_context().map(sorted),
            expected,
            "tracer {which} at step {step}"
        );
        // A span started now is a child of that entry.
        let child = t.start_span("probe");
        match &expected {
            Some(parent) => {
                let ctx = sorted(child.context());
                assert_eq!(ctx.trace_id, parent.trace_id, "step {step}");
                assert_eq!(ctx.baggage, parent.baggage, "step {step}");
                assert_eq!(ctx.trace_state, parent.trace_state, "step {step}");
                assert_ne!(ctx.span_id, parent.span_id, "step {step}");
            }
            None => assert!(child.context().baggage.is_empty(), "step {step}"),
        }
        drop(child);
    }
}

fn run(seed: u64, steps: usize) {
    let tracers = [tracer("stack-a"), tracer("stack-b")];
    let spans = spans(&tracers);
    let mut choices = Choices(seed);
    // Live guards and the model: entries in order, each with its guard's
    // index in `guards` (`None` once leaked: it stays entered).
    let mut guards = Vec::new();
    let mut model: Vec<(usize, SpanContext, Option<usize>)> = Vec::new();
    let mut next_guard = 0;
    for step in 0..steps {
        let live = guards.len();
        let op = choices.below(10);
        if live == 0 || (op < 5 && model.len() < 40) {
            let (which, span) = &spans[choices.below(spans.len())];
            guards.push((next_guard, span.enter()));
            model.push((*which, span.context(), Some(next_guard)));
            next_guard += 1;
        } else {
            let (id, guard) = guards.remove(choices.below(live));
            let at = model
                .iter()
                .position(|(_, _, g)| *g == Some(id))
                .expect("a live guard is in the model");
            if op == 9 {
                std::mem::forget(guard);
                model[at].2 = None;
            } else {
                drop(guard);
                model.remove(at);
            }
        }
        let view: Vec<(usize, SpanContext)> =
            model.iter().map(|(w, c, _)| (*w, c.clone())).collect();
        check(&tracers, &view, step);
    }
    drop(guards);
}

#[test]
fn entered_stack_matches_the_model() {
    for seed in 1..=40 {
        run(seed, 300);
    }
}

/// Deep nesting left innermost first, then the same out of order, on a
/// fresh thread each (the stack is per thread).
#[test]
fn deep_nesting_enters_and_leaves() {
    for reverse in [false, true] {
        std::thread::spawn(move || {
            let tracers = [tracer("deep-a"), tracer("deep-b")];
            let spans = spans(&tracers);
            let mut guards: Vec<_> = spans.iter().map(|(_, s)| s.enter()).collect();
            let mut model: Vec<(usize, SpanContext)> =
                spans.iter().map(|(w, s)| (*w, s.context())).collect();
            check(&tracers, &model, 0);
            while !guards.is_empty() {
                let i = if reverse { 0 } else { guards.len() - 1 };
                drop(guards.remove(i));
                model.remove(i);
                check(&tracers, &model, model.len());
            }
            assert!(tracers[0].active_context().is_none());
        })
        .join()
        .unwrap();
    }
}
