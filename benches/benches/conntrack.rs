//! Connection tracking: established lookup + NAT rewrite (both directions), the reply direction
//! of connections without NAT, new connection commit with SNAT port allocation, and the memory
//! one million connections take (counted by a wrapping allocator).

use conntrack::{Config, Tracker};
use criterion::{black_box, Criterion, Throughput};
use dataplane::DaemonAllocator;
use pipeline::ct::CtRequest;
use pipeline::flow::NatSpec;
use pipeline::key::{CS_DST_NAT, CS_ESTABLISHED, CS_INVALID, CS_REPLY_DIR, CS_SRC_NAT};
use std::alloc::{GlobalAlloc, Layout};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::{Duration, Instant};
use xvs_benches::ct_load::{
    client, commit_req, next, populate, scatter, snat_spec, tcp_frame, track, track_batch,
    BatchBufs, Slot,
};

/// Counts live heap bytes so the memory figure is measured, not estimated.
struct Counting;
static LIVE: AtomicIsize = AtomicIsize::new(0);

#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size() as isize, Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the daemon's allocator.
        unsafe { DaemonAllocator.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size() as isize, Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the daemon's allocator.
        unsafe { DaemonAllocator.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        LIVE.fetch_add(n as isize - l.size() as isize, Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the daemon's allocator.
        unsafe { DaemonAllocator.realloc(p, l, n) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// The process's resident memory in bytes (`VmRSS`), or 0 where /proc does not say.
fn resident_bytes() -> isize {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<isize>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

fn memory_report() {
    let before = LIVE.load(Ordering::Relaxed);
    let rss_before = resident_bytes();
    let t = Tracker::new(Config::default());
    let spec = snat_spec();
    let commit = commit_req(&spec);
    let start = Instant::now();
    let mut f = Vec::new();
    for i in 0..1_000_000u32 {
        let (src, sport, server) = client(i);
        f.clear();
        f.extend_from_slice(&tcp_frame(src, server, sport, 80, 0x02, 100, 0));
        track(&t, &mut f, &commit);
    }
    let el = start.elapsed();
    let used = LIVE.load(Ordering::Relaxed) - before;
    // What the allocator holds for it, huge pages and all: resident growth, not just the bytes
    // asked for.
    let resident = resident_bytes() - rss_before;
    println!(
        "conntrack memory: {} connections hold {:.1} MiB of heap ({} bytes/connection; table's own estimate {:.1} MiB; the process grew by {:.1} MiB resident); filled in {:.2?}",
        t.len(),
        used as f64 / (1 << 20) as f64,
        used / t.len().max(1) as isize,
        t.memory_bytes() as f64 / (1 << 20) as f64,
        resident as f64 / (1 << 20) as f64,
        el
    );
    assert!(t.len() == 1_000_000, "all committed");
    assert!(used <= 256 << 20, "1M connections must fit in 256 MiB");
}

fn benches(c: &mut Criterion) {
    let spec = snat_spec();
    let bare = NatSpec::default();
    let t = Tracker::new(Config::default());
    let (acks, replies) = populate(&t, 100_000, &spec);
    assert_eq!(t.len(), 100_000);
    let req = CtRequest {
        zone: 9,
        commit: false,
        force: false,
        nat: Some(&bare),
        set_mark: None,
        set_label: None,
        alg: None,
    };
    let flen = acks[0].len();
    let frames = scatter(&acks);
    let reply_frames = scatter(&replies);
    // Both sets must be what they claim: established, in their direction, translated.
    for (set, dir) in [(&acks, 0), (&replies, CS_REPLY_DIR)] {
        for f in set.iter().step_by(997) {
            let st = track(&t, &mut f.clone(), &req);
            assert_eq!(
                st & (CS_ESTABLISHED | CS_INVALID | CS_REPLY_DIR),
                CS_ESTABLISHED | dir,
                "{st:#x}"
            );
            assert_ne!(st & (CS_SRC_NAT | CS_DST_NAT), 0, "{st:#x}");
        }
    }
    let mut g = c.benchmark_group("conntrack");
    const BATCH: usize = 1024;
    g.throughput(Throughput::Elements(BATCH as u64));
    let mut pos = 0;
    let mut buf = Slot::ZERO;
    g.bench_function("established_lookup_snat_rewrite", |b| {
        b.iter(|| {
            let mut acc = 0;
            for _ in 0..BATCH {
                buf = frames[pos];
                pos = next(pos, frames.len());
                acc ^= track(&t, &mut buf.0[..flen], &req);
            }
            black_box(acc)
        })
    });
    // The same through execute_batch, 32 frames (one pipeline batch) per call; then the reply
    // direction (un-SNAT), whose tuple is indexed in another shard than its connection.
    let mut bufs: BatchBufs = [Slot::ZERO; pipeline::BATCH_SIZE];
    for (name, frames) in [
        ("established_lookup_snat_rewrite_batch32", &frames),
        ("established_reply_unsnat_rewrite_batch32", &reply_frames),
    ] {
        g.bench_function(name, |b| {
            b.iter(|| {
                let mut acc = 0;
                for _ in 0..BATCH / pipeline::BATCH_SIZE {
                    acc ^= track_batch(&t, frames, flen, &mut pos, &mut bufs, &req);
                }
                black_box(acc)
            })
        });
    }
    // The reply direction of connections committed without NAT (what a stateful ACL's
    // return traffic is): both directions share a shard, so no key record is read.
    let plain = Tracker::new(Config::default());
    let (_, plain_replies) = populate(&plain, 100_000, &bare);
    let plain_frames = scatter(&plain_replies);
    for f in plain_replies.iter().step_by(997) {
        let st = track(&plain, &mut f.clone(), &req);
        assert_eq!(
            st & (CS_ESTABLISHED | CS_INVALID | CS_REPLY_DIR | CS_SRC_NAT | CS_DST_NAT),
            CS_ESTABLISHED | CS_REPLY_DIR,
            "{st:#x}"
        );
    }
    g.bench_function("established_reply_no_nat_batch32", |b| {
        b.iter(|| {
            let mut acc = 0;
            for _ in 0..BATCH / pipeline::BATCH_SIZE {
                acc ^= track_batch(&plain, &plain_frames, flen, &mut pos, &mut bufs, &req);
            }
            black_box(acc)
        })
    });
    drop(plain);
    let t2 = Tracker::new(Config::default());
    let commit = CtRequest {
        zone: 9,
        commit: true,
        nat: Some(&spec),
        ..req
    };
    let mut next = 0u32;
    g.throughput(Throughput::Elements(1));
    g.bench_function("new_connection_commit_snat", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            let mut done = 0;
            while done < iters {
                if t2.len() >= 500_000 {
                    t2.flush(None);
                }
                let n = (iters - done).min(BATCH as u64);
                // Built (and later freed) outside the timed part: the allocator is not what
                // is measured.
                let mut frames = Vec::with_capacity(n as usize * 54);
                for _ in 0..n {
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
                let flen = frames.len() / n as usize;
                let s = Instant::now();
                for f in frames.chunks_exact_mut(flen) {
                    black_box(track(&t2, f, &commit));
                }
                total += s.elapsed();
                done += n;
            }
            total
        })
    });
    g.finish();
}

fn main() {
    memory_report();
    let mut c = Criterion::default().configure_from_args();
    benches(&mut c);
    c.final_summary();
}
