//! Choosing the translated tuple of a new connection.
//!
//! This module owns the search order over a `nat(...)` address and port range: which
//! candidates are tried, in what order, and how `random`, `hash` and `persistent` pick the
//! starting point. It proposes reply tuples; whether one is free is decided by the table under
//! its locks. It must not touch frames or tables.

use crate::tuple::{has_ports, is_icmp, mix, Addr, Tuple};
use pipeline::flow::{NatKind, NatSpec};

/// Upper bound on candidates tried for one connection before declaring the range exhausted,
/// so a hostile or huge range cannot stall a datapath thread.
pub const MAX_ATTEMPTS: u64 = 1 << 20;

/// Default source-port range when `nat(src=...)` gives none: stay in the class of the original
/// port (below 512, privileged, or ephemeral), as Open vSwitch does.
pub fn default_port_range(orig: u16) -> (u16, u16) {
    if orig < 512 {
        (1, 511)
    } else if orig < 1024 {
        (600, 1023)
    } else {
        (1024, 65535)
    }
}

/// The step between the ports a search tries, from hash `h`: coprime with the range's size
/// `n`, so `n` steps visit every port once, and spread over the range, so the ports taken by
/// earlier connections do not turn into one long run that every later search must walk. (Trying
/// the next port up did that: with each connection keeping its original port where it could,
/// consecutive client ports took one block of the range, and a search that started inside it
/// walked to its end; 40,000 connections from one address to one server through a range of
/// 50,001 ports took 6.8 s to commit.)
fn port_step(h: u64, n: u32) -> u32 {
    if n <= 2 {
        return 1;
    }
    let gcd = |mut a: u32, mut b: u32| {
        while b != 0 {
            (a, b) = (b, a % b);
        }
        a
    };
    // Not near 0 or n: such a step walks to a neighbour, up or down, as the old search did.
    let mut step = n / 4 + (h % (n as u64 / 2)) as u32;
    while gcd(step, n) != 1 {
        step += 1;
    }
    step
}

/// Which candidates a search tries, as a set (not in which order): the fixed part of the
/// reply tuple (its translated address and port zeroed), the kind and the range. Two new
/// connections with equal keys compete for the same translated tuples.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RangeKey {
    shape: Tuple,
    src: bool,
    addr_min: u128,
    n_addr: u128,
    port_min: u16,
    n_port: u32,
}

impl RangeKey {
    /// A hash of the key, for choosing its slot in a small table.
    pub fn hash(&self, seed: u64) -> u64 {
        mix(
            self.shape.hash(seed) ^ self.addr_min as u64,
            (self.n_addr as u64) << 32 ^ (self.port_min as u64) << 16 ^ self.n_port as u64 | 1,
        )
    }
}

/// The ordered candidate reply tuples for a new connection `o` under `spec`.
pub struct Candidates {
    o: Tuple,
    kind: NatKind,
    addr_min: u128,
    n_addr: u128,
    addr_i: u128,
    addr_start: u128,
    port_min: u16,
    n_port: u32,
    port_start: u32,
    /// The distance between successive ports tried, coprime with `n_port` (see
    /// [`port_step`]); 0 until a search goes past its start, as most never do.
    port_step: u32,
    /// What the step is derived from.
    step_hash: u64,
    /// Original port tried first (when inside the range and not `random`).
    first: Option<u16>,
    port_i: u32,
    tried: u64,
}

impl Candidates {
    pub fn new(o: &Tuple, spec: &NatSpec, kind: NatKind, seed: u64, rand: u64) -> Candidates {
        let (orig_addr, orig_port) = match kind {
            NatKind::Src => (o.src, o.sport),
            NatKind::Dst => (o.dst, if is_icmp(o.proto) { o.sport } else { o.dport }),
        };
        let amin = spec
            .addr_min
            .map(Addr::from_ip)
            .unwrap_or(orig_addr)
            .to_u128();
        let amax = spec
            .addr_max
            .map(Addr::from_ip)
            .map(|a| a.to_u128())
            .unwrap_or(amin)
            .max(amin);
        let n_addr = (amax - amin).saturating_add(1);
        // Address start: `persistent` keys on the source alone so one client keeps one address;
        // otherwise on the address pair (plus ports with `hash`), or the caller's PRNG.
        let ah = if spec.random {
            rand
        } else if spec.persistent {
            mix(
                o.src.to_u128() as u64 ^ seed,
                (o.src.to_u128() >> 64) as u64 ^ 0x9e37_79b9,
            )
        } else if spec.hash {
            o.hash(seed)
        } else {
            mix(
                o.src.to_u128() as u64 ^ seed,
                o.dst.to_u128() as u64 ^ 0x2545_f491,
            )
        };
        let addr_start = ah as u128 % n_addr;
        let ports = has_ports(o.proto);
        let (pmin, pmax, keep) = match (spec.port_min, kind) {
            _ if !ports => (0, 0, true),
            (Some(pmin), _) => {
                let pmax = spec.port_max.unwrap_or(pmin).max(pmin);
                (pmin, pmax, (pmin..=pmax).contains(&orig_port))
            }
            (None, NatKind::Src) => {
                let (a, b) = default_port_range(orig_port);
                (a, b, true)
            }
            // DNAT without ports keeps the destination port.
            (None, NatKind::Dst) => (orig_port, orig_port, true),
        };
        let n_port = if ports { (pmax - pmin) as u32 + 1 } else { 1 };
        let ph = if spec.random {
            mix(rand, 0x94d0_49bb)
        } else {
            o.hash(seed ^ 0x5555)
        };
        let first = (keep && !spec.random && ports).then_some(orig_port);
        Candidates {
            o: *o,
            kind,
            addr_min: amin,
            n_addr,
            addr_i: 0,
            addr_start,
            port_min: pmin,
            n_port,
            port_start: (ph % n_port as u64) as u32,
            port_step: 0,
            step_hash: ph,
            first,
            port_i: 0,
            tried: 0,
        }
    }

    /// The set this search draws from (see [`RangeKey`]).
    pub fn range_key(&self) -> RangeKey {
        RangeKey {
            shape: self.build(Addr::from_u128(0), has_ports(self.o.proto).then_some(0)),
            src: matches!(self.kind, NatKind::Src),
            addr_min: self.addr_min,
            n_addr: self.n_addr,
            port_min: self.port_min,
            n_port: self.n_port,
        }
    }

    /// Whether the candidates given so far were the whole set: every address and port of the
    /// range, not a search cut short by [`MAX_ATTEMPTS`].
    pub fn gave_all(&self) -> bool {
        self.addr_i >= self.n_addr
    }

    fn build(&self, addr: Addr, port: Option<u16>) -> Tuple {
        let o = &self.o;
        let mut r = o.reverse();
        match self.kind {
            NatKind::Src => {
                r.dst = addr;
                if let Some(p) = port {
                    if is_icmp(o.proto) {
                        r.sport = p;
                    } else {
                        r.dport = p;
                    }
                }
            }
            NatKind::Dst => {
                r.src = addr;
                if let Some(p) = port {
                    r.sport = p;
                }
            }
        }
        r
    }
}

impl Iterator for Candidates {
    type Item = Tuple;

    fn next(&mut self) -> Option<Tuple> {
        // Order: for each address (from the start address on), the original port first, then
        // the range from its start point by `port_step`, skipping the original.
        loop {
            if self.addr_i >= self.n_addr || self.tried >= MAX_ATTEMPTS {
                return None;
            }
            let addr = Addr::from_u128(
                self.addr_min
                    .wrapping_add((self.addr_start + self.addr_i) % self.n_addr),
            );
            let slots = self.n_port + self.first.is_some() as u32;
            if self.port_i >= slots {
                self.port_i = 0;
                self.addr_i += 1;
                continue;
            }
            let i = self.port_i;
            self.port_i += 1;
            let port = match self.first {
                Some(f) if i == 0 => f,
                _ => {
                    let k = (i - self.first.is_some() as u32) as u64;
                    if k == 1 && self.port_step == 0 {
                        self.port_step =
                            port_step(mix(self.step_hash, 0x2d35_8dcc_aa6c_78a5), self.n_port);
                    }
                    let off =
                        (self.port_start as u64 + k * self.port_step as u64) % self.n_port as u64;
                    let p = self.port_min as u32 + off as u32;
                    if Some(p as u16) == self.first {
                        continue;
                    }
                    p as u16
                }
            };
            self.tried += 1;
            let port = has_ports(self.o.proto).then_some(port);
            return Some(self.build(addr, port));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tuple::IPPROTO_TCP;
    use std::net::{IpAddr, Ipv4Addr};

    fn t() -> Tuple {
        Tuple {
            src: Addr::v4(0xc0a8_0a05),
            dst: Addr::v4(0x0808_0808),
            sport: 40000,
            dport: 80,
            zone: 9,
            proto: IPPROTO_TCP,
            v6: false,
        }
    }

    fn spec(pmin: Option<u16>, pmax: Option<u16>) -> NatSpec {
        NatSpec {
            kind: Some(NatKind::Src),
            addr_min: Some(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1))),
            addr_max: Some(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2))),
            port_min: pmin,
            port_max: pmax,
            ..NatSpec::default()
        }
    }

    #[test]
    fn keeps_original_port_first_then_covers_range_once_per_address() {
        let c: Vec<Tuple> =
            Candidates::new(&t(), &spec(Some(39990), Some(40009)), NatKind::Src, 1, 0).collect();
        assert_eq!(c.len(), 40);
        assert_eq!(c[0].dport, 40000);
        let mut ports: Vec<(u128, u16)> = c.iter().map(|r| (r.dst.to_u128(), r.dport)).collect();
        ports.sort();
        ports.dedup();
        assert_eq!(ports.len(), 40, "every (address, port) exactly once");
        assert!(c
            .iter()
            .all(|r| (39990..=40009).contains(&r.dport) && r.src == t().dst && r.sport == 80));
    }

    /// Many connections from one client to one server through one address: each keeps its
    /// port where it can and otherwise takes the first free candidate. The candidates tried in
    /// all stay a small multiple of the connections up to 80% of the range taken (with each
    /// search trying the next port up they were about 1,600 per connection).
    #[test]
    fn searches_stay_short_as_the_range_fills() {
        let s = NatSpec {
            addr_max: None,
            ..spec(Some(10000), Some(60000))
        };
        let mut taken = std::collections::HashSet::new();
        let mut tried = 0u64;
        const CONNS: u16 = 40_000;
        for sport in 1..=CONNS {
            let o = Tuple { sport, ..t() };
            let mut found = false;
            for c in Candidates::new(&o, &s, NatKind::Src, 1, 0) {
                tried += 1;
                if taken.insert(c.dport) {
                    found = true;
                    break;
                }
            }
            assert!(found, "connection {sport} found no free port");
        }
        assert!(
            tried <= 4 * CONNS as u64,
            "{tried} candidates for {CONNS} connections"
        );
    }

    /// Every size of range is covered once per address, whatever the step.
    #[test]
    fn every_range_size_is_covered_once() {
        for n in [1u16, 2, 3, 4, 6, 7, 12, 97, 360, 1000, 4096] {
            let s = spec(Some(20000), Some(20000 + n - 1));
            for sport in [1u16, 20000, 20000 + n / 2] {
                let o = Tuple { sport, ..t() };
                let mut ports: Vec<(u128, u16)> = Candidates::new(&o, &s, NatKind::Src, 3, 0)
                    .map(|r| (r.dst.to_u128(), r.dport))
                    .collect();
                assert_eq!(ports.len(), 2 * n as usize, "range of {n}, port {sport}");
                ports.sort();
                ports.dedup();
                assert_eq!(ports.len(), 2 * n as usize, "range of {n}, port {sport}");
            }
        }
    }

    #[test]
    fn default_range_follows_original_port_class() {
        assert_eq!(default_port_range(80), (1, 511));
        assert_eq!(default_port_range(700), (600, 1023));
        assert_eq!(default_port_range(40000), (1024, 65535));
        let c = Candidates::new(&t(), &spec(None, None), NatKind::Src, 1, 0);
        assert_eq!(c.n_port, 65535 - 1024 + 1);
    }

    #[test]
    fn persistent_picks_same_address_for_same_source() {
        let mut s = spec(None, None);
        s.addr_max = Some(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 200)));
        s.persistent = true;
        let mut firsts = std::collections::HashSet::new();
        for d in 0..50u32 {
            let o = Tuple {
                dst: Addr::v4(0x0808_0000 + d),
                ..t()
            };
            firsts.insert(
                Candidates::new(&o, &s, NatKind::Src, 7, 0)
                    .next()
                    .unwrap()
                    .dst,
            );
        }
        assert_eq!(firsts.len(), 1);
        s.persistent = false;
        firsts.clear();
        for d in 0..50u32 {
            let o = Tuple {
                dst: Addr::v4(0x0808_0000 + d),
                ..t()
            };
            firsts.insert(
                Candidates::new(&o, &s, NatKind::Src, 7, 0)
                    .next()
                    .unwrap()
                    .dst,
            );
        }
        assert!(firsts.len() > 1);
    }

    #[test]
    fn random_start_follows_the_prng_value() {
        let mut s = spec(Some(1000), Some(1999));
        s.random = true;
        let a = Candidates::new(&t(), &s, NatKind::Src, 1, 12345)
            .next()
            .unwrap();
        let b = Candidates::new(&t(), &s, NatKind::Src, 1, 99999)
            .next()
            .unwrap();
        assert_ne!((a.dst, a.dport), (b.dst, b.dport));
    }

    #[test]
    fn dnat_rewrites_reply_source() {
        let s = NatSpec {
            kind: Some(NatKind::Dst),
            addr_min: Some(IpAddr::V4(Ipv4Addr::new(10, 1, 1, 1))),
            port_min: Some(8080),
            ..NatSpec::default()
        };
        let r = Candidates::new(&t(), &s, NatKind::Dst, 1, 0)
            .next()
            .unwrap();
        assert_eq!(
            (r.src, r.sport, r.dst, r.dport),
            (Addr::v4(0x0a01_0101), 8080, t().src, 40000)
        );
    }
}
