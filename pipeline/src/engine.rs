//! The per-thread packet engine: flow cache lookup, translation on a miss, execution of the
//! datapath actions, and recirculation after connection tracking.
//!
//! A datapath thread owns one [`Engine`] (its cache is not shared, so hits take no lock) and
//! hands it frames with the shared parts of the switch in a [`Shared`]. The engine owns frame
//! accounting (every frame ends as sent, dropped with a reason, or held); it does no I/O.

use crate::cache::FlowCache;
use crate::ct::{ConnTracker, CtResult, Nanos};
use crate::key::{loc, FieldLoc, FlowKey, PACKET_WORD, TUN_META_WORDS, W_TUN_META};
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

/// Key bits a recirculation keeps (words before [`PACKET_WORD`]; packet words are all kept):
/// `in_port`, the tunnel fields and the `ct_*` fields. Metadata is restored from the frozen
/// state by translation, so everything else is cleared; `recirc_id` is set afterwards.
/// Tunnel metadata travels with the frame: after a tunnel pop (id 0) it is what the options
/// carried; after `ct(table=N)` translation restores it from the frozen state anyway.
const RECIRC_KEEP: [u64; PACKET_WORD] = {
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
    let mut m = [0u64; PACKET_WORD];
    let mut i = 0;
    while i < keep.len() {
        match keep[i] {
            FieldLoc::Word { word, shift, width } => {
                let bits = if width >= 64 {
                    u64::MAX
                } else {
                    (1u64 << width) - 1
                };
                m[word as usize] |= bits << shift;
            }
            FieldLoc::Wide { hi } => {
                m[hi as usize] = u64::MAX;
                m[hi as usize + 1] = u64::MAX;
            }
        }
        i += 1;
    }
    let mut w = W_TUN_META;
    while w < W_TUN_META + TUN_META_WORDS {
        m[w] = u64::MAX;
        w += 1;
    }
    m
};

/// Sets up a key for a recirculation, in place (see [`RECIRC_KEEP`]): one AND per metadata
/// word, no copy of the key.
#[inline]
fn prepare_recirc(key: &mut FlowKey, id: u32) {
    for (w, keep) in key.w[..PACKET_WORD].iter_mut().zip(RECIRC_KEEP) {
        *w &= keep;
    }
    key.set(loc::RECIRC_ID, id as u128);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::field::Field;

    /// The word masks keep exactly the fields a recirculation keeps: every other metadata
    /// field reads back as zero, every kept one unchanged.
    #[test]
    fn prepare_recirc_keeps_tunnel_and_ct_fields_and_clears_the_rest() {
        let mut k = FlowKey::ZERO;
        for (i, w) in k.w.iter_mut().enumerate() {
            *w = 0x0123_4567_89ab_cdef_u64.rotate_left(i as u32 * 5) | 1;
        }
        let before = k;
        prepare_recirc(&mut k, 0x77);
        let kept = [
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
        for l in kept {
            assert_eq!(k.get(l), before.get(l), "{l:?}");
        }
        for n in 0..8 {
            let l = Field::TunMetadata(n).loc().expect("tun_metadata");
            assert_eq!(k.get(l), before.get(l), "tun_metadata{n}");
        }
        assert_eq!(k.recirc_id(), 0x77);
        assert_eq!(k.w[PACKET_WORD..], before.w[PACKET_WORD..]);
        let cleared = [loc::DP_HASH, loc::PKT_MARK, loc::METADATA, loc::CONJ_ID];
        for l in cleared {
            assert_eq!(k.get(l), 0, "{l:?}");
        }
        for r in 0..16 {
            assert_eq!(k.reg(r), 0, "reg{r}");
        }
        // Nothing else survives: clearing the kept fields leaves no metadata bit set.
        let mut rest = k;
        for l in kept {
            rest.set(l, 0);
        }
        rest.set(loc::RECIRC_ID, 0);
        rest.w[W_TUN_META..W_TUN_META + TUN_META_WORDS].fill(0);
        assert!(rest.w[..PACKET_WORD].iter().all(|w| *w == 0), "{rest:?}");
    }
}
