//! The per-thread packet engine: flow cache lookup, translation on a miss, execution of the
//! datapath actions, and recirculation after connection tracking.
//!
//! A datapath thread owns one [`Engine`] (its cache is not shared, so hits take no lock) and
//! hands it frames with the shared parts of the switch in a [`Shared`]. The engine owns frame
//! accounting (every frame ends as sent, dropped with a reason, or held); it does no I/O.

use crate::cache::FlowCache;
use crate::ct::{ConnTracker, CtItem, CtResult, CtVerdict, Nanos};
use crate::key::{loc, FieldLoc, FlowKey, PACKET_WORD, TUN_META_WORDS, W_TUN_META};
use crate::odp::{
    apply_ct_result, ct_request, finish_ct, resume, DpSink, DropReason, ExecOutcome, OdpAction,
    OdpCt, Packet, Reassembly, Step, COPY_HEADROOM,
};
use crate::wire::Frame;
use crate::xlate::{translate, RecircTable, XlateEnv};
use crate::BATCH_SIZE;
use arrayvec::ArrayVec;

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
    /// This batch stops frames at `ct` actions to track them together (the tracker said
    /// batches pay); otherwise each frame is tracked where it reaches one.
    group_ct: bool,
}

impl Engine {
    pub fn new(cache: FlowCache) -> Self {
        Engine {
            cache,
            stats: EngineStats::default(),
            group_ct: false,
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
        self.cache.revalidate(sh.generation);
        self.group_ct = false;
        let mut one = [None];
        self.admit(&mut one[0], frame, in_port, meta);
        self.run_batch(&mut one, sh, sink, now);
    }

    /// Processes frames received on datapath port `in_port`, [`BATCH_SIZE`] at a time.
    ///
    /// When the tracker [prefers batches](ConnTracker::prefers_batches), frames of a batch go
    /// through the pipeline together: each runs until it is done or reaches a `ct` action, then
    /// the frames waiting at equal `ct` actions go to the tracker in one
    /// [`ConnTracker::execute_batch`] call (which overlaps their table lookups), and go on from
    /// there. Otherwise each frame is tracked where it reaches a `ct`. Frames of one connection
    /// keep their order; frames of different ones may leave in another order than they came,
    /// as in Open vSwitch's datapath, which also tracks and recirculates a batch at a time.
    pub fn process_batch<'f>(
        &mut self,
        frames: impl IntoIterator<Item = Frame<'f>>,
        in_port: u32,
        meta: &FlowKey,
        sh: &Shared<'_>,
        sink: &mut dyn DpSink,
        now: Nanos,
    ) {
        self.cache.revalidate(sh.generation);
        self.group_ct = sh.ct.prefers_batches();
        let mut frames = frames.into_iter();
        loop {
            let mut slots: [Option<Slot<'f>>; BATCH_SIZE] = std::array::from_fn(|_| None);
            let mut n = 0;
            for (slot, frame) in slots.iter_mut().zip(&mut frames) {
                self.admit(slot, frame, in_port, meta);
                n += 1;
            }
            if n == 0 {
                return;
            }
            self.run_batch(&mut slots[..n], sh, sink, now);
            if n < BATCH_SIZE {
                return;
            }
        }
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
        self.stats.recirculations += 1;
        self.group_ct = false;
        let mut one = [Some(Slot {
            pkt: Packet::new(frame, k),
            recircs: 1,
            at_ct: None,
        })];
        self.run_batch(&mut one, sh, sink, now);
    }

    /// Counts a received frame and parses it into `dst` (left `None` for a runt). The slot is
    /// built in place: it holds a 296-byte key, and every copy of it shows per frame.
    fn admit<'f>(
        &mut self,
        dst: &mut Option<Slot<'f>>,
        frame: Frame<'f>,
        in_port: u32,
        meta: &FlowKey,
    ) {
        self.stats.frames += 1;
        if frame.len() < RUNT_LEN {
            // Nothing to switch on: no flow should see it, whatever its wildcards.
            self.stats.drops[DropReason::Runt as usize] += 1;
            return;
        }
        let slot = dst.insert(Slot {
            pkt: Packet {
                frame,
                layout: Default::default(),
                key: *meta,
            },
            recircs: 0,
            at_ct: None,
        });
        // Packet words need no clearing: extraction overwrites every one of them.
        let pkt = &mut slot.pkt;
        pkt.key.set_in_port(in_port);
        pkt.key.set(loc::RECIRC_ID, 0);
        pkt.layout = crate::extract::extract(pkt.frame.data(), &mut pkt.key);
    }

    /// Runs every frame of `slots` (at most [`BATCH_SIZE`]) to its end, tracking the frames
    /// that reach a `ct` together. A slot is emptied when its frame is done.
    fn run_batch(
        &mut self,
        slots: &mut [Option<Slot<'_>>],
        sh: &Shared<'_>,
        sink: &mut dyn DpSink,
        now: Nanos,
    ) {
        loop {
            let mut waiting = false;
            for s in slots.iter_mut() {
                let Some(slot) = s else { continue };
                if slot.at_ct.is_none() && !self.advance(slot, sh, sink, now) {
                    *s = None;
                    continue;
                }
                waiting = true;
            }
            if !waiting {
                return;
            }
            self.track_waiting(slots, sh, sink, now);
        }
    }

    /// Runs a frame through cached (or newly translated) megaflows and recirculations until it
    /// is done (`false`) or waits before a `ct` action (`true`, with `at_ct` set).
    fn advance(
        &mut self,
        slot: &mut Slot<'_>,
        sh: &Shared<'_>,
        sink: &mut dyn DpSink,
        now: Nanos,
    ) -> bool {
        loop {
            let pkt = &mut slot.pkt;
            let len = pkt.frame.len() as u64;
            let entry = match self.cache.lookup(&pkt.key) {
                Some(idx) => Ok(idx),
                None => {
                    self.stats.translations += 1;
                    let t = translate(sh.env, sh.recirc, &pkt.key, now, None);
                    if let Some(reason) = t.error {
                        self.stats.drops[reason as usize] += 1;
                        return false;
                    }
                    self.cache.insert(&pkt.key, &t.wc, t.actions, t.rules, now)
                }
            };
            let (next, idx) = match entry {
                Ok(idx) => {
                    self.cache.account(idx, len, now);
                    let actions = &self.cache.entry(idx).actions;
                    let next = exec_actions(
                        actions,
                        0,
                        self.group_ct,
                        pkt,
                        &mut self.stats,
                        sh,
                        sink,
                        now,
                    );
                    (next, idx)
                }
                Err((actions, rules)) => {
                    // Cache full: this frame runs uncached (so it cannot wait at a `ct`: its
                    // actions live only here) and credits its flows now.
                    for r in &rules {
                        r.add_stats(1, len, now);
                    }
                    let next =
                        exec_actions(&actions, 0, false, pkt, &mut self.stats, sh, sink, now);
                    (next, NO_ENTRY)
                }
            };
            match next {
                Next::Stop => return false,
                Next::AtCt(at) => {
                    slot.at_ct = Some((idx, at as u32));
                    return true;
                }
                Next::Recirc(id) => {
                    if !self.recirculate(slot, id) {
                        return false;
                    }
                }
                Next::Reassembled(r) => {
                    self.run_reassembled(&r.0.frame, &r.0.result, &r.1, slot, sh, sink, now);
                    return false;
                }
            }
        }
    }

    /// Hands the frames waiting before `ct` actions to the tracker, those waiting at equal
    /// actions in one batch call, and runs each on to its next stop: done, recirculated (ready
    /// to advance), or waiting at a later `ct`.
    fn track_waiting(
        &mut self,
        slots: &mut [Option<Slot<'_>>],
        sh: &Shared<'_>,
        sink: &mut dyn DpSink,
        now: Nanos,
    ) {
        debug_assert!(slots.len() <= BATCH_SIZE);
        let mut todo: u64 = 0;
        for (i, s) in slots.iter().enumerate() {
            if s.as_ref().is_some_and(|s| s.at_ct.is_some()) {
                todo |= 1 << i;
            }
        }
        while todo != 0 {
            let first = todo.trailing_zeros() as usize;
            let Some(ct) = self.waiting_ct(&slots[first]) else {
                // Cannot happen (slots wait only at `ct` actions of live entries); dropping
                // keeps the datapath from spinning on it.
                self.stats.drops[DropReason::Conntrack as usize] += 1;
                slots[first] = None;
                todo &= !(1 << first);
                continue;
            };
            let mut group: u64 = 1 << first;
            let mut rest = todo & !group;
            while rest != 0 {
                let j = rest.trailing_zeros() as usize;
                rest &= rest - 1;
                if self
                    .waiting_ct(&slots[j])
                    .is_some_and(|o| std::ptr::eq(o, ct) || *o == *ct)
                {
                    group |= 1 << j;
                }
            }
            todo &= !group;

            let mut lens = [0usize; BATCH_SIZE];
            let mut out: [Option<CtVerdict>; BATCH_SIZE] = std::array::from_fn(|_| None);
            let n = group.count_ones() as usize;
            {
                let mut items = ArrayVec::<CtItem<'_, '_>, BATCH_SIZE>::new();
                for (j, s) in slots.iter_mut().enumerate() {
                    if group & (1 << j) == 0 {
                        continue;
                    }
                    if let Some(slot) = s {
                        lens[items.len()] = slot.pkt.frame.len();
                        items.push(CtItem {
                            frame: &mut slot.pkt.frame,
                            l3_ofs: slot.pkt.layout.l3_ofs as usize,
                            key: &slot.pkt.key,
                        });
                    }
                }
                let req = ct_request(ct);
                match items.as_mut_slice() {
                    // One frame gains nothing from the batch call's prefetch passes.
                    [one] => {
                        out[0] = Some(sh.ct.execute(one.frame, one.l3_ofs, one.key, &req, now));
                    }
                    many => {
                        sh.ct.execute_batch(many, &req, now, &mut out[..n]);
                    }
                }
            }

            let mut k = 0;
            for (j, s) in slots.iter_mut().enumerate() {
                if group & (1 << j) == 0 {
                    continue;
                }
                let verdict = &mut out[k];
                let len = lens[k];
                k += 1;
                let Some(slot) = s else { continue };
                let Some((idx, at)) = slot.at_ct.take() else {
                    continue;
                };
                let at = at as usize;
                let Some(verdict) = verdict.as_mut() else {
                    self.stats.drops[DropReason::Conntrack as usize] += 1;
                    *s = None;
                    continue;
                };
                let actions = &self.cache.entry(idx).actions;
                let next = match finish_ct(&mut slot.pkt, len, verdict, at) {
                    None => exec_actions(
                        actions,
                        at + 1,
                        self.group_ct,
                        &mut slot.pkt,
                        &mut self.stats,
                        sh,
                        sink,
                        now,
                    ),
                    Some(end) => conclude(end, actions, &mut self.stats),
                };
                let live = match next {
                    Next::Stop => false,
                    Next::AtCt(at) => {
                        slot.at_ct = Some((idx, at as u32));
                        true
                    }
                    Next::Recirc(id) => self.recirculate(slot, id),
                    Next::Reassembled(r) => {
                        self.run_reassembled(&r.0.frame, &r.0.result, &r.1, slot, sh, sink, now);
                        false
                    }
                };
                if !live {
                    *s = None;
                }
            }
        }
    }

    /// The `ct` action a slot waits at.
    fn waiting_ct(&self, slot: &Option<Slot<'_>>) -> Option<&OdpCt> {
        let (idx, at) = slot.as_ref()?.at_ct?;
        match self.cache.entry(idx).actions.get(at as usize)? {
            OdpAction::Ct(c) => Some(c),
            _ => None,
        }
    }

    /// Prepares a frame to run again from recirculation `id`; `false` (and a counted drop)
    /// past [`MAX_RECIRC`].
    fn recirculate(&mut self, slot: &mut Slot<'_>, id: u32) -> bool {
        slot.recircs += 1;
        if slot.recircs > MAX_RECIRC {
            self.stats.drops[DropReason::RecircLoop as usize] += 1;
            return false;
        }
        self.stats.recirculations += 1;
        prepare_recirc(&mut slot.pkt.key, id);
        true
    }

    /// Conntrack completed a datagram: the rest of the actions run on it, in a buffer with
    /// headroom for pushes, and it recirculates like any frame.
    #[allow(clippy::too_many_arguments)]
    fn run_reassembled(
        &mut self,
        frame: &[u8],
        result: &CtResult,
        rest: &[OdpAction],
        slot: &Slot<'_>,
        sh: &Shared<'_>,
        sink: &mut dyn DpSink,
        now: Nanos,
    ) {
        let mut buf = vec![0u8; COPY_HEADROOM + frame.len()];
        buf[COPY_HEADROOM..].copy_from_slice(frame);
        let mut whole = Slot {
            pkt: Packet::new(
                Frame::new(&mut buf, COPY_HEADROOM, frame.len()),
                slot.pkt.key,
            ),
            recircs: slot.recircs,
            at_ct: None,
        };
        apply_ct_result(&mut whole.pkt.key, result);
        match exec_actions(
            rest,
            0,
            false,
            &mut whole.pkt,
            &mut self.stats,
            sh,
            sink,
            now,
        ) {
            Next::Recirc(id) => {
                if self.recirculate(&mut whole, id) {
                    self.run_batch(&mut [Some(whole)], sh, sink, now);
                }
            }
            Next::Reassembled(_) => self.stats.drops[DropReason::Conntrack as usize] += 1,
            Next::Stop | Next::AtCt(_) => {}
        }
    }

    /// Credits cached frames to their flows (call once per batch).
    pub fn end_batch(&mut self) {
        self.cache.flush_stats();
    }
}

/// `at_ct` of a frame that runs uncached (never read: such a frame cannot wait).
const NO_ENTRY: u32 = u32::MAX;

/// A frame in flight through [`Engine::run_batch`].
struct Slot<'f> {
    pkt: Packet<'f>,
    /// Recirculations so far.
    recircs: u32,
    /// Waiting before a `ct`: the cache entry and the action's index in its list.
    at_ct: Option<(u32, u32)>,
}

enum Next {
    Stop,
    /// Waiting before the `ct` action at this index (suspending runs only).
    AtCt(usize),
    Recirc(u32),
    /// Boxed: rare, and `Next` is returned on every frame's path.
    Reassembled(Box<(Reassembly, Vec<OdpAction>)>),
}

/// Runs `actions[start..]`; with `suspend`, stops before a `ct` on an IP frame.
#[allow(clippy::too_many_arguments)]
fn exec_actions(
    actions: &[OdpAction],
    start: usize,
    suspend: bool,
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
    let step = if suspend {
        resume::<true>(actions, start, pkt, &mut sink, sh.ct, now)
    } else {
        resume::<false>(actions, start, pkt, &mut sink, sh.ct, now)
    };
    match step {
        Step::AtCt(at) => Next::AtCt(at),
        Step::Finished(end) => conclude(end, actions, stats),
    }
}

/// What comes after a run of `actions` that ended with `end`.
fn conclude(end: ExecOutcome, actions: &[OdpAction], stats: &mut EngineStats) -> Next {
    match end {
        ExecOutcome::Done => Next::Stop,
        ExecOutcome::Dropped(r) => {
            stats.drops[r as usize] += 1;
            Next::Stop
        }
        ExecOutcome::Recirc(id) => Next::Recirc(id),
        ExecOutcome::Reassembled(r) => {
            let rest = actions.get(r.resume_at..).unwrap_or(&[]).to_vec();
            Next::Reassembled(Box::new((*r, rest)))
        }
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

/// The metadata fields a recirculation keeps (see [`RECIRC_KEEP`]).
const RECIRC_KEPT_FIELDS: [FieldLoc; 14] = [
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

/// Key bits a recirculation keeps (words before [`PACKET_WORD`]; packet words are all kept):
/// `in_port`, the tunnel fields and the `ct_*` fields. Metadata is restored from the frozen
/// state by translation, so everything else is cleared; `recirc_id` is set afterwards.
/// Tunnel metadata travels with the frame: after a tunnel pop (id 0) it is what the options
/// carried; after `ct(table=N)` translation restores it from the frozen state anyway.
const RECIRC_KEEP: [u64; PACKET_WORD] = {
    let keep = RECIRC_KEPT_FIELDS;
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
        let kept = RECIRC_KEPT_FIELDS;
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
