//! The classifier: finds the highest-priority rule whose match a flow key satisfies, with
//! Open vSwitch's conjunctive-match semantics, and reports which key bits the answer depended
//! on so a megaflow cache can reuse it.
//!
//! This module owns the lookup structure (tuple-space search) and the conjunction algorithm. It
//! knows nothing of actions or flow-mod rules: callers hand it a match, a priority, the
//! `conjunction(id, k/n)` clauses a rule contributes (empty for an ordinary rule) and an opaque
//! payload `R`. It must not allocate on the lookup path except when more than
//! [`SOFT_INLINE`] conjunctive rules match one key.
//!
//! # Structure
//! One subtable per distinct mask. A subtable is a hash table keyed on the key's words under the
//! mask, hashing only the words the mask covers. Each bucket holds every rule with that exact
//! match, highest priority first. Subtables are visited in order of their highest priority, so a
//! lookup stops as soon as the best ordinary ("hard") rule found has a priority at least that of
//! the next subtable's highest.
//!
//! # Ties
//! OpenFlow leaves the winner between overlapping rules of equal priority undefined. Here the
//! rule in the subtable visited first wins; subtables are ordered by highest priority, then by
//! age (older first). The result is deterministic for a given history of inserts and removals.
//!
//! # Wildcards
//! [`Classifier::lookup`] ORs into `wc` the mask of every subtable it probed (including the
//! probes of conjunctive re-lookups). Any key that agrees with the looked-up key on all bits of
//! `wc` visits the same subtables, lands in the same buckets, and so gets the same rule.
//!
//! # Conjunctions
//! A rule whose actions are only `conjunction(id, k/n)` is "soft": matching it does not end the
//! lookup. Let `H` be the priority of the best matching hard rule. Going down through the
//! priorities `p > H` at which soft rules match, if for some `id` every clause `1..=n` has a
//! matching soft rule at priority `p`, the lookup is redone with `conj_id = id` considering hard
//! rules only; if that finds a rule, it is the answer. When several ids complete at one priority,
//! the lowest id is tried first. If no conjunction yields a rule, the answer is the best hard
//! rule. A conjunction whose clauses are incomplete therefore hides nothing.
//!
//! One Open vSwitch detail is reproduced on purpose (checked with `ofproto/trace` on OVS 3.1):
//! in the re-lookup, a bucket whose highest-priority rule is soft yields nothing, even when a
//! hard rule with the same match and a lower priority sits behind it.

use crate::flow::Match;
use crate::key::{loc, FlowKey, KEY_WORDS};
use hashbrown::HashTable;
use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};

/// Conjunctive rules that can match one lookup before the lookup spills to the heap.
pub const SOFT_INLINE: usize = 16;

/// One `conjunction(id, clause/n_clauses)` action. `clause` is 1-based, as written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConjClause {
    pub id: u32,
    pub clause: u8,
    pub n_clauses: u8,
}

#[derive(Clone, Debug)]
struct Entry<R> {
    priority: u16,
    /// Empty for a hard rule.
    conj: Box<[ConjClause]>,
    rule: R,
}

impl<R> Entry<R> {
    #[inline]
    fn is_soft(&self) -> bool {
        !self.conj.is_empty()
    }
}

#[derive(Clone, Debug)]
struct Bucket<R> {
    hash: u64,
    /// The match's value words, one per word the subtable's mask covers.
    key: Box<[u64]>,
    /// Highest priority first; at most one entry per priority.
    entries: Vec<Entry<R>>,
}

#[derive(Clone, Debug)]
struct Subtable<R> {
    mask: FlowKey,
    /// The mask's non-zero words as (index, mask), ascending by index.
    words: Box<[(usize, u64)]>,
    table: HashTable<Bucket<R>>,
    /// Number of rules at each priority, to keep `max_priority` exact across removals.
    priorities: BTreeMap<u16, u32>,
    n_rules: usize,
    /// Creation order, for the tie rule.
    seq: u64,
}

impl<R> Subtable<R> {
    fn new(mask: &FlowKey, seq: u64) -> Self {
        let words = (0..KEY_WORDS)
            .filter(|&i| mask.w[i] != 0)
            .map(|i| (i, mask.w[i]))
            .collect();
        Subtable {
            mask: *mask,
            words,
            table: HashTable::new(),
            priorities: BTreeMap::new(),
            n_rules: 0,
            seq,
        }
    }

    fn max_priority(&self) -> Option<u16> {
        self.priorities.keys().next_back().copied()
    }

    /// Hash of `key` under this subtable's mask.
    #[inline]
    #[cfg(test)]
    fn hash_key(&self, key: &FlowKey) -> u64 {
        let mut h = 0u64;
        for &(i, m) in self.words.iter() {
            h = mix(h, key.w.get(i).copied().unwrap_or(0) & m);
        }
        finish(h)
    }

    /// [`Self::hash_key`], also ORing the mask into `wc` (one pass over the words).
    #[inline]
    fn hash_key_unwildcard(&self, key: &FlowKey, wc: &mut FlowKey) -> u64 {
        let mut h = 0u64;
        for &(i, m) in self.words.iter() {
            if let (Some(k), Some(w)) = (key.w.get(i), wc.w.get_mut(i)) {
                *w |= m;
                h = mix(h, k & m);
            }
        }
        finish(h)
    }

    #[inline]
    fn hash_words(words: &[u64]) -> u64 {
        let mut h = 0u64;
        for &v in words {
            h = mix(h, v);
        }
        finish(h)
    }

    /// Bucket whose match `key` satisfies, if any; ORs the mask into `wc`.
    #[inline]
    fn find(&self, key: &FlowKey, wc: &mut FlowKey) -> Option<&Bucket<R>> {
        let hash = self.hash_key_unwildcard(key, wc);
        self.table.find(hash, |b| {
            b.hash == hash
                && self
                    .words
                    .iter()
                    .zip(b.key.iter())
                    .all(|(&(i, m), &v)| key.w.get(i).copied().unwrap_or(0) & m == v)
        })
    }

    fn value_words(&self, value: &FlowKey) -> Box<[u64]> {
        self.words.iter().map(|&(i, _)| value.w[i]).collect()
    }

    fn match_of(&self, b: &Bucket<R>) -> Match {
        let mut value = FlowKey::ZERO;
        for (&(i, _), &v) in self.words.iter().zip(b.key.iter()) {
            value.w[i] = v;
        }
        Match {
            value,
            mask: self.mask,
        }
    }
}

#[inline(always)]
fn mix(h: u64, v: u64) -> u64 {
    (h.rotate_left(23) ^ v).wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

/// Spreads entropy into the low bits (bucket index) and the top bits (control bytes).
#[inline(always)]
fn finish(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h
}

/// Hasher for whole masks in the insert path: SipHash over 296 bytes per insert costs more than
/// the rest of an insert, and masks are not attacker-chosen at that rate.
#[derive(Default)]
struct WordHasher(u64);

impl Hasher for WordHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.0 = mix(self.0, u64::from_le_bytes(w));
        }
        for &b in chunks.remainder() {
            self.0 = mix(self.0, b as u64);
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = mix(self.0, v);
    }
    fn finish(&self) -> u64 {
        finish(self.0)
    }
}

#[derive(Clone, Copy, Debug)]
struct Order {
    max_priority: u16,
    idx: u32,
}

/// A priority classifier over [`FlowKey`]s. See the module documentation.
#[derive(Clone, Debug)]
pub struct Classifier<R> {
    subtables: Vec<Option<Subtable<R>>>,
    free_slots: Vec<usize>,
    by_mask: HashMap<FlowKey, usize, BuildHasherDefault<WordHasher>>,
    /// Live subtables, highest `max_priority` first, then oldest first.
    order: Vec<Order>,
    n_rules: usize,
    n_soft: usize,
    next_seq: u64,
}

impl<R> Default for Classifier<R> {
    fn default() -> Self {
        Self::new()
    }
}

/// Soft matches collected during one lookup: inline up to [`SOFT_INLINE`], then spilled.
struct SoftBuf<'a, R> {
    inline: [Option<&'a Entry<R>>; SOFT_INLINE],
    n: usize,
    spill: Vec<&'a Entry<R>>,
}

impl<'a, R> SoftBuf<'a, R> {
    fn new() -> Self {
        SoftBuf {
            inline: [None; SOFT_INLINE],
            n: 0,
            spill: Vec::new(),
        }
    }
    #[inline]
    fn push(&mut self, e: &'a Entry<R>) {
        if self.n < SOFT_INLINE {
            self.inline[self.n] = Some(e);
            self.n += 1;
        } else {
            self.spill.push(e);
        }
    }
    fn is_empty(&self) -> bool {
        self.n == 0
    }
    fn iter(&self) -> impl Iterator<Item = &'a Entry<R>> + '_ {
        self.inline[..self.n]
            .iter()
            .flatten()
            .copied()
            .chain(self.spill.iter().copied())
    }
}

/// Progress of conjunction ids at one priority: (id, n_clauses, clauses seen as a bit set).
struct ConjProgress {
    inline: [(u32, u8, u64); SOFT_INLINE],
    n: usize,
    spill: Vec<(u32, u8, u64)>,
}

impl ConjProgress {
    fn new() -> Self {
        ConjProgress {
            inline: [(0, 0, 0); SOFT_INLINE],
            n: 0,
            spill: Vec::new(),
        }
    }
    fn clear(&mut self) {
        self.n = 0;
        self.spill.clear();
    }
    fn add(&mut self, c: &ConjClause) {
        let bit = 1u64 << (c.clause.saturating_sub(1) & 63);
        let slots = self.inline[..self.n]
            .iter_mut()
            .chain(self.spill.iter_mut());
        for s in slots {
            if s.0 == c.id && s.1 == c.n_clauses {
                s.2 |= bit;
                return;
            }
        }
        if self.n < SOFT_INLINE {
            self.inline[self.n] = (c.id, c.n_clauses, bit);
            self.n += 1;
        } else {
            self.spill.push((c.id, c.n_clauses, bit));
        }
    }
    /// Smallest complete id greater than `after` (or any, when `after` is `None`).
    fn next_complete(&self, after: Option<u32>) -> Option<u32> {
        self.inline[..self.n]
            .iter()
            .chain(self.spill.iter())
            .filter(|(id, n, seen)| {
                let full = if *n >= 64 { u64::MAX } else { (1u64 << *n) - 1 };
                *n > 0 && *seen & full == full && after.is_none_or(|a| *id > a)
            })
            .map(|(id, _, _)| *id)
            .min()
    }
}

impl<R> Classifier<R> {
    pub fn new() -> Self {
        Classifier {
            subtables: Vec::new(),
            free_slots: Vec::new(),
            by_mask: HashMap::default(),
            order: Vec::new(),
            n_rules: 0,
            n_soft: 0,
            next_seq: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.n_rules
    }

    pub fn is_empty(&self) -> bool {
        self.n_rules == 0
    }

    /// Number of distinct masks (subtables).
    pub fn n_subtables(&self) -> usize {
        self.order.len()
    }

    fn resort(&mut self) {
        let subtables = &self.subtables;
        let seq = |idx: u32| subtables[idx as usize].as_ref().map_or(u64::MAX, |s| s.seq);
        self.order.sort_by(|a, b| {
            b.max_priority
                .cmp(&a.max_priority)
                .then_with(|| seq(a.idx).cmp(&seq(b.idx)))
        });
    }

    fn refresh_order(&mut self, idx: usize) {
        let new_max = self.subtables[idx]
            .as_ref()
            .and_then(Subtable::max_priority);
        let pos = self.order.iter().position(|o| o.idx as usize == idx);
        match (pos, new_max) {
            (Some(p), Some(m)) => {
                if self.order[p].max_priority != m {
                    self.order[p].max_priority = m;
                    self.resort();
                }
            }
            (Some(p), None) => {
                self.order.remove(p);
            }
            (None, Some(m)) => {
                self.order.push(Order {
                    max_priority: m,
                    idx: idx as u32,
                });
                self.resort();
            }
            (None, None) => {}
        }
    }

    /// Inserts a rule. A rule with the same match and priority is replaced and returned.
    /// `conj` lists the `conjunction` clauses the rule contributes; empty for an ordinary rule.
    pub fn insert(&mut self, m: &Match, priority: u16, conj: &[ConjClause], rule: R) -> Option<R> {
        let value = m.value.and(&m.mask);
        let idx = match self.by_mask.get(&m.mask) {
            Some(&i) => i,
            None => {
                let st = Subtable::new(&m.mask, self.next_seq);
                self.next_seq += 1;
                let i = match self.free_slots.pop() {
                    Some(i) => {
                        self.subtables[i] = Some(st);
                        i
                    }
                    None => {
                        self.subtables.push(Some(st));
                        self.subtables.len() - 1
                    }
                };
                self.by_mask.insert(m.mask, i);
                i
            }
        };
        let Some(st) = self.subtables[idx].as_mut() else {
            unreachable!("by_mask points at a live subtable")
        };
        let key = st.value_words(&value);
        let hash = Subtable::<R>::hash_words(&key);
        let entry = Entry {
            priority,
            conj: conj.into(),
            rule,
        };
        let soft = entry.is_soft();
        let bucket = st.table.find_mut(hash, |b| b.hash == hash && b.key == key);
        let old = match bucket {
            Some(b) => match b.entries.binary_search_by(|e| priority.cmp(&e.priority)) {
                Ok(p) => {
                    let old = std::mem::replace(&mut b.entries[p], entry);
                    Some(old)
                }
                Err(p) => {
                    b.entries.insert(p, entry);
                    None
                }
            },
            None => {
                st.table.insert_unique(
                    hash,
                    Bucket {
                        hash,
                        key,
                        entries: vec![entry],
                    },
                    |b| b.hash,
                );
                None
            }
        };
        if soft {
            self.n_soft += 1;
        }
        match old {
            Some(old) => {
                if old.is_soft() {
                    self.n_soft -= 1;
                }
                Some(old.rule)
            }
            None => {
                *st.priorities.entry(priority).or_insert(0) += 1;
                st.n_rules += 1;
                self.n_rules += 1;
                self.refresh_order(idx);
                None
            }
        }
    }

    /// Removes the rule with exactly this match and priority.
    pub fn remove(&mut self, m: &Match, priority: u16) -> Option<R> {
        let idx = *self.by_mask.get(&m.mask)?;
        let st = self.subtables[idx].as_mut()?;
        let key = st.value_words(&m.value.and(&m.mask));
        let hash = Subtable::<R>::hash_words(&key);
        let Ok(mut occ) = st
            .table
            .find_entry(hash, |b| b.hash == hash && b.key == key)
        else {
            return None;
        };
        let b = occ.get_mut();
        let p = b
            .entries
            .binary_search_by(|e| priority.cmp(&e.priority))
            .ok()?;
        let old = b.entries.remove(p);
        if b.entries.is_empty() {
            occ.remove();
        }
        if old.is_soft() {
            self.n_soft -= 1;
        }
        if let Some(c) = st.priorities.get_mut(&priority) {
            *c -= 1;
            if *c == 0 {
                st.priorities.remove(&priority);
            }
        }
        st.n_rules -= 1;
        self.n_rules -= 1;
        if st.n_rules == 0 {
            self.subtables[idx] = None;
            self.by_mask.remove(&m.mask);
            self.free_slots.push(idx);
        }
        self.refresh_order(idx);
        Some(old.rule)
    }

    /// The rule with exactly this match and priority.
    pub fn get(&self, m: &Match, priority: u16) -> Option<&R> {
        let idx = *self.by_mask.get(&m.mask)?;
        let st = self.subtables[idx].as_ref()?;
        let key = st.value_words(&m.value.and(&m.mask));
        let hash = Subtable::<R>::hash_words(&key);
        let b = st.table.find(hash, |b| b.hash == hash && b.key == key)?;
        let p = b
            .entries
            .binary_search_by(|e| priority.cmp(&e.priority))
            .ok()?;
        Some(&b.entries[p].rule)
    }

    /// Every rule as (match, priority, rule), in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (Match, u16, &R)> + '_ {
        self.subtables.iter().flatten().flat_map(|st| {
            st.table.iter().flat_map(move |b| {
                let m = st.match_of(b);
                b.entries.iter().map(move |e| (m, e.priority, &e.rule))
            })
        })
    }

    /// The highest-priority rule `key` matches, with conjunctions resolved; ORs into `wc` the
    /// bits of `key` the answer depended on. See the module documentation.
    #[inline]
    pub fn lookup(&self, key: &FlowKey, wc: &mut FlowKey) -> Option<&R> {
        if self.n_soft == 0 {
            return self.lookup_hard(key, wc).map(|e| &e.rule);
        }
        let mut soft = SoftBuf::new();
        let hard = self.lookup_primary(key, wc, &mut soft);
        let hard_pri = hard.map_or(-1, |e| e.priority as i32);
        if soft.is_empty() {
            return hard.map(|e| &e.rule);
        }
        // Soft priorities above the hard rule, highest first.
        let mut pri = soft
            .iter()
            .map(|e| e.priority as i32)
            .filter(|&p| p > hard_pri)
            .max();
        let mut progress = ConjProgress::new();
        while let Some(p) = pri {
            progress.clear();
            for e in soft.iter().filter(|e| e.priority as i32 == p) {
                for c in e.conj.iter() {
                    progress.add(c);
                }
            }
            let mut after = None;
            while let Some(id) = progress.next_complete(after) {
                let mut k2 = *key;
                k2.set(loc::CONJ_ID, id as u128);
                if let Some(e) = self.lookup_hard(&k2, wc) {
                    return Some(&e.rule);
                }
                after = Some(id);
            }
            pri = soft
                .iter()
                .map(|e| e.priority as i32)
                .filter(|&q| q > hard_pri && q < p)
                .max();
        }
        hard.map(|e| &e.rule)
    }

    /// Hard rules only. A bucket whose best rule is soft yields nothing (see module docs).
    #[inline]
    fn lookup_hard(&self, key: &FlowKey, wc: &mut FlowKey) -> Option<&Entry<R>> {
        let mut best: Option<&Entry<R>> = None;
        let mut best_pri = -1i32;
        for o in &self.order {
            if o.max_priority as i32 <= best_pri {
                break;
            }
            let Some(Some(st)) = self.subtables.get(o.idx as usize) else {
                continue;
            };
            if let Some(b) = st.find(key, wc) {
                if let Some(e) = b.entries.first() {
                    if e.priority as i32 > best_pri && !e.is_soft() {
                        best_pri = e.priority as i32;
                        best = Some(e);
                    }
                }
            }
        }
        best
    }

    /// The best hard rule, collecting every soft rule above it that matches.
    fn lookup_primary<'a>(
        &'a self,
        key: &FlowKey,
        wc: &mut FlowKey,
        soft: &mut SoftBuf<'a, R>,
    ) -> Option<&'a Entry<R>> {
        let mut best: Option<&Entry<R>> = None;
        let mut best_pri = -1i32;
        for o in &self.order {
            if o.max_priority as i32 <= best_pri {
                break;
            }
            let Some(Some(st)) = self.subtables.get(o.idx as usize) else {
                continue;
            };
            if let Some(b) = st.find(key, wc) {
                for e in &b.entries {
                    if e.priority as i32 <= best_pri {
                        break;
                    }
                    if e.is_soft() {
                        soft.push(e);
                    } else {
                        best_pri = e.priority as i32;
                        best = Some(e);
                        break;
                    }
                }
            }
        }
        best
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::field::Field;
    use crate::key::FieldLoc;
    use proptest::prelude::*;

    fn m(fields: &[(FieldLoc, u128, u128)]) -> Match {
        let mut r = Match::CATCH_ALL;
        for &(l, v, mk) in fields {
            r.mask.set(l, mk);
            r.value.set(l, v & mk);
        }
        r
    }

    fn exact(l: FieldLoc, v: u128) -> (FieldLoc, u128, u128) {
        (l, v, u128::MAX)
    }

    fn key(fields: &[(FieldLoc, u128)]) -> FlowKey {
        let mut k = FlowKey::ZERO;
        for &(l, v) in fields {
            k.set(l, v);
        }
        k
    }

    fn look<'a>(c: &'a Classifier<&'static str>, k: &FlowKey) -> Option<&'a str> {
        let mut wc = FlowKey::ZERO;
        c.lookup(k, &mut wc).copied()
    }

    const VLAN: FieldLoc = loc::VLAN_TCI;
    fn vlan(v: u16) -> (FieldLoc, u128, u128) {
        (
            VLAN,
            (v | crate::key::VLAN_CFI) as u128,
            (crate::key::VLAN_VID_MASK | crate::key::VLAN_CFI) as u128,
        )
    }
    fn cj(id: u32, clause: u8, n: u8) -> ConjClause {
        ConjClause {
            id,
            clause,
            n_clauses: n,
        }
    }

    #[test]
    fn priority_order_across_subtables() {
        let mut c = Classifier::new();
        c.insert(&m(&[exact(loc::IN_PORT, 1)]), 10, &[], "port");
        c.insert(&m(&[exact(loc::IN_PORT, 1), vlan(5)]), 20, &[], "port+vlan");
        c.insert(&Match::CATCH_ALL, 0, &[], "any");
        assert_eq!(look(&c, &key(&[(loc::IN_PORT, 1)])), Some("port"));
        assert_eq!(
            look(&c, &key(&[(loc::IN_PORT, 1), (VLAN, 0x1005)])),
            Some("port+vlan")
        );
        assert_eq!(
            look(&c, &key(&[(loc::IN_PORT, 2), (VLAN, 0x1005)])),
            Some("any")
        );
        // A higher-priority rule in a later-created subtable still wins.
        c.insert(&m(&[vlan(5)]), 30, &[], "vlan");
        assert_eq!(
            look(&c, &key(&[(loc::IN_PORT, 1), (VLAN, 0x1005)])),
            Some("vlan")
        );
        assert_eq!(c.len(), 4);
        assert_eq!(c.n_subtables(), 4);
    }

    #[test]
    fn same_match_different_priorities_share_a_bucket() {
        let mut c = Classifier::new();
        let mt = m(&[exact(loc::IN_PORT, 3)]);
        c.insert(&mt, 5, &[], "low");
        c.insert(&mt, 50, &[], "high");
        assert_eq!(look(&c, &key(&[(loc::IN_PORT, 3)])), Some("high"));
        assert_eq!(c.remove(&mt, 50), Some("high"));
        assert_eq!(look(&c, &key(&[(loc::IN_PORT, 3)])), Some("low"));
        assert_eq!(c.insert(&mt, 5, &[], "low2"), Some("low"));
        assert_eq!(c.get(&mt, 5), Some(&"low2"));
        assert_eq!(c.remove(&mt, 5), Some("low2"));
        assert!(c.is_empty());
        assert_eq!(c.n_subtables(), 0);
        assert_eq!(look(&c, &key(&[(loc::IN_PORT, 3)])), None);
    }

    #[test]
    fn removal_lowers_subtable_max_priority() {
        let mut c = Classifier::new();
        let a_hi = m(&[exact(loc::IN_PORT, 1)]);
        c.insert(&a_hi, 100, &[], "a100");
        c.insert(&m(&[exact(loc::IN_PORT, 2)]), 1, &[], "a1");
        c.insert(&m(&[vlan(7)]), 50, &[], "v50");
        let k = key(&[(loc::IN_PORT, 2), (VLAN, 0x1007)]);
        assert_eq!(look(&c, &k), Some("v50"));
        c.remove(&a_hi, 100);
        // The in_port subtable now peaks at 1: must be visited after the vlan one.
        assert_eq!(look(&c, &k), Some("v50"));
        assert_eq!(look(&c, &key(&[(loc::IN_PORT, 2)])), Some("a1"));
    }

    #[test]
    fn equal_priority_tie_goes_to_older_subtable() {
        let mut c = Classifier::new();
        c.insert(&m(&[exact(loc::IN_PORT, 1)]), 10, &[], "first");
        c.insert(&m(&[vlan(5)]), 10, &[], "second");
        let k = key(&[(loc::IN_PORT, 1), (VLAN, 0x1005)]);
        assert_eq!(look(&c, &k), Some("first"));
        let mut c2 = Classifier::new();
        c2.insert(&m(&[vlan(5)]), 10, &[], "second");
        c2.insert(&m(&[exact(loc::IN_PORT, 1)]), 10, &[], "first");
        assert_eq!(look(&c2, &k), Some("second"));
    }

    #[test]
    fn prefix_masks() {
        let mut c = Classifier::new();
        c.insert(&m(&[(loc::NW_DST, 0x0a00_0000, 0xff00_0000)]), 8, &[], "/8");
        c.insert(
            &m(&[(loc::NW_DST, 0x0a01_0200, 0xffff_ff00)]),
            24,
            &[],
            "/24",
        );
        c.insert(&m(&[exact(loc::NW_DST, 0x0a01_0203)]), 32, &[], "/32");
        assert_eq!(look(&c, &key(&[(loc::NW_DST, 0x0a01_0203)])), Some("/32"));
        assert_eq!(look(&c, &key(&[(loc::NW_DST, 0x0a01_0204)])), Some("/24"));
        assert_eq!(look(&c, &key(&[(loc::NW_DST, 0x0a02_0204)])), Some("/8"));
        assert_eq!(look(&c, &key(&[(loc::NW_DST, 0x0b02_0204)])), None);
    }

    #[test]
    fn wildcards_cover_probed_masks_and_stop_early() {
        let mut c = Classifier::new();
        c.insert(&m(&[exact(loc::IN_PORT, 1)]), 100, &[], "hi");
        c.insert(&m(&[exact(loc::TP_DST, 80)]), 10, &[], "lo");
        let mut wc = FlowKey::ZERO;
        assert_eq!(c.lookup(&key(&[(loc::IN_PORT, 1)]), &mut wc), Some(&"hi"));
        // The tp_dst subtable cannot beat priority 100, so it was not probed.
        assert_eq!(wc.get(loc::IN_PORT), 0xffff_ffff);
        assert_eq!(wc.get(loc::TP_DST), 0);
        let mut wc = FlowKey::ZERO;
        assert_eq!(
            c.lookup(&key(&[(loc::IN_PORT, 2), (loc::TP_DST, 80)]), &mut wc),
            Some(&"lo")
        );
        assert_eq!(wc.get(loc::TP_DST), 0xffff);
        assert_eq!(wc.get(loc::IN_PORT), 0xffff_ffff);
    }

    /// The seed's table 0: clause 1/2 of conjunction 100 does not exist, so the conjunction
    /// never completes, the `conj_id=100` flow never matches and the frame falls through to the
    /// priority-150 flow. Checked with `ofproto/trace` on OVS 3.1.
    #[test]
    fn seed_incomplete_conjunction_falls_through() {
        let mut c = Classifier::new();
        let port1 = exact(loc::IN_PORT, 1);
        c.insert(
            &m(&[exact(loc::CONJ_ID, 100), port1, vlan(2207)]),
            180,
            &[],
            "conj100",
        );
        c.insert(&m(&[vlan(2207)]), 180, &[cj(100, 2, 2)], "clause2");
        c.insert(&m(&[port1, vlan(2207)]), 150, &[], "p150");
        c.insert(&m(&[port1]), 100, &[], "p100");
        let k = key(&[(loc::IN_PORT, 1), (VLAN, 0x1000 | 2207)]);
        assert_eq!(look(&c, &k), Some("p150"));
        // Adding clause 1 completes it.
        c.insert(&m(&[port1]), 180, &[cj(100, 1, 2)], "clause1");
        assert_eq!(look(&c, &k), Some("conj100"));
        assert_eq!(
            look(&c, &key(&[(loc::IN_PORT, 1), (VLAN, 0x1000 | 5)])),
            Some("p100")
        );
    }

    /// OVS 3.1: the re-lookup with conj_id set is a full lookup over hard rules, so a hard rule
    /// (with another match) above the conj_id flow wins.
    #[test]
    fn conjunction_relookup_is_a_full_lookup() {
        let mut c = Classifier::new();
        c.insert(&m(&[exact(loc::CONJ_ID, 7)]), 100, &[], "conj7");
        c.insert(&m(&[exact(loc::IN_PORT, 1)]), 200, &[cj(7, 1, 2)], "c1");
        c.insert(&m(&[vlan(5)]), 200, &[cj(7, 2, 2)], "c2");
        c.insert(&m(&[exact(loc::IN_PORT, 1), vlan(5)]), 150, &[], "h150");
        let k = key(&[(loc::IN_PORT, 1), (VLAN, 0x1005)]);
        assert_eq!(look(&c, &k), Some("h150"));
        // Without it the conj_id flow is reached.
        c.remove(&m(&[exact(loc::IN_PORT, 1), vlan(5)]), 150);
        assert_eq!(look(&c, &k), Some("conj7"));
    }

    /// OVS 3.1: in the re-lookup, a bucket topped by a soft rule hides the hard rule behind it
    /// (`priority=150,dl_vlan=5` behind `priority=200,dl_vlan=5 actions=conjunction(7,2/2)`).
    /// In the first lookup it does not: an unfinished conjunction hides nothing.
    #[test]
    fn soft_rule_shadows_same_match_only_in_relookup() {
        let mut c = Classifier::new();
        c.insert(&m(&[exact(loc::CONJ_ID, 7)]), 100, &[], "conj7");
        c.insert(&m(&[exact(loc::IN_PORT, 1)]), 200, &[cj(7, 1, 2)], "c1");
        c.insert(&m(&[vlan(5)]), 200, &[cj(7, 2, 2)], "c2");
        c.insert(&m(&[vlan(5)]), 150, &[], "v150");
        c.insert(&m(&[exact(loc::IN_PORT, 1)]), 150, &[], "p150");
        c.insert(&Match::CATCH_ALL, 10, &[], "any");
        assert_eq!(
            look(&c, &key(&[(loc::IN_PORT, 1), (VLAN, 0x1005)])),
            Some("conj7")
        );
        assert_eq!(
            look(&c, &key(&[(loc::IN_PORT, 1), (VLAN, 0x1006)])),
            Some("p150")
        );
        assert_eq!(
            look(&c, &key(&[(loc::IN_PORT, 2), (VLAN, 0x1005)])),
            Some("v150")
        );
    }

    #[test]
    fn conjunction_hidden_by_higher_or_equal_hard_rule() {
        let mut c = Classifier::new();
        c.insert(&m(&[exact(loc::CONJ_ID, 7)]), 100, &[], "conj7");
        c.insert(&m(&[exact(loc::IN_PORT, 1)]), 200, &[cj(7, 1, 2)], "c1");
        c.insert(&m(&[vlan(5)]), 200, &[cj(7, 2, 2)], "c2");
        c.insert(&m(&[exact(loc::TP_DST, 22)]), 200, &[], "hard200");
        let k = key(&[(loc::IN_PORT, 1), (VLAN, 0x1005), (loc::TP_DST, 22)]);
        assert_eq!(look(&c, &k), Some("hard200"));
        let k = key(&[(loc::IN_PORT, 1), (VLAN, 0x1005), (loc::TP_DST, 23)]);
        assert_eq!(look(&c, &k), Some("conj7"));
    }

    /// A flow in two conjunctions; both complete: the lowest id is tried first (OVS picks 7 too).
    #[test]
    fn flow_in_several_conjunctions() {
        let mut c = Classifier::new();
        c.insert(&m(&[exact(loc::CONJ_ID, 7)]), 100, &[], "conj7");
        c.insert(&m(&[exact(loc::CONJ_ID, 8)]), 100, &[], "conj8");
        c.insert(
            &m(&[exact(loc::IN_PORT, 1)]),
            200,
            &[cj(7, 1, 2), cj(8, 1, 2)],
            "c1",
        );
        c.insert(&m(&[vlan(5)]), 200, &[cj(7, 2, 2)], "c7b");
        c.insert(&m(&[exact(loc::DL_SRC, 1)]), 200, &[cj(8, 2, 2)], "c8b");
        assert_eq!(
            look(&c, &key(&[(loc::IN_PORT, 1), (VLAN, 0x1005)])),
            Some("conj7")
        );
        assert_eq!(
            look(&c, &key(&[(loc::IN_PORT, 1), (loc::DL_SRC, 1)])),
            Some("conj8")
        );
        assert_eq!(
            look(
                &c,
                &key(&[(loc::IN_PORT, 1), (VLAN, 0x1005), (loc::DL_SRC, 1)])
            ),
            Some("conj7")
        );
        assert_eq!(
            look(
                &c,
                &key(&[(loc::IN_PORT, 2), (VLAN, 0x1005), (loc::DL_SRC, 1)])
            ),
            None
        );
        // Conjunction 7 completes but has no conj_id flow: the next id at that priority is used.
        c.remove(&m(&[exact(loc::CONJ_ID, 7)]), 100);
        assert_eq!(
            look(
                &c,
                &key(&[(loc::IN_PORT, 1), (VLAN, 0x1005), (loc::DL_SRC, 1)])
            ),
            Some("conj8")
        );
    }

    /// Clauses must meet at one priority; the highest completing priority wins, and a complete
    /// conjunction whose re-lookup finds any hard rule ends the search (OVS 3.1 agrees).
    #[test]
    fn conjunction_priorities() {
        let mut c = Classifier::new();
        c.insert(&m(&[exact(loc::CONJ_ID, 7)]), 100, &[], "conj7");
        c.insert(&m(&[exact(loc::IN_PORT, 1)]), 200, &[cj(7, 1, 2)], "c1");
        c.insert(&m(&[vlan(5)]), 190, &[cj(7, 2, 2)], "c2");
        c.insert(&Match::CATCH_ALL, 10, &[], "any");
        let k = key(&[(loc::IN_PORT, 1), (VLAN, 0x1005)]);
        assert_eq!(look(&c, &k), Some("any"));

        let mut c = Classifier::new();
        c.insert(&m(&[exact(loc::CONJ_ID, 8)]), 100, &[], "conj8");
        c.insert(&m(&[exact(loc::IN_PORT, 1)]), 300, &[cj(7, 1, 2)], "a1");
        c.insert(&m(&[vlan(5)]), 300, &[cj(7, 2, 2)], "a2");
        c.insert(&m(&[exact(loc::IN_PORT, 1)]), 200, &[cj(8, 1, 2)], "b1");
        c.insert(&m(&[vlan(5)]), 200, &[cj(8, 2, 2)], "b2");
        assert_eq!(look(&c, &k), Some("conj8"));
        c.insert(&Match::CATCH_ALL, 50, &[], "any");
        // Conjunction 7 (priority 300) completes; its re-lookup finds the catch-all.
        assert_eq!(look(&c, &k), Some("any"));
    }

    #[test]
    fn three_clause_conjunction_and_wildcards() {
        let mut c = Classifier::new();
        c.insert(&m(&[exact(loc::CONJ_ID, 9)]), 5, &[], "conj9");
        c.insert(&m(&[exact(loc::IN_PORT, 1)]), 50, &[cj(9, 1, 3)], "x");
        c.insert(&m(&[exact(loc::IN_PORT, 2)]), 50, &[cj(9, 1, 3)], "x'");
        c.insert(
            &m(&[exact(loc::NW_SRC, 0x0a000001)]),
            50,
            &[cj(9, 2, 3)],
            "y",
        );
        c.insert(&m(&[exact(loc::TP_DST, 443)]), 50, &[cj(9, 3, 3)], "z");
        let k = key(&[
            (loc::IN_PORT, 2),
            (loc::NW_SRC, 0x0a000001),
            (loc::TP_DST, 443),
        ]);
        let mut wc = FlowKey::ZERO;
        assert_eq!(c.lookup(&k, &mut wc), Some(&"conj9"));
        for l in [loc::IN_PORT, loc::NW_SRC, loc::TP_DST, loc::CONJ_ID] {
            assert_eq!(wc.get(l), wc.get(l) | 0xffff, "{l:?} unwildcarded");
        }
        let k = key(&[
            (loc::IN_PORT, 2),
            (loc::NW_SRC, 0x0a000001),
            (loc::TP_DST, 80),
        ]);
        assert_eq!(look(&c, &k), None);
    }

    #[test]
    fn many_soft_matches_spill() {
        let mut c = Classifier::new();
        c.insert(&m(&[exact(loc::CONJ_ID, 1)]), 1, &[], "conj1");
        // 40 masks, each a clause of conjunction 1 at the same priority, 40 clauses in all.
        for i in 0..40u8 {
            let l = Field::Reg(i % 16).loc().unwrap();
            let mk = 1u128 << (i / 16);
            c.insert(&m(&[(l, mk, mk)]), 9, &[cj(1, i + 1, 40)], "soft");
        }
        let mut k = FlowKey::ZERO;
        for r in 0..16u8 {
            k.set(Field::Reg(r).loc().unwrap(), 0b111);
        }
        assert_eq!(look(&c, &k), Some("conj1"));
        k.set(Field::Reg(3).loc().unwrap(), 0b011);
        assert_eq!(look(&c, &k), None);
    }

    // --- The megaflow invariant -----------------------------------------------------------

    /// Fields the random rules use, with small value spaces so rules overlap often.
    fn fields() -> Vec<FieldLoc> {
        vec![
            loc::IN_PORT,
            loc::METADATA,
            Field::Reg(14).loc().unwrap(),
            loc::VLAN_TCI,
            loc::NW_DST,
            loc::TP_DST,
            loc::CT_STATE,
        ]
    }

    #[derive(Clone, Debug)]
    struct RuleGen {
        fields: Vec<(usize, u8, u8)>, // (field index, value, prefix-ish mask choice)
        priority: u16,
        conj: Option<(u32, u8, u8)>,
    }

    fn rule_strategy() -> impl Strategy<Value = RuleGen> {
        (
            proptest::collection::vec((0usize..7, 0u8..4, 0u8..3), 0..3),
            0u16..6,
            proptest::option::weighted(0.5, (1u32..3, 1u8..3, 2u8..3)),
        )
            .prop_map(|(fields, priority, conj)| RuleGen {
                fields,
                priority,
                conj,
            })
    }

    fn build(rules: &[RuleGen], conj_targets: &[(u32, u16)]) -> Classifier<usize> {
        let fl = fields();
        let mut c = Classifier::new();
        for (i, r) in rules.iter().enumerate() {
            let mut mt = Match::CATCH_ALL;
            for &(f, v, mk) in &r.fields {
                let mask: u128 = match mk {
                    0 => u128::MAX,
                    1 => 0b10,
                    _ => 0b11,
                };
                mt.mask.set(fl[f], mask);
                mt.value.set(fl[f], v as u128 & mask);
            }
            let conj: Vec<ConjClause> = r
                .conj
                .iter()
                .map(|&(id, k, n)| ConjClause {
                    id,
                    clause: k.min(n),
                    n_clauses: n,
                })
                .collect();
            c.insert(&mt, r.priority, &conj, i);
        }
        for (j, &(id, pri)) in conj_targets.iter().enumerate() {
            c.insert(&m(&[exact(loc::CONJ_ID, id as u128)]), pri, &[], 1000 + j);
        }
        c
    }

    struct RefRule {
        m: Match,
        priority: u16,
        id: usize,
        conj: Vec<ConjClause>,
    }

    fn all_rules(c: &Classifier<usize>) -> Vec<RefRule> {
        c.iter()
            .map(|(m, priority, &id)| {
                let st = c.subtables[c.by_mask[&m.mask]].as_ref().unwrap();
                let b = st
                    .table
                    .find(st.hash_key(&m.value), |b| st.match_of(b) == m)
                    .unwrap();
                let e = b.entries.iter().find(|e| e.priority == priority).unwrap();
                RefRule {
                    m,
                    priority,
                    id,
                    conj: e.conj.to_vec(),
                }
            })
            .collect()
    }

    /// Best hard rules by brute force: (priority, every rule id tied at it).
    fn ref_hard(all: &[RefRule], k: &FlowKey, relookup: bool) -> Option<(u16, Vec<usize>)> {
        let visible = |r: &RefRule| {
            r.conj.is_empty()
                && r.m.matches(k)
                // In a re-lookup only a bucket's top rule counts (see module docs).
                && !(relookup && all.iter().any(|o| o.m == r.m && o.priority > r.priority))
        };
        let best = all
            .iter()
            .filter(|r| visible(r))
            .map(|r| r.priority)
            .max()?;
        Some((
            best,
            all.iter()
                .filter(|r| visible(r) && r.priority == best)
                .map(|r| r.id)
                .collect(),
        ))
    }

    /// The module documentation's semantics, straight from the definition.
    fn reference(all: &[RefRule], k: &FlowKey) -> Option<Vec<usize>> {
        let hard = ref_hard(all, k, false);
        let h = hard.as_ref().map_or(-1, |(p, _)| *p as i32);
        let mut pris: Vec<u16> = all
            .iter()
            .filter(|r| !r.conj.is_empty() && r.m.matches(k) && r.priority as i32 > h)
            .map(|r| r.priority)
            .collect();
        pris.sort_unstable_by(|a, b| b.cmp(a));
        pris.dedup();
        for p in pris {
            let mut ids: Vec<u32> = Vec::new();
            for r in all.iter().filter(|r| r.priority == p && r.m.matches(k)) {
                for c in &r.conj {
                    let complete = (1..=c.n_clauses).all(|kk| {
                        all.iter().any(|o| {
                            o.priority == p
                                && o.m.matches(k)
                                && o.conj.iter().any(|oc| {
                                    oc.id == c.id && oc.n_clauses == c.n_clauses && oc.clause == kk
                                })
                        })
                    });
                    if complete {
                        ids.push(c.id);
                    }
                }
            }
            ids.sort_unstable();
            ids.dedup();
            for id in ids {
                let mut k2 = *k;
                k2.set(loc::CONJ_ID, id as u128);
                if let Some((_, set)) = ref_hard(all, &k2, true) {
                    return Some(set);
                }
            }
        }
        hard.map(|(_, set)| set)
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

        /// The lookup agrees with a brute-force model of the semantics, and any key that
        /// agrees with `k` on every bit of `wc` gets the same rule.
        #[test]
        fn megaflow_wildcards_are_sound(
            rules in proptest::collection::vec(rule_strategy(), 0..25),
            targets in proptest::collection::vec((1u32..3, 0u16..6), 0..3),
            kv in proptest::collection::vec(0u8..4, 7),
            noise in proptest::collection::vec(proptest::collection::vec(any::<u64>(), KEY_WORDS), 8),
        ) {
            let c = build(&rules, &targets);
            let fl = fields();
            let mut k = FlowKey::ZERO;
            for (f, v) in fl.iter().zip(kv.iter()) {
                k.set(*f, *v as u128);
            }
            let mut wc = FlowKey::ZERO;
            let r = c.lookup(&k, &mut wc).copied();
            let all = all_rules(&c);
            match (r, reference(&all, &k)) {
                (None, None) => {}
                (Some(id), Some(set)) => prop_assert!(set.contains(&id), "got {} want one of {:?}", id, set),
                (got, want) => prop_assert!(false, "got {:?} want {:?}", got, want),
            }
            for n in &noise {
                let mut k2 = FlowKey::ZERO;
                for (i, &x) in n.iter().enumerate() {
                    // Small random values in the low bits make rule hits likely off `wc` too.
                    let rnd = if x & 1 == 0 { (x >> 1) & 0x3 } else { x };
                    k2.w[i] = (k.w[i] & wc.w[i]) | (rnd & !wc.w[i]);
                }
                k2.set(loc::CONJ_ID, 0);
                let mut wc2 = FlowKey::ZERO;
                prop_assert_eq!(c.lookup(&k2, &mut wc2).copied(), r);
            }
        }
    }
}
