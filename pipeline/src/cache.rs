//! The flow cache: megaflows in front of the tables, one cache per datapath thread.
//!
//! After a frame's walk through the tables, its datapath actions are cached under the key bits
//! the walk looked at (the megaflow mask); later frames that agree on those bits skip the tables.
//! Lookup is a tuple-space search over the distinct masks, most-hit mask first. Entries carry the
//! flows they came from and credit them (`n_packets`, `n_bytes`) in batches, so table counters
//! stay right on cache hits. Any change to the tables, ports or MAC learning bumps a generation
//! number and empties the cache on the next lookup, so a replaced flow applies to the very next
//! frame.
//!
//! This module owns the cache structure and its statistics; it does not translate or execute.

use crate::ct::Nanos;
use crate::key::{FlowKey, KEY_WORDS, W_DL_DST, W_NW_ADDR, W_PORT};
use crate::odp::OdpAction;
use crate::xlate::RuleRef;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// Default upper bound on cached megaflows per thread (Open vSwitch's default flow limit).
pub const DEFAULT_MAX_ENTRIES: usize = 200_000;

/// One cached megaflow.
pub struct CacheEntry {
    /// `key & mask` of the first frame.
    pub key: FlowKey,
    pub mask_index: usize,
    pub actions: Vec<OdpAction>,
    pub rules: Vec<RuleRef>,
    pub packets: u64,
    pub bytes: u64,
    pub used: Nanos,
    /// Not yet credited to `rules`.
    pending_packets: u64,
    pending_bytes: u64,
    next: Option<u32>,
}

struct MaskGroup {
    mask: FlowKey,
    /// Indices of the mask's non-zero words: only these are hashed and compared.
    words: Vec<u8>,
    entries: usize,
    hits: u64,
    /// A 64-bit filter of the values word 0 (`in_port`, `recirc_id`) takes under this mask in
    /// the group's entries. Translation looks at both fields for every megaflow, so after a
    /// recirculation only the groups made for that `recirc_id` (and port) pass it, and a
    /// lookup probes one group instead of walking every mask. Stale bits (of removed entries)
    /// only cost a probe; `expire` rebuilds the filters.
    port_filter: u64,
}

#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, _: &[u8]) {
        unreachable!("IdHasher hashes u64 keys only")
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = v;
    }
}

/// Counters of the cache itself.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    pub hits: u64,
    pub misses: u64,
    pub inserts: u64,
    /// Times the whole cache was emptied because the tables or learning changed.
    pub flushes: u64,
    /// Inserts refused because the cache was full (the frame still ran, uncached).
    pub full: u64,
    /// Hits found in the recent-entry slots, without a search (included in `hits`).
    pub recent_hits: u64,
}

/// Slots of the recent-entry table (a power of two).
const RECENT_SLOTS: usize = 256;
const NO_ENTRY: u32 = u32::MAX;

/// The recent-entry slot of a key: its port and pass (word 0), destination MAC and addresses,
/// so different flows of one port and pass tend to keep different slots. Not the transport
/// ports: megaflows rarely look at them, and the connections of one megaflow (thousands behind
/// one SNAT rule) share a slot instead of evicting each other's passes.
#[inline]
fn recent_slot(key: &FlowKey) -> usize {
    let h = (key.w[W_PORT] ^ key.w[W_DL_DST].rotate_left(17)).wrapping_mul(0x9e37_79b9_7f4a_7c15)
        ^ key.w[W_NW_ADDR].wrapping_mul(0xc2b2_ae3d_27d4_eb4f);
    (h >> 56) as usize & (RECENT_SLOTS - 1)
}

pub struct FlowCache {
    masks: Vec<MaskGroup>,
    /// The entry a key of each slot last hit. Most frames of a port and pass hit the megaflow
    /// the previous one did (one flow, or many connections under one megaflow), and checking
    /// that entry against the key costs less than hashing under each mask. A slot may name a
    /// freed or reused entry: it is only a guess, always verified.
    recent: Box<[u32; RECENT_SLOTS]>,
    index: HashMap<u64, u32, BuildHasherDefault<IdHasher>>,
    entries: Vec<Option<CacheEntry>>,
    free: Vec<u32>,
    dirty: Vec<u32>,
    generation: u64,
    max_entries: usize,
    live: usize,
    pub stats: CacheStats,
}

/// Hashes the masked words. Each word is mixed on its own (a 64x64->128 multiply folded to 64
/// bits, seeded by its position) and the results are summed, so the multiplies of a key's words
/// overlap instead of forming one serial chain; a final avalanche spreads the sum over the bits
/// the hash table uses. Good enough for a table that verifies keys.
#[inline]
fn hash_masked(key: &FlowKey, mask: &FlowKey, words: &[u8], mask_index: usize) -> u64 {
    const K: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut acc: u64 = (mask_index as u64).wrapping_mul(0xa076_1d64_78bd_642f);
    for &w in words {
        let w = w as usize;
        let v = key.w[w] & mask.w[w];
        let seed = (w as u64 + 1).wrapping_mul(0xe703_7ed1_a0b4_28db);
        let m = ((v ^ seed) as u128).wrapping_mul(K as u128);
        acc = acc.wrapping_add((m >> 64) as u64 ^ m as u64);
    }
    acc ^= acc >> 32;
    acc = acc.wrapping_mul(0xff51_afd7_ed55_8ccd);
    acc ^ (acc >> 29)
}

/// The bit of a mask group's word-0 filter for a key's word 0 under the group's mask.
#[inline]
fn port_bit(key: &FlowKey, mask: &FlowKey) -> u64 {
    let v = key.w[W_PORT] & mask.w[W_PORT];
    1u64 << (v.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 58)
}

/// `(key & mask) == value` over the mask's non-zero words only.
#[inline]
fn matches_words(key: &FlowKey, value: &FlowKey, mask: &FlowKey, words: &[u8]) -> bool {
    words.iter().all(|&w| {
        let w = w as usize;
        key.w[w] & mask.w[w] == value.w[w]
    })
}

impl Default for FlowCache {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_ENTRIES)
    }
}

impl FlowCache {
    pub fn new(max_entries: usize) -> Self {
        FlowCache {
            masks: Vec::new(),
            recent: Box::new([NO_ENTRY; RECENT_SLOTS]),
            index: HashMap::default(),
            entries: Vec::new(),
            free: Vec::new(),
            dirty: Vec::new(),
            generation: 0,
            max_entries,
            live: 0,
            stats: CacheStats::default(),
        }
    }

    pub fn len(&self) -> usize {
        self.live
    }

    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// Empties the cache if `generation` differs from the one its entries were made under.
    /// Pending statistics are credited first.
    pub fn revalidate(&mut self, generation: u64) {
        if generation != self.generation {
            self.flush_stats();
            if self.live > 0 {
                self.stats.flushes += 1;
            }
            self.masks.clear();
            self.recent.fill(NO_ENTRY);
            self.index.clear();
            self.entries.clear();
            self.free.clear();
            self.live = 0;
            self.generation = generation;
        }
    }

    /// Finds the megaflow covering `key`.
    #[inline]
    pub fn lookup(&mut self, key: &FlowKey) -> Option<u32> {
        let slot = recent_slot(key);
        let guess = self.recent[slot];
        if let Some(Some(e)) = self.entries.get(guess as usize) {
            let g = &self.masks[e.mask_index];
            // Any megaflow the key matches is a right answer: it was cached for a key that
            // agrees with this one on every bit its walk looked at.
            if matches_words(key, &e.key, &g.mask, &g.words) {
                self.stats.recent_hits += 1;
                self.hit(e.mask_index);
                return Some(guess);
            }
        }
        let found = self.search(key);
        if let Some(idx) = found {
            self.recent[slot] = idx;
        }
        found
    }

    /// The tuple-space search behind [`FlowCache::lookup`].
    #[inline]
    fn search(&mut self, key: &FlowKey) -> Option<u32> {
        for mi in 0..self.masks.len() {
            let g = &self.masks[mi];
            if g.port_filter & port_bit(key, &g.mask) == 0 {
                continue;
            }
            let h = hash_masked(key, &g.mask, &g.words, mi);
            let mut cur = self.index.get(&h).copied();
            while let Some(idx) = cur {
                let e = self.entries[idx as usize]
                    .as_ref()
                    .expect("indexed entries are live");
                if e.mask_index == mi && matches_words(key, &e.key, &g.mask, &g.words) {
                    self.hit(mi);
                    return Some(idx);
                }
                cur = e.next;
            }
        }
        self.stats.misses += 1;
        None
    }

    /// Counts a hit under mask `mi`, keeping the busiest masks first for the search.
    #[inline]
    fn hit(&mut self, mi: usize) {
        self.masks[mi].hits += 1;
        self.stats.hits += 1;
        if mi > 0 && self.masks[mi].hits > self.masks[mi - 1].hits.saturating_mul(2) {
            self.swap_masks(mi, mi - 1);
        }
    }

    fn swap_masks(&mut self, a: usize, b: usize) {
        // Entries refer to masks by index, and the index hashes include it: rehash both groups.
        // Unlinking recomputes each entry's hash from its mask, so it must happen before the
        // masks move (afterwards the hash is another bucket's, the entry stays linked where it
        // was and relinking it makes a chain that loops).
        let idxs: Vec<u32> = self
            .entries
            .iter()
            .enumerate()
            .filter_map(|(i, e)| {
                e.as_ref()
                    .filter(|e| e.mask_index == a || e.mask_index == b)
                    .map(|_| i as u32)
            })
            .collect();
        for &i in &idxs {
            self.unlink(i);
        }
        self.masks.swap(a, b);
        for &i in &idxs {
            let e = self.entries[i as usize].as_mut().expect("live");
            e.mask_index = if e.mask_index == a { b } else { a };
            self.link(i);
        }
    }

    fn link(&mut self, idx: u32) {
        let e = self.entries[idx as usize].as_ref().expect("live");
        let g = &self.masks[e.mask_index];
        let h = hash_masked(&e.key, &g.mask, &g.words, e.mask_index);
        let prev = self.index.insert(h, idx);
        self.entries[idx as usize].as_mut().expect("live").next = prev;
    }

    fn unlink(&mut self, idx: u32) {
        let e = self.entries[idx as usize].as_ref().expect("live");
        let g = &self.masks[e.mask_index];
        let h = hash_masked(&e.key, &g.mask, &g.words, e.mask_index);
        let next = e.next;
        let Some(&head) = self.index.get(&h) else {
            return;
        };
        if head == idx {
            match next {
                Some(n) => {
                    self.index.insert(h, n);
                }
                None => {
                    self.index.remove(&h);
                }
            }
            return;
        }
        let mut cur = head;
        loop {
            let c = self.entries[cur as usize].as_ref().expect("live");
            match c.next {
                Some(n) if n == idx => {
                    self.entries[cur as usize].as_mut().expect("live").next = next;
                    return;
                }
                Some(n) => cur = n,
                None => return,
            }
        }
    }

    /// Caches `actions` for every key that equals `key` on the bits of `mask`. Returns the
    /// entry's index, or the actions and rules back when the cache is full.
    pub fn insert(
        &mut self,
        key: &FlowKey,
        mask: &FlowKey,
        actions: Vec<OdpAction>,
        rules: Vec<RuleRef>,
        now: Nanos,
    ) -> Result<u32, (Vec<OdpAction>, Vec<RuleRef>)> {
        if self.live >= self.max_entries {
            self.stats.full += 1;
            return Err((actions, rules));
        }
        let mi = match self.masks.iter().position(|g| g.mask == *mask) {
            Some(i) => i,
            None => {
                let words = (0..KEY_WORDS)
                    .filter(|&w| mask.w[w] != 0)
                    .map(|w| w as u8)
                    .collect();
                self.masks.push(MaskGroup {
                    mask: *mask,
                    words,
                    entries: 0,
                    hits: 0,
                    port_filter: 0,
                });
                self.masks.len() - 1
            }
        };
        let g = &mut self.masks[mi];
        g.entries += 1;
        g.port_filter |= port_bit(key, mask);
        let entry = CacheEntry {
            key: key.and(mask),
            mask_index: mi,
            actions,
            rules,
            packets: 0,
            bytes: 0,
            used: now,
            pending_packets: 0,
            pending_bytes: 0,
            next: None,
        };
        let idx = match self.free.pop() {
            Some(i) => {
                self.entries[i as usize] = Some(entry);
                i
            }
            None => {
                self.entries.push(Some(entry));
                (self.entries.len() - 1) as u32
            }
        };
        self.link(idx);
        self.live += 1;
        self.stats.inserts += 1;
        Ok(idx)
    }

    #[inline]
    pub fn entry(&self, idx: u32) -> &CacheEntry {
        self.entries[idx as usize]
            .as_ref()
            .expect("index from lookup or insert")
    }

    /// Counts a frame on an entry; the flows are credited by [`FlowCache::flush_stats`].
    #[inline]
    pub fn account(&mut self, idx: u32, bytes: u64, now: Nanos) {
        let e = self.entries[idx as usize]
            .as_mut()
            .expect("index from lookup or insert");
        if e.pending_packets == 0 {
            self.dirty.push(idx);
        }
        e.packets += 1;
        e.bytes += bytes;
        e.pending_packets += 1;
        e.pending_bytes += bytes;
        e.used = now;
    }

    /// Credits the counted frames to the flows they went through.
    pub fn flush_stats(&mut self) {
        for idx in self.dirty.drain(..) {
            if let Some(Some(e)) = self.entries.get_mut(idx as usize) {
                for r in &e.rules {
                    r.add_stats(e.pending_packets, e.pending_bytes, e.used);
                }
                e.pending_packets = 0;
                e.pending_bytes = 0;
            }
        }
    }

    /// Removes entries not used since `older_than` (idle megaflows). Returns how many.
    pub fn expire(&mut self, older_than: Nanos) -> usize {
        self.flush_stats();
        let stale: Vec<u32> = self
            .entries
            .iter()
            .enumerate()
            .filter_map(|(i, e)| e.as_ref().filter(|e| e.used < older_than).map(|_| i as u32))
            .collect();
        for &i in &stale {
            self.unlink(i);
            let e = self.entries[i as usize].take().expect("live");
            self.masks[e.mask_index].entries -= 1;
            self.free.push(i);
            self.live -= 1;
        }
        if !stale.is_empty() {
            for g in &mut self.masks {
                g.port_filter = 0;
            }
            for e in self.entries.iter().flatten() {
                let g = &mut self.masks[e.mask_index];
                g.port_filter |= port_bit(&e.key, &g.mask);
            }
        }
        stale.len()
    }

    /// Every live entry with its mask (for `dump-dp-flows`).
    pub fn iter(&self) -> impl Iterator<Item = (&CacheEntry, &FlowKey)> {
        self.entries
            .iter()
            .flatten()
            .map(|e| (e, &self.masks[e.mask_index].mask))
    }

    /// Number of distinct masks (subtables) searched per lookup.
    pub fn mask_count(&self) -> usize {
        self.masks.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::loc;

    fn key(port: u32, dl_type: u16) -> FlowKey {
        let mut k = FlowKey::ZERO;
        k.set_in_port(port);
        k.set(loc::DL_TYPE, dl_type as u128);
        k
    }

    /// Every entry is found by its own key, and a walk of every hash chain ends.
    fn check(c: &mut FlowCache, keys: &[(FlowKey, u32)]) {
        for (k, idx) in keys {
            assert_eq!(c.lookup(k), Some(*idx), "{:?}", k.w);
        }
        for &head in c.index.values() {
            let mut cur = Some(head);
            let mut steps = 0;
            while let Some(i) = cur {
                steps += 1;
                assert!(steps <= c.entries.len(), "hash chain loops");
                cur = c.entries[i as usize]
                    .as_ref()
                    .expect("linked entries are live")
                    .next;
            }
        }
    }

    #[test]
    fn promoting_a_busy_mask_keeps_every_entry_reachable() {
        let mut c = FlowCache::new(64);
        let mut port_only = FlowKey::ZERO;
        port_only.set_all(loc::IN_PORT);
        let mut port_and_type = port_only;
        port_and_type.set_all(loc::DL_TYPE);
        let mut keys = Vec::new();
        for p in 1..=4 {
            let k = key(p, 0x0800);
            let i = c
                .insert(&k, &port_only, Vec::new(), Vec::new(), 0)
                .ok()
                .expect("room in the cache");
            keys.push((k, i));
        }
        for p in 10..=14 {
            let k = key(p, 0x86dd);
            let i = c
                .insert(&k, &port_and_type, Vec::new(), Vec::new(), 0)
                .ok()
                .expect("room in the cache");
            keys.push((k, i));
        }
        check(&mut c, &keys);
        // Hits on the second mask move it in front of the first (a swap of the two groups).
        for _ in 0..20 {
            assert_eq!(c.lookup(&keys[6].0), Some(keys[6].1));
        }
        assert_eq!(c.masks[0].mask, port_and_type, "the busy mask moved first");
        check(&mut c, &keys);
        // And back again.
        for _ in 0..100 {
            assert_eq!(c.lookup(&keys[0].0), Some(keys[0].1));
        }
        assert_eq!(c.masks[0].mask, port_only);
        check(&mut c, &keys);
        assert_eq!(c.expire(1), keys.len());
        assert!(c.index.is_empty());
        assert_eq!(c.lookup(&keys[0].0), None);
    }

    /// Megaflows of several recirculation passes: each is found by its own key, a key whose
    /// word 0 no entry has is a miss whatever its other words, and the word-0 filters forget
    /// expired entries.
    #[test]
    fn lookups_after_recirculation_find_their_pass_only() {
        let mut c = FlowCache::new(64);
        let mut masks = Vec::new();
        for extra in [loc::DL_TYPE, loc::NW_SRC, loc::VLAN_TCI] {
            let mut m = FlowKey::ZERO;
            m.set_all(loc::IN_PORT);
            m.set_all(loc::RECIRC_ID);
            m.set_all(extra);
            masks.push(m);
        }
        let mut keys = Vec::new();
        for (pass, m) in masks.iter().enumerate() {
            let mut k = key(4, 0x0800);
            k.set(loc::RECIRC_ID, pass as u128);
            k.set(loc::NW_SRC, 0xc612_0a0b);
            let i = c
                .insert(&k, m, Vec::new(), Vec::new(), pass as Nanos)
                .ok()
                .expect("room in the cache");
            keys.push((k, i));
        }
        check(&mut c, &keys);
        for (k, _) in &keys {
            let mut other = *k;
            other.set(loc::RECIRC_ID, 9);
            assert_eq!(c.lookup(&other), None);
            other = *k;
            other.set_in_port(5);
            assert_eq!(c.lookup(&other), None);
        }
        // Expire the first two passes: their groups' filters no longer pass their keys.
        assert_eq!(c.expire(2), 2);
        for (k, _) in &keys[..2] {
            assert_eq!(c.lookup(k), None);
            assert!(c
                .masks
                .iter()
                .all(|g| g.entries > 0 || g.port_filter & port_bit(k, &g.mask) == 0));
        }
        check(&mut c, &keys[2..]);
    }

    /// A narrow and a full mask: both find their entries, reject a key differing in any one
    /// masked bit, and ignore bits outside the mask.
    #[test]
    fn narrow_and_wide_masks_match_exactly_their_bits() {
        let mut narrow = FlowKey::ZERO;
        for w in [0, 3, 25, 26, 28] {
            narrow.w[w] = 0xffff_0000_ffff_0000;
        }
        let wide = FlowKey::ONES;
        let mut c = FlowCache::new(64);
        let mut base = FlowKey::ZERO;
        for (i, w) in base.w.iter_mut().enumerate() {
            *w = 0x0f1e_2d3c_4b5a_6978_u64.rotate_left(i as u32);
        }
        for (n, m) in [narrow, wide].iter().enumerate() {
            // Differ in two bits both masks cover: no single flip below makes one key the other.
            let mut k = base;
            k.w[0] ^= (n as u64 + 1) << 20;
            let idx = c
                .insert(&k, m, Vec::new(), Vec::new(), 0)
                .ok()
                .expect("room in the cache");
            assert_eq!(c.lookup(&k), Some(idx));
            for w in 0..KEY_WORDS {
                for bit in [0, 17, 63] {
                    let mut other = k;
                    other.w[w] ^= 1 << bit;
                    let want = if m.w[w] & 1 << bit != 0 {
                        None
                    } else {
                        Some(idx)
                    };
                    assert_eq!(c.lookup(&other), want, "mask {n}, word {w}, bit {bit}");
                }
            }
        }
    }

    /// The recent-entry slots answer repeated lookups without a search, and never with an
    /// entry that does not match: not after a flush, nor once the entry's index is reused.
    #[test]
    fn recent_slots_are_verified_guesses() {
        let mut c = FlowCache::new(64);
        c.revalidate(1);
        let mut port_only = FlowKey::ZERO;
        port_only.set_all(loc::IN_PORT);
        let k = key(4, 0x0800);
        let i = c
            .insert(&k, &port_only, Vec::new(), Vec::new(), 0)
            .ok()
            .expect("room in the cache");
        assert_eq!(c.lookup(&k), Some(i));
        let before = c.stats.recent_hits;
        // Same megaflow, another frame: found in its slot or by the search, either way right.
        for t in [0x0800, 0x86dd, 0x0806] {
            assert_eq!(c.lookup(&key(4, t)), Some(i));
        }
        assert_eq!(c.lookup(&k), Some(i));
        assert!(
            c.stats.recent_hits > before,
            "repeated lookups use the slot"
        );
        // The index is freed and reused by a megaflow of another port: the old key misses.
        assert_eq!(c.expire(1), 1);
        let k5 = key(5, 0x0800);
        let j = c
            .insert(&k5, &port_only, Vec::new(), Vec::new(), 3)
            .ok()
            .expect("room in the cache");
        assert_eq!(j, i, "the freed index is reused");
        assert_eq!(c.lookup(&k), None);
        assert_eq!(c.lookup(&k5), Some(j));
        // A new generation empties the cache: nothing is found through a slot.
        c.revalidate(2);
        assert_eq!(c.lookup(&k5), None);
    }
}
