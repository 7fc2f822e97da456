//! The reference deployment's SNAT path through the whole engine: brAtlas's AHV01 flows, the real
//! connection tracker (zone 8 lookup with NAT, zone 9 commit with SNAT, two recirculations),
//! VLAN 2207 pushed and the patch into br0, whose NORMAL action sends on `eth1`. Batches of 32
//! 64-byte frames from the VM.
//!
//! - `snat_established/batch32/{1,10000}_conns`: connections already tracked (a request and the
//!   external router's reply per connection went through before measuring), cached megaflows.
//!   Frames are rewritten in place (NAT, TTL, MACs, tag), so each batch starts by copying 32
//!   templates into the receive buffers: `snat_established/restore_only` measures that copy
//!   alone (subtract it to get the switch's share).
//! - `snat_new_conn/batch32`: every frame opens a connection (ct miss, commit with SNAT port
//!   allocation). The table is flushed outside the timed region before it holds 16,384
//!   connections.
//!
//! cargo bench -p xvs-benches --bench snat

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use pipeline::cache::FlowCache;
use pipeline::engine::{Engine, Shared};
use pipeline::key::FlowKey;
use pipeline::odp::DpSink;
use pipeline::wire::Frame;
use pipeline::BATCH_SIZE;
use std::hint::black_box;
use std::time::{Duration, Instant};
use xvs_benches::snat::{snat_reply, snat_request, SnatSwitch, BENCH_NOW};

xvs_benches::daemon_allocator!();

const HEADROOM: usize = 256;

/// Counts what leaves, by port.
#[derive(Default)]
struct CountSink {
    sent: u64,
    bytes: u64,
}
impl DpSink for CountSink {
    fn output(&mut self, _port: u32, frame: &[u8]) {
        self.sent += 1;
        self.bytes += frame.len() as u64;
    }
    fn recirculate(&mut self, _id: u32, _frame: &[u8], _key: &FlowKey) {}
}

/// Receive buffers, refilled from templates before each batch (NAT rewrites frames in place).
struct Bufs(Vec<Vec<u8>>);

impl Bufs {
    fn new() -> Bufs {
        Bufs(vec![vec![0u8; HEADROOM + 128]; BATCH_SIZE])
    }
    #[inline]
    fn restore(&mut self, batch: &[Vec<u8>]) {
        for (f, buf) in batch.iter().zip(self.0.iter_mut()) {
            buf[HEADROOM..HEADROOM + f.len()].copy_from_slice(f);
        }
    }
}

fn run_batch(
    engine: &mut Engine,
    sh: &Shared<'_>,
    batch: &[Vec<u8>],
    bufs: &mut Bufs,
    in_port: u32,
    sink: &mut CountSink,
) {
    bufs.restore(batch);
    let frames = batch
        .iter()
        .zip(bufs.0.iter_mut())
        .map(|(f, buf)| Frame::new(buf, HEADROOM, f.len()));
    engine.process_batch(frames, in_port, &FlowKey::ZERO, sh, sink, BENCH_NOW);
    engine.end_batch();
}

fn established(c: &mut Criterion) {
    let mut g = c.benchmark_group("snat_established");
    g.throughput(Throughput::Elements(BATCH_SIZE as u64));
    // The last case turns off the tracker's batch lookups (it always prefers them at 60,000
    // connections), to show what grouping frames per `ct()` gains on a table past the caches.
    for (conns, grouped) in [
        (1u32, true),
        (10_000, true),
        (60_000, true),
        (60_000, false),
    ] {
        let ct = conntrack::Config {
            prefetch_min_conns: if grouped {
                conntrack::Config::default().prefetch_min_conns
            } else {
                usize::MAX
            },
            ..conntrack::Config::default()
        };
        let sw = SnatSwitch::new(ct);
        let view = sw.switch.view();
        let sh = view.shared();
        let mut engine = Engine::new(FlowCache::default());
        let mut sink = CountSink::default();
        let mut bufs = Bufs::new();
        // Establish every connection: a request, then the reply.
        let requests: Vec<Vec<u8>> = (0..conns).map(snat_request).collect();
        for chunk in (0..conns).collect::<Vec<_>>().chunks(BATCH_SIZE) {
            let req: Vec<Vec<u8>> = chunk
                .iter()
                .map(|&i| requests[i as usize].clone())
                .collect();
            run_batch(&mut engine, &sh, &req, &mut bufs, sw.tap2, &mut sink);
            let rep: Vec<Vec<u8>> = chunk.iter().map(|&i| snat_reply(i)).collect();
            run_batch(&mut engine, &sh, &rep, &mut bufs, sw.eth1, &mut sink);
        }
        assert_eq!(
            sink.sent,
            2 * conns as u64,
            "every request and reply got through"
        );
        assert_eq!(sw.tracker.len(), conns as usize);
        // Requests in batches of 32, cycling over the connections.
        let n = conns.div_ceil(BATCH_SIZE as u32) * BATCH_SIZE as u32;
        let batches: Vec<Vec<Vec<u8>>> = (0..n)
            .collect::<Vec<_>>()
            .chunks(BATCH_SIZE)
            .map(|c| {
                c.iter()
                    .map(|&i| requests[(i % conns) as usize].clone())
                    .collect()
            })
            .collect();
        // One pass so every megaflow of the measured direction is cached.
        for b in &batches {
            run_batch(&mut engine, &sh, b, &mut bufs, sw.tap2, &mut sink);
        }
        let translations = engine.stats.translations;
        let (sent, frames) = (sink.sent, engine.stats.frames);
        let mut next = 0;
        let name = if grouped {
            format!("{conns}_conns")
        } else {
            format!("{conns}_conns_frame_by_frame")
        };
        g.bench_function(BenchmarkId::new("batch32", name), |b| {
            b.iter(|| {
                let batch = &batches[next];
                next = (next + 1) % batches.len();
                run_batch(
                    &mut engine,
                    &sh,
                    black_box(batch),
                    &mut bufs,
                    sw.tap2,
                    &mut sink,
                )
            })
        });
        assert_eq!(
            engine.stats.translations, translations,
            "the measured frames ran on cached megaflows"
        );
        assert_eq!(
            sink.sent - sent,
            engine.stats.frames - frames,
            "every measured frame left"
        );
        assert_eq!(sw.tracker.len(), conns as usize, "no connection was added");
        if conns == 1 {
            g.bench_function("restore_only", |b| {
                b.iter(|| bufs.restore(black_box(&batches[0])))
            });
        }
    }
    g.finish();
}

fn new_connections(c: &mut Criterion) {
    const FLUSH_AT: usize = 16_384;
    let mut g = c.benchmark_group("snat_new_conn");
    g.throughput(Throughput::Elements(BATCH_SIZE as u64));
    let sw = SnatSwitch::new(conntrack::Config::default());
    let view = sw.switch.view();
    let sh = view.shared();
    let mut engine = Engine::new(FlowCache::default());
    let mut sink = CountSink::default();
    let mut bufs = Bufs::new();
    // Connection numbers cycle through 4 * 64512 tuples (four source addresses); the table is
    // flushed long before one comes round again.
    let mut conn = 0u32;
    let mut batch: Vec<Vec<u8>> = Vec::with_capacity(BATCH_SIZE);
    let mut fill = |batch: &mut Vec<Vec<u8>>| {
        batch.clear();
        for _ in 0..BATCH_SIZE {
            batch.push(snat_request(conn));
            conn = (conn + 1) % (4 * 64512);
        }
    };
    // Warm the megaflows (new connections share them: no flow looks at ports).
    fill(&mut batch);
    run_batch(&mut engine, &sh, &batch, &mut bufs, sw.tap2, &mut sink);
    let translations = engine.stats.translations;
    let committed = sw.tracker.counters().committed;
    let sent = sink.sent;
    g.bench_function("batch32", |b| {
        b.iter_custom(|iters| {
            let mut t = Duration::ZERO;
            for _ in 0..iters {
                if sw.tracker.len() + BATCH_SIZE > FLUSH_AT {
                    sw.tracker.flush(None);
                }
                fill(&mut batch);
                let start = Instant::now();
                run_batch(
                    &mut engine,
                    &sh,
                    black_box(&batch),
                    &mut bufs,
                    sw.tap2,
                    &mut sink,
                );
                t += start.elapsed();
            }
            t
        })
    });
    // Megaflows keep the whole source address (one flow matches VM02's exactly): one walk of
    // three passes per source address, none per connection.
    assert!(
        engine.stats.translations - translations <= 3 * 4,
        "cached megaflows: {} translations",
        engine.stats.translations - translations
    );
    let new = sink.sent - sent;
    assert_eq!(
        sw.tracker.counters().committed - committed,
        new,
        "every measured frame committed a connection and left"
    );
    g.finish();
}

criterion_group!(benches, established, new_connections);
criterion_main!(benches);
