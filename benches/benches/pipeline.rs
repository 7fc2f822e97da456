//! The packet engine: the cached path (megaflow hits) and the miss path (translation through
//! 100,000 OVN-like flows over several tables), batches of 32 64-byte frames.
//!
//! cargo bench -p xvs-benches --bench pipeline

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use pipeline::cache::FlowCache;
use pipeline::compose::PacketBuilder;
use pipeline::engine::{Engine, Shared};
use pipeline::key::FlowKey;
use pipeline::single::SingleBridge;
use pipeline::wire::Frame;
use pipeline::xlate::RecircTable;
use pipeline::BATCH_SIZE;
use std::hint::black_box;
use std::net::Ipv4Addr;
use xvs_benches::{CountSink, NoCt};

xvs_benches::daemon_allocator!();

const HEADROOM: usize = 128;

/// 64-byte UDP frames from `n` different sources on port `in_port`.
fn frames(n: usize, in_port_mac: u8) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| {
            PacketBuilder::udp4(
                [0x50, 0x6b, 0x8d, 0, in_port_mac, i as u8],
                [0xe0, 0x19, 0x95, 0xad, 0x56, 0xd0],
                Ipv4Addr::new(192, 168, 10, (i % 250) as u8 + 1),
                Ipv4Addr::new(8, 8, 8, 8),
                40000 + i as u16,
                53,
            )
            .payload_len(18)
            .build()
        })
        .collect()
}

fn run_batch(
    engine: &mut Engine,
    sh: &Shared<'_>,
    batch: &[Vec<u8>],
    bufs: &mut [Vec<u8>],
    in_port: u32,
    sink: &mut CountSink,
) {
    for (f, buf) in batch.iter().zip(bufs.iter_mut()) {
        buf[HEADROOM..HEADROOM + f.len()].copy_from_slice(f);
        let frame = Frame::new(buf, HEADROOM, f.len());
        engine.process(frame, in_port, &FlowKey::ZERO, sh, sink, 1);
    }
    engine.end_batch();
}

/// The seed's path: table 0 classifies tap2, table 8 picks the localnet port, table 65 tags
/// with VLAN 2207 and outputs.
const SEED_PATH: &str = r#"
table=0,priority=100,in_port=tap2 actions=load:0x10->NXM_NX_REG13[0..15],load:0xf->NXM_NX_REG9,load:0x2712->OXM_OF_METADATA,load:0x2->NXM_NX_REG14,load:0->NXM_NX_REG13[16..31],resubmit(,8)
table=8,priority=100,metadata=0x2712,reg14=0x2 actions=load:0x2710->OXM_OF_METADATA,load:0x1->NXM_NX_REG15[],resubmit(,65)
table=65,priority=100,reg15=0x1,metadata=0x2710 actions=mod_vlan_vid:2207,output:"patch-brAtlas-t",strip_vlan
"#;

fn cached(c: &mut Criterion) {
    let mut g = c.benchmark_group("pipeline_cached");
    g.throughput(Throughput::Elements(BATCH_SIZE as u64));
    for (name, flows) in [
        ("port_to_port", "in_port=4 actions=output:1"),
        ("seed_vlan_push", SEED_PATH),
    ] {
        let br = SingleBridge::new(&[("patch-brAtlas-t", 1), ("tap2", 4)], flows).unwrap();
        let recirc = RecircTable::new();
        let view = br.view();
        let sh = Shared {
            env: &view,
            recirc: &recirc,
            ct: &NoCt,
            generation: view.generation(),
        };
        let mut engine = Engine::new(FlowCache::default());
        let batch = frames(BATCH_SIZE, 4);
        let mut bufs = vec![vec![0u8; HEADROOM + 128]; BATCH_SIZE];
        let mut sink = CountSink::default();
        run_batch(&mut engine, &sh, &batch, &mut bufs, 4, &mut sink);
        g.bench_function(BenchmarkId::new("batch32", name), |b| {
            b.iter(|| run_batch(&mut engine, &sh, black_box(&batch), &mut bufs, 4, &mut sink))
        });
        assert_eq!(
            engine.stats.translations, 1,
            "{name}: the bench must run on cache hits"
        );
    }
    g.finish();
}

fn miss(c: &mut Criterion) {
    let mut g = c.benchmark_group("pipeline_miss");
    g.sample_size(20);
    g.throughput(Throughput::Elements(BATCH_SIZE as u64));
    // 100,000 OVN-like flows, plus low-priority continuations so every frame walks table 0 ->
    // 8 -> 9 -> 10 -> 44 -> 45 -> 65 and leaves on a port.
    let mut flows = xvs_benches::ovn_like_flows(100_000, 7);
    for (t, next) in [(8, 9), (9, 10), (10, 44), (44, 45), (45, 65)] {
        flows.push_str(&format!("table={t},priority=0 actions=resubmit(,{next})\n"));
    }
    flows.push_str("table=65,priority=0 actions=output:1\n");
    let ports: Vec<(String, u32)> = (1..=64).map(|p| (format!("p{p}"), p)).collect();
    let port_refs: Vec<(&str, u32)> = ports.iter().map(|(n, p)| (n.as_str(), *p)).collect();
    let br = SingleBridge::new(&port_refs, &flows).unwrap();
    let recirc = RecircTable::new();
    let view = br.view();
    let sh = Shared {
        env: &view,
        recirc: &recirc,
        ct: &NoCt,
        generation: view.generation(),
    };
    // A cache that holds nothing: every frame is translated.
    let mut engine = Engine::new(FlowCache::new(0));
    let batch = frames(BATCH_SIZE, 9);
    let mut bufs = vec![vec![0u8; HEADROOM + 128]; BATCH_SIZE];
    let mut sink = CountSink::default();
    let mut port = 1;
    g.bench_function("batch32_100k_flows", |b| {
        b.iter(|| {
            port = port % 64 + 1;
            run_batch(
                &mut engine,
                &sh,
                black_box(&batch),
                &mut bufs,
                port,
                &mut sink,
            )
        })
    });
    assert!(engine.stats.translations > 0);
    g.finish();
}

criterion_group!(benches, cached, miss);
criterion_main!(benches);
