//! Arbitrary bytes as a frame: extraction, field rewrites and VLAN push/pop never panic, keep
//! lengths and layouts consistent, and never break a checksum that verified before.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pipeline::compose::verify_checksums;
use pipeline::extract::extract;
use pipeline::key::{loc, FlowKey};
use pipeline::wire::{geneve, rewrite, Frame};

const HEADROOM: usize = 8;

fuzz_target!(|data: &[u8]| {
    let Some((ctl, frame)) = data.split_first_chunk::<8>() else {
        return;
    };
    let mut have = FlowKey::ZERO;
    let lay = extract(frame, &mut have);
    assert!(lay.vlans <= 2);
    assert!(lay.l3_ofs as usize <= frame.len());
    assert!(lay.l4_ofs as usize + lay.l4_len as usize <= frame.len());
    let _ = geneve::parse(frame);

    // Change a few fields by bits taken from the control bytes.
    let mut want = have;
    let v = u64::from_le_bytes(*ctl) as u128;
    let fields = [
        loc::DL_SRC,
        loc::NW_SRC,
        loc::NW_DST,
        loc::NW_TOS,
        loc::NW_TTL,
        loc::TP_SRC,
        loc::TP_DST,
        loc::IPV6_SRC,
        loc::IPV6_LABEL,
        loc::ICMP_TYPE,
        loc::ARP_OP,
        loc::ARP_SHA,
        loc::ARP_THA,
        loc::ND_TARGET,
    ];
    for (i, l) in fields.iter().enumerate() {
        if ctl[0] as usize & (1 << (i % 8)) != 0 && (ctl[1] >> (i / 8)) & 1 != 0 {
            want.set(*l, want.get(*l) ^ (v.rotate_left(i as u32 * 7) | 1));
        }
    }
    let valid = verify_checksums(frame).is_ok();
    let mut buf = vec![0u8; HEADROOM + frame.len()];
    buf[HEADROOM..].copy_from_slice(frame);
    let mut f = Frame::new(&mut buf, HEADROOM, frame.len());
    let _ = rewrite::set_fields(&mut f, &lay, &have, &want);
    assert_eq!(f.len(), frame.len());
    if valid {
        assert_eq!(verify_checksums(f.data()), Ok(()));
    }

    let mut l = lay;
    match ctl[2] % 4 {
        0 => {
            let ok =
                rewrite::push_vlan(&mut f, &mut l, 0x8100, u16::from_le_bytes([ctl[3], ctl[4]]))
                    .is_ok();
            assert_eq!(f.len(), frame.len() + 4 * ok as usize);
            if ok && lay.vlans < 2 {
                let mut k = FlowKey::ZERO;
                assert_eq!(extract(f.data(), &mut k), l);
            }
        }
        1 => {
            let ok = rewrite::pop_vlan(&mut f, &mut l).is_ok();
            assert_eq!(f.len() + 4 * ok as usize, frame.len());
            if ok && lay.vlans > 0 && lay.l3_ofs != 0 {
                let mut k = FlowKey::ZERO;
                assert_eq!(extract(f.data(), &mut k).l3_ofs, l.l3_ofs);
            }
        }
        2 => {
            let _ = rewrite::set_vlan_tci(&mut f, &l, u16::from_le_bytes([ctl[3], ctl[4]]));
            assert_eq!(f.len(), frame.len());
        }
        _ => {
            let _ = rewrite::dec_ttl(&mut f, &l);
            assert_eq!(f.len(), frame.len());
        }
    }
});
