//! A profiling harness for the tracker's hot paths, without a benchmark framework in the way:
//! `cargo run --release -p xvs-benches --example ct_hotloop -- MODE [SECONDS] [CONNS] [THREADS]`
//! with MODE one of `single` (established lookup + SNAT rewrite, one frame per call), `batch`
//! (the same through `execute_batch`, 32 frames per call), `reply` (the reply direction of those
//! connections, un-SNAT, through the batch), `plain-reply` (the reply direction of connections
//! committed without NAT, through the batch), `miss` (the original direction looked up in
//! another zone without a commit, so every frame misses: the seed's un-SNAT `ct(nat)` in the
//! VM's zone, through the batch) or `commit` (new connections with SNAT). It prints
//! nanoseconds per packet; run it under `perf record` to see where they go. With THREADS
//! above 1 (not for `commit`), that many threads track at once on the one table, each its own
//! share of the connections (as receive-side scaling gives each queue its own flows), and the
//! windows of all of them are reported together. With `CT_HOTLOOP_DUMP=1` in the environment,
//! one more thread lists the table (`Tracker::dump`, as `dump-conntrack` does) over and over
//! while they run, to show what the control plane's walks cost the datapath: the worst window.

use conntrack::{Config, Tracker};
use pipeline::ct::CtRequest;
use pipeline::flow::NatSpec;
use std::hint::black_box;
use std::time::{Duration, Instant};
use xvs_benches::ct_load::{
    client, commit_req, next, populate, scatter, snat_spec, tcp_frame, track, track_batch,
    BatchBufs, Slot,
};

xvs_benches::daemon_allocator!();

/// Prints the best, the median and the worst of the per-window costs, and their mean: on a shared
/// machine the best window is the one least disturbed by other work; the worst shows the longest
/// wait; windows hold equal numbers of frames, so the mean is the run's time per frame, stalls
/// and all, the figure criterion reports.
fn report(mode: &str, what: &str, w: &mut [f64]) {
    w.sort_by(f64::total_cmp);
    println!(
        "{mode}: best {:.1} ns, median {:.1} ns, worst {:.1} ns, mean {:.1} ns {what} ({} windows)",
        w[0],
        w[w.len() / 2],
        w[w.len() - 1],
        w.iter().sum::<f64>() / w.len() as f64,
        w.len()
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let mode = args.get(1).map(String::as_str).unwrap_or("single");
    if !matches!(
        mode,
        "single" | "batch" | "reply" | "plain-reply" | "miss" | "commit"
    ) {
        eprintln!(
            "usage: ct_hotloop [single|batch|reply|plain-reply|miss|commit] [SECONDS] [CONNS] \
             [THREADS]"
        );
        std::process::exit(2);
    }
    let secs: f64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(3.0);
    let conns: u32 = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(100_000);
    let threads: usize = args.get(4).and_then(|s| s.parse().ok()).unwrap_or(1);
    let spec = snat_spec();
    let bare = NatSpec::default();
    let commit = commit_req(&spec);
    let est = CtRequest {
        commit: false,
        nat: Some(&bare),
        ..commit
    };
    let elsewhere = CtRequest {
        zone: commit.zone.wrapping_add(1),
        ..est
    };
    let req = if mode == "miss" { &elsewhere } else { &est };
    let t = Tracker::new(Config::default());
    let deadline = Duration::from_secs_f64(secs);
    if mode == "commit" {
        let mut frames: Vec<u8> = Vec::new();
        let flen = 54;
        let mut next = 0u32;
        let mut spent = Duration::ZERO;
        let mut windows = Vec::new();
        while spent < deadline {
            if t.len() >= 500_000 {
                t.flush(None);
            }
            frames.clear();
            for _ in 0..1024 {
                next = next.wrapping_add(1);
                let (src, sport, server) = client(next % 2_000_000);
                frames.extend_from_slice(&tcp_frame(
                    src,
                    server + (next / 2_000_000) * 4096,
                    sport,
                    80,
                    0x02,
                    100,
                    0,
                ));
            }
            let s = Instant::now();
            for f in frames.chunks_exact_mut(flen) {
                black_box(track(&t, f, &commit));
            }
            let el = s.elapsed();
            spent += el;
            windows.push(el.as_nanos() as f64 / 1024.0);
        }
        report(mode, "per connection", &mut windows);
        return;
    }
    // `reply`: the reply direction of the same SNATed connections (un-SNAT); `plain-reply`:
    // the reply direction of connections committed without NAT. Both through the batch.
    let (acks, replies) = populate(&t, conns, if mode == "plain-reply" { &bare } else { &spec });
    let set = if mode.ends_with("reply") {
        &replies
    } else {
        &acks
    };
    let flen = set[0].len();
    let frames = scatter(set);
    // Each thread cycles over its own share of the frames: connections disjoint between
    // threads, as receive-side scaling gives each queue its own flows.
    let run = |frames: &[Slot]| {
        let mut pos = 0;
        let mut acc = 0u32;
        let start = Instant::now();
        let mut windows = Vec::new();
        const RX: usize = pipeline::BATCH_SIZE;
        let mut bufs: BatchBufs = [Slot::ZERO; RX];
        while start.elapsed() < deadline {
            let s = Instant::now();
            let mut done = 0u64;
            for _ in 0..64 {
                if mode != "single" {
                    acc ^= track_batch(&t, frames, flen, &mut pos, &mut bufs, req);
                } else {
                    for _ in 0..RX {
                        let b = &mut bufs[0];
                        *b = frames[pos];
                        pos = next(pos, frames.len());
                        acc ^= track(&t, &mut b.0[..flen], req);
                    }
                }
                done += RX as u64;
            }
            windows.push(s.elapsed().as_nanos() as f64 / done as f64);
        }
        black_box(acc);
        windows
    };
    let threads = threads.max(1);
    let share = frames.len().div_ceil(threads);
    let run = &run;
    let dumping = std::env::var_os("CT_HOTLOOP_DUMP").is_some_and(|v| v == "1");
    let stop = std::sync::atomic::AtomicBool::new(false);
    let mut dumps = 0u32;
    let mut windows: Vec<f64> = std::thread::scope(|sc| {
        let each: Vec<_> = frames
            .chunks(share)
            .map(|part| sc.spawn(move || run(part)))
            .collect();
        let dumper = dumping.then(|| {
            sc.spawn(|| {
                let mut n = 0u32;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    black_box(t.dump(None));
                    n += 1;
                }
                n
            })
        });
        let windows = each
            .into_iter()
            .flat_map(|h| h.join().expect("a tracking thread panicked"))
            .collect();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(d) = dumper {
            dumps = d.join().expect("the dumping thread panicked");
        }
        windows
    });
    if dumping {
        println!("{dumps} dumps of the table ran meanwhile");
    }
    report(
        mode,
        &format!("per packet over {conns} connections, {threads} thread(s)"),
        &mut windows,
    );
}
