//! The per-thread packet engine: flow cache lookup, translation on a miss, execution of the
//! datapath actions, and recirculation after connection tracking.
//!
//! A datapath thread owns one [`Engine`] (its cache is not shared, so hits take no lock) and
//! hands it frames with the shared parts of the switch in a [`Shared`]. The engine owns frame
//! accounting (every frame ends as sent, dropped with a reason, or held); it does no I/O.

use crate::cache::FlowCache;
use crate::ct::{ConnTracker, CtResult, Nanos};
use crate::key::{loc, FlowKey, PACKET_WORD, TUN_META_WORDS, W_TUN_META};
use crate::odp::{
    apply_ct_result, execute, DpSink, DropReason, ExecOutcome, OdpAction, Packet, COPY_HEADROOM,
};
use crate::wire::Frame;
use crate::xlate::{translate, RecircTable, XlateEnv};

/// Frames shorter than an Ethernet header are dropped as runts.
pub const RUNT_LEN: usize = 14;

/// Recirculations allowed per frame (a `ct(table=N)` in a loop would otherwise spin).
pub const MAX_RECIRC: u32 = 8;

/// What the engine needs from the rest of the switch.
pub struct Shared<'a> {
    pub env: &'a dyn XlateEnv,
    pub recirc: &'a RecircTable,
    pub ct: &'a dyn ConnTracker,
    /// Changes whenever flows, ports or learned MACs change; cached megaflows made under another
    /// generation are discarded.
    pub generation: u64,
}

/// Frame counters of one engine.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EngineStats {
    pub frames: u64,
    pub recirculations: u64,
    pub translations: u64,
    pub drops: [u64; DropReason::ALL.len()],
}

impl EngineStats {
    pub fn drop_count(&self, r: DropReason) -> u64 {
        self.drops[r as usize]
    }
}

#[derive(Default)]
pub struct Engine {
    pub cache: FlowCache,
    pub stats: EngineStats,
}

impl Engine {
    pub fn new(cache: FlowCache) -> Self {
        Engine {
            cache,
            stats: EngineStats::default(),
        }
    }

    /// Processes one frame received on datapath port `in_port`. `meta` carries metadata the
    /// port sets (tunnel fields for a tunnel port); its packet words are ignored.
    pub fn process(
        &mut self,
        frame: Frame<'_>,
        in_port: u32,
        meta: &FlowKey,
        sh: &Shared<'_>,
        sink: &mut dyn DpSink,
        now: Nanos,
    ) {
        self.stats.frames += 1;
        if frame.len() < RUNT_LEN {
            // Nothing to switch on: no flow should see it, whatever its wildcards.
            self.stats.drops[DropReason::Runt as usize] += 1;
            return;
        }
        self.cache.revalidate(sh.generation);
        // Built in place (a key is 296 bytes: every copy shows in the cached path). Packet
        // words need no clearing: extraction overwrites every one of them.
        let mut pkt = Packet {
            frame,
            layout: Default::default(),
            key: *meta,
        };
        pkt.key.set_in_port(in_port);
        pkt.key.set(loc::RECIRC_ID, 0);
        pkt.layout = crate::extract::extract(pkt.frame.data(), &mut pkt.key);
        self.run(&mut pkt, 0, sh, sink, now);
    }

    /// Runs a copy made by a `recirc` that was not its action list's last action.
    pub fn process_recirculated(
        &mut self,
        frame: Frame<'_>,
        id: u32,
        key: &FlowKey,
        sh: &Shared<'_>,
        sink: &mut dyn DpSink,
        now: Nanos,
    ) {
        self.cache.revalidate(sh.generation);
        let mut k = *key;
        prepare_recirc(&mut k, id);
        let mut pkt = Packet::new(frame, k);
        self.stats.recirculations += 1;
        self.run(&mut pkt, 1, sh, sink, now);
    }

    fn run(
        &mut self,
        pkt: &mut Packet<'_>,
        mut recircs: u32,
        sh: &Shared<'_>,
        sink: &mut dyn DpSink,
        now: Nanos,
    ) {
        loop {
            let len = pkt.frame.len() as u64;
            let next = match self.cache.lookup(&pkt.key) {
                Some(idx) => {
                    self.cache.account(idx, len, now);
                    let actions = &self.cache.entry(idx).actions;
                    exec_actions(actions, pkt, &mut self.stats, sh, sink, now)
                }
                None => {
                    self.stats.translations += 1;
                    let t = translate(sh.env, sh.recirc, &pkt.key, now, None);
                    if let Some(reason) = t.error {
                        self.stats.drops[reason as usize] += 1;
                        return;
                    }
                    match self.cache.insert(&pkt.key, &t.wc, t.actions, t.rules, now) {
                        Ok(idx) => {
                            self.cache.account(idx, len, now);
                            let actions = &self.cache.entry(idx).actions;
                            exec_actions(actions, pkt, &mut self.stats, sh, sink, now)
                        }
                        Err((actions, rules)) => {
                            // Cache full: this frame runs uncached and credits its flows now.
                            for r in &rules {
                                r.add_stats(1, len, now);
                            }
                            exec_actions(&actions, pkt, &mut self.stats, sh, sink, now)
                        }
                    }
                }
            };
            match next {
                Next::Stop => return,
                Next::Recirc(id) => {
                    recircs += 1;
                    if recircs > MAX_RECIRC {
                        self.stats.drops[DropReason::RecircLoop as usize] += 1;
                        return;
                    }
                    self.stats.recirculations += 1;
                    prepare_recirc(&mut pkt.key, id);
                }
                Next::Reassembled {
                    frame,
                    result,
                    rest,
                } => {
                    // Conntrack completed a datagram: the rest of the actions run on it, in a
                    // buffer with headroom for pushes, and it recirculates like any frame.
                    let mut buf = vec![0u8; COPY_HEADROOM + frame.len()];
                    buf[COPY_HEADROOM..].copy_from_slice(&frame);
                    let mut whole =
                        Packet::new(Frame::new(&mut buf, COPY_HEADROOM, frame.len()), pkt.key);
                    apply_ct_result(&mut whole.key, &result);
                    match exec_actions(&rest, &mut whole, &mut self.stats, sh, sink, now) {
                        Next::Recirc(id) if recircs < MAX_RECIRC => {
                            self.stats.recirculations += 1;
                            prepare_recirc(&mut whole.key, id);
                            self.run(&mut whole, recircs + 1, sh, sink, now);
                        }
                        Next::Recirc(_) => self.stats.drops[DropReason::RecircLoop as usize] += 1,
                        Next::Reassembled { .. } => {
                            self.stats.drops[DropReason::Conntrack as usize] += 1
                        }
                        Next::Stop => {}
                    }
                    return;
                }
            }
        }
    }

    /// Credits cached frames to their flows (call once per batch).
    pub fn end_batch(&mut self) {
        self.cache.flush_stats();
    }
}

enum Next {
    Stop,
    Recirc(u32),
    Reassembled {
        frame: Vec<u8>,
        result: CtResult,
        rest: Vec<OdpAction>,
    },
}

fn exec_actions(
    actions: &[OdpAction],
    pkt: &mut Packet<'_>,
    stats: &mut EngineStats,
    sh: &Shared<'_>,
    sink: &mut dyn DpSink,
    now: Nanos,
) -> Next {
    if actions.is_empty() {
        stats.drops[DropReason::NoOutput as usize] += 1;
        return Next::Stop;
    }
    let mut sink = CountingSink {
        inner: sink,
        drops: &mut stats.drops,
    };
    match execute(actions, pkt, &mut sink, sh.ct, now) {
        ExecOutcome::Done => Next::Stop,
        ExecOutcome::Dropped(r) => {
            stats.drops[r as usize] += 1;
            Next::Stop
        }
        ExecOutcome::Recirc(id) => Next::Recirc(id),
        ExecOutcome::Reassembled {
            frame,
            result,
            resume_at,
        } => Next::Reassembled {
            frame,
            result,
            rest: actions.get(resume_at..).unwrap_or(&[]).to_vec(),
        },
    }
}

/// Counts the drops of copies (clones, tunnel pushes inside them) that never reach the engine
/// as an outcome.
struct CountingSink<'a, 'b> {
    inner: &'a mut dyn DpSink,
    drops: &'b mut [u64; DropReason::ALL.len()],
}

impl DpSink for CountingSink<'_, '_> {
    fn output(&mut self, port: u32, frame: &[u8]) {
        self.inner.output(port, frame)
    }
    fn recirculate(&mut self, id: u32, frame: &[u8], key: &FlowKey) {
        self.inner.recirculate(id, frame, key)
    }
    fn dropped(&mut self, reason: DropReason) {
        self.drops[reason as usize] += 1;
    }
    fn capture(&mut self, id: u32, frame: &[u8]) {
        self.inner.capture(id, frame)
    }
}

/// Sets up a key for a recirculation: metadata is restored from the frozen state by
/// translation, so everything but `in_port`, the tunnel fields and the `ct_*` fields is cleared.
fn prepare_recirc(key: &mut FlowKey, id: u32) {
    let keep = [
        loc::IN_PORT,
        loc::TUN_ID,
        loc::TUN_SRC,
        loc::TUN_DST,
        loc::TUN_FLAGS,
        loc::CT_STATE,
        loc::CT_ZONE,
        loc::CT_MARK,
        loc::CT_LABEL,
        loc::CT_NW_SRC,
        loc::CT_NW_DST,
        loc::CT_NW_PROTO,
        loc::CT_TP_SRC,
        loc::CT_TP_DST,
    ];
    let mut fresh = FlowKey::ZERO;
    for l in keep {
        fresh.set(l, key.get(l));
    }
    // Tunnel metadata travels with the frame: after a tunnel pop (id 0) it is what the options
    // carried; after `ct(table=N)` translation restores it from the frozen state anyway.
    fresh.w[W_TUN_META..W_TUN_META + TUN_META_WORDS]
        .copy_from_slice(&key.w[W_TUN_META..W_TUN_META + TUN_META_WORDS]);
    fresh.w[PACKET_WORD..].copy_from_slice(&key.w[PACKET_WORD..]);
    fresh.set(loc::RECIRC_ID, id as u128);
    *key = fresh;
}
