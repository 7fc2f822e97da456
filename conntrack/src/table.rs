//! Storage of connections: sharded hash tables over compact connection records.
//!
//! This module owns memory layout and locking. Each of [`SHARDS`] shards has its own mutex, a
//! slab of connection records and a slab of reply-key records, and one `hashbrown::HashTable`
//! of 4-byte entries that index those slabs (the key is compared in the slab, so the table
//! holds no copies). A connection lives in the shard of its original tuple's hash; its reply
//! tuple is indexed in the shard of the reply tuple's hash, through a small key record that
//! points back at the connection (or directly, when both land in the same shard). A lookup
//! therefore takes one shard lock, or two in sequence for a reply-direction packet whose
//! connection lives elsewhere — never a global lock. It must not parse frames or decide
//! connection semantics.

use crate::tcp::Peer;
use crate::tuple::Tuple;
use hashbrown::HashTable;
use std::sync::{Mutex, MutexGuard};

pub const SHARDS: usize = 1 << SHARD_BITS;
const CHUNK: usize = 1024;

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

/// One connection (152 bytes).
#[derive(Clone, Copy, Debug, Default)]
pub struct Conn {
    pub orig: Tuple,
    pub reply: Tuple,
    /// `ct_label`, most significant half first.
    pub label: [u64; 2],
    pub expires: u64,
    pub mark: u32,
    /// Bumped whenever the slot is freed, so stale references are detected.
    pub gen: u32,
    /// Index of the reply key record in `rep_shard`, or [`NO_KEY`] when the reply tuple is
    /// indexed directly in this shard.
    pub rep_key: u32,
    pub rep_shard: u16,
    pub flags: u8,
    /// Protocol state (TCP: [`crate::tcp::TcpState`]).
    pub state: u8,
    pub tcp: [Peer; 2],
}

impl Conn {
    pub fn label_u128(&self) -> u128 {
        ((self.label[0] as u128) << 64) | self.label[1] as u128
    }
    pub fn set_label_u128(&mut self, v: u128) {
        self.label = [(v >> 64) as u64, v as u64];
    }
}

/// A reply tuple indexed away from its connection's shard (48 bytes).
#[derive(Clone, Copy, Debug, Default)]
pub struct KeyRec {
    pub tuple: Tuple,
    /// Shard (top [`SHARD_BITS`] bits) and slot of the connection.
    pub conn: u32,
    pub gen: u32,
}

const SHARD_BITS: u32 = 6;
const REF_IDX_BITS: u32 = 32 - SHARD_BITS;
/// Slots per shard a key record can point at (far above any configured limit).
pub const MAX_SLOT: u32 = (1 << REF_IDX_BITS) - 1;

/// Fixed-size chunks (no doubling on growth, so memory stays near the live count) plus a free
/// list.
pub struct Slab<T> {
    chunks: Vec<Box<[T]>>,
    free: Vec<u32>,
    next: u32,
}

impl<T: Copy + Default> Slab<T> {
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
                let i = self.next;
                if i as usize / CHUNK >= self.chunks.len() {
                    self.chunks
                        .push(vec![T::default(); CHUNK].into_boxed_slice());
                }
                self.next += 1;
                i
            }
        }
    }
    #[inline]
    pub fn get(&self, i: u32) -> &T {
        &self.chunks[i as usize / CHUNK][i as usize % CHUNK]
    }
    #[inline]
    pub fn get_mut(&mut self, i: u32) -> &mut T {
        &mut self.chunks[i as usize / CHUNK][i as usize % CHUNK]
    }
    /// Number of slots ever used (the sweep walks these).
    pub fn high_water(&self) -> u32 {
        self.next
    }
    fn release(&mut self, i: u32) {
        self.free.push(i);
    }
}

pub struct Shard {
    pub table: HashTable<u32>,
    pub conns: Slab<Conn>,
    pub keys: Slab<KeyRec>,
    /// Lookups that found a connection (summed into the counters on demand).
    pub hits: u64,
    pub sweep_pos: u32,
}

/// Where a tuple was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Found {
    /// The connection is in this shard; `reply` tells the direction.
    Local { idx: u32, reply: bool },
    /// A reply tuple whose connection lives in another shard.
    Remote { shard: u32, idx: u32, gen: u32 },
}

#[inline]
fn entry_tuple<'a>(conns: &'a Slab<Conn>, keys: &'a Slab<KeyRec>, e: u32) -> &'a Tuple {
    let i = e & IDX_MASK;
    match e >> TAG_SHIFT {
        E_ORIG => &conns.get(i).orig,
        E_REPLY_LOCAL => &conns.get(i).reply,
        _ => &keys.get(i).tuple,
    }
}

impl Shard {
    fn new() -> Self {
        Shard {
            table: HashTable::new(),
            conns: Slab::new(),
            keys: Slab::new(),
            hits: 0,
            sweep_pos: 0,
        }
    }

    #[inline]
    pub fn find(&self, t: &Tuple, h: u64) -> Option<Found> {
        let e = *self
            .table
            .find(h, |&e| entry_tuple(&self.conns, &self.keys, e) == t)?;
        let i = e & IDX_MASK;
        Some(match e >> TAG_SHIFT {
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
                Found::Remote {
                    shard: k.conn >> REF_IDX_BITS,
                    idx: k.conn & MAX_SLOT,
                    gen: k.gen,
                }
            }
        })
    }

    pub fn contains(&self, t: &Tuple, h: u64) -> bool {
        self.table
            .find(h, |&e| entry_tuple(&self.conns, &self.keys, e) == t)
            .is_some()
    }

    fn insert_entry(&mut self, h: u64, e: u32, seed: u64) {
        let Shard {
            table, conns, keys, ..
        } = self;
        table.insert_unique(h, e, |&e| entry_tuple(conns, keys, e).hash(seed));
    }

    fn remove_entry(&mut self, t: &Tuple, h: u64, e: u32) {
        let Shard { table, .. } = self;
        if let Ok(o) = table.find_entry(h, |&x| x == e) {
            o.remove();
        } else {
            debug_assert!(false, "missing table entry for {t:?}");
        }
    }

    /// Adds a connection (both tuples already final). When `local_reply`, the reply tuple is
    /// indexed here too; otherwise the caller indexes it with [`Shard::add_key`].
    pub fn add_conn(
        &mut self,
        mut c: Conn,
        h_orig: u64,
        h_reply: u64,
        local_reply: bool,
        seed: u64,
    ) -> (u32, u32) {
        c.flags |= F_LIVE;
        let idx = self.conns.alloc_slot();
        c.gen = self.conns.get(idx).gen;
        let gen = c.gen;
        *self.conns.get_mut(idx) = c;
        self.insert_entry(h_orig, E_ORIG << TAG_SHIFT | idx, seed);
        if local_reply && c.reply != c.orig {
            self.insert_entry(h_reply, E_REPLY_LOCAL << TAG_SHIFT | idx, seed);
        }
        (idx, gen)
    }

    pub fn add_key(
        &mut self,
        t: Tuple,
        h: u64,
        conn_shard: u32,
        conn_idx: u32,
        gen: u32,
        seed: u64,
    ) -> u32 {
        let conn = conn_shard << REF_IDX_BITS | conn_idx;
        let k = self.keys.alloc(KeyRec {
            tuple: t,
            conn,
            gen,
        });
        self.insert_entry(h, E_KEY << TAG_SHIFT | k, seed);
        k
    }

    /// Removes a connection from this shard; returns where its reply key record lives, if it is
    /// in another shard, for the caller to remove after dropping this lock.
    pub fn remove_conn(&mut self, idx: u32, seed: u64) -> Option<(u32, u32, u32)> {
        let c = *self.conns.get(idx);
        debug_assert!(c.flags & F_LIVE != 0);
        self.remove_entry(&c.orig, c.orig.hash(seed), E_ORIG << TAG_SHIFT | idx);
        let remote = if c.rep_key == NO_KEY {
            if c.reply != c.orig {
                self.remove_entry(
                    &c.reply,
                    c.reply.hash(seed),
                    E_REPLY_LOCAL << TAG_SHIFT | idx,
                );
            }
            None
        } else {
            Some((c.rep_shard as u32, c.rep_key, c.gen))
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
        // hashbrown stores one control byte per bucket plus the entry.
        let buckets = if self.table.capacity() == 0 {
            0
        } else {
            (self.table.capacity() * 8 / 7).next_power_of_two()
        };
        buckets * (std::mem::size_of::<u32>() + 1)
            + self.conns.chunks.len() * CHUNK * std::mem::size_of::<Conn>()
            + self.keys.chunks.len() * CHUNK * std::mem::size_of::<KeyRec>()
            + (self.conns.free.capacity() + self.keys.free.capacity()) * 4
    }
}

pub struct Shards {
    shards: Box<[Mutex<Shard>]>,
}

impl Shards {
    pub fn new() -> Self {
        Shards {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::new())).collect(),
        }
    }

    /// The shard a tuple hash belongs to. Uses bits the table itself does not (hashbrown takes
    /// the low bits for the bucket and the top seven for its tag).
    #[inline]
    pub fn shard_of(h: u64) -> usize {
        ((h >> 40) as usize) % SHARDS
    }

    #[inline]
    pub fn lock(&self, i: usize) -> MutexGuard<'_, Shard> {
        // A panic elsewhere cannot leave a shard half-updated in a way lookups would trip
        // over (every mutation is a few infallible stores), so poisoning is ignored.
        self.shards[i].lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Locks two shards in index order (so concurrent pairs cannot deadlock).
    pub fn lock_pair(
        &self,
        a: usize,
        b: usize,
    ) -> (MutexGuard<'_, Shard>, Option<MutexGuard<'_, Shard>>) {
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
        assert!(
            std::mem::size_of::<Conn>() <= 152,
            "{}",
            std::mem::size_of::<Conn>()
        );
        assert!(std::mem::size_of::<KeyRec>() <= 48);
    }
}
