//! Storage of connections: sharded hash tables over compact connection records.
//!
//! This module owns memory layout and locking. Each of [`SHARDS`] shards has its own mutex, a slab
//! of connection records and a slab of reply-key records, and an open-addressing index of 4-byte
//! entries into those slabs, each kept beside 32 bits of its hash in 64-byte buckets (the key is
//! compared in the slab only on a tag match, so the index holds no copies and a lookup touches one
//! bucket line and the one record it wants). A connection lives in the shard of its original
//! tuple's hash; its reply tuple is indexed in the shard of the reply tuple's hash, through a small
//! key record that points back at the connection, or directly when both land in the same shard, as
//! they always do without NAT (a tuple and its reverse hash alike but for the top bit, which keeps
//! the two directions' tags apart; shard and bucket come from lower bits). A lookup therefore takes
//! one shard lock, or two in sequence for a reply-direction packet whose connection lives elsewhere
//! — never a global lock. It must not parse frames or decide connection semantics.

use crate::lock::{ShardMutex, ShardMutexGuard};
use crate::packet::{NatEnd, Side};
use crate::tcp::Peer;
use crate::tuple::{is_icmp, Addr, Tuple};
use std::sync::atomic::{AtomicPtr, AtomicU32, Ordering::Relaxed};
use std::sync::Arc;

pub const SHARDS: usize = 1 << SHARD_BITS;
/// Bytes of one slab chunk: just under 128 KiB, not exactly. An allocator keeps bookkeeping
/// beside a large block, so a block of exactly 128 KiB takes more than 128 KiB of address space,
/// and on huge pages all of it is resident: under mimalloc (the `xvs` daemon's allocator) 200 MiB
/// of 128 KiB blocks took 256 MiB resident, of blocks 1 KiB smaller 202 MiB.
pub const CHUNK_BYTES: usize = 127 * 1024;
/// Connection records per slab chunk.
const CONN_CHUNK: usize = CHUNK_BYTES / std::mem::size_of::<Conn>();
/// Key records per slab chunk.
const KEY_CHUNK: usize = CHUNK_BYTES / std::mem::size_of::<KeyRec>();

/// Entry tags in the hash tables (top two bits of the 32-bit entry).
const TAG_SHIFT: u32 = 30;
const IDX_MASK: u32 = (1 << TAG_SHIFT) - 1;
pub const E_ORIG: u32 = 0;
pub const E_REPLY_LOCAL: u32 = 1;
pub const E_KEY: u32 = 2;
pub const NO_KEY: u32 = u32::MAX;

// Connection flags.
pub const F_LIVE: u8 = 0x01;
pub const F_SEEN_REPLY: u8 = 0x02;
pub const F_SNAT: u8 = 0x04;
pub const F_DNAT: u8 = 0x08;
/// Committed with `alg=ftp`: its packets go through the FTP helper (state in
/// [`crate::alg::AlgTable`]).
pub const F_FTP: u8 = 0x10;
/// Created from an expectation: `+rel` for life, parent tuple in [`crate::alg::AlgTable`].
pub const F_RELATED: u8 = 0x20;
/// Committed with `alg=tftp` (its expectation was made at commit; its packets need nothing).
pub const F_TFTP: u8 = 0x40;
/// Flags whose packets leave the established fast path for the helpers' one.
pub const F_ALG_PATH: u8 = F_FTP | F_RELATED;
/// Flags that have state in the helpers' table to forget when the connection goes.
pub const F_ALG_STATE: u8 = F_FTP | F_TFTP | F_RELATED;

/// One connection: 128 bytes on a 64-byte boundary, i.e. exactly two cache lines. The first
/// line holds what every packet reads (the original tuple it is looked up by, timeout, flags,
/// state, mark, where the reply key lives, the translated port); the second what a tracked
/// packet needs next (TCP windows, translated address, label). The reply tuple is not stored:
/// it is the original reversed with at most one address and port translated, rebuilt by
/// [`Conn::reply`], which keeps the record to two lines instead of three or four.
#[derive(Clone, Copy, Debug, Default)]
#[repr(C, align(64))]
pub struct Conn {
    pub orig: Tuple,
    pub expires: u64,
    pub mark: u32,
    /// Bumped whenever the slot is freed, so stale references are detected.
    pub gen: u32,
    /// Shard (top `SHARD_BITS` bits) and slot of the reply key record, or [`NO_KEY`] when
    /// the reply tuple is indexed directly in this shard.
    pub rep: u32,
    /// The translated port (or ICMP identifier) of the reply tuple under [`F_SNAT`] or
    /// [`F_DNAT`].
    pub nat_port: u16,
    pub flags: u8,
    /// Protocol state (TCP: [`crate::tcp::TcpState`]).
    pub state: u8,
    /// The translated address of the reply tuple under [`F_SNAT`] or [`F_DNAT`].
    pub nat_addr: Addr,
    /// `ct_label`, most significant half first.
    pub label: [u64; 2],
    pub tcp: [Peer; 2],
}

impl Conn {
    pub fn label_u128(&self) -> u128 {
        ((self.label[0] as u128) << 64) | self.label[1] as u128
    }
    pub fn set_label_u128(&mut self, v: u128) {
        self.label = [(v >> 64) as u64, v as u64];
    }

    /// The reply tuple: the original reversed, with the translated address and port in place
    /// under SNAT (the reply's destination) or DNAT (the reply's source).
    #[inline]
    pub fn reply(&self) -> Tuple {
        let mut r = self.orig.reverse();
        if self.flags & F_SNAT != 0 {
            r.dst = self.nat_addr;
            if is_icmp(r.proto) {
                r.sport = self.nat_port;
            } else {
                r.dport = self.nat_port;
            }
        } else if self.flags & F_DNAT != 0 {
            r.src = self.nat_addr;
            r.sport = self.nat_port;
        }
        r
    }

    /// What a packet in the original direction becomes under the connection's NAT: the reply
    /// tuple reversed (`self.reply().reverse()`), built directly, without constructing and
    /// reversing two tuples per packet.
    #[inline]
    pub fn orig_target(&self) -> Tuple {
        let mut t = self.orig;
        if self.flags & F_SNAT != 0 {
            t.src = self.nat_addr;
            t.sport = self.nat_port;
        } else if self.flags & F_DNAT != 0 {
            t.dst = self.nat_addr;
            if is_icmp(t.proto) {
                t.sport = self.nat_port;
            } else {
                t.dport = self.nat_port;
            }
        }
        t
    }

    /// What a packet in direction `reply` becomes under the connection's NAT.
    #[inline]
    pub fn nat_target(&self, reply: bool) -> Tuple {
        if reply {
            self.orig.reverse()
        } else {
            self.orig_target()
        }
    }

    /// [`Conn::nat_target`] as the one end it changes, for TCP and UDP under SNAT or DNAT
    /// (ICMP's identifier and types do not map onto one end); `None` otherwise. Inlined by
    /// force: every NATed packet's path.
    #[inline(always)]
    pub fn nat_end(&self, reply: bool) -> Option<NatEnd> {
        if is_icmp(self.orig.proto) {
            return None;
        }
        let o = &self.orig;
        let (side, addr, port) = match (self.flags & (F_SNAT | F_DNAT), reply) {
            (F_SNAT, false) => (Side::Src, self.nat_addr, self.nat_port),
            (F_SNAT, true) => (Side::Dst, o.src, o.sport),
            (F_DNAT, false) => (Side::Dst, self.nat_addr, self.nat_port),
            (F_DNAT, true) => (Side::Src, o.dst, o.dport),
            _ => return None,
        };
        Some(NatEnd { side, addr, port })
    }

    /// Records reply tuple `r` (call after setting the NAT flags). `r` must differ from the
    /// reversed original only where [`Conn::reply`] puts the translation, as every NAT
    /// candidate does; false (nothing recorded) otherwise.
    pub fn set_reply(&mut self, r: &Tuple) -> bool {
        if self.flags & F_SNAT != 0 {
            self.nat_addr = r.dst;
            self.nat_port = if is_icmp(r.proto) { r.sport } else { r.dport };
        } else if self.flags & F_DNAT != 0 {
            self.nat_addr = r.src;
            self.nat_port = r.sport;
        }
        self.reply() == *r
    }

    /// Where the reply key record lives, when it is in another shard: (shard, slot).
    #[inline]
    pub fn remote_key(&self) -> Option<(u32, u32)> {
        (self.rep != NO_KEY).then_some((self.rep >> REF_IDX_BITS, self.rep & MAX_SLOT))
    }

    pub fn set_remote_key(&mut self, shard: u32, slot: u32) {
        self.rep = shard << REF_IDX_BITS | slot;
    }
}

/// A reply tuple indexed away from its connection's shard (56 bytes).
#[derive(Clone, Copy, Debug, Default)]
pub struct KeyRec {
    pub tuple: Tuple,
    /// Shard (top `SHARD_BITS` bits) and slot of the connection.
    pub conn: u32,
    pub gen: u32,
    /// Address of the connection record, only ever used to prefetch it: a batch learns it
    /// under this shard's lock, without the connection's. Records never move (slab chunks are
    /// neither moved nor freed while the tracker lives), and a stale value costs a useless
    /// prefetch, nothing else.
    pub conn_at: usize,
}

const SHARD_BITS: u32 = 6;
const REF_IDX_BITS: u32 = 32 - SHARD_BITS;
/// Slots per shard a key record can point at (far above any configured limit).
pub const MAX_SLOT: u32 = (1 << REF_IDX_BITS) - 1;

/// Fixed-size chunks of `N` records (no doubling on growth, so memory stays near the live count)
/// plus a free list. Chunks are arrays, not slices, so that a record's index within its chunk is
/// checked against a constant.
pub struct Slab<T, const N: usize> {
    chunks: Vec<Box<[T; N]>>,
    free: Vec<u32>,
    next: u32,
}

impl<T: Copy + Default, const N: usize> Slab<T, N> {
    /// Slot numbers per chunk: `N` rounded up to a power of two, so that finding a record takes a
    /// shift and a mask, not a division by `N` (30 instructions per established frame). The
    /// numbers past `N` in each chunk's span are never handed out.
    const SPAN: usize = N.next_power_of_two();

    fn new() -> Self {
        Slab {
            chunks: Vec::new(),
            free: Vec::new(),
            next: 0,
        }
    }
    fn alloc(&mut self, v: T) -> u32 {
        let i = self.alloc_slot();
        *self.get_mut(i) = v;
        i
    }
    /// A free slot, with whatever its previous occupant left (so generations survive reuse).
    fn alloc_slot(&mut self) -> u32 {
        match self.free.pop() {
            Some(i) => i,
            None => {
                let mut i = self.next;
                if i as usize % Self::SPAN == N {
                    i += (Self::SPAN - N) as u32;
                }
                if i as usize / Self::SPAN >= self.chunks.len() {
                    let chunk: Box<[T; N]> = vec![T::default(); N]
                        .into_boxed_slice()
                        .try_into()
                        .unwrap_or_else(|_| unreachable!("a vector of N elements"));
                    self.chunks.push(chunk);
                }
                self.next = i + 1;
                i
            }
        }
    }
    /// The record in slot `i`, which this slab handed out.
    #[inline]
    pub fn get(&self, i: u32) -> &T {
        &self.chunks[i as usize / Self::SPAN][i as usize % Self::SPAN]
    }
    #[inline]
    pub fn get_mut(&mut self, i: u32) -> &mut T {
        &mut self.chunks[i as usize / Self::SPAN][i as usize % Self::SPAN]
    }
    /// The record in slot `i`, or `None` for a number no slot has (walks below the high water
    /// mark meet those at each chunk's end).
    #[inline]
    pub fn slot(&self, i: u32) -> Option<&T> {
        self.chunks
            .get(i as usize / Self::SPAN)?
            .get(i as usize % Self::SPAN)
    }
    /// One past the highest slot number ever handed out (the walks go up to it, through
    /// [`Slab::slot`]).
    pub fn high_water(&self) -> u32 {
        self.next
    }
    fn release(&mut self, i: u32) {
        self.free.push(i);
    }
    /// Bytes held: every chunk whole, and the free list's capacity.
    fn bytes(&self) -> usize {
        self.chunks.len() * std::mem::size_of::<[T; N]>() + self.free.capacity() * 4
    }
    /// Back to the state `new` gives (every slot to its default, generations included), keeping
    /// the chunks allocated.
    fn reset(&mut self) {
        for chunk in &mut self.chunks {
            chunk.fill(T::default());
        }
        self.free.clear();
        self.next = 0;
    }
}

/// Slots per bucket: seven (tag, entry) pairs and an overflow count fill one 64-byte line.
const SLOTS: usize = 7;
/// An unused slot's entry.
const EMPTY: u32 = u32::MAX;
/// Grow when more than this share (in eighths) of the slots is used; linear probing over
/// 7-slot buckets stays short below it.
const MAX_LOAD_EIGHTHS: usize = 6;

/// One cache line of the index: a probe reads the tags (32 hash bits each) and touches a
/// record only on a tag match, so a lookup costs this line plus the record it wants.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Bucket {
    tags: [u32; SLOTS],
    /// Entries living past this bucket because it was full when they were inserted: a probe
    /// that misses here goes on only while this is non-zero.
    overflow: u32,
    ents: [u32; SLOTS],
}

impl Bucket {
    const EMPTY: Bucket = Bucket {
        tags: [0; SLOTS],
        overflow: 0,
        ents: [EMPTY; SLOTS],
    };

    /// Slots whose tag equals `tag` (bit i for slot i).
    #[inline]
    fn matches(&self, tag: u32) -> u32 {
        let mut m = 0;
        for i in 0..SLOTS {
            m |= ((self.tags[i] == tag) as u32) << i;
        }
        m
    }

    #[inline]
    fn free_slot(&self) -> Option<usize> {
        self.ents.iter().position(|&e| e == EMPTY)
    }
}

/// Asks the CPU to start loading the cache line at `p` without waiting for it.
///
/// Batches use it to overlap the cache misses of many frames. It is one of the crate's two
/// places of `unsafe` (the other is the shard lock, [`crate::lock`]): the prefetch instruction
/// is only a hint — it never faults, never reads into the program, and has no effect the
/// program can observe, so `p` may be stale or dangling (a bucket array replaced by a
/// concurrent resize) without harm.
#[inline(always)]
#[allow(unsafe_code)]
pub fn prefetch<T>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: PREFETCHT0 performs no architectural memory access and cannot fault.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p as *const i8)
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// Prefetches every cache line of `*r`.
#[inline(always)]
fn prefetch_record<T>(r: &T) {
    prefetch_lines(r as *const T as *const u8, std::mem::size_of::<T>());
}

/// Prefetches every cache line of the `n` bytes at `p`.
#[inline(always)]
fn prefetch_lines(p: *const u8, n: usize) {
    let mut o = 0;
    while o < n {
        prefetch(p.wrapping_add(o));
        o += 64;
    }
    prefetch(p.wrapping_add(n - 1));
}

/// Where a shard's bucket array is, published outside its lock so a batch can prefetch the
/// bucket a frame will probe before taking the lock. Only ever used as a prefetch address: a
/// stale value costs a useless prefetch, nothing else.
pub struct IndexHint {
    base: AtomicPtr<Bucket>,
    mask: AtomicU32,
}

impl IndexHint {
    #[inline]
    pub fn prefetch(&self, h: u64) {
        let i = tag_of(h) & self.mask.load(Relaxed);
        prefetch(self.base.load(Relaxed).wrapping_add(i as usize));
    }
}

/// The tag kept beside an entry: the hash's high half. Its low bits choose the bucket (the
/// shard uses the hash's low bits), so the table can grow without touching any record.
#[inline]
pub fn tag_of(h: u64) -> u32 {
    (h >> 32) as u32
}

/// Open-addressing index of one shard: tagged 4-byte entries in 64-byte buckets, linear
/// probing between buckets.
pub struct Index {
    buckets: Vec<Bucket>,
    mask: u32,
    len: usize,
    hint: Arc<IndexHint>,
}

impl Index {
    fn new() -> Index {
        let mut buckets = vec![Bucket::EMPTY; 16];
        let hint = Arc::new(IndexHint {
            base: AtomicPtr::new(buckets.as_mut_ptr()),
            mask: AtomicU32::new(15),
        });
        Index {
            buckets,
            mask: 15,
            len: 0,
            hint,
        }
    }

    /// Prefetches the records of the entries whose tag matches `tag` in its home bucket (the
    /// bucket itself is read, so it should have been prefetched first).
    #[inline]
    fn prefetch_matches(&self, tag: u32, mut each: impl FnMut(u32)) {
        if let Some(bk) = self.buckets.get((tag & self.mask) as usize) {
            let mut m = bk.matches(tag);
            while m != 0 {
                let i = m.trailing_zeros() as usize;
                m &= m - 1;
                if bk.ents[i] != EMPTY {
                    each(bk.ents[i]);
                }
            }
        }
    }

    /// The entry tagged `tag` for which `eq` holds.
    #[inline]
    fn find(&self, tag: u32, mut eq: impl FnMut(u32) -> bool) -> Option<u32> {
        let mut b = tag & self.mask;
        // Bounded: a probe never needs more than every bucket.
        for _ in 0..self.buckets.len() {
            let bk = self.buckets.get(b as usize)?;
            let mut m = bk.matches(tag);
            while m != 0 {
                let i = m.trailing_zeros() as usize;
                m &= m - 1;
                let e = bk.ents[i];
                if e != EMPTY && eq(e) {
                    return Some(e);
                }
            }
            if bk.overflow == 0 {
                return None;
            }
            b = (b + 1) & self.mask;
        }
        None
    }

    fn insert(&mut self, tag: u32, e: u32) {
        if (self.len + 1) * 8 > self.buckets.len() * SLOTS * MAX_LOAD_EIGHTHS {
            self.grow();
        }
        self.place(tag, e);
        self.len += 1;
    }

    fn place(&mut self, tag: u32, e: u32) {
        let mut b = tag & self.mask;
        loop {
            let bk = &mut self.buckets[b as usize];
            if let Some(i) = bk.free_slot() {
                bk.tags[i] = tag;
                bk.ents[i] = e;
                return;
            }
            bk.overflow += 1;
            b = (b + 1) & self.mask;
        }
    }

    /// Back to the 16 empty buckets `new` gives, republishing the hint.
    fn reset(&mut self) {
        if self.buckets.len() == 16 {
            self.buckets.fill(Bucket::EMPTY);
        } else {
            self.buckets = vec![Bucket::EMPTY; 16];
        }
        self.mask = 15;
        self.len = 0;
        self.hint.base.store(self.buckets.as_mut_ptr(), Relaxed);
        self.hint.mask.store(self.mask, Relaxed);
    }

    fn grow(&mut self) {
        let n = self.buckets.len() * 2;
        let old = std::mem::replace(&mut self.buckets, vec![Bucket::EMPTY; n]);
        self.mask = n as u32 - 1;
        for bk in &old {
            for i in 0..SLOTS {
                if bk.ents[i] != EMPTY {
                    self.place(bk.tags[i], bk.ents[i]);
                }
            }
        }
        self.hint.base.store(self.buckets.as_mut_ptr(), Relaxed);
        self.hint.mask.store(self.mask, Relaxed);
    }

    /// Removes entry `e` (tagged `tag`); false when it is not there.
    fn remove(&mut self, tag: u32, e: u32) -> bool {
        let home = tag & self.mask;
        let mut b = home;
        for _ in 0..self.buckets.len() {
            let bk = &mut self.buckets[b as usize];
            if let Some(i) = (0..SLOTS).find(|&i| bk.ents[i] == e && bk.tags[i] == tag) {
                bk.ents[i] = EMPTY;
                bk.tags[i] = 0;
                // The buckets it was pushed past no longer hold it up.
                let mut p = home;
                while p != b {
                    self.buckets[p as usize].overflow -= 1;
                    p = (p + 1) & self.mask;
                }
                self.len -= 1;
                return true;
            }
            if bk.overflow == 0 {
                return false;
            }
            b = (b + 1) & self.mask;
        }
        false
    }

    fn bytes(&self) -> usize {
        self.buckets.capacity() * std::mem::size_of::<Bucket>()
    }
}

pub struct Shard {
    pub index: Index,
    pub conns: Slab<Conn, CONN_CHUNK>,
    pub keys: Slab<KeyRec, KEY_CHUNK>,
    /// Lookups that found a connection (summed into the counters on demand).
    pub hits: u64,
    /// Connections committed into this shard (counted under the lock the commit holds anyway,
    /// rather than on a shared atomic every core would bounce).
    pub committed: u64,
    pub sweep_pos: u32,
}

/// Where a lookup starts: the tuple's hash, and the index entry a batch's prefetch pass found
/// under it, which [`Shard::find_probe`] tries first.
#[derive(Clone, Copy, Debug)]
pub struct Probe {
    pub hash: u64,
    seen: u32,
}

impl Probe {
    /// A lookup of hash `hash` with no entry seen beforehand.
    #[inline]
    pub fn new(hash: u64) -> Probe {
        Probe { hash, seen: EMPTY }
    }
}

/// Where a tuple was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Found {
    /// The connection is in this shard; `reply` tells the direction.
    Local { idx: u32, reply: bool },
    /// A reply tuple whose connection lives in another shard.
    Remote { shard: u32, idx: u32, gen: u32 },
}

/// Whether entry `e` indexes tuple `t`. With `LIVE`, also whether its record is in use, for an
/// entry that was guessed rather than found in the index (the record is found once for both
/// tests).
#[inline(always)]
fn entry_is<const LIVE: bool>(
    conns: &Slab<Conn, CONN_CHUNK>,
    keys: &Slab<KeyRec, KEY_CHUNK>,
    e: u32,
    t: &Tuple,
) -> bool {
    let i = e & IDX_MASK;
    match e >> TAG_SHIFT {
        E_ORIG => {
            let c = conns.get(i);
            (!LIVE || c.flags & F_LIVE != 0) && c.orig == *t
        }
        E_REPLY_LOCAL => {
            let c = conns.get(i);
            (!LIVE || c.flags & F_LIVE != 0) && c.reply() == *t
        }
        _ => {
            let k = keys.get(i);
            (!LIVE || k.conn != NO_KEY) && k.tuple == *t
        }
    }
}

impl Shard {
    fn new() -> Self {
        Shard {
            index: Index::new(),
            conns: Slab::new(),
            keys: Slab::new(),
            hits: 0,
            committed: 0,
            sweep_pos: 0,
        }
    }

    /// Forgets every record and returns to the state `new` gives, keeping slab memory.
    pub fn reset(&mut self) {
        self.hits = 0;
        self.committed = 0;
        self.sweep_pos = 0;
        // Every index entry names a slot of one of the slabs: with neither slab used since the
        // last reset (or `new`), the index is untouched too.
        if self.conns.high_water() == 0 && self.keys.high_water() == 0 {
            return;
        }
        self.index.reset();
        self.conns.reset();
        self.keys.reset();
    }

    #[inline]
    pub fn find(&self, t: &Tuple, h: u64) -> Option<Found> {
        let e = self.index.find(tag_of(h), |e| {
            entry_is::<false>(&self.conns, &self.keys, e, t)
        })?;
        Some(self.found(e))
    }

    /// [`Shard::find`], trying first the entry a batch's prefetch pass saw under the same hash
    /// (`Probe::seen`). That guess is checked here, under the lock: a live record that holds
    /// `t` is the one the index has for `t` (tuples are unique among live connections, and
    /// records join and leave the index under this lock together with their live flag), so a
    /// hit needs no second pass over the bucket; anything else falls back to the probe.
    /// Inlined by force: every lookup's path.
    #[inline(always)]
    pub fn find_probe(&self, t: &Tuple, probe: Probe) -> Option<Found> {
        let e = probe.seen;
        if e != EMPTY && entry_is::<true>(&self.conns, &self.keys, e, t) {
            return Some(self.found(e));
        }
        self.find(t, probe.hash)
    }

    /// What index entry `e` says about where its tuple's connection is.
    #[inline]
    fn found(&self, e: u32) -> Found {
        let i = e & IDX_MASK;
        match e >> TAG_SHIFT {
            E_ORIG => Found::Local {
                idx: i,
                reply: false,
            },
            E_REPLY_LOCAL => Found::Local {
                idx: i,
                reply: true,
            },
            _ => {
                let k = self.keys.get(i);
                // The connection is read next, after a lock switch: start loading it now.
                if k.conn_at != 0 {
                    prefetch_lines(k.conn_at as *const u8, std::mem::size_of::<Conn>());
                }
                Found::Remote {
                    shard: k.conn >> REF_IDX_BITS,
                    idx: k.conn & MAX_SLOT,
                    gen: k.gen,
                }
            }
        }
    }

    /// Prefetches the records a lookup of hash `h` will compare (one, almost always); returns
    /// the lookup's [`Probe`], which remembers the first of them, and whether one of them is a
    /// reply key record, whose connection lives in another shard: see
    /// [`Shard::prefetch_remote`].
    #[inline]
    pub fn prefetch(&self, h: u64) -> (Probe, bool) {
        let mut probe = Probe::new(h);
        let mut remote = false;
        self.index.prefetch_matches(tag_of(h), |e| {
            if probe.seen == EMPTY {
                probe.seen = e;
            }
            let i = e & IDX_MASK;
            match e >> TAG_SHIFT {
                E_ORIG | E_REPLY_LOCAL => prefetch_record(self.conns.get(i)),
                _ => {
                    prefetch_record(self.keys.get(i));
                    remote = true;
                }
            }
        });
        (probe, remote)
    }

    /// Prefetches the connection records that the reply key records matching hash `h` point
    /// at (those key records should have been prefetched a while before).
    #[inline]
    pub fn prefetch_remote(&self, h: u64) {
        self.index.prefetch_matches(tag_of(h), |e| {
            if e >> TAG_SHIFT == E_KEY {
                let at = self.keys.get(e & IDX_MASK).conn_at;
                if at != 0 {
                    prefetch_lines(at as *const u8, std::mem::size_of::<Conn>());
                }
            }
        });
    }

    /// Key record slots indexed in the home bucket of hash `h` (for tests).
    #[cfg(test)]
    pub fn index_entries_for_test(&self, h: u64) -> Vec<u32> {
        let mut v = Vec::new();
        self.index.prefetch_matches(tag_of(h), |e| {
            if e >> TAG_SHIFT == E_KEY {
                v.push(e & IDX_MASK);
            }
        });
        v
    }

    /// Prefetches the slot the next new connection will take, so that a commit following a
    /// lookup miss finds it in cache.
    #[inline]
    pub fn prefetch_free_conn(&self) {
        if let Some(&i) = self.conns.free.last() {
            prefetch_record(self.conns.get(i));
        }
    }

    pub fn contains(&self, t: &Tuple, h: u64) -> bool {
        self.index
            .find(tag_of(h), |e| {
                entry_is::<false>(&self.conns, &self.keys, e, t)
            })
            .is_some()
    }

    fn insert_entry(&mut self, h: u64, e: u32) {
        self.index.insert(tag_of(h), e);
    }

    fn remove_entry(&mut self, t: &Tuple, h: u64, e: u32) {
        let removed = self.index.remove(tag_of(h), e);
        debug_assert!(removed, "missing table entry for {t:?}");
    }

    /// Adds a connection (both tuples already final). When `local_reply`, the reply tuple is
    /// indexed here too; otherwise the caller indexes it with [`Shard::add_key`].
    pub fn add_conn(
        &mut self,
        mut c: Conn,
        h_orig: u64,
        h_reply: u64,
        local_reply: bool,
    ) -> (u32, u32) {
        c.flags |= F_LIVE;
        let idx = self.conns.alloc_slot();
        c.gen = self.conns.get(idx).gen;
        let gen = c.gen;
        *self.conns.get_mut(idx) = c;
        self.insert_entry(h_orig, E_ORIG << TAG_SHIFT | idx);
        if local_reply && c.reply() != c.orig {
            self.insert_entry(h_reply, E_REPLY_LOCAL << TAG_SHIFT | idx);
        }
        (idx, gen)
    }

    /// Indexes reply tuple `t` of the connection at `conn_idx` of shard `conn_shard`, whose
    /// record is at address `conn_at` (a prefetch hint, see [`KeyRec::conn_at`]).
    pub fn add_key(
        &mut self,
        t: Tuple,
        h: u64,
        (conn_shard, conn_idx, gen): (u32, u32, u32),
        conn_at: usize,
    ) -> u32 {
        let conn = conn_shard << REF_IDX_BITS | conn_idx;
        let k = self.keys.alloc(KeyRec {
            tuple: t,
            conn,
            gen,
            conn_at,
        });
        self.insert_entry(h, E_KEY << TAG_SHIFT | k);
        k
    }

    /// Removes a connection from this shard; returns where its reply key record lives, if it is
    /// in another shard, for the caller to remove after dropping this lock.
    pub fn remove_conn(&mut self, idx: u32, seed: u64) -> Option<(u32, u32, u32)> {
        let c = *self.conns.get(idx);
        debug_assert!(c.flags & F_LIVE != 0);
        self.remove_entry(&c.orig, c.orig.hash(seed), E_ORIG << TAG_SHIFT | idx);
        let remote = match c.remote_key() {
            None => {
                let r = c.reply();
                if r != c.orig {
                    self.remove_entry(&r, r.hash(seed), E_REPLY_LOCAL << TAG_SHIFT | idx);
                }
                None
            }
            Some((shard, k)) => Some((shard, k, c.gen)),
        };
        let slot = self.conns.get_mut(idx);
        slot.flags = 0;
        slot.gen = c.gen.wrapping_add(1);
        self.conns.release(idx);
        remote
    }

    /// Removes a reply key record if it still belongs to the connection generation given.
    pub fn remove_key(&mut self, k: u32, conn_gen: u32, seed: u64) {
        let rec = *self.keys.get(k);
        if rec.gen != conn_gen || rec.conn == NO_KEY {
            return;
        }
        self.remove_entry(&rec.tuple, rec.tuple.hash(seed), E_KEY << TAG_SHIFT | k);
        self.keys.get_mut(k).conn = NO_KEY;
        self.keys.release(k);
    }

    /// Bytes held by this shard's table and slabs (capacity, not just live entries).
    pub fn bytes(&self) -> usize {
        self.index.bytes() + self.conns.bytes() + self.keys.bytes()
    }
}

/// A locked shard.
pub type ShardGuard<'a> = ShardMutexGuard<'a, Shard>;

pub struct Shards {
    shards: Box<[ShardMutex<Shard>]>,
    hints: Box<[Arc<IndexHint>]>,
}

impl Shards {
    pub fn new() -> Self {
        let shards: Box<[ShardMutex<Shard>]> =
            (0..SHARDS).map(|_| ShardMutex::new(Shard::new())).collect();
        let hints = shards.iter().map(|s| s.lock().index.hint.clone()).collect();
        Shards { shards, hints }
    }

    /// Prefetches, without locking, the bucket a lookup of hash `h` starts at.
    #[inline]
    pub fn prefetch_bucket(&self, h: u64) {
        if let Some(hint) = self.hints.get(Self::shard_of(h)) {
            hint.prefetch(h);
        }
    }

    /// The shard a tuple hash belongs to: the hash's low bits, which the index (keyed on the
    /// high half, see [`tag_of`]) does not use.
    #[inline]
    pub fn shard_of(h: u64) -> usize {
        h as usize & (SHARDS - 1)
    }

    #[inline]
    pub fn lock(&self, i: usize) -> ShardGuard<'_> {
        self.shards[i].lock()
    }

    /// For a control-plane walk between two slices of shard `i` (its lock released): lets the
    /// threads waiting for the shard take it first (see [`crate::lock::let_waiters_in`]).
    pub fn let_waiters_in(&self, i: usize) {
        crate::lock::let_waiters_in(&self.shards[i]);
    }

    /// Locks two shards in index order (so concurrent pairs cannot deadlock).
    pub fn lock_pair(&self, a: usize, b: usize) -> (ShardGuard<'_>, Option<ShardGuard<'_>>) {
        if a == b {
            (self.lock(a), None)
        } else if a < b {
            let ga = self.lock(a);
            let gb = self.lock(b);
            (ga, Some(gb))
        } else {
            let gb = self.lock(b);
            let ga = self.lock(a);
            (ga, Some(gb))
        }
    }
}

impl Default for Shards {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_stay_compact() {
        assert_eq!(std::mem::size_of::<Conn>(), 128);
        assert_eq!(std::mem::align_of::<Conn>(), 64);
        // The fields every packet reads share the first line.
        assert!(std::mem::offset_of!(Conn, state) < 64);
        assert!(std::mem::offset_of!(Conn, nat_port) < 64);
        assert!(std::mem::size_of::<KeyRec>() <= 56);
        // Slab chunks stay under 128 KiB (see `CHUNK_BYTES`) and as full as the record size lets
        // them be.
        for (n, size) in [
            (CONN_CHUNK, std::mem::size_of::<Conn>()),
            (KEY_CHUNK, std::mem::size_of::<KeyRec>()),
        ] {
            assert!(n * size <= CHUNK_BYTES && (n + 1) * size > CHUNK_BYTES);
        }
    }

    #[test]
    fn slab_slots_skip_each_span_unbacked_tail() {
        let mut slab: Slab<u64, 1000> = Slab::new();
        let handed: Vec<u32> = (0..2500u64).map(|v| slab.alloc(v)).collect();
        assert!(
            handed.iter().all(|&i| (i as usize % 1024) < 1000),
            "no slot past a chunk's end"
        );
        assert_eq!(slab.chunks.len(), 3);
        for (v, &i) in handed.iter().enumerate() {
            assert_eq!(*slab.get(i), v as u64, "each slot its own record");
        }
        // A walk up to the high water mark meets exactly the handed-out slots.
        let walked: Vec<u32> = (0..slab.high_water())
            .filter(|&i| slab.slot(i).is_some())
            .collect();
        assert_eq!(walked, handed);
        assert!(slab.slot(1000).is_none() && slab.slot(1023).is_none());
        // A released slot comes back before any new number; reset starts over.
        slab.release(handed[7]);
        assert_eq!(slab.alloc(99), handed[7]);
        slab.reset();
        assert_eq!(slab.high_water(), 0);
        let first = slab.alloc(5);
        assert_eq!((first, *slab.get(first)), (0, 5));
        assert_eq!(*slab.get(handed[2400]), 0, "reset cleared every chunk");
    }

    /// The reply tuple is rebuilt from the original and the translated address and port; every
    /// shape a NAT candidate can take must come back exactly, and a tuple translated on both
    /// sides must be refused rather than recorded wrong.
    #[test]
    fn reply_tuple_round_trips_through_the_nat_fields() {
        use crate::tuple::{IPPROTO_ICMP, IPPROTO_TCP};
        let o = Tuple {
            src: Addr::v4(0x0a00_0001),
            dst: Addr::v4(0x0808_0808),
            sport: 40000,
            dport: 80,
            zone: 3,
            proto: IPPROTO_TCP,
            v6: false,
        };
        let echo = Tuple {
            sport: 77,
            dport: 8 << 8,
            proto: IPPROTO_ICMP,
            ..o
        };
        for o in [o, echo] {
            let plain = Conn {
                orig: o,
                ..Conn::default()
            };
            assert_eq!(plain.reply(), o.reverse());
            let mut snat = o.reverse();
            snat.dst = Addr::v4(0xac16_071b);
            if o.proto == IPPROTO_ICMP {
                snat.sport = 1234;
            } else {
                snat.dport = 1234;
            }
            let mut dnat = o.reverse();
            dnat.src = Addr::from_u128(0xfe80 << 112 | 5);
            dnat.sport = 8080;
            for (flag, r) in [(F_SNAT, snat), (F_DNAT, dnat)] {
                let mut c = Conn {
                    orig: o,
                    flags: flag,
                    ..Conn::default()
                };
                assert!(c.set_reply(&r));
                assert_eq!(c.reply(), r);
                let mut both = r;
                both.dst = Addr::v4(1);
                both.src = Addr::v4(2);
                assert!(!c.set_reply(&both));
            }
        }
    }

    #[test]
    fn bucket_is_one_cache_line() {
        assert_eq!(std::mem::size_of::<Bucket>(), 64);
    }

    /// Entries crowded into one home bucket spill into the next ones, stay findable through
    /// removals in the middle of the chain and through growth, and leave no overflow behind.
    #[test]
    fn index_overflow_chains_survive_removal_and_growth() {
        let mut ix = Index::new();
        // Same low bits: same home bucket at every table size up to 2^16 buckets.
        let tag = |i: u32| 5 | (i << 16);
        let n = 40u32;
        for i in 0..n {
            ix.insert(tag(i), i);
        }
        for i in 0..n {
            assert_eq!(ix.find(tag(i), |e| e == i), Some(i));
        }
        assert_eq!(ix.find(tag(n), |_| true), None);
        for i in (0..n).step_by(3) {
            assert!(ix.remove(tag(i), i));
            assert!(!ix.remove(tag(i), i));
        }
        for i in 0..n {
            let want = (i % 3 != 0).then_some(i);
            assert_eq!(ix.find(tag(i), |e| e == i), want);
        }
        // Force growth with unrelated entries; the crowded ones must survive the move.
        for j in 0..2000u32 {
            ix.insert(j.wrapping_mul(0x9e37_79b9), 1000 + j);
        }
        for i in (0..n).filter(|i| i % 3 != 0) {
            assert_eq!(ix.find(tag(i), |e| e == i), Some(i));
            assert!(ix.remove(tag(i), i));
        }
        for j in 0..2000u32 {
            assert!(ix.remove(j.wrapping_mul(0x9e37_79b9), 1000 + j));
        }
        assert_eq!(ix.len, 0);
        assert!(ix
            .buckets
            .iter()
            .all(|b| b.overflow == 0 && b.ents == [EMPTY; SLOTS]));
    }

    #[test]
    fn a_probe_remembered_before_a_removal_finds_nothing_stale() {
        let seed = 7;
        let tuple = |sport| Tuple {
            src: Addr::v4(0xc633_0001),
            dst: Addr::v4(0xc633_0002),
            sport,
            dport: 80,
            zone: 3,
            proto: crate::tuple::IPPROTO_TCP,
            v6: false,
        };
        let conn = |orig| Conn {
            orig,
            rep: NO_KEY,
            ..Conn::default()
        };
        let mut s = Shard::new();
        let a = tuple(1000);
        let (ia, _) = s.add_conn(conn(a), a.hash(seed), a.reverse().hash(seed), true);
        let (probe, remote) = s.prefetch(a.hash(seed));
        assert!(!remote);
        let hit = Some(Found::Local {
            idx: ia,
            reply: false,
        });
        assert_eq!(s.find_probe(&a, probe), hit);
        // The remembered entry now names a freed record that still holds the tuple.
        assert!(s.remove_conn(ia, seed).is_none());
        assert_eq!(s.find_probe(&a, probe), None);
        // Then a live record of another connection, in the same slot.
        let b = tuple(2000);
        let (ib, _) = s.add_conn(conn(b), b.hash(seed), b.reverse().hash(seed), true);
        assert_eq!(ib, ia, "the freed slot is reused");
        assert_eq!(s.find_probe(&a, probe), None);
        // And the connection opened again, elsewhere: found through the index.
        let (ia2, _) = s.add_conn(conn(a), a.hash(seed), a.reverse().hash(seed), true);
        assert_ne!(ia2, ia);
        assert_eq!(
            s.find_probe(&a, probe),
            Some(Found::Local {
                idx: ia2,
                reply: false
            })
        );
        // A reply-direction probe remembers the reply entry.
        let (rp, _) = s.prefetch(b.reverse().hash(seed));
        assert_eq!(
            s.find_probe(&b.reverse(), rp),
            Some(Found::Local {
                idx: ib,
                reply: true
            })
        );
    }
}
