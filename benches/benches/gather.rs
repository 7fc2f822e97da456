//! The copy a multi-buffer AF_XDP port makes for each jumbo frame: a 9014-byte frame the kernel
//! wrote as three descriptors (3840 + 3840 + 1334 bytes, each at offset 256 of a 4096-byte
//! chunk) gathered into one reused scratch buffer behind 256 bytes of headroom. The chunks
//! cycle through a 16 MB area as the receive half of a 4096-chunk UMEM does, so the source is
//! mostly not in cache, as after the kernel's own copy on another core.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use std::hint::black_box;

xvs_benches::daemon_allocator!();

const CHUNK: usize = 4096;
const HEADROOM: usize = 256;
const FRAME: usize = 9014;

fn gather(c: &mut Criterion) {
    let chunks = 4096;
    let area = vec![0x5au8; chunks * CHUNK];
    let mut scratch = vec![0u8; HEADROOM + 9216 + 18];
    let mut next = 0usize;
    let mut g = c.benchmark_group("afxdp_gather");
    g.throughput(Throughput::Bytes(FRAME as u64));
    g.bench_function("9014_bytes_from_3_chunks", |b| {
        b.iter_batched(
            || {
                let first = next;
                next = (next + 3) % (chunks - 3);
                first
            },
            |first| {
                let mut total = 0;
                let mut left = FRAME;
                for k in 0..3 {
                    let len = left.min(CHUNK - HEADROOM);
                    let src = (first + k) * CHUNK + HEADROOM;
                    scratch[HEADROOM + total..HEADROOM + total + len]
                        .copy_from_slice(&area[src..src + len]);
                    total += len;
                    left -= len;
                }
                black_box(&scratch);
                total
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group!(benches, gather);
criterion_main!(benches);
