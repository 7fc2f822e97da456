//! Frames through the whole pipeline: extraction, translation over OVN-like tables (VLAN
//! push/pop, rewrites, dec_ttl, resubmits and their loops, conjunctions, ct() with the real
//! tracker, SNAT and DNAT), the flow cache and execution. The input is a sequence of frames,
//! each with its in_port and a clock step.
//!
//! Checked: no panic; every frame is accounted for (sent at least once, or counted under a drop
//! reason, or forked into a recirculation that is); every output parses; and a frame whose
//! checksums verified leaves with checksums that verify, whatever was rewritten.
#![no_main]

#[path = "../common/input.rs"]
mod input;

use input::Bytes;
use libfuzzer_sys::fuzz_target;
use pipeline::cache::FlowCache;
use pipeline::compose::verify_checksums;
use pipeline::engine::{Engine, Shared};
use pipeline::extract::extract;
use pipeline::key::{FlowKey, FRAG_ANY};
use pipeline::odp::DpSink;
use pipeline::single::SingleBridge;
use pipeline::wire::Frame;
use pipeline::xlate::RecircTable;
use std::sync::OnceLock;

const FLOWS: &str = include_str!("../../tests/fixtures/snat.flows");
const HEADROOM: usize = 256;
const MS: u64 = 1_000_000;
/// Frames per input at most: longer sequences cost time and reach little that a few do not.
const FRAMES: usize = 16;
/// Table and zone 9 limits, small enough for a sequence of `FRAMES` to reach them.
const MAX_CONNS: usize = 8;
const ZONE_LIMIT: u32 = 4;

fn bridge() -> &'static SingleBridge {
    static B: OnceLock<SingleBridge> = OnceLock::new();
    B.get_or_init(|| {
        SingleBridge::new(
            &[("patch-brAtlas-t", 1), ("p2", 2), ("p3", 3), ("tap2", 4)],
            FLOWS,
        )
        .expect("fuzz tables load")
    })
}

/// One tracker for every input (building one costs more than running an input), reset to its
/// fresh state before each so that an input behaves the same whatever ran before it.
fn tracker() -> &'static conntrack::Tracker {
    static T: OnceLock<conntrack::Tracker> = OnceLock::new();
    let t = T.get_or_init(|| {
        let t = conntrack::Tracker::new(conntrack::Config {
            max_conns: MAX_CONNS,
            ..Default::default()
        });
        t.set_zone_limit(9, ZONE_LIMIT);
        t
    });
    t.reset();
    assert!(t.is_empty());
    t
}

#[derive(Default)]
struct Sink {
    outputs: Vec<(u32, Vec<u8>)>,
    forks: Vec<(u32, Vec<u8>, FlowKey)>,
    dropped: u64,
}

impl DpSink for Sink {
    fn output(&mut self, port: u32, frame: &[u8]) {
        self.outputs.push((port, frame.to_vec()));
    }
    fn recirculate(&mut self, id: u32, frame: &[u8], key: &FlowKey) {
        self.forks.push((id, frame.to_vec(), *key));
    }
    fn dropped(&mut self, _r: pipeline::odp::DropReason) {
        self.dropped += 1;
    }
}

fn check_outputs(sink: &Sink, valid_in: bool) {
    for (port, out) in &sink.outputs {
        assert!((1..=4).contains(port), "output to port {port}");
        let mut k = FlowKey::ZERO;
        let _ = extract(out, &mut k);
        if valid_in {
            if let Err(e) = verify_checksums(out) {
                panic!("valid frame left with a bad {e}: {out:02x?}");
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let br = bridge();
    let ct = tracker();
    let recirc = RecircTable::new();
    let mut engine = Engine::new(FlowCache::new(256));
    let mut b = Bytes(data);
    let mut now = 1_000 * MS;
    let mut frames = 0;
    while !b.is_empty() && frames < FRAMES {
        frames += 1;
        let ctl = b.u8();
        let in_port = (ctl % 5) as u32;
        now += (ctl as u64 >> 3) * 500 * MS;
        if ctl & 0x80 != 0 {
            ct.sweep(now, 1024);
        }
        let (frame, _built) = input::frame(&mut b);
        let mut k = FlowKey::ZERO;
        let _ = extract(&frame, &mut k);
        // Reassembly builds a datagram whose transport checksum no fragment vouched for.
        let valid_in = verify_checksums(&frame).is_ok() && k.nw_frag() & FRAG_ANY == 0;

        let view = br.view();
        let sh = Shared {
            env: &view,
            recirc: &recirc,
            ct,
            generation: view.generation(),
        };
        let before = engine.stats;
        let mut sink = Sink::default();
        let mut buf = vec![0u8; HEADROOM + frame.len()];
        buf[HEADROOM..].copy_from_slice(&frame);
        let f = Frame::new(&mut buf, HEADROOM, frame.len());
        engine.process(f, in_port, &FlowKey::ZERO, &sh, &mut sink, now);
        // Forked recirculations run as the datapath runs them, one level deep.
        let forks = std::mem::take(&mut sink.forks);
        let n_forks = forks.len();
        for (id, bytes, key) in forks {
            let mut buf = vec![0u8; HEADROOM + bytes.len()];
            buf[HEADROOM..].copy_from_slice(&bytes);
            let f = Frame::new(&mut buf, HEADROOM, bytes.len());
            engine.process_recirculated(f, id, &key, &sh, &mut sink, now);
        }
        engine.end_batch();
        let drops: u64 = engine
            .stats
            .drops
            .iter()
            .zip(before.drops.iter())
            .map(|(a, b)| a - b)
            .sum();
        assert!(
            !sink.outputs.is_empty() || drops > 0 || n_forks > 0,
            "frame on port {in_port} vanished uncounted: {frame:02x?}"
        );
        assert_eq!(engine.stats.frames, before.frames + 1);
        check_outputs(&sink, valid_in);
        assert!(ct.len() <= MAX_CONNS && ct.zone_len(9) <= ZONE_LIMIT);
    }
});
