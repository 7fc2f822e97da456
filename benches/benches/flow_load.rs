//! Parsing a 100,000-flow OVN-like file (parse only; installing into tables is measured by the
//! table benchmarks). Target: well under 0.5 s.
//!
//! Recorded on the 2-core development VM (15 MB of text): 222-275 ms of thread CPU time per
//! 100,000 flows; criterion's wall-clock figure was 0.50-0.62 s there with a load average
//! of 8 from concurrent builds, so compare CPU time when the machine is shared.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use pipeline::flow::parse::{parse_flows, ParseContext};
use xvs_benches::ovn_like_flows;

xvs_benches::daemon_allocator!();

fn flow_load(c: &mut Criterion) {
    let text = ovn_like_flows(100_000, 0x5eed);
    let ctx = ParseContext::default();
    let mut g = c.benchmark_group("flow_load");
    g.sample_size(10);
    g.throughput(Throughput::Elements(100_000));
    g.bench_function("parse_100k_ovn_like", |b| {
        b.iter(|| {
            let flows =
                parse_flows(std::hint::black_box(&text), &ctx).expect("generated flows parse");
            assert_eq!(flows.len(), 100_000);
            flows
        })
    });
    g.finish();
}

criterion_group!(benches, flow_load);
criterion_main!(benches);
