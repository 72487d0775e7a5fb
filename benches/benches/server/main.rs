//! `server/*`: what a tracer costs a real server on a machine with no spare
//! core. A hyper HTTP/1.1 server on a current-thread tokio runtime (its own
//! process, this binary re-executed) answers `GET /machines`: it joins the
//! caller's `traceparent`, does ~7 µs of work, and records a server span
//! and two child spans with two tags each — untraced, with spanrec (the
//! `TraceLayer` and the plain API), the OpenTelemetry SDK
//! (`BatchSpanProcessor`) and fastrace, every backend counting what it
//! receives. The load comes from one busy-polling thread of this process
//! (`load.rs`, as wrk/wrk2): 8 connections in a closed loop for capacity,
//! then an open loop at 50 % and 90 % of the untraced capacity for
//! latency, measured from each request's due time (no coordinated
//! omission). The generator is pinned to one core and the server process,
//! every thread of it, to the other (`taskset`): the tracer's background
//! threads take their CPU from the server, as on a machine with no spare
//! core, and the scheduler cannot move the two onto one core mid-run.
//!
//! Printed per tracer, and saved for `ci/bench-table.py` under
//! `target/spanrec-cpu/server/`: requests/s at saturation (30 interleaved
//! rounds of 0.5 s, a fresh process per variant and round; the capacity
//! change is the interquartile mean of each round's ratio to untraced),
//! p50/p99/p99.9 at each fixed rate (9 interleaved rounds of 1 s, again a
//! fresh process per variant and round, warmed at the rate; the p99 change
//! is the median p99 of 100 ms windows over untraced's, ± its bootstrap
//! standard error: this VM's millisecond stalls decide a whole run's p99),
//! the CPU of every server thread, spans created vs received.
//! `untraced_again` is a second untraced server measured like the others:
//! its "loss" is the noise floor of the run (an A/A comparison).
//! `untraced_tower` is the untraced handler served through the tower
//! adapter `spanrec_layer` needs (`TowerToHyperService`): what tower
//! itself costs, so `TraceLayer`'s own share is its loss against it.
//!
//! `cargo bench -p spanrec-benches --bench server`. Targets (issue 12):
//! spanrec loses ≤ 5 % capacity against untraced and adds ≤ 5 % to p99 at
//! 90 % load, with 0 spans lost; its capacity loss ≤ 0.3× OpenTelemetry's.

mod load;
mod serve;

use hdrhistogram::Histogram;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The tracers compared, in the order they run.
const VARIANTS: [&str; 7] = [
    "untraced",
    "untraced_again",
    "untraced_tower",
    "spanrec_layer",
    "spanrec_api",
    "otel",
    "fastrace",
];
/// Capacity rounds (latency rounds: `LATENCY_ROUNDS`).
const ROUNDS: usize = 30;
const LATENCY_ROUNDS: usize = 9;
/// The core every thread of the server process runs on (its request
/// thread and its tracer's background threads share it: no spare core).
const SERVER_CPU: &str = "0";
/// The core of the load generator.
const LOAD_CPU: &str = "1";
/// Closed-loop load before each measurement (a fresh process warms its
/// connections, buffers and pools).
const WARM_UP: Duration = Duration::from_millis(250);
const SATURATION: Duration = Duration::from_millis(500);
const FIXED_RATE: Duration = Duration::from_secs(1);
/// The latency windows of a fixed-rate run (see `main`'s latency part).
const WINDOW: Duration = Duration::from_millis(100);

/// One server process.
struct Server {
    variant: &'static str,
    child: Child,
    port: u16,
}

impl Server {
    fn start(variant: &'static str, work: u64) -> Server {
        let exe = std::env::current_exe().expect("own path");
        let mut child = Command::new("taskset")
            .args(["-c", SERVER_CPU])
            .arg(exe)
            .arg(format!("server-child={variant}"))
            .arg(format!("work={work}"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the server process");
        let mut line = String::new();
        BufReader::new(child.stdout.as_mut().expect("piped"))
            .read_line(&mut line)
            .expect("the server prints its port");
        let port = line
            .trim()
            .strip_prefix("port ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("unexpected first line from {variant}: {line:?}"));
        let server = Server {
            variant,
            child,
            port,
        };
        server.pause();
        server
    }

    /// Stops the process (SIGSTOP) so that it takes no CPU while another
    /// one is measured; `resume` continues it.
    fn pause(&self) {
        signal(self.child.id(), "-STOP");
    }

    fn resume(&self) {
        signal(self.child.id(), "-CONT");
        std::thread::sleep(Duration::from_millis(50));
    }

    /// `(thread name, ns on CPU)` of each of the server's threads.
    fn threads_cpu(&self) -> Vec<(String, u64)> {
        let mut out = Vec::new();
        let task = format!("/proc/{}/task", self.child.id());
        for entry in std::fs::read_dir(task).into_iter().flatten().flatten() {
            let path = entry.path();
            let name = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
            let ns = std::fs::read_to_string(path.join("schedstat"))
                .ok()
                .and_then(|s| s.split_whitespace().next()?.parse().ok())
                .unwrap_or(0);
            out.push((name.trim().to_owned(), ns));
        }
        out.sort();
        out
    }

    /// Closes its stdin: it flushes its tracer and prints
    /// `spans created C received R`.
    fn finish(mut self) -> (u64, u64) {
        self.resume();
        drop(self.child.stdin.take());
        let mut rest = String::new();
        let _ =
            std::io::Read::read_to_string(self.child.stdout.as_mut().expect("piped"), &mut rest);
        let _ = self.child.wait();
        let numbers: Vec<u64> = rest
            .split_whitespace()
            .filter_map(|w| w.parse().ok())
            .collect();
        match numbers[..] {
            [created, received] => (created, received),
            _ => panic!("{}: unexpected summary {rest:?}", self.variant),
        }
    }
}

fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill").arg(sig).arg(pid.to_string()).status();
}

/// A pseudo-random index below `n` from the LCG state `seed` (Knuth's
/// MMIX constants; the high bits): the bench's order and resamples are
/// the same in every run.
fn below(n: usize, seed: &mut u64) -> usize {
    *seed = seed
        .wrapping_mul(6_364_136_223_846_793_005)
        .wrapping_add(1_442_695_040_888_963_407);
    ((*seed >> 33) % n as u64) as usize
}

/// Reorders `order` (Fisher–Yates).
fn shuffle(order: &mut [usize], seed: &mut u64) {
    for k in (1..order.len()).rev() {
        order.swap(k, below(k + 1, seed));
    }
}

/// The mean of the middle half (the interquartile mean): on this VM one
/// measurement of a server's capacity varies by ~5 % (sd) around its
/// mean, nearly independently from one to the next, with rare stalls far
/// out; the middle half's mean is robust to those and, on that noise,
/// needs fewer rounds than the median for the same precision.
fn interquartile_mean(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let quarter = v.len() / 4;
    let middle = &v[quarter..v.len() - quarter];
    middle.iter().sum::<f64>() / middle.len() as f64
}

/// The standard error of `interquartile_mean(ratios)`, by the bootstrap
/// (Efron): the standard deviation of the estimate over 2,000 resamples of
/// the rounds with replacement (a fixed seed: the same rounds give the
/// same answer). On this VM one round's ratio varies by ~8 % (sd), so 30
/// rounds resolve about ±1.5 %: a capacity change is only known to that.
fn bootstrap_se(ratios: &[f64]) -> f64 {
    if ratios.len() < 2 {
        return 0.0;
    }
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let estimates: Vec<f64> = (0..2_000)
        .map(|_| {
            let sample = (0..ratios.len())
                .map(|_| ratios[below(ratios.len(), &mut seed)])
                .collect();
            interquartile_mean(sample)
        })
        .collect();
    let mean = estimates.iter().sum::<f64>() / estimates.len() as f64;
    let variance =
        estimates.iter().map(|e| (e - mean).powi(2)).sum::<f64>() / (estimates.len() - 1) as f64;
    variance.sqrt()
}

/// The standard error of `median(a) / median(b)`, by the bootstrap: each
/// resample draws `a` and `b` anew with replacement (2,000 resamples, a
/// fixed seed).
fn bootstrap_ratio_se(a: &[f64], b: &[f64]) -> f64 {
    if a.len() < 2 || b.len() < 2 {
        return 0.0;
    }
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let resample = |v: &[f64], seed: &mut u64| -> f64 {
        median((0..v.len()).map(|_| v[below(v.len(), seed)]).collect())
    };
    let estimates: Vec<f64> = (0..2_000)
        .map(|_| resample(a, &mut seed) / resample(b, &mut seed))
        .collect();
    let mean = estimates.iter().sum::<f64>() / estimates.len() as f64;
    let variance =
        estimates.iter().map(|e| (e - mean).powi(2)).sum::<f64>() / (estimates.len() - 1) as f64;
    variance.sqrt()
}

/// The median (of an even count, the mean of the middle two).
fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    if v.len().is_multiple_of(2) {
        (v[mid - 1] + v[mid]) / 2.0
    } else {
        v[mid]
    }
}

/// Adds per-thread CPU `more` into `total`, by thread name.
fn add_cpu(total: &mut Vec<(String, u64)>, more: Vec<(String, u64)>) {
    for (name, ns) in more {
        match total.iter_mut().find(|(n, _)| *n == name) {
            Some((_, sum)) => *sum += ns,
            None => total.push((name, ns)),
        }
    }
}

/// Per-thread CPU between two readings, as "name=ms" pairs.
fn cpu_delta(before: &[(String, u64)], after: &[(String, u64)]) -> Vec<(String, u64)> {
    after
        .iter()
        .map(|(name, ns)| {
            let was = before
                .iter()
                .find(|(n, _)| n == name)
                .map_or(0, |(_, b)| *b);
            (name.clone(), ns.saturating_sub(was))
        })
        .filter(|(_, ns)| *ns > 0)
        .collect()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(variant) = args.iter().find_map(|a| a.strip_prefix("server-child=")) {
        let iterations = args
            .iter()
            .find_map(|a| a.strip_prefix("work=")?.parse().ok())
            .expect("work=N");
        serve::run(variant, iterations);
        return;
    }
    // The generator keeps to its own core.
    let _ = Command::new("taskset")
        .args(["-p", "-c", LOAD_CPU, &std::process::id().to_string()])
        .stdout(Stdio::null())
        .status();
    // One calibration for every server, so they all do the same work.
    let iterations = serve::calibrate();
    // `SERVER_VARIANTS=untraced,spanrec_api` runs a subset (untraced is
    // always first: the others are measured against it).
    let only = std::env::var("SERVER_VARIANTS").unwrap_or_default();
    let variants: Vec<&'static str> = VARIANTS
        .into_iter()
        .filter(|v| *v == "untraced" || only.is_empty() || only.split(',').any(|o| o == *v))
        .collect();
    let rounds = std::env::var("SERVER_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(ROUNDS);
    // Capacity: closed loop, rounds interleaved (each round in its own
    // order) so that drift hits all alike, and a fresh process for every
    // variant in every round: one process runs a few percent faster or
    // slower than another running the same code, for its whole life
    // (where its pages and heap landed), which per-round ratios cannot
    // cancel but new processes average out.
    let n = variants.len();
    let mut servers: Vec<Option<Server>> = variants.iter().map(|_| None).collect();
    let mut spans = vec![(0u64, 0u64); n];
    let mut rps: Vec<Vec<f64>> = vec![Vec::new(); n];
    // Per variant, over every saturation run: CPU per thread name, and
    // the requests served (each finishes `serve::SPANS_PER_REQUEST` spans).
    let mut cpu: Vec<Vec<(String, u64)>> = vec![Vec::new(); n];
    let mut requests = vec![0u64; n];
    let mut order: Vec<usize> = (0..n).collect();
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    // A fresh server for variant `i`; the one it replaces is finished and
    // its spans counted.
    let mut fresh = |servers: &mut Vec<Option<Server>>, i: usize| {
        if let Some(old) = servers[i].take() {
            let (created, received) = old.finish();
            spans[i].0 += created;
            spans[i].1 += received;
        }
        Server::start(variants[i], iterations)
    };
    for _ in 0..rounds {
        // A new order each round (Fisher–Yates, a fixed seed): no
        // variant always follows the same one (a rotation did, and the
        // server after `untraced` measured ~2 % faster in every run).
        shuffle(&mut order, &mut seed);
        for &i in &order {
            let server = fresh(&mut servers, i);
            server.resume();
            load::closed_loop(server.port, WARM_UP);
            let before = server.threads_cpu();
            let done = load::closed_loop(server.port, SATURATION);
            let after = server.threads_cpu();
            server.pause();
            rps[i].push(done as f64 / SATURATION.as_secs_f64());
            add_cpu(&mut cpu[i], cpu_delta(&before, &after));
            requests[i] += done;
            servers[i] = Some(server);
        }
    }
    let capacity: Vec<f64> = rps.iter().map(|r| median(r.clone())).collect();
    let untraced = capacity[0];
    // Capacity relative to untraced: the interquartile mean over rounds of
    // each round's ratio (the two measured seconds apart, so that the
    // machine's drift between rounds cancels).
    let ratios: Vec<Vec<f64>> = rps
        .iter()
        .map(|r| r.iter().zip(&rps[0]).map(|(v, u)| v / u).collect())
        .collect();
    let relative: Vec<f64> = ratios
        .iter()
        .map(|r| interquartile_mean(r.clone()))
        .collect();
    // What one run can resolve: the standard error of that estimate.
    let relative_se: Vec<f64> = ratios.iter().map(|r| bootstrap_se(r)).collect();

    // Latency at fixed rates of the untraced capacity, in interleaved
    // rounds too, each variant in a fresh process warmed at the rate.
    // This VM stalls each core for 1–12 ms two or three times a second
    // (a busy loop alone on a core sees it; so does the generator): at
    // 90 % load a 2 ms stall leaves a backlog that the spare 10 % drains
    // in ~20 ms, so a whole run's p99 measures the stalls, not the server
    // (untraced's own moved from 0.2 to 60 ms between rounds). So each
    // run is cut into `WINDOW`s of due times, and a tracer's p99 change is
    // its median window p99 over untraced's: the typical 100 ms, which most
    // stalls miss (a windowed percentile, as HdrHistogram's interval
    // logs); its bootstrap standard error says what the run resolves. The
    // merged histogram (stalls and all) is printed beside it.
    // Per server and rate: (fraction, merged histogram, median window p99
    // in µs, its ratio to untraced's, the ratio's standard error).
    type Latency = (f64, Histogram<u64>, f64, f64, f64);
    let mut latency: Vec<Vec<Latency>> = vec![Vec::new(); n];
    for fraction in [0.5, 0.9] {
        let rate = untraced * fraction;
        let mut window_p99: Vec<Vec<f64>> = vec![Vec::new(); n];
        let mut merged: Vec<Option<Histogram<u64>>> = vec![None; n];
        for _ in 0..LATENCY_ROUNDS {
            shuffle(&mut order, &mut seed);
            for &i in &order {
                let server = fresh(&mut servers, i);
                server.resume();
                load::open_loop(server.port, rate, WARM_UP, WINDOW);
                let windows = load::open_loop(server.port, rate, FIXED_RATE, WINDOW);
                server.pause();
                servers[i] = Some(server);
                for h in windows.iter().filter(|h| !h.is_empty()) {
                    window_p99[i].push(h.value_at_quantile(0.99) as f64);
                    match &mut merged[i] {
                        Some(m) => m.add(h).expect("same bounds"),
                        none => *none = Some(h.clone()),
                    }
                }
            }
        }
        for (i, h) in merged.into_iter().enumerate() {
            let typical = median(window_p99[i].clone());
            let ratio = typical / median(window_p99[0].clone());
            let se = bootstrap_ratio_se(&window_p99[i], &window_p99[0]);
            latency[i].push((fraction, h.expect("rounds >= 1"), typical, ratio, se));
        }
    }

    let out_dir = spanrec_benches::cpu::target_dir()
        .join("spanrec-cpu")
        .join("server");
    let _ = std::fs::create_dir_all(&out_dir);
    for (i, server) in servers.into_iter().enumerate() {
        let server = server.expect("every variant ran");
        let variant = server.variant;
        let (mut created, mut received) = server.finish();
        created += spans[i].0;
        received += spans[i].1;
        // Every thread but the request thread (the process's first, named
        // after the executable) is the tracer's, over every saturation run,
        // per span those runs finished.
        let background: u64 = cpu[i]
            .iter()
            .filter(|(n, _)| !n.starts_with("server"))
            .map(|(_, ns)| ns)
            .sum();
        let saturation_spans = requests[i] * serve::SPANS_PER_REQUEST;
        let background_per_span = background as f64 / saturation_spans.max(1) as f64;
        let threads: Vec<String> = cpu[i]
            .iter()
            .map(|(n, ns)| format!("{n} {:.0} ms", *ns as f64 / 1e6))
            .collect();
        println!(
            "server/{variant}: {:.0} requests/s (rounds {:?}), capacity {:+.1} % ± {:.1} % vs \
             untraced (interquartile mean of per-round ratios ± its bootstrap standard error); \
             CPU in the {rounds} saturation runs ({:.1} s): {}, background {background_per_span:.1} ns \
             per span; spans created {created} received {received} lost {}",
            capacity[i],
            rps[i].iter().map(|r| r.round() as u64).collect::<Vec<_>>(),
            (relative[i] - 1.0) * 100.0,
            relative_se[i] * 100.0,
            SATURATION.as_secs_f64() * rounds as f64,
            threads.join(", "),
            created.saturating_sub(received),
        );
        let mut json = format!(
            "{{\"rps\": {:.1}, \"relative\": {:.4}, \"relative_se\": {:.4}, \
             \"created\": {created}, \"received\": {received}",
            capacity[i], relative[i], relative_se[i]
        );
        for (fraction, h, typical, ratio, se) in &latency[i] {
            let pct = (fraction * 100.0) as u32;
            println!(
                "server/{variant}/at_{pct}pct: {:.0} requests/s offered, {} completed in \
                 {LATENCY_ROUNDS} rounds, p50 {} µs p99 {} µs p99.9 {} µs (stalls included); \
                 median {} ms window p99 {typical:.0} µs, {:+.1} % ± {:.1} % vs untraced",
                untraced * fraction,
                h.len(),
                h.value_at_quantile(0.5),
                h.value_at_quantile(0.99),
                h.value_at_quantile(0.999),
                WINDOW.as_millis(),
                (ratio - 1.0) * 100.0,
                se * 100.0,
            );
            json.push_str(&format!(
                ", \"p50_at_{pct}\": {}, \"p99_at_{pct}\": {}, \"p999_at_{pct}\": {}, \
                 \"window_p99_at_{pct}\": {typical:.1}, \"p99_ratio_at_{pct}\": {ratio:.4}, \
                 \"p99_ratio_se_at_{pct}\": {se:.4}",
                h.value_at_quantile(0.5),
                h.value_at_quantile(0.99),
                h.value_at_quantile(0.999)
            ));
        }
        json.push_str(&format!(
            ", \"background_ns\": {background}, \"seconds\": {}, \
             \"background_ns_per_span\": {background_per_span:.2}}}\n",
            SATURATION.as_secs_f64() * rounds as f64
        ));
        let _ = std::fs::File::create(out_dir.join(format!("{variant}.json")))
            .and_then(|mut f| f.write_all(json.as_bytes()));
    }
}
