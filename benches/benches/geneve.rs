//! Geneve encapsulation and decapsulation as the datapath runs them: the `tnl_push` and
//! `tnl_pop` actions of a cached flow (`pipeline::odp::execute`), OVN's 4-byte option in
//! `tun_metadata0`, with and without the outer UDP checksum. Batches of 32 frames (60-byte
//! inner frames; 1400-byte ones where the checksum's cost shows).
//!
//! Push grows the frame into its headroom and pop shrinks it, so each batch restores its frames
//! from templates first; `restore_only` measures that copy alone.
//!
//! cargo bench -p xvs-benches --bench geneve

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use pipeline::key::{loc, FlowKey};
use pipeline::odp::{execute, ExecOutcome, OdpAction, Packet};
use pipeline::wire::Frame;
use pipeline::BATCH_SIZE;
use std::hint::black_box;
use xvs_benches::geneve::{encapsulated, inner_frame, pop_actions, push_actions, TNL_VPORT};
use xvs_benches::{CountSink, NoCt};

xvs_benches::daemon_allocator!();

const HEADROOM: usize = 256;

struct Bufs(Vec<Vec<u8>>);

impl Bufs {
    fn new(max: usize) -> Bufs {
        Bufs(vec![vec![0u8; HEADROOM + max]; BATCH_SIZE])
    }
    #[inline]
    fn restore(&mut self, batch: &[Vec<u8>]) {
        for (f, buf) in batch.iter().zip(self.0.iter_mut()) {
            buf[HEADROOM..HEADROOM + f.len()].copy_from_slice(f);
        }
    }
}

/// Runs `actions` on every frame of the batch, as a cache hit does (parse, then execute).
/// Returns how many ended as expected: sent, or (`recirc`) back to the pipeline from the
/// tunnel port.
fn run_batch(
    actions: &[OdpAction],
    batch: &[Vec<u8>],
    bufs: &mut Bufs,
    sink: &mut CountSink,
    recirc: bool,
) -> usize {
    bufs.restore(batch);
    let mut ok = 0;
    let mut meta = FlowKey::ZERO;
    meta.set(loc::IN_PORT, 2);
    for (f, buf) in batch.iter().zip(bufs.0.iter_mut()) {
        let mut pkt = Packet::new(Frame::new(buf, HEADROOM, f.len()), meta);
        let r = execute(actions, &mut pkt, sink, &NoCt, 0);
        ok += match r {
            ExecOutcome::Done => !recirc,
            ExecOutcome::Recirc(0) => recirc && pkt.key.in_port() == TNL_VPORT,
            _ => false,
        } as usize;
    }
    ok
}

fn tunnel(c: &mut Criterion) {
    let mut g = c.benchmark_group("geneve");
    g.throughput(Throughput::Elements(BATCH_SIZE as u64));
    for payload in [18usize, 1358] {
        let inner: Vec<Vec<u8>> = (0..BATCH_SIZE as u32)
            .map(|i| inner_frame(i, payload))
            .collect();
        let size = inner[0].len();
        let mut bufs = Bufs::new(size + 128);
        let mut sink = CountSink::default();
        for csum in [false, true] {
            let tag = format!("{size}B_{}", if csum { "csum" } else { "nocsum" });
            let push = push_actions(csum);
            assert_eq!(
                run_batch(&push, &inner, &mut bufs, &mut sink, false),
                BATCH_SIZE
            );
            g.bench_function(BenchmarkId::new("push_batch32", &tag), |b| {
                b.iter(|| run_batch(&push, black_box(&inner), &mut bufs, &mut sink, false))
            });
            let outer: Vec<Vec<u8>> = inner.iter().map(|f| encapsulated(f, csum)).collect();
            let pop = pop_actions();
            assert_eq!(
                run_batch(&pop, &outer, &mut bufs, &mut sink, true),
                BATCH_SIZE
            );
            g.bench_function(BenchmarkId::new("pop_batch32", &tag), |b| {
                b.iter(|| run_batch(&pop, black_box(&outer), &mut bufs, &mut sink, true))
            });
        }
        let outer: Vec<Vec<u8>> = inner.iter().map(|f| encapsulated(f, true)).collect();
        g.bench_function(
            BenchmarkId::new("restore_only", format!("{size}B_outer")),
            |b| b.iter(|| bufs.restore(black_box(&outer))),
        );
    }
    g.finish();
}

criterion_group!(benches, tunnel);
criterion_main!(benches);
