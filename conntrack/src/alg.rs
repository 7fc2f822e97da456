//! State of the connection-tracking helpers (`ct(..., alg=ftp)` and `alg=tftp`).
//!
//! This module owns what the helpers remember beside the connection table: expectations (the
//! data connections a control connection announced, each matching a new connection's tuple
//! with the source port ignored), the per-connection state of FTP control connections (the
//! sequence-number offsets their payload rewrites introduced, and the expectations they own),
//! and which connections were created from an expectation (their parent's original tuple).
//! All of it sits in one table behind one read-write lock, away from the 128-byte connection
//! records; only connections flagged as helper or related connections ever reach it (a data
//! connection's packets only read it), so connections without a helper pay one flag test and
//! nothing else.
//!
//! It must not parse frames (that is [`crate::ftp`] and [`crate::packet`]) or touch the
//! connection table; the tracker calls it with the shard lock of the connection concerned held
//! (shard lock first, this table's lock second, never the other way round).
//!
//! Semantics follow Open vSwitch's userspace conntrack where it was checked against it:
//! an expectation is not consumed by the connection that matches it (several data connections
//! may match one announcement), a related connection keeps `+rel` for its whole life, inherits
//! the parent's mark and label, and reports the parent's original tuple as its `ct_nw_*`/
//! `ct_tp_*`; expectations go away with their parent. Unlike Open vSwitch they also expire on
//! their own (after [`crate::Config::expectation_timeout`]) and their number is bounded
//! ([`crate::Config::max_expectations`]), so a control connection cannot pin memory forever.

use crate::tuple::{Addr, Tuple, IPPROTO_TCP, IPPROTO_UDP};
use pipeline::ct::Nanos;
use std::collections::HashMap;

/// The helpers a connection can be committed with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Helper {
    Ftp,
    Tftp,
}

impl Helper {
    /// The helper `alg=NAME` asks for on a connection of protocol `proto` (FTP runs over TCP,
    /// TFTP over UDP; any other pairing has no helper).
    pub fn for_conn(name: Option<&str>, proto: u8) -> Option<Helper> {
        match (name?, proto) {
            ("ftp", IPPROTO_TCP) => Some(Helper::Ftp),
            ("tftp", IPPROTO_UDP) => Some(Helper::Tftp),
            _ => None,
        }
    }

    /// The name a conntrack dump prints after `helper=`.
    pub fn name(self) -> &'static str {
        match self {
            Helper::Ftp => "ftp",
            Helper::Tftp => "tftp",
        }
    }
}

/// Whether a packet of an FTP control connection is read by the helper when it passes a
/// `ct()` action asking for `alg`: always when that action names `ftp`; otherwise only on the
/// standard control port. This is Open vSwitch's rule (an action without `alg=ftp` still runs
/// the helper of a connection committed with it, but only for port 21).
pub fn ftp_ctl_packet(alg: Option<&str>, t: &Tuple) -> bool {
    alg == Some("ftp") || t.sport == 21 || t.dport == 21
}

/// What an expectation matches: a new connection's tuple without its source port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ExpKey {
    pub src: Addr,
    pub dst: Addr,
    pub dport: u16,
    pub zone: u16,
    pub proto: u8,
    pub v6: bool,
}

impl ExpKey {
    /// The key a new connection with original tuple `t` is looked up by.
    pub fn of(t: &Tuple) -> ExpKey {
        ExpKey {
            src: t.src,
            dst: t.dst,
            dport: t.dport,
            zone: t.zone,
            proto: t.proto,
            v6: t.v6,
        }
    }
}

/// An announced data connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Expect {
    /// The announcing connection's original tuple.
    pub parent: Tuple,
    /// The parent's mark and label when the announcement was seen.
    pub mark: u32,
    pub label: u128,
    /// Under NAT, the data connection's reply tuple takes `nat_addr` as its destination
    /// (`nat_dst`, a source translation) or its source (a destination translation), so it is
    /// translated the way its parent is. Without NAT in the parent, `nat_addr` is the address
    /// already there and nothing changes.
    pub nat_dst: bool,
    pub nat_addr: Addr,
    pub expires: Nanos,
}

/// Sequence-number offset of one direction of a control connection whose payload rewrites
/// changed its length. Segments up to and including the one at `pos` (the last rewritten one)
/// are shifted by `before`, later ones by `after`, so a retransmission of data sent before a
/// rewrite keeps its old numbering.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SeqOff {
    pub pos: u32,
    pub before: i32,
    pub after: i32,
    pub set: bool,
}

#[inline]
fn seq_after(a: u32, b: u32) -> bool {
    (b.wrapping_sub(a) as i32) < 0
}

impl SeqOff {
    /// The shift of a segment starting at `seq` (in the sender's numbering).
    pub fn for_seq(&self, seq: u32) -> i32 {
        match self.set {
            false => 0,
            true if seq_after(seq, self.pos) => self.after,
            true => self.before,
        }
    }

    /// The shift to take back from an acknowledgement `ack` of this direction's data (in the
    /// receiver's numbering).
    pub fn for_ack(&self, ack: u32) -> i32 {
        match self.set {
            false => 0,
            true if seq_after(ack.wrapping_sub(self.before as u32), self.pos) => self.after,
            true => self.before,
        }
    }

    /// Records that the segment at `seq` grew by `delta` bytes. A segment at or before the
    /// last rewritten one is a retransmission whose growth is already counted.
    pub fn grow(&mut self, seq: u32, delta: i32) {
        if delta == 0 || (self.set && !seq_after(seq, self.pos)) {
            return;
        }
        self.before = self.after;
        self.after = self.after.wrapping_add(delta);
        self.pos = seq;
        self.set = true;
    }
}

/// A connection committed with a helper.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HelperConn {
    pub helper: Helper,
    /// Per direction (original, reply).
    pub seq: [SeqOff; 2],
    /// Expectations this connection announced (some may since have expired).
    pub expects: Vec<ExpKey>,
}

/// Why an expectation was not recorded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AddExpect {
    Created,
    /// The same expectation already exists (its parent keeps it; it is refreshed if that is
    /// this parent).
    Exists,
    /// The global limit is reached.
    Refused,
}

/// Everything the helpers remember.
#[derive(Debug, Default)]
pub struct AlgTable {
    pub expects: HashMap<ExpKey, Expect>,
    /// Helper connections by original tuple.
    pub helpers: HashMap<Tuple, HelperConn>,
    /// Related connections by original tuple: their parent's original tuple.
    pub related: HashMap<Tuple, Tuple>,
}

impl AlgTable {
    /// Records `e` under `k` unless `limit` expectations already exist.
    pub fn add_expect(&mut self, k: ExpKey, e: Expect, limit: usize) -> AddExpect {
        if let Some(old) = self.expects.get_mut(&k) {
            if old.parent == e.parent {
                old.expires = e.expires;
            }
            return AddExpect::Exists;
        }
        if self.expects.len() >= limit {
            return AddExpect::Refused;
        }
        self.expects.insert(k, e);
        let expects = &self.expects;
        if let Some(h) = self.helpers.get_mut(&e.parent) {
            // Drop the keys of expectations gone since, so the list stays as short as the
            // live ones.
            h.expects
                .retain(|k| expects.get(k).is_some_and(|x| x.parent == e.parent));
            h.expects.push(k);
        }
        AddExpect::Created
    }

    /// The live expectation a new connection with original tuple `t` matches (an expired one
    /// is removed on the way).
    pub fn find_expect(&mut self, t: &Tuple, now: Nanos) -> Option<Expect> {
        let k = ExpKey::of(t);
        let e = *self.expects.get(&k)?;
        if e.expires <= now {
            self.expects.remove(&k);
            return None;
        }
        Some(e)
    }

    /// Forgets what is kept about the connection with original tuple `orig` (being removed):
    /// its helper state and the expectations it announced, or its parent link.
    pub fn forget(&mut self, orig: &Tuple) {
        if let Some(h) = self.helpers.remove(orig) {
            for k in h.expects {
                if self.expects.get(&k).is_some_and(|e| e.parent == *orig) {
                    self.expects.remove(&k);
                }
            }
        }
        self.related.remove(orig);
    }

    /// Removes expired expectations; returns how many.
    pub fn expire(&mut self, now: Nanos) -> usize {
        let n = self.expects.len();
        self.expects.retain(|_, e| e.expires > now);
        n - self.expects.len()
    }

    /// Removes the expectations of `zone` (all, with `None`).
    pub fn flush(&mut self, zone: Option<u16>) {
        match zone {
            None => self.expects.clear(),
            Some(z) => self.expects.retain(|k, _| k.zone != z),
        }
    }

    pub fn clear(&mut self) {
        self.expects.clear();
        self.helpers.clear();
        self.related.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequence_offsets_keep_retransmissions_in_old_numbering() {
        let mut s = SeqOff::default();
        assert_eq!(s.for_seq(5), 0);
        s.grow(100, 3);
        assert_eq!(
            s.for_seq(100),
            0,
            "the rewritten segment itself moves by what came before"
        );
        assert_eq!(s.for_seq(130), 3);
        assert_eq!(s.for_seq(50), 0, "retransmitted earlier data");
        // A retransmission of the rewritten segment is not counted twice.
        s.grow(100, 3);
        assert_eq!(s.for_seq(130), 3);
        s.grow(200, -1);
        assert_eq!((s.for_seq(150), s.for_seq(250)), (3, 2));
        // Acks in the receiver's numbering: the segment at 200 was received as 203, so an
        // ack of 203 covers what came before it and one of 226 part of what followed.
        assert_eq!(s.for_ack(226), 2);
        assert_eq!(s.for_ack(203), 3);
        // Wrap-around.
        let mut w = SeqOff::default();
        w.grow(u32::MAX - 1, 4);
        assert_eq!(w.for_seq(2), 4);
        assert_eq!(w.for_ack(10), 4);
    }

    #[test]
    fn expectations_are_bounded_and_go_with_their_parent() {
        let parent = Tuple {
            src: Addr::v4(1),
            dst: Addr::v4(2),
            sport: 40000,
            dport: 21,
            zone: 1,
            proto: IPPROTO_TCP,
            v6: false,
        };
        let mut t = AlgTable::default();
        t.helpers.insert(
            parent,
            HelperConn {
                helper: Helper::Ftp,
                seq: [SeqOff::default(); 2],
                expects: Vec::new(),
            },
        );
        let e = Expect {
            parent,
            mark: 0,
            label: 0,
            nat_dst: false,
            nat_addr: Addr::v4(1),
            expires: 10,
        };
        let key = |p: u16| ExpKey {
            src: Addr::v4(2),
            dst: Addr::v4(1),
            dport: p,
            zone: 1,
            proto: IPPROTO_TCP,
            v6: false,
        };
        assert_eq!(t.add_expect(key(1), e, 2), AddExpect::Created);
        assert_eq!(t.add_expect(key(1), e, 2), AddExpect::Exists);
        assert_eq!(t.add_expect(key(2), e, 2), AddExpect::Created);
        assert_eq!(t.add_expect(key(3), e, 2), AddExpect::Refused);
        let data = Tuple {
            src: Addr::v4(2),
            dst: Addr::v4(1),
            sport: 20,
            dport: 2,
            ..parent
        };
        assert!(t.find_expect(&data, 5).is_some());
        assert!(t.find_expect(&Tuple { sport: 999, ..data }, 5).is_some());
        assert!(t.find_expect(&Tuple { dport: 3, ..data }, 5).is_none());
        assert!(t.find_expect(&data, 10).is_none(), "expired");
        assert_eq!(t.expects.len(), 1);
        t.forget(&parent);
        assert!(t.expects.is_empty() && t.helpers.is_empty());
    }
}
