//! Flow extraction cost per frame, over a batch of 32 frames as the datapath sees them.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use pipeline::compose::PacketBuilder;
use pipeline::extract::{extract, Layout};
use pipeline::key::FlowKey;
use pipeline::wire::rewrite::set_fields;
use pipeline::wire::Frame;
use pipeline::BATCH_SIZE;
use std::hint::black_box;
use std::net::{Ipv4Addr, Ipv6Addr};

xvs_benches::daemon_allocator!();

const VM: [u8; 6] = [0x50, 0x6b, 0x8d, 0x45, 0x5a, 0x21];
const RT: [u8; 6] = [0xe0, 0x19, 0x95, 0xad, 0x56, 0xd0];

/// 32 distinct 64-byte (without FCS: 60 + 4) UDP/IPv4 frames: varied source ports.
fn udp4_batch(vlan: bool) -> Vec<Vec<u8>> {
    (0..BATCH_SIZE as u16)
        .map(|i| {
            let b = PacketBuilder::udp4(
                VM,
                RT,
                Ipv4Addr::new(192, 168, 10, 5),
                Ipv4Addr::new(8, 8, 8, 8),
                33000 + i,
                53,
            );
            let b = if vlan {
                b.vlan(2207).payload_len(14)
            } else {
                b.payload_len(18)
            };
            b.build()
        })
        .collect()
}

fn bench_batch(c: &mut Criterion, name: &str, frames: &[Vec<u8>]) {
    let mut g = c.benchmark_group("extract");
    g.throughput(Throughput::Elements(frames.len() as u64));
    let mut keys = vec![FlowKey::ZERO; frames.len()];
    let mut lays = vec![Layout::default(); frames.len()];
    g.bench_function(name, |b| {
        b.iter(|| {
            for ((f, k), l) in frames.iter().zip(keys.iter_mut()).zip(lays.iter_mut()) {
                *l = extract(black_box(f), k);
            }
            black_box((&keys, &lays));
        })
    });
    g.finish();
}

fn benches(c: &mut Criterion) {
    bench_batch(c, "udp4_64B_batch32", &udp4_batch(false));
    bench_batch(c, "udp4_vlan_64B_batch32", &udp4_batch(true));
    let tcp6: Vec<Vec<u8>> = (0..BATCH_SIZE as u16)
        .map(|i| {
            PacketBuilder::tcp6(
                VM,
                RT,
                Ipv6Addr::LOCALHOST,
                Ipv6Addr::UNSPECIFIED,
                40000 + i,
                443,
            )
            .build()
        })
        .collect();
    bench_batch(c, "tcp6_batch32", &tcp6);

    // SNAT-style rewrite of source address and port (IP and UDP checksums updated).
    let f = &udp4_batch(false)[0];
    let mut have = FlowKey::ZERO;
    let lay = extract(f, &mut have);
    let mut want = have;
    want.set(pipeline::key::loc::NW_SRC, 0xac16_071b);
    want.set(pipeline::key::loc::TP_SRC, 61000);
    let mut g = c.benchmark_group("rewrite");
    let mut buf = f.clone();
    let n = buf.len();
    // Alternates the rewrite and its inverse so every iteration changes both fields.
    let mut flip = false;
    g.bench_function("snat_udp4", |b| {
        b.iter(|| {
            let mut fr = Frame::new(&mut buf, 0, n);
            let (from, to) = if flip { (&want, &have) } else { (&have, &want) };
            flip = !flip;
            black_box(set_fields(&mut fr, &lay, black_box(from), black_box(to)).ok());
        })
    });
    g.finish();
}

criterion_group!(extract_benches, benches);
criterion_main!(extract_benches);
