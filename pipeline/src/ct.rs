//! The interface between the pipeline and connection tracking.
//!
//! `ct(...)` actions hand the frame to a [`ConnTracker`]; the pipeline stays pure because the
//! tracker is a trait object supplied by the caller (the `conntrack` crate in the switch, a test
//! double in this crate's tests). Time is passed in as nanoseconds from an arbitrary epoch.

use crate::flow::NatSpec;
use crate::key::FlowKey;
use crate::wire::Frame;

/// Nanoseconds from an arbitrary, monotonic epoch chosen by the caller.
pub type Nanos = u64;

/// What a `ct(...)` action asks of the tracker, with fields already resolved (the zone read
/// from its register, `exec(...)` reduced to mark and label writes).
#[derive(Clone, Copy, Debug)]
pub struct CtRequest<'a> {
    pub zone: u16,
    pub commit: bool,
    pub force: bool,
    pub nat: Option<&'a NatSpec>,
    /// `exec(set_field:V/M->ct_mark)`: (value, mask). Only applied with `commit`.
    pub set_mark: Option<(u32, u32)>,
    /// `exec(set_field:V/M->ct_label)`: (value, mask). Only applied with `commit`.
    pub set_label: Option<(u128, u128)>,
    pub alg: Option<&'a str>,
}

/// The original-direction tuple of the connection (the `ct_nw_*`, `ct_tp_*` fields).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CtTuple {
    /// IPv4 addresses are in the low 32 bits.
    pub src: u128,
    pub dst: u128,
    pub proto: u8,
    pub src_port: u16,
    pub dst_port: u16,
}

/// The tracker's answer for one frame: what the `ct_*` fields become.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CtResult {
    /// `ct_state` bits (`key::CS_*`); always includes `CS_TRACKED`.
    pub state: u32,
    pub zone: u16,
    pub mark: u32,
    pub label: u128,
    /// Original-direction tuple, when the frame belongs to a known connection.
    pub orig: Option<CtTuple>,
}

/// Outcome of handing a frame to the tracker.
#[derive(Debug)]
pub enum CtVerdict {
    /// The frame was tracked (and NATed in place if asked); continue with these `ct_*` values.
    Tracked(CtResult),
    /// The frame is a fragment the tracker holds for reassembly; this walk ends here (counted
    /// by the caller, not a drop).
    Held,
    /// The frame completed a datagram: continue with the reassembled datagram (a complete
    /// Ethernet frame) in place of the fragment.
    Reassembled { frame: Vec<u8>, result: CtResult },
}

/// One frame of a [`ConnTracker::execute_batch`] call: what [`ConnTracker::execute`] takes.
pub struct CtItem<'p, 'f> {
    pub frame: &'p mut Frame<'f>,
    /// Offset of the IP header in the frame.
    pub l3_ofs: usize,
    pub key: &'p FlowKey,
}

/// Connection tracking as the pipeline sees it. Implementations are shared by datapath threads.
pub trait ConnTracker: Send + Sync {
    /// Tracks (and, for `commit`, remembers) the frame's connection in `req.zone`, applying NAT
    /// to the frame in place when asked. `l3_ofs` is the offset of the IP header in the frame;
    /// `key` is the frame's flow key as extracted.
    fn execute(
        &self,
        frame: &mut Frame<'_>,
        l3_ofs: usize,
        key: &FlowKey,
        req: &CtRequest<'_>,
        now: Nanos,
    ) -> CtVerdict;

    /// Whether grouping frames for [`execute_batch`](Self::execute_batch) pays now (say, the
    /// table has outgrown the CPU caches, so overlapping lookups hides misses). When `false`
    /// the engine tracks each frame as it reaches a `ct` action, which costs less bookkeeping.
    fn prefers_batches(&self) -> bool {
        false
    }

    /// Tracks several frames under one request, with the same outcome as calling
    /// [`execute`](Self::execute) on each in order; `out[i]` receives item `i`'s verdict.
    /// Returns how many items were handled (the shorter of the two slices). Implementations
    /// may overlap the memory accesses of the frames (hashing all, then prefetching, then
    /// processing); the default simply loops.
    fn execute_batch(
        &self,
        items: &mut [CtItem<'_, '_>],
        req: &CtRequest<'_>,
        now: Nanos,
        out: &mut [Option<CtVerdict>],
    ) -> usize {
        execute_each(self, items, req, now, out)
    }
}

/// [`ConnTracker::execute_batch`] as one [`ConnTracker::execute`] per item, in order: the
/// trait's default, and what a tracker falls back to when grouping does not pay.
pub fn execute_each<T: ConnTracker + ?Sized>(
    ct: &T,
    items: &mut [CtItem<'_, '_>],
    req: &CtRequest<'_>,
    now: Nanos,
    out: &mut [Option<CtVerdict>],
) -> usize {
    let n = items.len().min(out.len());
    for (it, o) in items.iter_mut().zip(out.iter_mut()) {
        *o = Some(ct.execute(it.frame, it.l3_ofs, it.key, req, now));
    }
    n
}
