//! Connection tracking and NAT for xvs.
//!
//! This crate owns the connection table behind the pipeline's `ct(...)` action: it tracks TCP,
//! UDP, ICMP/ICMPv6 echo and other IP protocols per zone, answers `ct_state`/`ct_mark`/
//! `ct_label`/original-tuple for each frame, applies SNAT/DNAT (rewriting the frame in place
//! with checksums kept right), relates ICMP errors to their connections, reassembles fragments
//! before tracking, enforces global and per-zone limits, expires connections by state timeout
//! and dumps them in the format of `ovs-appctl dpctl/dump-conntrack`. Connections committed with
//! `alg=ftp` or `alg=tftp` announce the data connections their payload names (expectations, see
//! [`alg`]); those are `+rel` and, under NAT, translated like their parent, with the FTP
//! payload's address rewritten and the control connection's sequence numbers kept consistent.
//! Open vSwitch's userspace conntrack is the behavioural reference.
//!
//! It is pure: no clocks (time comes in as `now`), no I/O, no threads; it reaches the kernel
//! only when a lock is contended (a shard lock's waiter yields and naps, see [`lock`]). It must
//! not know about ports, flows or the pipeline beyond [`pipeline::ct`].
//!
//! Concurrency: the table is split into [`table::SHARDS`] shards, each behind its own lock and
//! chosen by tuple hash, so datapath threads contend only when they touch the same shard and
//! an established lookup never takes a global lock. A sharded table of our own (rather than a
//! concurrent map) lets both directions of a connection index one compact record and lets a
//! NAT commit check-and-insert its reply tuple atomically under the two shard locks involved.

#![deny(unsafe_code)]

pub mod alg;
pub mod frag;
pub mod ftp;
pub mod lock;
pub mod nat;
pub mod packet;
pub mod table;
pub mod tcp;
pub mod tuple;

use alg::{AddExpect, AlgTable, ExpKey, Expect, Helper, HelperConn};
use frag::{FragConfig, FragOutcome, Reassembler};
use packet::{Bad, Parsed, L4};
use pipeline::ct::{ConnTracker, CtItem, CtRequest, CtResult, CtTuple, CtVerdict, Nanos};
use pipeline::flow::NatKind;
use pipeline::key::*;
use pipeline::wire::Frame;
use std::fmt::Write as _;
use std::sync::atomic::{
    AtomicU32, AtomicU64, AtomicUsize,
    Ordering::{Acquire, Relaxed, Release},
};
use std::sync::{Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};
use table::{
    Conn, Found, Probe, ShardGuard, Shards, F_ALG_PATH, F_ALG_STATE, F_DNAT, F_FTP, F_LIVE,
    F_RELATED, F_SEEN_REPLY, F_SNAT, F_TFTP, NO_KEY, SHARDS,
};
use tcp::TcpState;
pub use tuple::{Addr, Tuple};

const SEC: Nanos = 1_000_000_000;

/// Slots of the table of NAT ranges found full ([`Tracker::range_known_full`]): commits
/// competing for one range do not each search it whole (a range of 64,512 ports takes
/// milliseconds, on a datapath thread, for every new connection that cannot have one).
/// Direct-mapped: a range that lands on another's slot replaces it and is merely searched
/// again.
const FULL_RANGE_SLOTS: usize = 64;

/// A reply key left in another shard by a walk's removal: (shard, key record, generation) as
/// [`table::Shard::remove_conn`] returns it, and the connection's zone.
type RemoteKey = ((u32, u32, u32), u16);

/// Record slots a control-plane walk ([`Tracker::dump`], [`Tracker::flush`],
/// [`Tracker::sweep`]) visits per hold of a shard's lock: a datapath thread that needs the
/// shard waits for at most one slice.
const WALK_SLICE: u32 = 256;

/// Errors of the control-plane side of this crate (the datapath answers with verdicts).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CtError {
    #[error("no connection matches the tuple")]
    NotFound,
}

/// Tracker settings. Timeouts default to the Linux netfilter defaults.
#[derive(Clone, Debug)]
pub struct Config {
    /// Connections held at most (Open vSwitch's default).
    pub max_conns: usize,
    pub tcp_syn_sent: Nanos,
    pub tcp_syn_recv: Nanos,
    pub tcp_established: Nanos,
    pub tcp_fin_wait: Nanos,
    pub tcp_close_wait: Nanos,
    pub tcp_last_ack: Nanos,
    pub tcp_time_wait: Nanos,
    pub tcp_close: Nanos,
    /// UDP before a reply was seen.
    pub udp_first: Nanos,
    /// UDP once both directions were seen.
    pub udp_stream: Nanos,
    pub icmp: Nanos,
    pub generic: Nanos,
    /// Accept a TCP segment without SYN for an unknown connection as `+new` (picked up
    /// mid-stream, sequence checks relaxed), as Open vSwitch does. When false it is `+inv`.
    pub tcp_pickup: bool,
    /// Verify IPv4 header and L4 checksums; a bad one makes the packet `+inv`. Once per
    /// frame: a frame whose checksums one `ct()` found good is not verified again by the next
    /// (see [`Frame::checksums_good`]); without verification every frame counts as good.
    pub verify_checksums: bool,
    /// Seeds the table hash and the PRNG behind `nat(random)`.
    pub seed: u64,
    pub frag: FragConfig,
    /// Below this many connections the batch API tracks frame by frame: the table then sits in
    /// the CPU caches, and the prefetch passes (a shard lock per frame each) cost more than
    /// the misses they would hide.
    pub prefetch_min_conns: usize,
    /// Expectations (announced data connections) held at most; more are refused and counted.
    pub max_expectations: usize,
    /// How long an expectation waits for its data connection (it also goes with its parent).
    pub expectation_timeout: Nanos,
    /// Read `EPRT |1|...|` and `229 (|||port|)` on IPv4 FTP control connections too. Open
    /// vSwitch reads the extended forms over IPv6 only, so this is off by default.
    pub ftp_extended_v4: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_conns: 3_000_000,
            tcp_syn_sent: 120 * SEC,
            tcp_syn_recv: 60 * SEC,
            tcp_established: 432_000 * SEC,
            tcp_fin_wait: 120 * SEC,
            tcp_close_wait: 60 * SEC,
            tcp_last_ack: 30 * SEC,
            tcp_time_wait: 120 * SEC,
            tcp_close: 10 * SEC,
            udp_first: 30 * SEC,
            udp_stream: 120 * SEC,
            icmp: 30 * SEC,
            generic: 600 * SEC,
            tcp_pickup: true,
            verify_checksums: true,
            seed: 0x6a09_e667_f3bc_c908,
            frag: FragConfig::default(),
            prefetch_min_conns: 16_384,
            max_expectations: 4096,
            expectation_timeout: 300 * SEC,
            ftp_extended_v4: false,
        }
    }
}

/// Event counts since the tracker was created.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Packets that found no connection and were valid to start one (`+new`, committed or not).
    pub new: u64,
    /// Connections created by `commit`.
    pub committed: u64,
    /// Packets that found their connection (either direction, including related ICMP errors).
    pub established_lookups: u64,
    /// Packets answered `+inv` (malformed, bad checksum, bad TCP flags or window, unrelated
    /// ICMP errors, NAT failures).
    pub invalid: u64,
    /// Commits refused because the global or the zone limit was reached.
    pub refused: u64,
    /// Commits that found no free translated tuple in their NAT range.
    pub nat_exhausted: u64,
    /// Of those, the commits refused without a search: the last search of the same range for
    /// the same peer had found it full, and no connection has gone since.
    pub nat_exhausted_known: u64,
    /// Fragments held for reassembly.
    pub frag_held: u64,
    /// Datagrams completed by reassembly.
    pub frag_reassembled: u64,
    /// Fragments dropped (malformed, overlapping, over a limit, or timed out).
    pub frag_dropped: u64,
    /// Connections removed by timeout.
    pub expired: u64,
    /// Expectations recorded by the helpers.
    pub expectations: u64,
    /// Expectations refused because [`Config::max_expectations`] were held.
    pub expectations_refused: u64,
    /// FTP messages whose address was rewritten under NAT.
    pub alg_rewrites: u64,
}

#[derive(Default)]
struct AtomicCounters {
    /// New packets that did not commit a connection (those that did are counted per shard).
    new: AtomicU64,
    related: AtomicU64,
    invalid: AtomicU64,
    refused: AtomicU64,
    nat_exhausted: AtomicU64,
    nat_exhausted_known: AtomicU64,
    frag_held: AtomicU64,
    frag_reassembled: AtomicU64,
    frag_dropped: AtomicU64,
    expired: AtomicU64,
    expectations: AtomicU64,
    expectations_refused: AtomicU64,
    alg_rewrites: AtomicU64,
}

/// The connection tracker. Shared by datapath threads (`&self` everywhere).
pub struct Tracker {
    cfg: Config,
    shards: Shards,
    count: AtomicUsize,
    /// Connections gone (each counted once its last entry is): what a NAT range found full
    /// stays full until this moves.
    released: AtomicU64,
    /// NAT ranges a search found full, with `released` as it was when that search began.
    full_ranges: Mutex<[Option<(nat::RangeKey, u64)>; FULL_RANGE_SLOTS]>,
    zone_count: Box<[AtomicU32]>,
    /// Per-zone limits; 0 means none.
    zone_limit: Box<[AtomicU32]>,
    prng: AtomicU64,
    frags: Mutex<Reassembler>,
    c: AtomicCounters,
    sweep_shard: AtomicUsize,
    /// Helper state; locked after a shard lock, never before (see [`alg`]).
    alg: RwLock<AlgTable>,
    /// Expectations held, read without the lock so that new connections look for one only
    /// when there may be one.
    n_expect: AtomicUsize,
}

/// Outcome of looking a tuple up.
enum Lookup<'a> {
    Hit(ShardGuard<'a>, u32, bool),
    Miss,
}

enum NewOutcome {
    Done(CtResult),
    /// A concurrent commit created the connection first: look it up again.
    Retry,
}

/// A packet that can open a connection (see [`Tracker::new_answer`]): its answer, and what a
/// commit goes on with.
struct Opening<'p> {
    res: CtResult,
    /// The TCP segment and how it opens (handshake or pickup).
    tcp_start: Option<(&'p packet::TcpSeg, tcp::NewVerdict)>,
    /// The expectation a helper recorded for it, if any.
    exp: Option<Expect>,
}

/// What a packet of a known connection does to it (see [`Tracker::advance`]).
enum Advance {
    /// Accepted: the `ct_state` bits, and whether NAT rewrites the packet.
    Valid(u32, bool),
    Invalid,
    /// A SYN reopening a closed connection: remove it and start a new one.
    Reopen,
}

/// The bytes of a datagram being tracked, which an FTP payload rewrite under NAT may lengthen
/// or shorten: a switched frame, or a datagram reassembled from fragments.
pub trait Resize {
    fn bytes(&mut self) -> &mut [u8];
    /// Makes the bytes `n` long (new bytes at the end, contents unspecified). False, with
    /// nothing changed, when there is no room.
    fn set_len(&mut self, n: usize) -> bool;
    /// Whether the checksums of the datagram whose IP header is at `l3` are known good (see
    /// [`Frame::checksums_good`]): verified once already on their way through the pipeline.
    fn checksums_good(&self, _l3: usize) -> bool {
        false
    }
    /// Records that they were verified and are good.
    fn set_checksums_good(&mut self, _l3: usize) {}
}

impl Resize for Frame<'_> {
    #[inline]
    fn bytes(&mut self) -> &mut [u8] {
        self.data_mut()
    }
    #[inline]
    fn checksums_good(&self, l3: usize) -> bool {
        Frame::checksums_good(self, l3)
    }
    #[inline]
    fn set_checksums_good(&mut self, l3: usize) {
        Frame::set_checksums_good(self, l3)
    }
    fn set_len(&mut self, n: usize) -> bool {
        let len = self.len();
        if n <= len {
            self.truncate(n);
            return true;
        }
        // Tailroom first; otherwise move the whole frame into the headroom.
        self.push_tail(n - len).is_ok() || self.insert_gap(len, n - len).is_ok()
    }
}

impl Resize for Vec<u8> {
    #[inline]
    fn bytes(&mut self) -> &mut [u8] {
        self
    }
    fn set_len(&mut self, n: usize) -> bool {
        self.resize(n, 0);
        true
    }
}

/// Inlined by force: an established packet's path (see [`Tracker::track_parsed`]).
#[inline(always)]
fn ct_tuple(t: &Tuple) -> CtTuple {
    let (sp, dp) = if tuple::is_icmp(t.proto) {
        (t.dport >> 8, t.dport & 0xff)
    } else {
        (t.sport, t.dport)
    };
    CtTuple {
        src: t.src.to_u128(),
        dst: t.dst.to_u128(),
        proto: t.proto,
        src_port: sp,
        dst_port: dp,
    }
}

/// The answer for a packet of connection `c` with `ct_state` bits `state`.
#[inline(always)]
fn answer(c: &Conn, state: u32, zone: u16) -> CtResult {
    CtResult {
        state,
        zone,
        mark: c.mark,
        label: c.label_u128(),
        orig: Some(ct_tuple(&c.orig)),
    }
}

fn invalid(zone: u16) -> CtResult {
    CtResult {
        state: CS_INVALID | CS_TRACKED,
        zone,
        ..CtResult::default()
    }
}

/// `+snat`/`+dnat` for a packet of a NATed connection travelling in `reply` direction: the bit
/// names the header field this packet had rewritten.
fn nat_bits(flags: u8, reply: bool) -> u32 {
    let mut s = 0;
    if flags & F_SNAT != 0 {
        s |= if reply { CS_DST_NAT } else { CS_SRC_NAT };
    }
    if flags & F_DNAT != 0 {
        s |= if reply { CS_SRC_NAT } else { CS_DST_NAT };
    }
    s
}

impl Tracker {
    pub fn new(cfg: Config) -> Tracker {
        Tracker {
            prng: AtomicU64::new(cfg.seed ^ 0xa076_1d64_78bd_642f),
            cfg,
            shards: Shards::new(),
            count: AtomicUsize::new(0),
            released: AtomicU64::new(0),
            full_ranges: Mutex::new([None; FULL_RANGE_SLOTS]),
            zone_count: (0..=u16::MAX).map(|_| AtomicU32::new(0)).collect(),
            zone_limit: (0..=u16::MAX).map(|_| AtomicU32::new(0)).collect(),
            frags: Mutex::new(Reassembler::default()),
            c: AtomicCounters::default(),
            sweep_shard: AtomicUsize::new(0),
            alg: RwLock::new(AlgTable::default()),
            n_expect: AtomicUsize::new(0),
        }
    }

    /// Returns the tracker to the state `new` left it in — no connections, no held fragments,
    /// counters at zero, sweep cursor and NAT PRNG at their start — keeping zone limits and
    /// the memory already allocated. For harnesses (fuzzing, tests) that run many independent
    /// sequences: each then behaves as on a fresh tracker without paying for one. Each live
    /// connection is uncounted from the table and its zone as `flush` does, so the counts come
    /// out as `flush` leaves them. Not for use while other threads track.
    pub fn reset(&self) {
        *self.frags.lock().unwrap_or_else(|e| e.into_inner()) = Reassembler::default();
        for si in 0..SHARDS {
            let mut g = self.shards.lock(si);
            for i in 0..g.conns.high_water() {
                let Some(c) = g.conns.slot(i) else { continue };
                if c.flags & F_LIVE != 0 {
                    self.unreserve(c.orig.zone);
                }
            }
            g.reset();
        }
        *self.full_ranges.lock().unwrap_or_else(|e| e.into_inner()) = [None; FULL_RANGE_SLOTS];
        self.prng
            .store(self.cfg.seed ^ 0xa076_1d64_78bd_642f, Relaxed);
        let c = &self.c;
        for n in [
            &c.new,
            &c.related,
            &c.invalid,
            &c.refused,
            &c.nat_exhausted,
            &c.nat_exhausted_known,
            &c.frag_held,
            &c.frag_reassembled,
            &c.frag_dropped,
            &c.expired,
            &c.expectations,
            &c.expectations_refused,
            &c.alg_rewrites,
        ] {
            n.store(0, Relaxed);
        }
        self.sweep_shard.store(0, Relaxed);
        self.alg_lock().clear();
        self.n_expect.store(0, Relaxed);
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Limits connections in `zone` to `n` (0 removes the limit).
    pub fn set_zone_limit(&self, zone: u16, n: u32) {
        self.zone_limit[zone as usize].store(n, Relaxed);
    }

    pub fn zone_limit(&self, zone: u16) -> u32 {
        self.zone_limit[zone as usize].load(Relaxed)
    }

    /// Connections currently held.
    pub fn len(&self) -> usize {
        self.count.load(Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn zone_len(&self, zone: u16) -> u32 {
        self.zone_count[zone as usize].load(Relaxed)
    }

    pub fn counters(&self) -> Counters {
        let c = &self.c;
        let (mut hits, mut committed) = (0, 0);
        for i in 0..SHARDS {
            let g = self.shards.lock(i);
            hits += g.hits;
            committed += g.committed;
        }
        Counters {
            // A committed connection's first packet was new too.
            new: c.new.load(Relaxed) + committed,
            committed,
            established_lookups: hits + c.related.load(Relaxed),
            invalid: c.invalid.load(Relaxed),
            refused: c.refused.load(Relaxed),
            nat_exhausted: c.nat_exhausted.load(Relaxed),
            nat_exhausted_known: c.nat_exhausted_known.load(Relaxed),
            frag_held: c.frag_held.load(Relaxed),
            frag_reassembled: c.frag_reassembled.load(Relaxed),
            frag_dropped: c.frag_dropped.load(Relaxed),
            expired: c.expired.load(Relaxed),
            expectations: c.expectations.load(Relaxed),
            expectations_refused: c.expectations_refused.load(Relaxed),
            alg_rewrites: c.alg_rewrites.load(Relaxed),
        }
    }

    /// Bytes held by the connection table (slabs and hash tables, by capacity).
    pub fn memory_bytes(&self) -> usize {
        (0..SHARDS)
            .map(|i| self.shards.lock(i).bytes())
            .sum::<usize>()
            + self.zone_count.len() * 8
    }

    fn next_random(&self) -> u64 {
        let x = self.prng.fetch_add(0x9e37_79b9_7f4a_7c15, Relaxed);
        tuple::mix(x ^ 0xbf58_476d_1ce4_e5b9, x.rotate_left(31) | 1)
    }

    fn bad(&self, zone: u16) -> CtResult {
        self.c.invalid.fetch_add(1, Relaxed);
        invalid(zone)
    }

    #[inline]
    fn timeout(&self, c: &Conn) -> Nanos {
        let cfg = &self.cfg;
        match c.orig.proto {
            tuple::IPPROTO_TCP => match TcpState::from_u8(c.state) {
                TcpState::SynSent => cfg.tcp_syn_sent,
                TcpState::SynRecv => cfg.tcp_syn_recv,
                TcpState::Established => cfg.tcp_established,
                TcpState::FinWait => cfg.tcp_fin_wait,
                TcpState::CloseWait => cfg.tcp_close_wait,
                TcpState::LastAck => cfg.tcp_last_ack,
                TcpState::TimeWait => cfg.tcp_time_wait,
                TcpState::Close => cfg.tcp_close,
            },
            tuple::IPPROTO_UDP => {
                if c.flags & F_SEEN_REPLY != 0 {
                    cfg.udp_stream
                } else {
                    cfg.udp_first
                }
            }
            tuple::IPPROTO_ICMP | tuple::IPPROTO_ICMPV6 => cfg.icmp,
            _ => cfg.generic,
        }
    }

    /// Reserves room for one connection in `zone`; false when a limit is reached.
    fn reserve(&self, zone: u16) -> bool {
        if self.count.fetch_add(1, Relaxed) >= self.cfg.max_conns {
            self.count.fetch_sub(1, Relaxed);
            return false;
        }
        let lim = self.zone_limit[zone as usize].load(Relaxed);
        if self.zone_count[zone as usize].fetch_add(1, Relaxed) >= lim && lim != 0 {
            self.zone_count[zone as usize].fetch_sub(1, Relaxed);
            self.count.fetch_sub(1, Relaxed);
            return false;
        }
        true
    }

    fn unreserve(&self, zone: u16) {
        self.count.fetch_sub(1, Relaxed);
        self.zone_count[zone as usize].fetch_sub(1, Relaxed);
    }

    /// [`Tracker::unreserve`] for a connection that was committed and is now gone, its last
    /// entry removed: whatever translated tuple it held is free again.
    fn release(&self, zone: u16) {
        self.unreserve(zone);
        self.released.fetch_add(1, Release);
    }

    fn lookup(&self, t: &Tuple) -> Lookup<'_> {
        self.lookup_hashed(t, t.hash(self.cfg.seed))
    }

    /// [`Tracker::lookup`] with the tuple's hash already computed.
    #[inline]
    fn lookup_hashed(&self, t: &Tuple, h: u64) -> Lookup<'_> {
        self.lookup_or_prepare(t, Probe::new(h), false)
    }

    /// [`Tracker::lookup_hashed`]; on a miss with `will_commit`, also starts loading the slot
    /// a new connection will take, so that miss overlaps the commit's other ones. Inlined by
    /// force: an established packet's path (see [`Tracker::track_parsed`]).
    #[inline(always)]
    fn lookup_or_prepare(&self, t: &Tuple, probe: Probe, will_commit: bool) -> Lookup<'_> {
        let g = self.shards.lock(Shards::shard_of(probe.hash));
        match g.find_probe(t, probe) {
            None => {
                if will_commit {
                    g.prefetch_free_conn();
                }
                Lookup::Miss
            }
            Some(Found::Local { idx, reply }) => Lookup::Hit(g, idx, reply),
            Some(Found::Remote { shard, idx, gen }) => {
                drop(g);
                let g = self.shards.lock(shard as usize);
                let c = g.conns.get(idx);
                // The key record matched `t` under its own shard's lock; a live record of the
                // generation it names is the connection it was made for (a freed slot bumps
                // the generation), and a connection's reply tuple never changes.
                if c.flags & F_LIVE == 0 || c.gen != gen {
                    return Lookup::Miss;
                }
                debug_assert!(c.reply() == *t, "a key record outlived its connection");
                Lookup::Hit(g, idx, true)
            }
        }
    }

    /// Adds `n` lookups that missed without committing to [`Counters::new`]. The seed's
    /// un-SNAT `ct(nat)` misses on every outbound frame, so its datapath threads would
    /// otherwise each do a locked add on this one shared counter per frame; a batch does one.
    #[inline]
    fn count_uncommitted(&self, n: u64) {
        if n != 0 {
            self.c.new.fetch_add(n, Relaxed);
        }
    }

    /// Removes the connection at `idx` of the locked shard.
    fn remove(&self, mut g: ShardGuard<'_>, idx: u32) {
        let c = g.conns.get(idx);
        let zone = c.orig.zone;
        if c.flags & F_ALG_STATE != 0 {
            let o = c.orig;
            self.alg_forget(&o);
        }
        let remote = g.remove_conn(idx, self.cfg.seed);
        drop(g);
        if let Some((s, k, gen)) = remote {
            self.shards
                .lock(s as usize)
                .remove_key(k, gen, self.cfg.seed);
        }
        self.release(zone);
    }

    /// Parses the datagram at `l3` of `b` into `out`, verifying its checksums unless an
    /// earlier `ct()` on the same frame did, and marks the frame's checksums as verified.
    #[inline(always)]
    fn parse<B: Resize + ?Sized>(
        &self,
        b: &mut B,
        l3: usize,
        zone: u16,
        out: &mut Parsed,
    ) -> Result<(), Bad> {
        let verify = self.cfg.verify_checksums & !b.checksums_good(l3);
        packet::parse_into(b.bytes(), l3, zone, verify, out)?;
        b.set_checksums_good(l3);
        Ok(())
    }

    /// Tracks one complete (unfragmented) datagram whose IP header is at `l3` of `b`, NATing it
    /// in place when asked, and returns the verdict. `Err(Bad::Fragment)` means it must go
    /// through reassembly. The datagram is parsed in place and the answer built in its final
    /// slot: returned as a result and wrapped again, the ~100-byte answer was copied twice more
    /// on every packet of the one-frame path.
    #[inline]
    fn track<B: Resize + ?Sized>(
        &self,
        b: &mut B,
        l3: usize,
        req: &CtRequest<'_>,
        now: Nanos,
    ) -> Result<CtVerdict, Bad> {
        let mut p = Parsed::EMPTY;
        match self.parse(b, l3, req.zone, &mut p) {
            Ok(()) => {}
            Err(Bad::Fragment) => return Err(Bad::Fragment),
            Err(_) => return Ok(CtVerdict::Tracked(self.bad(req.zone))),
        }
        let mut out = None;
        let mut uncommitted = 0;
        if self.lookup_can_hit(req) {
            let probe = Probe::new(p.tuple.hash(self.cfg.seed));
            self.track_parsed::<true, B>(b, &p, probe, req, now, &mut out, &mut uncommitted);
        } else {
            let probe = Probe::new(0);
            self.track_parsed::<false, B>(b, &p, probe, req, now, &mut out, &mut uncommitted);
        }
        self.count_uncommitted(uncommitted);
        Ok(out.unwrap_or_else(|| CtVerdict::Tracked(self.bad(req.zone))))
    }

    /// Whether a lookup for `req` can find anything: not when it cannot commit and its zone
    /// holds no connection. The seed's un-SNAT `ct(nat)` runs in the VM's zone, where nothing
    /// is ever committed, on every outbound packet; knowing it will miss saves the hash, the
    /// shard lock and the probe. A zone is counted before its connection is indexed and
    /// uncounted after the last of its entries is gone, so an empty count means a lookup
    /// would miss as of this read.
    #[inline]
    fn lookup_can_hit(&self, req: &CtRequest<'_>) -> bool {
        req.commit || self.zone_count[req.zone as usize].load(Relaxed) != 0
    }

    /// [`Tracker::track`] once the datagram is parsed (from `b`, unchanged since) and its
    /// tuple hashed (`probe`, with the entry a batch saw if any; unused without `LOOKUP`, which
    /// is false when [`Tracker::lookup_can_hit`] said no and no hash was taken), with the
    /// answer written to `out`: built there in place, because it is about 100 bytes and an
    /// established packet's whole path is short enough for copies of it from layer to layer to
    /// show.
    ///
    /// Inlined by force, as are the functions an established packet goes through from here
    /// (the lookup and its probe, the answer's tuple, the NAT end and the rewrite; parsing too):
    /// left as calls, which the compiler chose for most of them, their entries, exits and
    /// results passed through memory took 84 of an established frame's 967 instructions.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    fn track_parsed<const LOOKUP: bool, B: Resize + ?Sized>(
        &self,
        b: &mut B,
        p: &Parsed,
        probe: Probe,
        req: &CtRequest<'_>,
        now: Nanos,
        out: &mut Option<CtVerdict>,
        uncommitted: &mut u64,
    ) {
        match p.kind {
            L4::IcmpError { inner_l3 } => {
                *out = Some(CtVerdict::Tracked(self.related(
                    b.bytes(),
                    p,
                    inner_l3,
                    req,
                )))
            }
            L4::IcmpOther => *out = Some(CtVerdict::Tracked(self.bad(req.zone))),
            _ => {
                if !LOOKUP || !self.existing(b, p, probe, req, now, out) {
                    self.track_new(b, p, probe.hash, req, now, out, uncommitted)
                }
            }
        }
    }

    /// [`Tracker::track_parsed`] for a packet that found no connection: creates one, or, when
    /// a concurrent commit made it first, handles the packet as that connection's (once more
    /// at most). Kept out of line: inlined, its setup was hoisted in front of every
    /// established packet's lookup.
    #[inline(never)]
    #[allow(clippy::too_many_arguments)]
    fn track_new<B: Resize + ?Sized>(
        &self,
        b: &mut B,
        p: &Parsed,
        h: u64,
        req: &CtRequest<'_>,
        now: Nanos,
        out: &mut Option<CtVerdict>,
        uncommitted: &mut u64,
    ) {
        if !req.commit {
            *out = Some(CtVerdict::Tracked(self.uncommitted_answer(
                p,
                req.zone,
                now,
                uncommitted,
            )));
            return;
        }
        for round in 0..2 {
            if let NewOutcome::Done(r) = self.create(b, p, h, req, now) {
                *out = Some(CtVerdict::Tracked(r));
                return;
            }
            if round == 0 && self.existing(b, p, Probe::new(h), req, now, out) {
                return;
            }
        }
        *out = Some(CtVerdict::Tracked(self.bad(req.zone)));
    }

    /// Handles a packet of a known connection, writing the answer to `out`; false (`out`
    /// untouched) when there is none (or it was just removed: expired, forced, or reopened by
    /// a SYN).
    #[inline(always)]
    fn existing<B: Resize + ?Sized>(
        &self,
        b: &mut B,
        p: &Parsed,
        probe: Probe,
        req: &CtRequest<'_>,
        now: Nanos,
        out: &mut Option<CtVerdict>,
    ) -> bool {
        let Lookup::Hit(mut g, idx, reply) = self.lookup_or_prepare(&p.tuple, probe, req.commit)
        else {
            return false;
        };
        let c = g.conns.get(idx);
        if c.expires <= now {
            self.c.expired.fetch_add(1, Relaxed);
            self.remove(g, idx);
            return false;
        }
        if req.commit && req.force && reply {
            self.remove(g, idx);
            return false;
        }
        g.hits += 1;
        let c = g.conns.get_mut(idx);
        // The one test connections without a helper pay.
        if c.flags & F_ALG_PATH != 0 {
            return match self.existing_alg(g, idx, reply, b, p, req, now) {
                Some(r) => {
                    *out = Some(CtVerdict::Tracked(r));
                    true
                }
                None => false,
            };
        }
        let seg = match &p.kind {
            L4::Tcp(seg) => Some(seg),
            _ => None,
        };
        match self.advance(c, seg, reply, req, now) {
            Advance::Valid(state, nat) => {
                *out = Some(CtVerdict::Tracked(answer(c, state, req.zone)));
                let end = if nat { c.nat_end(reply) } else { None };
                let to = (nat && end.is_none()).then(|| c.nat_target(reply));
                drop(g);
                if let Some(end) = end {
                    packet::rewrite_end(b.bytes(), p, &end);
                } else if let Some(to) = to {
                    packet::rewrite(b.bytes(), p, &to);
                }
                true
            }
            Advance::Invalid => {
                drop(g);
                *out = Some(CtVerdict::Tracked(self.bad(req.zone)));
                true
            }
            Advance::Reopen => {
                self.remove(g, idx);
                false
            }
        }
    }

    /// Moves connection `c` by a packet travelling in direction `reply` (TCP segment `seg`):
    /// state, timeout, mark and label on commit; the `ct_state` bits and whether NAT applies.
    #[inline(always)]
    fn advance(
        &self,
        c: &mut Conn,
        seg: Option<&packet::TcpSeg>,
        reply: bool,
        req: &CtRequest<'_>,
        now: Nanos,
    ) -> Advance {
        if let Some(seg) = seg {
            match tcp::update(&mut c.state, &mut c.tcp, reply as usize, seg) {
                tcp::Update::Valid => {}
                tcp::Update::Invalid => return Advance::Invalid,
                tcp::Update::Reopen => return Advance::Reopen,
            }
        }
        if reply {
            c.flags |= F_SEEN_REPLY;
        }
        let mut state = CS_TRACKED;
        state |= if reply { CS_REPLY_DIR } else { 0 };
        state |= if c.flags & F_SEEN_REPLY != 0 {
            CS_ESTABLISHED
        } else {
            CS_NEW
        };
        if req.commit {
            apply_mark_label(c, req);
        }
        let nat = req.nat.is_some() && c.flags & (F_SNAT | F_DNAT) != 0;
        if nat {
            state |= nat_bits(c.flags, reply);
        }
        c.expires = now.saturating_add(self.timeout(c));
        Advance::Valid(state, nat)
    }

    /// [`Tracker::existing`] for a helper's control connection or a related connection (the
    /// shard lock held, the hit counted). An FTP control segment's acknowledgement is taken
    /// back into the numbering its peer sent before the window checks (they keep each side in
    /// its own numbering), and after them its payload is read, expectations recorded, the
    /// address rewritten under NAT and the sequence numbers shifted by what earlier rewrites
    /// added or removed.
    #[cold]
    #[inline(never)]
    #[allow(clippy::too_many_arguments)]
    fn existing_alg<B: Resize + ?Sized>(
        &self,
        mut g: ShardGuard<'_>,
        idx: u32,
        reply: bool,
        b: &mut B,
        p: &Parsed,
        req: &CtRequest<'_>,
        now: Nanos,
    ) -> Option<CtResult> {
        let dir = reply as usize;
        let c = g.conns.get_mut(idx);
        let (flags, orig) = (c.flags, c.orig);
        let mut seg = match &p.kind {
            L4::Tcp(seg) => Some(*seg),
            _ => None,
        };
        let ftp = seg.filter(|_| flags & F_FTP != 0 && alg::ftp_ctl_packet(req.alg, &p.tuple));
        // A data connection's packets only read its parent's tuple (shared lock, so transfers
        // do not serialise on it); a control segment may change the table.
        let parent = match flags & F_RELATED {
            0 => None,
            _ => self.alg_read().related.get(&orig).copied(),
        };
        let mut at = ftp.map(|_| self.alg_lock());
        let offs = at
            .as_ref()
            .and_then(|at| at.helpers.get(&orig))
            .map(|h| h.seq)
            .unwrap_or_default();
        // (sequence number as the receiver must see it, acknowledgement as the sender expects)
        let mut wire = None;
        if let (Some(f), Some(s)) = (ftp, seg.as_mut()) {
            let ack = if f.flags & packet::TCP_ACK != 0 {
                f.ack.wrapping_sub(offs[1 - dir].for_ack(f.ack) as u32)
            } else {
                f.ack
            };
            s.ack = ack;
            wire = Some((f.seq.wrapping_add(offs[dir].for_seq(f.seq) as u32), ack));
        }
        match self.advance(c, seg.as_ref(), reply, req, now) {
            Advance::Invalid => {
                drop(at);
                drop(g);
                Some(self.bad(req.zone))
            }
            Advance::Reopen => {
                drop(at);
                self.remove(g, idx);
                None
            }
            Advance::Valid(state, nat) => {
                let conn = *g.conns.get(idx);
                drop(g);
                let target = nat.then(|| conn.nat_target(reply));
                let mut res = answer(&conn, state, req.zone);
                if flags & F_RELATED != 0 {
                    res.state |= CS_RELATED;
                    if let Some(parent) = parent {
                        res.orig = Some(ct_tuple(&parent));
                    }
                }
                if let Some(t) = target {
                    packet::rewrite(b.bytes(), p, &t);
                }
                if let (Some(f), Some(w), Some(at)) = (ftp, wire, at.as_mut()) {
                    self.ftp_segment(at, &conn, b, p, &f, reply, w, req, now, &mut res);
                }
                Some(res)
            }
        }
    }

    /// The FTP helper's work on one control segment `seg` of `c` (already NATed in its
    /// headers), whose numbers must become `wire` (sequence, acknowledgement).
    #[allow(clippy::too_many_arguments)]
    fn ftp_segment<B: Resize + ?Sized>(
        &self,
        at: &mut AlgTable,
        c: &Conn,
        b: &mut B,
        p: &Parsed,
        seg: &packet::TcpSeg,
        reply: bool,
        wire: (u32, u32),
        req: &CtRequest<'_>,
        now: Nanos,
        res: &mut CtResult,
    ) {
        let mut l4_len = p.l4_len;
        let mut changed = wire != (seg.seq, seg.ack);
        let msg = packet::tcp_payload(b.bytes(), p)
            .filter(|(s, e)| e > s)
            .map(|(s, e)| {
                (
                    s,
                    ftp::parse(&b.bytes()[s..e], p.tuple.v6, self.cfg.ftp_extended_v4),
                )
            });
        match msg {
            None | Some((_, ftp::Parse::Other)) => {}
            Some((_, ftp::Parse::Malformed)) => {
                // As Open vSwitch does: the packet is marked invalid on top of its state.
                self.c.invalid.fetch_add(1, Relaxed);
                res.state |= CS_INVALID;
            }
            Some((pay, ftp::Parse::Msg(m))) => {
                let rep = c.reply();
                // The address the receiver must see, and the one the sender may know itself
                // by: the client's for PORT/EPRT, the server's for 227/229.
                let (shown, real) = match m.mode {
                    ftp::Mode::Active => (rep.dst, c.orig.src),
                    ftp::Mode::Passive => (c.orig.dst, rep.src),
                };
                if m.addr.is_some_and(|a| a != shown && a != real) {
                    // Pointing the peer at a third host is refused, as Open vSwitch does.
                    self.c.invalid.fetch_add(1, Relaxed);
                    res.state |= CS_INVALID;
                } else {
                    self.expect(at, c, reply, m.port, now);
                    if req.nat.is_some() && m.addr.is_some_and(|a| a != shown) {
                        if let Some(delta) = self.rewrite_addr(b, p, pay, &m, shown) {
                            self.c.alg_rewrites.fetch_add(1, Relaxed);
                            l4_len = (l4_len as isize + delta) as usize;
                            changed = true;
                            if let Some(h) = at.helpers.get_mut(&c.orig) {
                                h.seq[reply as usize].grow(seg.seq, delta as i32);
                            }
                        }
                    }
                }
            }
        }
        if changed {
            let d = b.bytes();
            packet::set_tcp_seq_ack(d, p, wire.0, wire.1);
            packet::refresh_tcp_checksum(d, p, l4_len);
        }
    }

    /// Replaces the address of FTP message `m` (payload at `pay`) by `to`, moving the rest of
    /// the datagram and fixing the IP length. The length change, or `None` (nothing changed)
    /// when the buffer has no room or the address has no text form.
    fn rewrite_addr<B: Resize + ?Sized>(
        &self,
        b: &mut B,
        p: &Parsed,
        pay: usize,
        m: &ftp::Msg,
        to: Addr,
    ) -> Option<isize> {
        let mut text = [0u8; ftp::MAX_ADDR_TEXT];
        let n = ftp::format_addr(to, p.tuple.v6, m.syntax, &mut text);
        if n == 0 {
            return None;
        }
        let start = pay + m.addr_at;
        let old_end = start + m.addr_len;
        let len = b.bytes().len();
        if old_end > len {
            return None;
        }
        let delta = n as isize - m.addr_len as isize;
        if !packet::adjust_ip_len(b.bytes(), p, delta) {
            return None;
        }
        if delta > 0 {
            if !b.set_len(len + delta as usize) {
                packet::adjust_ip_len(b.bytes(), p, -delta);
                return None;
            }
            b.bytes().copy_within(old_end..len, start + n);
        } else if delta < 0 {
            b.bytes().copy_within(old_end..len, start + n);
            b.set_len(len - (-delta) as usize);
        }
        b.bytes()[start..start + n].copy_from_slice(&text[..n]);
        Some(delta)
    }

    /// Records the expectation of control connection `c` for a data connection to `port`,
    /// announced by a message that travelled in direction `reply`: from the message's receiver
    /// to its sender, with the addresses the data connection's first packet will carry when it
    /// reaches the tracker, translated (when it is) the way the parent is.
    fn expect(&self, at: &mut AlgTable, c: &Conn, reply: bool, port: u16, now: Nanos) {
        let (o, r) = (c.orig, c.reply());
        let dnat = c.flags & F_DNAT != 0;
        let (src, dst, nat_dst, nat_addr) = match (reply, dnat) {
            (false, false) => (r.src, r.dst, false, o.src),
            (false, true) => (r.src, r.dst, true, o.dst),
            (true, false) => (o.src, o.dst, true, r.dst),
            (true, true) => (o.src, o.dst, false, r.src),
        };
        let k = ExpKey {
            src,
            dst,
            dport: port,
            zone: o.zone,
            proto: o.proto,
            v6: o.v6,
        };
        let e = Expect {
            parent: o,
            mark: c.mark,
            label: c.label_u128(),
            nat_dst,
            nat_addr,
            expires: now.saturating_add(self.cfg.expectation_timeout),
        };
        match at.add_expect(k, e, self.cfg.max_expectations) {
            AddExpect::Created => {
                self.c.expectations.fetch_add(1, Relaxed);
            }
            AddExpect::Exists => {}
            AddExpect::Refused => {
                self.c.expectations_refused.fetch_add(1, Relaxed);
            }
        }
        self.n_expect.store(at.expects.len(), Relaxed);
    }

    fn alg_lock(&self) -> RwLockWriteGuard<'_, AlgTable> {
        // Every update leaves the table consistent between statements, so poisoning is ignored.
        self.alg.write().unwrap_or_else(|e| e.into_inner())
    }

    fn alg_read(&self) -> RwLockReadGuard<'_, AlgTable> {
        self.alg.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Forgets the helper state of the connection with original tuple `o` (being removed).
    fn alg_forget(&self, o: &Tuple) {
        let mut at = self.alg_lock();
        at.forget(o);
        self.n_expect.store(at.expects.len(), Relaxed);
    }

    /// Expectations currently held.
    pub fn expectation_count(&self) -> usize {
        self.alg_read().expects.len()
    }

    /// The answer for a packet that matches no connection: `+new` (with `+rel` and the
    /// parent's mark, label and original tuple when a helper announced the connection, as Open
    /// vSwitch answers), or `Err` with `+inv` (counted) when it cannot start one; with it, what
    /// a commit goes on with.
    #[inline(always)]
    fn new_answer<'p>(
        &self,
        p: &'p Parsed,
        zone: u16,
        now: Nanos,
    ) -> Result<Opening<'p>, CtResult> {
        let o = p.tuple;
        let mut tcp_start = None;
        match &p.kind {
            L4::Tcp(seg) => {
                let v = tcp::classify_new(seg, self.cfg.tcp_pickup);
                if v == tcp::NewVerdict::Invalid {
                    return Err(self.bad(zone));
                }
                tcp_start = Some((seg, v));
            }
            L4::IcmpEcho => {
                // Only a request starts an echo connection.
                let ty = (o.dport >> 8) as u8;
                if !matches!(ty, 8 | 128) {
                    return Err(self.bad(zone));
                }
            }
            _ => {}
        }
        let mut res = CtResult {
            state: CS_NEW | CS_TRACKED,
            zone,
            orig: Some(ct_tuple(&o)),
            ..CtResult::default()
        };
        let exp = if self.n_expect.load(Relaxed) != 0
            && (o.proto == tuple::IPPROTO_TCP || o.proto == tuple::IPPROTO_UDP)
        {
            self.alg_lock().find_expect(&o, now)
        } else {
            None
        };
        if let Some(e) = &exp {
            res.state |= CS_RELATED;
            res.mark = e.mark;
            res.label = e.label;
            res.orig = Some(ct_tuple(&e.parent));
        }
        Ok(Opening {
            res,
            tcp_start,
            exp,
        })
    }

    /// The answer for a lookup that found nothing and does not commit, counted in
    /// `uncommitted` (for the caller to add to [`Counters::new`] once per call or batch, see
    /// [`Tracker::count_uncommitted`]) unless it is `+inv`. Nothing is recorded, so nothing can
    /// race it. The seed's un-SNAT `ct(nat)` in the VM's zone comes here on every outbound
    /// packet: kept apart from the commit's path, whose setup it would otherwise pay for.
    #[inline]
    fn uncommitted_answer(
        &self,
        p: &Parsed,
        zone: u16,
        now: Nanos,
        uncommitted: &mut u64,
    ) -> CtResult {
        match self.new_answer(p, zone, now) {
            Ok(o) => {
                *uncommitted += 1;
                o.res
            }
            Err(bad) => bad,
        }
    }

    /// A commit of a packet that matched no connection: records the connection (translated
    /// when asked) and rewrites the packet, or says a concurrent commit made it first. Kept out
    /// of line (its caller's retry loop would otherwise carry its setup).
    #[inline(never)]
    fn create<B: Resize + ?Sized>(
        &self,
        b: &mut B,
        p: &Parsed,
        ha: u64,
        req: &CtRequest<'_>,
        now: Nanos,
    ) -> NewOutcome {
        let Opening {
            mut res,
            tcp_start,
            exp,
        } = match self.new_answer(p, req.zone, now) {
            Ok(o) => o,
            Err(bad) => return NewOutcome::Done(bad),
        };
        let zone = req.zone;
        let o = p.tuple;
        let mut c = Conn {
            orig: o,
            rep: NO_KEY,
            ..Conn::default()
        };
        if let Some((seg, v)) = tcp_start {
            let (st, peers) = tcp::start(seg, v);
            c.state = st as u8;
            c.tcp = peers;
        }
        let seed = self.cfg.seed;
        let nat = req.nat.and_then(|s| s.kind.map(|k| (s, k)));
        // Under any `nat`, a related connection is translated the way its parent is (address
        // only), whatever range the action names: Open vSwitch's rule.
        let exp_nat = exp
            .filter(|_| req.nat.is_some())
            .map(|e| (e.nat_dst, e.nat_addr));
        let nat_flag = match (exp_nat, nat) {
            (Some((true, _)), _) => F_SNAT,
            (Some((false, _)), _) => F_DNAT,
            (None, Some((_, NatKind::Src))) => F_SNAT,
            (None, Some((_, NatKind::Dst))) => F_DNAT,
            (None, None) => 0,
        };
        let mut plain = Some(match exp_nat {
            Some((true, a)) => Tuple {
                dst: a,
                ..o.reverse()
            },
            Some((false, a)) => Tuple {
                src: a,
                ..o.reverse()
            },
            None => o.reverse(),
        });
        let nat = nat.filter(|_| exp_nat.is_none());
        let mut cands = nat.map(|(s, k)| {
            nat::Candidates::new(
                &o,
                s,
                k,
                seed,
                if s.random { self.next_random() } else { 0 },
            )
        });
        let next_cand = |cands: &mut Option<nat::Candidates>, plain: &mut Option<Tuple>| {
            match cands {
                Some(it) => it.next(),
                None => plain.take(),
            }
            .map(|r| (r, r.hash(seed)))
        };
        // The first candidate is almost always the one taken: start loading its bucket now,
        // so that miss overlaps the accounting below and the locking.
        let mut cand = next_cand(&mut cands, &mut plain);
        if let Some((_, hb)) = cand {
            self.shards.prefetch_bucket(hb);
        }
        if !self.reserve(zone) {
            // As in Open vSwitch, the packet stays +new but nothing is remembered.
            self.c.new.fetch_add(1, Relaxed);
            self.c.refused.fetch_add(1, Relaxed);
            return NewOutcome::Done(res);
        }
        let helper = Helper::for_conn(req.alg, o.proto);
        c.flags |= match helper {
            Some(Helper::Ftp) => F_FTP,
            Some(Helper::Tftp) => F_TFTP,
            None => 0,
        };
        if let Some(e) = &exp {
            c.flags |= F_RELATED;
            c.mark = e.mark;
            c.set_label_u128(e.label);
        }
        apply_mark_label(&mut c, req);
        c.expires = now.saturating_add(self.timeout(&c));
        let a = Shards::shard_of(ha);
        // Read before the first candidate is checked, so that a connection going at any point
        // of the search, that one included, shows as a change.
        let released = self.released.load(Acquire);
        // Once the first candidate is taken: the range being searched.
        let mut search: Option<nat::RangeKey> = None;
        let mut known_full = false;
        while let Some((r, hb)) = cand.take() {
            let sb = Shards::shard_of(hb);
            let (mut ga, gb) = self.shards.lock_pair(a, sb);
            if ga.contains(&o, ha) {
                drop((ga, gb));
                self.unreserve(zone);
                self.c.new.fetch_add(1, Relaxed);
                return NewOutcome::Retry;
            }
            let taken = match &gb {
                Some(g) => g.contains(&r, hb),
                None => ga.contains(&r, hb),
            };
            if taken {
                drop((ga, gb));
                if let (None, Some(it)) = (&search, &cands) {
                    let key = it.range_key();
                    if self.range_known_full(&key, released) {
                        known_full = true;
                        break;
                    }
                    search = Some(key);
                }
                cand = next_cand(&mut cands, &mut plain);
                continue;
            }
            // A range that contains the original tuple may leave it unchanged.
            if r != o.reverse() {
                c.flags |= nat_flag;
            }
            if !c.set_reply(&r) {
                // Every candidate translates one side only; anything else is a bug, and
                // better refused than recorded wrong.
                debug_assert!(false, "unrepresentable reply tuple {r:?} for {o:?}");
                break;
            }
            if c.flags & F_ALG_STATE != 0 {
                // Under the shard lock, so the removal that forgets it cannot come first.
                self.alg_commit(&c, helper, exp.as_ref(), now);
            }
            match gb {
                None => {
                    ga.add_conn(c, ha, hb, true);
                }
                Some(mut gb) => {
                    let (idx, gen) = ga.add_conn(c, ha, hb, false);
                    let at = ga.conns.get(idx) as *const Conn as usize;
                    let k = gb.add_key(r, hb, (a as u32, idx, gen), at);
                    ga.conns.get_mut(idx).set_remote_key(sb as u32, k);
                }
            }
            ga.committed += 1;
            res.mark = c.mark;
            res.label = c.label_u128();
            if c.flags & (F_SNAT | F_DNAT) != 0 {
                res.state |= nat_bits(c.flags, false);
                packet::rewrite(b.bytes(), p, &r.reverse());
            }
            return NewOutcome::Done(res);
        }
        self.unreserve(zone);
        self.c.new.fetch_add(1, Relaxed);
        if nat_flag != 0 {
            self.c.nat_exhausted.fetch_add(1, Relaxed);
        }
        if known_full {
            self.c.nat_exhausted_known.fetch_add(1, Relaxed);
        } else if let (Some(key), Some(it)) = (search, &cands) {
            if it.gave_all() {
                self.remember_full_range(key, released);
            }
        }
        // Never let a packet that should have been translated leave untranslated.
        NewOutcome::Done(self.bad(zone))
    }

    /// Whether a search of `key` that began when `released` connections had gone found the
    /// range full: then it still is, if none has gone since (commits only take tuples).
    fn range_known_full(&self, key: &nat::RangeKey, released: u64) -> bool {
        let full = self.full_ranges.lock().unwrap_or_else(|e| e.into_inner());
        full[key.hash(self.cfg.seed) as usize % FULL_RANGE_SLOTS] == Some((*key, released))
    }

    fn remember_full_range(&self, key: nat::RangeKey, released: u64) {
        let mut full = self.full_ranges.lock().unwrap_or_else(|e| e.into_inner());
        full[key.hash(self.cfg.seed) as usize % FULL_RANGE_SLOTS] = Some((key, released));
    }

    /// Records the helper state of connection `c`, just committed (with `helper`, or from
    /// expectation `exp`). A TFTP connection announces its data connection at once: the
    /// server answers from another port, to the client's address and port.
    fn alg_commit(&self, c: &Conn, helper: Option<Helper>, exp: Option<&Expect>, now: Nanos) {
        let mut at = self.alg_lock();
        if let Some(e) = exp {
            at.related.insert(c.orig, e.parent);
        }
        if let Some(h) = helper {
            at.helpers.insert(
                c.orig,
                HelperConn {
                    helper: h,
                    seq: Default::default(),
                    expects: Vec::new(),
                },
            );
            if h == Helper::Tftp {
                // The client's port as the server sees it (Open vSwitch takes the port before
                // NAT, which differs only when SNAT moved it, and then misses the answer).
                let port = c.reply().dport;
                self.expect(&mut at, c, false, port, now);
            }
        }
    }

    /// An ICMP error: `+rel` when its embedded datagram belongs to a connection, translated
    /// back (embedded header and outer addresses) under NAT.
    fn related(&self, d: &mut [u8], p: &Parsed, inner_l3: usize, req: &CtRequest<'_>) -> CtResult {
        let Some(inner) = packet::parse_inner(d, inner_l3, req.zone) else {
            return self.bad(req.zone);
        };
        if inner.tuple.v6 != p.tuple.v6 {
            return self.bad(req.zone);
        }
        // The embedded datagram travelled the opposite way to the error.
        let key = inner.tuple.reverse();
        let Lookup::Hit(g, idx, reply) = self.lookup(&key) else {
            return self.bad(req.zone);
        };
        let c = *g.conns.get(idx);
        drop(g);
        self.c.related.fetch_add(1, Relaxed);
        let mut state = CS_TRACKED | CS_RELATED | if reply { CS_REPLY_DIR } else { 0 };
        if req.nat.is_some() && c.flags & (F_SNAT | F_DNAT) != 0 {
            state |= nat_bits(c.flags, reply);
            let rep = c.reply();
            let (pre, post) = if reply {
                (rep, c.orig.reverse())
            } else {
                (c.orig, rep.reverse())
            };
            let inner_to = if reply { c.orig } else { rep };
            packet::rewrite(
                d,
                &inner,
                &Tuple {
                    zone: inner.tuple.zone,
                    ..inner_to
                },
            );
            let src = if p.tuple.src == pre.src {
                post.src
            } else {
                p.tuple.src
            };
            packet::rewrite_addrs(d, p, src, post.dst);
            packet::refresh_icmp_checksum(d, p);
        }
        CtResult {
            state,
            zone: req.zone,
            mark: c.mark,
            label: c.label_u128(),
            orig: Some(ct_tuple(&c.orig)),
        }
    }

    fn fragment(
        &self,
        frame: &mut Frame<'_>,
        l3: usize,
        req: &CtRequest<'_>,
        now: Nanos,
    ) -> CtVerdict {
        let outcome = {
            let mut f = self.frags.lock().unwrap_or_else(|e| e.into_inner());
            let expired = f.expire(now);
            self.c.frag_dropped.fetch_add(expired, Relaxed);
            f.process(frame.data(), l3, req.zone, now, &self.cfg.frag)
        };
        match outcome {
            FragOutcome::Held => {
                self.c.frag_held.fetch_add(1, Relaxed);
                CtVerdict::Held
            }
            FragOutcome::Dropped(n) => {
                self.c.frag_dropped.fetch_add(n, Relaxed);
                CtVerdict::Tracked(self.bad(req.zone))
            }
            FragOutcome::Complete(mut buf, l3) => {
                self.c.frag_held.fetch_add(1, Relaxed);
                self.c.frag_reassembled.fetch_add(1, Relaxed);
                let result = match self.track(&mut buf, l3, req, now) {
                    Ok(CtVerdict::Tracked(r)) => r,
                    _ => self.bad(req.zone),
                };
                CtVerdict::Reassembled { frame: buf, result }
            }
        }
    }

    /// Examines at most `budget` connection slots (continuing where the previous call stopped)
    /// and removes those whose timeout has passed; also drops timed-out fragments. Returns the
    /// number of connections removed.
    pub fn sweep(&self, now: Nanos, budget: usize) -> usize {
        {
            let mut f = self.frags.lock().unwrap_or_else(|e| e.into_inner());
            let n = f.expire(now);
            self.c.frag_dropped.fetch_add(n, Relaxed);
        }
        let mut left = budget;
        let mut removed = 0;
        let mut shards_seen = 0;
        while left > 0 && shards_seen < SHARDS {
            let si = self.sweep_shard.load(Relaxed) % SHARDS;
            let mut g = self.shards.lock(si);
            let hw = g.conns.high_water();
            let mut pos = g.sweep_pos;
            // One slice per hold, as dump and flush walk, whatever the budget left.
            let slice_end = hw.min(pos.saturating_add(WALK_SLICE));
            let mut remote = Vec::new();
            while left > 0 && pos < slice_end {
                let expired = g
                    .conns
                    .slot(pos)
                    .is_some_and(|c| c.flags & F_LIVE != 0 && c.expires <= now);
                if expired {
                    self.remove_walked(&mut g, pos, &mut remote);
                    removed += 1;
                }
                pos += 1;
                left -= 1;
            }
            let done = pos >= hw;
            g.sweep_pos = if done { 0 } else { pos };
            drop(g);
            self.remove_remote_keys(&mut remote);
            if done {
                self.sweep_shard.store(si + 1, Relaxed);
                shards_seen += 1;
            } else if left > 0 {
                self.shards.let_waiters_in(si);
            }
        }
        self.c.expired.fetch_add(removed as u64, Relaxed);
        if self.n_expect.load(Relaxed) != 0 {
            let mut at = self.alg_lock();
            at.expire(now);
            self.n_expect.store(at.expects.len(), Relaxed);
        }
        removed
    }

    /// Removes every connection (of `zone`, if given). Returns how many were removed.
    ///
    /// A connection committed while the flush runs may survive it (or not): each shard is
    /// walked in slices, so the datapath never waits for a whole shard.
    pub fn flush(&self, zone: Option<u16>) -> usize {
        // Connections removed, and reply keys in other shards, to go once a slice's lock is
        // released.
        let mut st = (0, Vec::new());
        for si in 0..SHARDS {
            self.walk_shard(
                si,
                zone,
                &mut st,
                |g, i, (n, remote)| {
                    self.remove_walked(g, i, remote);
                    *n += 1;
                },
                |(_, remote)| self.remove_remote_keys(remote),
            );
        }
        // Their parents are gone already; this catches any whose parent lives in another zone.
        let mut at = self.alg_lock();
        at.flush(zone);
        self.n_expect.store(at.expects.len(), Relaxed);
        st.0
    }

    /// Removes the connection that `t` (either direction's tuple, zone included) belongs to.
    pub fn flush_tuple(&self, t: &Tuple) -> Result<(), CtError> {
        match self.lookup(t) {
            Lookup::Hit(g, idx, _) => {
                self.remove(g, idx);
                Ok(())
            }
            Lookup::Miss => Err(CtError::NotFound),
        }
    }

    /// One line per connection (of `zone`, if given) in the format of
    /// `ovs-appctl dpctl/dump-conntrack`.
    ///
    /// Records are copied out a slice at a time and formatted with no lock held, so the
    /// datapath waits for at most one slice's copy, never for a shard's formatting (tens of
    /// milliseconds per shard at the default limit of connections). The dump is not a
    /// snapshot: a connection committed or removed while it runs may or may not be listed;
    /// none is listed twice (records never move while they live).
    pub fn dump(&self, zone: Option<u16>) -> Vec<String> {
        let mut st = (Vec::new(), Vec::<Conn>::with_capacity(WALK_SLICE as usize));
        for si in 0..SHARDS {
            self.walk_shard(
                si,
                zone,
                &mut st,
                |g, i, (_, copied)| copied.push(*g.conns.get(i)),
                |(out, copied)| {
                    out.extend(copied.iter().map(format_conn));
                    copied.clear();
                },
            );
        }
        st.0
    }

    /// Removes live connection `i` of the locked shard `g` for a sweep or a flush, as
    /// [`Tracker::remove`] does for one: its helper state forgotten, and its reply key, when
    /// another shard indexes it, left in `remote` for [`Tracker::remove_remote_keys`] once `g`
    /// is released (two shards are only ever held in index order, which a walk cannot keep).
    /// Its zone is uncounted once its last entry is gone, here or there.
    fn remove_walked(&self, g: &mut ShardGuard<'_>, i: u32, remote: &mut Vec<RemoteKey>) {
        let c = g.conns.get(i);
        let zone = c.orig.zone;
        if c.flags & F_ALG_STATE != 0 {
            let o = c.orig;
            self.alg_forget(&o);
        }
        match g.remove_conn(i, self.cfg.seed) {
            Some(key) => remote.push((key, zone)),
            None => self.release(zone),
        }
    }

    /// Removes the reply keys [`Tracker::remove_walked`] left for other shards.
    fn remove_remote_keys(&self, remote: &mut Vec<RemoteKey>) {
        for ((s, k, gen), zone) in remote.drain(..) {
            self.shards
                .lock(s as usize)
                .remove_key(k, gen, self.cfg.seed);
            self.release(zone);
        }
    }

    /// Walks shard `si`'s record slots in slices of [`WALK_SLICE`], holding the shard's lock
    /// for one slice at a time: `each` gets the locked shard and the slot of every live
    /// connection (of `zone`, if given) in the slice, `after` runs once the lock is released
    /// again, before the next slice (which first lets any thread waiting for the shard take
    /// it); both share `state`. Slots allocated past the walk's position while it runs are
    /// visited too; slots before it are not visited again.
    fn walk_shard<S>(
        &self,
        si: usize,
        zone: Option<u16>,
        state: &mut S,
        mut each: impl FnMut(&mut ShardGuard<'_>, u32, &mut S),
        mut after: impl FnMut(&mut S),
    ) {
        let mut pos: u32 = 0;
        loop {
            let mut g = self.shards.lock(si);
            let high_water = g.conns.high_water();
            let end = high_water.min(pos.saturating_add(WALK_SLICE));
            for i in pos..end {
                let Some(c) = g.conns.slot(i) else { continue };
                if c.flags & F_LIVE != 0 && zone.is_none_or(|z| z == c.orig.zone) {
                    each(&mut g, i, state);
                }
            }
            drop(g);
            after(state);
            if end >= high_water {
                return;
            }
            self.shards.let_waiters_in(si);
            pos = end;
        }
    }
}

fn apply_mark_label(c: &mut Conn, req: &CtRequest<'_>) {
    if let Some((v, m)) = req.set_mark {
        c.mark = (c.mark & !m) | (v & m);
    }
    if let Some((v, m)) = req.set_label {
        let l = (c.label_u128() & !m) | (v & m);
        c.set_label_u128(l);
    }
}

fn proto_name(p: u8) -> Option<&'static str> {
    Some(match p {
        tuple::IPPROTO_TCP => "tcp",
        tuple::IPPROTO_UDP => "udp",
        tuple::IPPROTO_ICMP => "icmp",
        tuple::IPPROTO_ICMPV6 => "icmp6",
        132 => "sctp",
        _ => return None,
    })
}

fn format_tuple(s: &mut String, name: &str, t: &Tuple) {
    let _ = write!(
        s,
        "{name}=(src={},dst={},",
        t.src.to_ip(t.v6),
        t.dst.to_ip(t.v6)
    );
    if tuple::is_icmp(t.proto) {
        let _ = write!(
            s,
            "id={},type={},code={})",
            t.sport,
            t.dport >> 8,
            t.dport & 0xff
        );
    } else {
        let _ = write!(s, "sport={},dport={})", t.sport, t.dport);
    }
}

/// A connection as `dpctl/dump-conntrack` prints it (zone, mark and labels only when set).
pub fn format_conn(c: &Conn) -> String {
    let mut s = String::with_capacity(160);
    match proto_name(c.orig.proto) {
        Some(n) => s.push_str(n),
        None => {
            let _ = write!(s, "{}", c.orig.proto);
        }
    }
    s.push(',');
    format_tuple(&mut s, "orig", &c.orig);
    s.push(',');
    format_tuple(&mut s, "reply", &c.reply());
    if c.orig.zone != 0 {
        let _ = write!(s, ",zone={}", c.orig.zone);
    }
    if c.mark != 0 {
        let _ = write!(s, ",mark={}", c.mark);
    }
    if c.label_u128() != 0 {
        let _ = write!(s, ",labels={:#x}", c.label_u128());
    }
    if c.orig.proto == tuple::IPPROTO_TCP {
        let _ = write!(
            s,
            ",protoinfo=(state={})",
            TcpState::from_u8(c.state).name()
        );
    }
    let helper = match c.flags & (F_FTP | F_TFTP) {
        F_FTP => Some(Helper::Ftp),
        F_TFTP => Some(Helper::Tftp),
        _ => None,
    };
    if let Some(h) = helper {
        let _ = write!(s, ",helper={}", h.name());
    }
    s
}

impl Tracker {
    /// Up to [`pipeline::BATCH_SIZE`] items of [`ConnTracker::execute_batch`]: parse and hash
    /// every frame and prefetch its bucket, then prefetch the records those buckets point at
    /// (one short lock per frame), then, for reply-direction frames indexed through a key
    /// record, the connections those point at, then track each frame in order as `execute`
    /// would. The prefetch passes only warm caches; the last pass does every lookup for real, so the
    /// outcome is that of one `execute` after the other. When no lookup can hit
    /// ([`Tracker::lookup_can_hit`]), there is nothing to hash or prefetch, and the frames go
    /// from the parse straight to their answers.
    fn execute_chunk(
        &self,
        items: &mut [CtItem<'_, '_>],
        req: &CtRequest<'_>,
        now: Nanos,
        out: &mut [Option<CtVerdict>],
    ) {
        const N: usize = pipeline::BATCH_SIZE;
        // Each frame's parse is written in place: a whole `Parsed` returned and copied into
        // an array of options cost more than the parse's own checks.
        let mut parsed = [Parsed::EMPTY; N];
        let mut probes = [Probe::new(0); N];
        let mut ready = [false; N];
        for ((it, p), ok) in items
            .iter_mut()
            .zip(parsed.iter_mut())
            .zip(ready.iter_mut())
        {
            if it.key.nw_frag() & FRAG_ANY != 0 {
                continue;
            }
            if self.parse(&mut *it.frame, it.l3_ofs, req.zone, p).is_err() {
                continue;
            }
            if matches!(p.kind, L4::IcmpError { .. } | L4::IcmpOther) {
                continue;
            }
            *ok = true;
        }
        // Decided once for the batch, so every frame sees the same answer.
        let uncommitted = if self.lookup_can_hit(req) {
            self.prefetch_chunk(&parsed, &mut probes, &ready);
            self.track_chunk::<true>(items, &parsed, &probes, &ready, req, now, out)
        } else {
            self.track_chunk::<false>(items, &parsed, &probes, &ready, req, now, out)
        };
        self.count_uncommitted(uncommitted);
    }

    /// The prefetch passes of [`Tracker::execute_chunk`] over the frames parsed (`ready`):
    /// each tuple hashed into its probe and its bucket loaded, then the records those buckets
    /// name, then for reply-direction frames indexed through a key record the connections
    /// those point at.
    #[inline(always)]
    fn prefetch_chunk(&self, parsed: &[Parsed], probes: &mut [Probe], ready: &[bool]) {
        const N: usize = pipeline::BATCH_SIZE;
        // Hashing in a pass of its own: reading a tuple back as whole words right after
        // `parse_into` stored it field by field would wait for those stores to land.
        for ((p, pr), _) in parsed
            .iter()
            .zip(probes.iter_mut())
            .zip(ready)
            .filter(|(_, ok)| **ok)
        {
            let h = p.tuple.hash(self.cfg.seed);
            self.shards.prefetch_bucket(h);
            *pr = Probe::new(h);
        }
        // The records those buckets name, and the entry each lookup will try first.
        let mut remote = [false; N];
        for ((pr, ok), r) in probes.iter_mut().zip(ready).zip(remote.iter_mut()) {
            if *ok {
                let h = pr.hash;
                (*pr, *r) = self.shards.lock(Shards::shard_of(h)).prefetch(h);
            }
        }
        // Reply-direction frames whose connection lives in another shard: a third pass reads
        // the key records just loaded and starts loading the connections they point at.
        for (pr, _) in probes.iter().zip(remote).filter(|(_, r)| *r) {
            let h = pr.hash;
            self.shards.lock(Shards::shard_of(h)).prefetch_remote(h);
        }
    }

    /// The last pass of [`Tracker::execute_chunk`]: each frame tracked in order, the parsed
    /// ones through [`Tracker::track_parsed`] (with lookups or without, decided once for the
    /// batch), the rest through `execute`. Returns the lookups that missed without a commit.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    fn track_chunk<const LOOKUP: bool>(
        &self,
        items: &mut [CtItem<'_, '_>],
        parsed: &[Parsed],
        probes: &[Probe],
        ready: &[bool],
        req: &CtRequest<'_>,
        now: Nanos,
        out: &mut [Option<CtVerdict>],
    ) -> u64 {
        let mut uncommitted = 0;
        for (((it, o), p), (probe, &ok)) in items
            .iter_mut()
            .zip(out.iter_mut())
            .zip(parsed)
            .zip(probes.iter().zip(ready))
        {
            if ok {
                let f = &mut *it.frame;
                self.track_parsed::<LOOKUP, _>(f, p, *probe, req, now, o, &mut uncommitted);
            } else {
                *o = Some(self.execute(it.frame, it.l3_ofs, it.key, req, now));
            }
        }
        uncommitted
    }
}

impl ConnTracker for Tracker {
    fn prefers_batches(&self) -> bool {
        self.count.load(Relaxed) >= self.cfg.prefetch_min_conns
    }

    fn execute_batch(
        &self,
        items: &mut [CtItem<'_, '_>],
        req: &CtRequest<'_>,
        now: Nanos,
        out: &mut [Option<CtVerdict>],
    ) -> usize {
        let n = items.len().min(out.len());
        if !self.prefers_batches() {
            return pipeline::ct::execute_each(self, items, req, now, out);
        }
        for (items, out) in items[..n]
            .chunks_mut(pipeline::BATCH_SIZE)
            .zip(out[..n].chunks_mut(pipeline::BATCH_SIZE))
        {
            self.execute_chunk(items, req, now, out);
        }
        n
    }

    fn execute(
        &self,
        frame: &mut Frame<'_>,
        l3_ofs: usize,
        key: &FlowKey,
        req: &CtRequest<'_>,
        now: Nanos,
    ) -> CtVerdict {
        if key.nw_frag() & FRAG_ANY != 0 {
            return self.fragment(frame, l3_ofs, req, now);
        }
        match self.track(frame, l3_ofs, req, now) {
            Ok(v) => v,
            // The key did not say "fragment" but the header does: reassemble all the same.
            Err(_) => self.fragment(frame, l3_ofs, req, now),
        }
    }
}

#[cfg(test)]
mod tests;
