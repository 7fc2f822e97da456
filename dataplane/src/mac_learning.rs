//! MAC learning and the NORMAL action: a forwarding database per bridge (MAC and VLAN to port,
//! with aging, station moves and a size limit) and the L2 switching decision Open vSwitch's
//! NORMAL makes, including the VLAN modes of its Port table (access `tag`, `trunks`, native).
//!
//! Owns the FDB and the decision; it does not send frames (translation turns the decision into
//! outputs). Time is passed in, so tests drive aging.

use pipeline::ct::Nanos;
use pipeline::key::{loc, FlowKey, VLAN_CFI, VLAN_VID_MASK};
use pipeline::xlate::NormalOutput;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::RwLock;

/// Open vSwitch's defaults: entries age out after 300 s; at most 8192 entries per bridge.
pub const DEFAULT_AGING_SECS: u64 = 300;
pub const DEFAULT_MAX_ENTRIES: usize = 8192;

const NANOS_PER_SEC: u64 = 1_000_000_000;

/// A port's VLAN mode, as Open vSwitch's Port table offers them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VlanMode {
    /// Carries every VLAN, tagged; untagged frames are VLAN 0.
    TrunkAll,
    /// Carries the listed VLANs tagged (`trunks = [...]`); untagged frames are VLAN 0 if listed.
    Trunk(Vec<u16>),
    /// `tag = N`: untagged frames belong to VLAN N; tagged frames are dropped.
    Access(u16),
    /// `tag = N` plus `trunks`: untagged frames belong to N and leave untagged.
    NativeUntagged { tag: u16, trunks: Vec<u16> },
    /// `tag = N` plus `trunks`: untagged frames belong to N and leave tagged.
    NativeTagged { tag: u16, trunks: Vec<u16> },
}

impl VlanMode {
    /// The VLAN a frame arriving with `tci` (OVS form, 0 = untagged) belongs to, or `None` if
    /// the port does not accept it.
    pub fn input_vlan(&self, tci: u16) -> Option<u16> {
        let tagged = tci & VLAN_CFI != 0;
        let vid = tci & VLAN_VID_MASK;
        match self {
            VlanMode::TrunkAll => Some(if tagged { vid } else { 0 }),
            VlanMode::Trunk(list) => {
                let v = if tagged { vid } else { 0 };
                list.contains(&v).then_some(v)
            }
            VlanMode::Access(tag) => (!tagged || vid == 0).then_some(*tag),
            VlanMode::NativeUntagged { tag, trunks } | VlanMode::NativeTagged { tag, trunks } => {
                if !tagged || vid == 0 {
                    Some(*tag)
                } else if trunks.is_empty() || trunks.contains(&vid) || vid == *tag {
                    Some(vid)
                } else {
                    None
                }
            }
        }
    }

    /// Whether frames of `vlan` may leave this port, and with which TCI (OVS form).
    pub fn output_tci(&self, vlan: u16, pcp_tci: u16) -> Option<u16> {
        let tagged = |v: u16| {
            if v == 0 {
                0
            } else {
                VLAN_CFI | (pcp_tci & 0xe000) | v
            }
        };
        match self {
            VlanMode::TrunkAll => Some(tagged(vlan)),
            VlanMode::Trunk(list) => list.contains(&vlan).then(|| tagged(vlan)),
            VlanMode::Access(tag) => (vlan == *tag).then_some(0),
            VlanMode::NativeUntagged { tag, trunks } => {
                if vlan == *tag {
                    Some(0)
                } else if trunks.is_empty() || trunks.contains(&vlan) {
                    Some(tagged(vlan))
                } else {
                    None
                }
            }
            VlanMode::NativeTagged { tag, trunks } => {
                (vlan == *tag || trunks.is_empty() || trunks.contains(&vlan)).then(|| tagged(vlan))
            }
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FdbEntry {
    pub port: u32,
    pub last_seen: Nanos,
}

/// Counters of one forwarding database.
#[derive(Debug, Default)]
pub struct FdbStats {
    pub learned: AtomicU64,
    pub moved: AtomicU64,
    pub expired: AtomicU64,
    /// Learning refused because the table was full.
    pub full: AtomicU64,
}

/// The forwarding database of one bridge. Shared by datapath threads: lookups take a read lock,
/// learning a write lock only when something changes.
pub struct Fdb {
    table: RwLock<HashMap<(u16, [u8; 6]), FdbEntry>>,
    pub aging: Nanos,
    pub max_entries: usize,
    /// Bumped whenever an entry appears, moves or leaves: cached forwarding decisions made
    /// before are stale.
    generation: AtomicU64,
    pub stats: FdbStats,
}

impl Default for Fdb {
    fn default() -> Self {
        Fdb::new(DEFAULT_AGING_SECS, DEFAULT_MAX_ENTRIES)
    }
}

impl Fdb {
    pub fn new(aging_secs: u64, max_entries: usize) -> Self {
        Fdb {
            table: RwLock::new(HashMap::new()),
            aging: aging_secs.saturating_mul(NANOS_PER_SEC),
            max_entries,
            generation: AtomicU64::new(0),
            stats: FdbStats::default(),
        }
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Records that `mac` on `vlan` was seen on `port`.
    pub fn learn(&self, vlan: u16, mac: [u8; 6], port: u32, now: Nanos) {
        if mac[0] & 1 != 0 {
            return; // never learn group addresses
        }
        {
            let t = self.table.read().unwrap_or_else(|e| e.into_inner());
            if let Some(e) = t.get(&(vlan, mac)) {
                // Refreshing the age alone is not worth a write lock on every frame.
                if e.port == port && now.saturating_sub(e.last_seen) < NANOS_PER_SEC {
                    return;
                }
            }
        }
        let mut t = self.table.write().unwrap_or_else(|e| e.into_inner());
        let len = t.len();
        match t.get_mut(&(vlan, mac)) {
            Some(e) => {
                if e.port != port {
                    e.port = port;
                    self.stats.moved.fetch_add(1, Ordering::Relaxed);
                    self.generation.fetch_add(1, Ordering::AcqRel);
                }
                e.last_seen = now;
            }
            None => {
                if len >= self.max_entries {
                    self.stats.full.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                t.insert(
                    (vlan, mac),
                    FdbEntry {
                        port,
                        last_seen: now,
                    },
                );
                self.stats.learned.fetch_add(1, Ordering::Relaxed);
                self.generation.fetch_add(1, Ordering::AcqRel);
            }
        }
    }

    /// The port `mac` on `vlan` was last seen on, if it has not aged out.
    pub fn lookup(&self, vlan: u16, mac: [u8; 6], now: Nanos) -> Option<u32> {
        let t = self.table.read().unwrap_or_else(|e| e.into_inner());
        t.get(&(vlan, mac))
            .filter(|e| now.saturating_sub(e.last_seen) < self.aging)
            .map(|e| e.port)
    }

    /// Removes aged-out entries. Returns how many.
    pub fn expire(&self, now: Nanos) -> usize {
        let mut t = self.table.write().unwrap_or_else(|e| e.into_inner());
        let before = t.len();
        let aging = self.aging;
        t.retain(|_, e| now.saturating_sub(e.last_seen) < aging);
        let n = before - t.len();
        if n > 0 {
            self.stats.expired.fetch_add(n as u64, Ordering::Relaxed);
            self.generation.fetch_add(1, Ordering::AcqRel);
        }
        n
    }

    /// Forgets every entry on `port` (the port went away).
    pub fn flush_port(&self, port: u32) {
        let mut t = self.table.write().unwrap_or_else(|e| e.into_inner());
        t.retain(|_, e| e.port != port);
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    pub fn flush(&self) {
        self.table
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// Entries sorted by port, VLAN, MAC: `(port, vlan, mac, age in seconds)`.
    pub fn entries(&self, now: Nanos) -> Vec<(u32, u16, [u8; 6], u64)> {
        let t = self.table.read().unwrap_or_else(|e| e.into_inner());
        let mut v: Vec<_> = t
            .iter()
            .filter(|(_, e)| now.saturating_sub(e.last_seen) < self.aging)
            .map(|((vlan, mac), e)| {
                (
                    e.port,
                    *vlan,
                    *mac,
                    now.saturating_sub(e.last_seen) / NANOS_PER_SEC,
                )
            })
            .collect();
        v.sort();
        v
    }

    /// `ovs-appctl fdb/show` format: a header line, then ` port  VLAN  MAC                Age`.
    pub fn format_show(&self, now: Nanos, port_name: &dyn Fn(u32) -> String) -> String {
        let mut s = String::from(" port  VLAN  MAC                Age\n");
        for (port, vlan, mac, age) in self.entries(now) {
            s.push_str(&format!(
                "{:>5}  {:>4}  {:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}  {:>3}\n",
                port_name(port),
                vlan,
                mac[0],
                mac[1],
                mac[2],
                mac[3],
                mac[4],
                mac[5],
                age
            ));
        }
        s
    }
}

/// A bridge port as NORMAL sees it.
#[derive(Clone, Debug)]
pub struct NormalPort {
    pub ofport: u32,
    pub vlan: VlanMode,
    /// Excluded from flooding (Open vSwitch's `no-flood`).
    pub no_flood: bool,
}

fn mac_of(k: &FlowKey, l: pipeline::key::FieldLoc) -> [u8; 6] {
    let b = (k.get(l) as u64).to_be_bytes();
    [b[2], b[3], b[4], b[5], b[6], b[7]]
}

/// The NORMAL action for a frame described by `flow` (its `in_port` is an OpenFlow port of the
/// bridge whose `ports` are given). Learns the source, then appends the outputs to `out`.
pub fn normal(
    fdb: &Fdb,
    ports: &[NormalPort],
    flow: &FlowKey,
    wc: &mut FlowKey,
    now: Nanos,
    out: &mut Vec<NormalOutput>,
) {
    // The decision reads these; a cached decision must match them exactly.
    for l in [loc::IN_PORT, loc::DL_SRC, loc::DL_DST, loc::VLAN_TCI] {
        wc.set_all(l);
    }
    let in_port = flow.in_port();
    let Some(inp) = ports.iter().find(|p| p.ofport == in_port) else {
        return;
    };
    let tci = flow.vlan_tci();
    let Some(vlan) = inp.vlan.input_vlan(tci) else {
        return;
    };
    let src = mac_of(flow, loc::DL_SRC);
    let dst = mac_of(flow, loc::DL_DST);
    fdb.learn(vlan, src, in_port, now);

    let push = |p: &NormalPort, out: &mut Vec<NormalOutput>| {
        if let Some(t) = p.vlan.output_tci(vlan, tci) {
            out.push(NormalOutput {
                ofport: p.ofport,
                vlan_tci: t,
            });
        }
    };
    if dst[0] & 1 == 0 {
        if let Some(port) = fdb.lookup(vlan, dst, now) {
            if port != in_port {
                if let Some(p) = ports.iter().find(|p| p.ofport == port) {
                    push(p, out);
                }
            }
            // Known on the input port: the frame is already where it belongs.
            return;
        }
    }
    for p in ports.iter().filter(|p| p.ofport != in_port && !p.no_flood) {
        push(p, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: [u8; 6] = [0x50, 0x6b, 0x8d, 0, 0, 1];
    const B: [u8; 6] = [0x50, 0x6b, 0x8d, 0, 0, 2];
    const BCAST: [u8; 6] = [0xff; 6];
    const SEC: u64 = NANOS_PER_SEC;

    fn flow(in_port: u32, src: [u8; 6], dst: [u8; 6], tci: u16) -> FlowKey {
        let mac = |m: [u8; 6]| {
            let mut b = [0u8; 8];
            b[2..].copy_from_slice(&m);
            u64::from_be_bytes(b) as u128
        };
        let mut k = FlowKey::ZERO;
        k.set(loc::IN_PORT, in_port as u128);
        k.set(loc::DL_SRC, mac(src));
        k.set(loc::DL_DST, mac(dst));
        k.set(loc::VLAN_TCI, tci as u128);
        k
    }

    fn ports() -> Vec<NormalPort> {
        vec![
            NormalPort {
                ofport: 1,
                vlan: VlanMode::TrunkAll,
                no_flood: false,
            },
            NormalPort {
                ofport: 2,
                vlan: VlanMode::Access(2207),
                no_flood: false,
            },
            NormalPort {
                ofport: 3,
                vlan: VlanMode::Access(10),
                no_flood: false,
            },
            NormalPort {
                ofport: 4,
                vlan: VlanMode::Trunk(vec![10, 2207]),
                no_flood: false,
            },
        ]
    }

    fn run(fdb: &Fdb, f: &FlowKey, now: Nanos) -> Vec<(u32, u16)> {
        let mut out = Vec::new();
        let mut wc = FlowKey::ZERO;
        normal(fdb, &ports(), f, &mut wc, now, &mut out);
        out.into_iter().map(|o| (o.ofport, o.vlan_tci)).collect()
    }

    #[test]
    fn floods_unknown_within_vlan_then_forwards_learned() {
        let fdb = Fdb::default();
        // A on access port 2 (VLAN 2207) to unknown B: flooded to the trunks, tagged 2207; not
        // to port 3 (VLAN 10).
        let out = run(&fdb, &flow(2, A, B, 0), 0);
        assert_eq!(out, vec![(1, VLAN_CFI | 2207), (4, VLAN_CFI | 2207)]);
        // B answers from trunk port 4, tagged: goes to port 2 only, untagged.
        let out = run(&fdb, &flow(4, B, A, VLAN_CFI | 2207), SEC);
        assert_eq!(out, vec![(2, 0)]);
        // Now A to B is unicast to port 4, tagged.
        assert_eq!(
            run(&fdb, &flow(2, A, B, 0), 2 * SEC),
            vec![(4, VLAN_CFI | 2207)]
        );
    }

    #[test]
    fn broadcast_floods_and_access_port_drops_tagged_input() {
        let fdb = Fdb::default();
        assert_eq!(
            run(&fdb, &flow(3, A, BCAST, 0), 0),
            vec![(1, VLAN_CFI | 10), (4, VLAN_CFI | 10)]
        );
        assert!(run(&fdb, &flow(2, A, BCAST, VLAN_CFI | 2207), 0).is_empty());
        // Trunk 4 does not carry VLAN 5.
        assert!(run(&fdb, &flow(4, A, BCAST, VLAN_CFI | 5), 0).is_empty());
    }

    #[test]
    fn station_move_aging_and_limit() {
        let fdb = Fdb::new(300, 2);
        fdb.learn(0, A, 1, 0);
        let g = fdb.generation();
        fdb.learn(0, A, 4, SEC);
        assert_eq!(fdb.lookup(0, A, SEC), Some(4));
        assert!(fdb.generation() > g);
        assert_eq!(fdb.stats.moved.load(Ordering::Relaxed), 1);
        fdb.learn(0, B, 1, SEC);
        fdb.learn(0, [2, 0, 0, 0, 0, 3], 1, SEC);
        assert_eq!(fdb.stats.full.load(Ordering::Relaxed), 1);
        assert_eq!(fdb.lookup(0, A, 301 * SEC + SEC / 2), None);
        assert_eq!(fdb.expire(302 * SEC), 2);
        assert!(fdb.entries(302 * SEC).is_empty());
    }

    #[test]
    fn known_destination_on_input_port_is_not_sent_back() {
        let fdb = Fdb::default();
        fdb.learn(0, B, 1, 0);
        assert!(run(&fdb, &flow(1, A, B, 0), 0).is_empty());
    }

    #[test]
    fn fdb_show_format() {
        let fdb = Fdb::default();
        fdb.learn(2207, [0xe0, 0x19, 0x95, 0xad, 0x56, 0xd0], 14, 0);
        let s = fdb.format_show(5 * SEC, &|p| p.to_string());
        assert_eq!(
            s,
            " port  VLAN  MAC                Age\n   14  2207  e0:19:95:ad:56:d0    5\n"
        );
    }
}
