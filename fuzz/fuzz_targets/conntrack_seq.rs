//! Connection tracking fed arbitrary frame sequences, with commit, force, zone, NAT, the FTP
//! and TFTP helpers and the clock chosen by the input. Sequences are short (at most `FRAMES`
//! frames) and the limits small to match, so the table and zone limits are reached within one
//! input. After every frame: the table and each zone stay within their limits, a frame's length
//! never changes (but for an FTP address rewrite), a NATed frame whose checksums verified still
//! verifies, a frame marked as verified does verify, and dumping and sweeping keep working.
#![no_main]

#[path = "../common/input.rs"]
mod input;

use input::Bytes;
use libfuzzer_sys::fuzz_target;
use pipeline::compose::verify_checksums;
use pipeline::ct::{ConnTracker, CtRequest, CtVerdict};
use pipeline::extract::extract;
use pipeline::flow::{NatKind, NatSpec};
use pipeline::key::{FlowKey, CS_TRACKED, FRAG_ANY};
use pipeline::wire::Frame;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

const MAX: usize = 8;
const ZONE_LIMIT: u32 = 3;
const FRAMES: usize = 24;
const MS: u64 = 1_000_000;

fn v4(a: [u8; 4]) -> Option<IpAddr> {
    Some(IpAddr::V4(Ipv4Addr::from(a)))
}

fn nat(sel: u8, r: u16) -> Option<NatSpec> {
    let none = NatSpec {
        kind: None,
        addr_min: None,
        addr_max: None,
        port_min: None,
        port_max: None,
        random: false,
        hash: false,
        persistent: false,
    };
    Some(match sel % 8 {
        0 | 1 => return None,
        2 => none,
        3 => NatSpec {
            kind: Some(NatKind::Src),
            addr_min: v4([172, 22, 7, 27]),
            ..none
        },
        4 => NatSpec {
            kind: Some(NatKind::Src),
            addr_min: v4([172, 22, 7, 27]),
            addr_max: v4([172, 22, 7, 28]),
            port_min: Some(r),
            port_max: Some(r.saturating_add(sel as u16 & 7)),
            random: sel & 0x10 != 0,
            hash: sel & 0x20 != 0,
            ..none
        },
        5 => NatSpec {
            kind: Some(NatKind::Dst),
            addr_min: v4([192, 168, 10, 5]),
            port_min: Some(80),
            ..none
        },
        6 => NatSpec {
            kind: Some(NatKind::Dst),
            addr_min: Some(IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 9))),
            persistent: true,
            ..none
        },
        _ => NatSpec {
            kind: Some(NatKind::Src),
            addr_min: Some(IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 7))),
            ..none
        },
    })
}

/// One tracker for every input (building one costs more than running an input), reset to its
/// fresh state before each so that an input behaves the same whatever ran before it.
fn tracker() -> &'static conntrack::Tracker {
    static T: std::sync::OnceLock<conntrack::Tracker> = std::sync::OnceLock::new();
    let t = T.get_or_init(|| {
        let t = conntrack::Tracker::new(conntrack::Config {
            max_conns: MAX,
            ..Default::default()
        });
        t.set_zone_limit(5, ZONE_LIMIT);
        t
    });
    t.reset();
    assert!(t.is_empty() && t.zone_len(5) == 0);
    t
}

fuzz_target!(|data: &[u8]| {
    let ct = tracker();
    let mut b = Bytes(data);
    let mut now = 1_000 * MS;
    let mut n = 0;
    while !b.is_empty() && n < FRAMES {
        n += 1;
        let (c1, c2, r) = (b.u8(), b.u8(), b.u16());
        now += (c2 as u64 >> 4) * (if c2 & 8 != 0 { 10_000 } else { 50 }) * MS;
        let zone = match c1 & 3 {
            0 => 0,
            1 => 5,
            2 => 9,
            _ => r,
        };
        let spec = nat(c1 >> 2, r);
        let mark = (c2 & 4 != 0).then_some((r as u32, 0xffff));
        let req = CtRequest {
            zone,
            commit: c1 & 0x80 != 0,
            force: c2 & 1 != 0,
            nat: spec.as_ref(),
            set_mark: mark,
            set_label: (c2 & 2 != 0).then_some((r as u128, u128::MAX)),
            // The helpers read payloads (and under NAT rewrite them): the top bits of `r` ask
            // for one.
            alg: match r >> 14 {
                1 => Some("ftp"),
                2 => Some("tftp"),
                _ => None,
            },
        };
        let (frame, _) = input::frame(&mut b);
        let mut key = FlowKey::ZERO;
        let lay = extract(&frame, &mut key);
        if lay.l3_ofs == 0 {
            continue;
        }
        let valid_in = verify_checksums(&frame).is_ok() && key.nw_frag() & FRAG_ANY == 0;
        let mut buf = vec![0u8; 64 + frame.len()];
        buf[64..].copy_from_slice(&frame);
        let mut f = Frame::new(&mut buf, 64, frame.len());
        match ct.execute(&mut f, lay.l3_ofs as usize, &key, &req, now) {
            CtVerdict::Tracked(res) => {
                assert!(res.state & CS_TRACKED != 0);
                // Only the FTP helper may change a length (rewriting an address under NAT).
                if req.alg != Some("ftp") {
                    assert_eq!(f.len(), frame.len(), "NAT changed the frame's length");
                }
                if valid_in {
                    if let Err(e) = verify_checksums(f.data()) {
                        panic!(
                            "{e} broken by conntrack (state {:#x}): {frame:02x?}",
                            res.state
                        );
                    }
                }
                // The frame's mark (a later `ct()` skips verifying it) is only ever set on
                // checksums that verify, and a rewrite under NAT keeps them so: those the
                // tracker checks, that is (not SCTP's, a protocol it tracks by addresses).
                let checked = matches!(key.nw_proto(), 1 | 6 | 17 | 58);
                if checked && f.checksums_good(lay.l3_ofs as usize) {
                    if let Err(e) = verify_checksums(f.data()) {
                        panic!(
                            "{e} in a frame marked good (state {:#x}): {frame:02x?}",
                            res.state
                        );
                    }
                }
            }
            CtVerdict::Held => {}
            CtVerdict::Reassembled {
                frame: whole,
                result,
            } => {
                assert!(result.state & CS_TRACKED != 0);
                let mut k = FlowKey::ZERO;
                let l = extract(&whole, &mut k);
                assert!(
                    l.l3_ofs != 0,
                    "reassembled datagram is not IP: {whole:02x?}"
                );
            }
        }
        assert!(
            ct.len() <= MAX,
            "{} connections over the limit {MAX}",
            ct.len()
        );
        assert!(ct.zone_len(5) <= ZONE_LIMIT);
        if c2 & 0x10 != 0 {
            ct.sweep(now, 16);
        }
    }
    let dumped = ct.dump(None).len();
    assert_eq!(dumped, ct.len(), "dump and count disagree");
    ct.flush(Some(5));
    assert_eq!(ct.zone_len(5), 0);
    ct.flush(None);
    assert_eq!(ct.len(), 0);
});
