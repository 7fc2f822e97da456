//! IPv4 and IPv6 fragment reassembly ahead of tracking.
//!
//! This module owns fragments held while a datagram is incomplete: their storage, the limits on
//! memory, datagram count and age, and the rebuilt frame (the first fragment's L2 header plus
//! the whole datagram with lengths, flags and checksum fixed). Overlapping or malformed
//! fragments are dropped and counted; nothing passes through untracked. It must not track
//! connections. Fragments are rare on the paths this serves, so one mutex guards the whole
//! reassembly table.

use crate::packet::{rd16, rd32, wr16};
use crate::tuple::Addr;
use pipeline::ct::Nanos;
use pipeline::wire::checksum;
use std::collections::HashMap;

/// Reassembly limits.
#[derive(Clone, Copy, Debug)]
pub struct FragConfig {
    /// Payload bytes held across all incomplete datagrams.
    pub max_bytes: usize,
    /// Incomplete datagrams held at once.
    pub max_datagrams: usize,
    /// How long an incomplete datagram is kept after its first fragment.
    pub timeout: Nanos,
}

impl Default for FragConfig {
    fn default() -> Self {
        FragConfig {
            max_bytes: 4 << 20,
            max_datagrams: 1000,
            timeout: 15_000_000_000,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Key {
    src: Addr,
    dst: Addr,
    id: u32,
    proto: u8,
    v6: bool,
    zone: u16,
}

struct Datagram {
    /// L2 header, IP header and extension headers up to (not including) the fragment header,
    /// from the fragment at offset zero.
    head: Option<Vec<u8>>,
    l3: usize,
    /// For IPv6: offset in `head` of the next-header byte that named the fragment header.
    next_at: usize,
    next_proto: u8,
    pieces: Vec<(u32, Vec<u8>)>,
    total: Option<u32>,
    bytes: usize,
    expires: Nanos,
}

/// What happened to a fragment.
#[derive(Debug)]
pub enum FragOutcome {
    Held,
    /// Frame bytes and the offset of its IP header.
    Complete(Vec<u8>, usize),
    /// Dropped (malformed, overlapping, over a limit); the count says how many fragments went.
    Dropped(u64),
}

#[derive(Default)]
pub struct Reassembler {
    map: HashMap<Key, Datagram>,
    bytes: usize,
}

struct Frag<'a> {
    key: Key,
    off: u32,
    more: bool,
    payload: &'a [u8],
    /// Bytes of `d` from the frame start to the end of the unfragmentable part.
    head_end: usize,
    next_at: usize,
    next_proto: u8,
}

fn parse(d: &[u8], l3: usize, zone: u16) -> Option<Frag<'_>> {
    if !crate::packet::version_matches_ethertype(d, l3) {
        return None;
    }
    let b0 = *d.get(l3)?;
    match b0 >> 4 {
        4 => {
            let ihl = (b0 & 0x0f) as usize * 4;
            let total = rd16(d, l3 + 2)? as usize;
            if ihl < 20 || total < ihl || l3 + total > d.len() {
                return None;
            }
            if checksum::checksum(d.get(l3..l3 + ihl)?) != 0 {
                return None;
            }
            let ff = rd16(d, l3 + 6)?;
            Some(Frag {
                key: Key {
                    src: Addr::v4(rd32(d, l3 + 12)?),
                    dst: Addr::v4(rd32(d, l3 + 16)?),
                    id: rd16(d, l3 + 4)? as u32,
                    proto: d[l3 + 9],
                    v6: false,
                    zone,
                },
                off: (ff & 0x1fff) as u32 * 8,
                more: ff & 0x2000 != 0,
                payload: &d[l3 + ihl..l3 + total],
                head_end: l3 + ihl,
                next_at: 0,
                next_proto: d[l3 + 9],
            })
        }
        6 => {
            let plen = rd16(d, l3 + 4)? as usize;
            let end = l3 + 40 + plen;
            if end > d.len() {
                return None;
            }
            let mut next_at = l3 + 6;
            let mut at = l3 + 40;
            for _ in 0..8 {
                let nh = *d.get(next_at)?;
                match nh {
                    44 => {
                        let fo = rd16(d, at + 2)?;
                        if at + 8 > end {
                            return None;
                        }
                        let (src, dst) = (d.get(l3 + 8..l3 + 24)?, d.get(l3 + 24..l3 + 40)?);
                        return Some(Frag {
                            key: Key {
                                src: Addr::from_u128(u128::from_be_bytes(src.try_into().ok()?)),
                                dst: Addr::from_u128(u128::from_be_bytes(dst.try_into().ok()?)),
                                id: rd32(d, at + 4)?,
                                proto: 0,
                                v6: true,
                                zone,
                            },
                            off: (fo & 0xfff8) as u32,
                            more: fo & 1 != 0,
                            payload: &d[at + 8..end],
                            head_end: at,
                            next_at,
                            next_proto: d[at],
                        });
                    }
                    0 | 43 | 60 => {
                        let len = (*d.get(at + 1)? as usize + 1) * 8;
                        next_at = at;
                        at += len;
                    }
                    _ => return None,
                }
                if at > end {
                    return None;
                }
            }
            None
        }
        _ => None,
    }
}

impl Reassembler {
    /// Drops datagrams older than `now`; returns fragments dropped.
    pub fn expire(&mut self, now: Nanos) -> u64 {
        let mut dropped = 0;
        let bytes = &mut self.bytes;
        self.map.retain(|_, dg| {
            if dg.expires <= now {
                dropped += dg.pieces.len() as u64;
                *bytes -= dg.bytes;
                false
            } else {
                true
            }
        });
        dropped
    }

    pub fn held_datagrams(&self) -> usize {
        self.map.len()
    }

    /// Takes one fragment (the caller expires old datagrams first).
    pub fn process(
        &mut self,
        d: &[u8],
        l3: usize,
        zone: u16,
        now: Nanos,
        cfg: &FragConfig,
    ) -> FragOutcome {
        let Some(f) = parse(d, l3, zone) else {
            return FragOutcome::Dropped(1);
        };
        let len = f.payload.len() as u32;
        let end = f.off + len;
        let max = if f.key.v6 {
            65535
        } else {
            65535 - (f.head_end - l3) as u32
        };
        // Non-final fragments must carry a multiple of 8 bytes; nothing may pass the maximum
        // datagram size; a fragment must carry data.
        if (f.more && !len.is_multiple_of(8)) || end > max || len == 0 {
            return FragOutcome::Dropped(1);
        }
        if !self.map.contains_key(&f.key) && self.map.len() >= cfg.max_datagrams {
            return FragOutcome::Dropped(1);
        }
        if self.bytes + len as usize > cfg.max_bytes {
            return FragOutcome::Dropped(1);
        }
        let dg = self.map.entry(f.key).or_insert_with(|| Datagram {
            head: None,
            l3,
            next_at: 0,
            next_proto: 0,
            pieces: Vec::new(),
            total: None,
            bytes: 0,
            expires: now + cfg.timeout,
        });
        let overlaps = dg
            .pieces
            .iter()
            .any(|(o, p)| f.off < o + p.len() as u32 && *o < end);
        let beyond = dg.total.is_some_and(|t| end > t || (!f.more && end != t));
        let short_of_data = !f.more && dg.pieces.iter().any(|(o, p)| o + p.len() as u32 > end);
        if overlaps || beyond || short_of_data {
            if dg.pieces.is_empty() {
                self.map.remove(&f.key);
            }
            return FragOutcome::Dropped(1);
        }
        if !f.more {
            dg.total = Some(end);
        }
        if f.off == 0 {
            dg.head = Some(d[..f.head_end].to_vec());
            dg.l3 = l3;
            dg.next_at = f.next_at;
            dg.next_proto = f.next_proto;
        }
        let pos = dg.pieces.partition_point(|(o, _)| *o < f.off);
        dg.pieces.insert(pos, (f.off, f.payload.to_vec()));
        dg.bytes += len as usize;
        self.bytes += len as usize;
        let complete = dg.head.is_some()
            && dg
                .total
                .is_some_and(|t| dg.pieces.iter().map(|(_, p)| p.len() as u32).sum::<u32>() == t);
        if !complete {
            return FragOutcome::Held;
        }
        let Some(dg) = self.map.remove(&f.key) else {
            return FragOutcome::Held;
        };
        self.bytes -= dg.bytes;
        let head = dg.head.unwrap_or_default();
        let total = dg.total.unwrap_or(0) as usize;
        let mut out = Vec::with_capacity(head.len() + total);
        out.extend_from_slice(&head);
        for (_, p) in &dg.pieces {
            out.extend_from_slice(p);
        }
        let l3 = dg.l3;
        if f.key.v6 {
            // The fragment header is gone: the header that named it now names its payload.
            if let Some(b) = out.get_mut(dg.next_at) {
                *b = dg.next_proto;
            }
            let plen = head.len() - l3 - 40 + total;
            wr16(&mut out, l3 + 4, plen as u16);
        } else {
            let ihl = head.len() - l3;
            wr16(&mut out, l3 + 2, (ihl + total) as u16);
            let ff = rd16(&out, l3 + 6).unwrap_or(0) & 0x4000;
            wr16(&mut out, l3 + 6, ff);
            wr16(&mut out, l3 + 10, 0);
            let c = checksum::checksum(&out[l3..l3 + ihl]);
            wr16(&mut out, l3 + 10, c);
        }
        FragOutcome::Complete(out, l3)
    }
}
