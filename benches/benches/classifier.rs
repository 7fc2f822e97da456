//! Classifier and flow-table benchmarks: lookups through 1, 1,000 and 100,000 OVN-like flows,
//! a miss path through several tables, and installing 100,000 flows.

use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion};
use pipeline::classifier::Classifier;
use pipeline::field::{Field, ETH_TYPE_IP, IPPROTO_TCP};
use pipeline::flow::{Action, FlowSpec, Match, OutputTarget};
use pipeline::key::{loc, FieldLoc, FlowKey, CS_ESTABLISHED, CS_TRACKED};
use pipeline::table::FlowTables;

xvs_benches::daemon_allocator!();

fn reg(i: u8) -> FieldLoc {
    Field::Reg(i).loc().expect("registers have a location")
}

/// The `i`th flow of an OVN-like mix: one of ten masks, values spread over 64 datapaths.
fn ovn_flow(i: u32) -> (Match, u16) {
    let mut m = Match::CATCH_ALL;
    let mut set = |l: FieldLoc, v: u128, mask: u128| {
        m.mask.set(l, mask);
        m.value.set(l, v & mask);
    };
    let dp = (i % 64) as u128 + 1;
    let n = (i / 10) as u128;
    let prio = match i % 10 {
        0 => {
            set(loc::IN_PORT, n + 1, u128::MAX);
            100
        }
        1 => {
            set(loc::METADATA, dp, u128::MAX);
            set(reg(14), n, u128::MAX);
            50
        }
        2 => {
            set(loc::METADATA, dp, u128::MAX);
            set(reg(15), n, u128::MAX);
            50
        }
        3 => {
            set(loc::METADATA, dp, u128::MAX);
            set(loc::DL_DST, 0x0a00_0000_0000 | n, u128::MAX);
            50
        }
        4 => {
            set(loc::METADATA, dp, u128::MAX);
            set(loc::DL_TYPE, ETH_TYPE_IP as u128, u128::MAX);
            set(loc::NW_DST, 0x0a00_0000 | n, u128::MAX);
            74
        }
        5 => {
            set(loc::METADATA, dp, u128::MAX);
            set(loc::DL_TYPE, ETH_TYPE_IP as u128, u128::MAX);
            set(loc::NW_DST, 0x0b00_0000 | (n << 8), 0xffff_ff00);
            49
        }
        6 => {
            set(loc::METADATA, dp, u128::MAX);
            set(loc::DL_TYPE, ETH_TYPE_IP as u128, u128::MAX);
            set(loc::NW_PROTO, IPPROTO_TCP as u128, u128::MAX);
            set(loc::TP_DST, n & 0xffff, u128::MAX);
            2000
        }
        7 => {
            set(loc::METADATA, dp, u128::MAX);
            set(loc::CT_STATE, (CS_TRACKED | CS_ESTABLISHED) as u128, 0x3f);
            set(reg(0), n, u128::MAX);
            65532
        }
        8 => {
            set(loc::METADATA, dp, u128::MAX);
            set(reg(14), n, u128::MAX);
            set(loc::DL_SRC, 0x0c00_0000_0000 | n, u128::MAX);
            90
        }
        _ => {
            set(loc::METADATA, dp, u128::MAX);
            set(reg(13), n & 0xffff, 0xffff);
            0
        }
    };
    (m, prio)
}

fn classifier_with(n: u32) -> Classifier<u32> {
    let mut c = Classifier::new();
    for i in 0..n {
        let (m, p) = ovn_flow(i);
        c.insert(&m, p, &[], i);
    }
    c
}

/// A frame that ends on a low-priority /24 route (flow 55): every subtable above priority 49
/// gets probed. With fewer than 56 flows it misses everything.
fn routed_key() -> FlowKey {
    let mut k = FlowKey::ZERO;
    k.set(loc::IN_PORT, 7_777_777);
    k.set(loc::METADATA, 56);
    k.set(loc::DL_TYPE, ETH_TYPE_IP as u128);
    k.set(loc::NW_PROTO, 17);
    k.set(loc::NW_DST, 0x0b00_0005 | (5 << 8));
    k.set(loc::CT_STATE, (CS_TRACKED | CS_ESTABLISHED) as u128);
    k.set(reg(0), 0x7fff_fff0);
    k
}

/// A frame that hits the highest-priority subtable (ct_state, flow 77): one probe.
fn ct_key() -> FlowKey {
    let mut k = routed_key();
    k.set(loc::METADATA, 14);
    k.set(reg(0), 7);
    k
}

fn bench_lookup(c: &mut Criterion) {
    let mut g = c.benchmark_group("classifier_lookup");
    for n in [1u32, 1_000, 100_000] {
        let cls = classifier_with(n);
        for (name, key) in [("routed", routed_key()), ("ct_hit", ct_key())] {
            g.bench_function(format!("{n}_flows/{name}"), |b| {
                b.iter(|| {
                    let mut wc = FlowKey::ZERO;
                    black_box(cls.lookup(black_box(&key), &mut wc).copied())
                })
            });
        }
    }
    g.finish();
}

/// The miss path: 100,000 flows over 8 tables, one lookup per table for each frame.
fn bench_miss_path(c: &mut Criterion) {
    let tables: Vec<Classifier<u32>> = (0..8u32)
        .map(|t| {
            let mut c = Classifier::new();
            for i in (t..100_000).step_by(8) {
                let (m, p) = ovn_flow(i);
                c.insert(&m, p, &[], i);
            }
            c
        })
        .collect();
    let keys: Vec<FlowKey> = (0..32u128)
        .map(|i| {
            let mut k = routed_key();
            k.set(loc::METADATA, 1 + i % 64);
            k.set(loc::NW_DST, 0x0b00_0000 | (i << 8) | 3);
            k
        })
        .collect();
    c.bench_function("miss_path_8_tables_100k_flows_per_frame", |b| {
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) % keys.len();
            let mut wc = FlowKey::ZERO;
            let mut hits = 0u32;
            for t in &tables {
                if t.lookup(&keys[i], &mut wc).is_some() {
                    hits += 1;
                }
            }
            black_box((hits, wc))
        })
    });
}

fn specs(n: u32) -> Vec<FlowSpec> {
    (0..n)
        .map(|i| {
            let (matches, priority) = ovn_flow(i);
            FlowSpec {
                table: (i % 8) as u8,
                priority,
                matches,
                actions: vec![Action::Output {
                    target: OutputTarget::Port(1),
                    max_len: None,
                }],
                ..FlowSpec::default()
            }
        })
        .collect()
}

fn bench_insert(c: &mut Criterion) {
    let mut g = c.benchmark_group("install");
    g.sample_size(10);
    g.bench_function("classifier_insert_100k", |b| {
        b.iter(|| black_box(classifier_with(100_000).len()))
    });
    let s = specs(100_000);
    g.bench_function("flow_tables_add_flows_100k", |b| {
        b.iter_batched(
            FlowTables::new,
            |t| {
                t.add_flows(&s, 0).expect("valid flows");
                t
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

criterion_group!(benches, bench_lookup, bench_miss_path, bench_insert);
criterion_main!(benches);
