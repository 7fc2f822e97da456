//! A generator of OVN-like flow files: the shape `ovn-controller` installs on `br-int` (port
//! classification in table 0, logical pipelines keyed on `metadata` and `reg14`/`reg15`,
//! conjunctive ACL matches, conntrack with NAT, register loads and resubmits). Deterministic for
//! a given seed, so benchmarks and tests can share it.

use std::fmt::Write;

/// A tiny xorshift generator: deterministic, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// `n` flows, one per line, in `ovs-ofctl add-flows` syntax, using ports 1..=64 by number.
pub fn ovn_like_flows(n: usize, seed: u64) -> String {
    let mut r = Rng(seed | 1);
    let mut s = String::with_capacity(n * 160);
    for i in 0..n {
        let dp = 1 + r.below(200);
        let inport = 1 + r.below(64);
        let cookie = r.next() as u32;
        let prio = 50 + r.below(2000);
        let _ = write!(s, "cookie={cookie:#x}, ");
        match i % 10 {
            0 => {
                let _ = writeln!(
                    s,
                    "priority=100,in_port={inport} actions=load:{:#x}->NXM_NX_REG13[0..15],load:0xf->NXM_NX_REG11[],load:{:#x}->NXM_NX_REG12[],load:{dp:#x}->OXM_OF_METADATA[],load:{inport:#x}->NXM_NX_REG14[],resubmit(,8)",
                    1 + r.below(4096),
                    r.below(0xffff)
                );
            }
            1 => {
                let _ = writeln!(
                    s,
                    "table=8,priority={prio},metadata={dp:#x},reg14={inport:#x},dl_src=fa:16:3e:{:02x}:{:02x}:{:02x} actions=resubmit(,9)",
                    r.below(256),
                    r.below(256),
                    r.below(256)
                );
            }
            2 => {
                let _ = writeln!(
                    s,
                    "table=44,priority={prio},ct_state=+new-est+trk,tcp,metadata={dp:#x},nw_src=10.{}.{}.0/24 actions=conjunction({},1/2)",
                    r.below(256),
                    r.below(256),
                    1000 + r.below(5000)
                );
            }
            3 => {
                let _ = writeln!(
                    s,
                    "table=44,priority={prio},ct_state=+new-est+trk,tcp,metadata={dp:#x},tp_dst={} actions=conjunction({},2/2)",
                    1 + r.below(65535),
                    1000 + r.below(5000)
                );
            }
            4 => {
                let _ = writeln!(
                    s,
                    "table=44,priority={prio},conj_id={},ct_state=+new-est+trk,tcp,metadata={dp:#x} actions=load:0x1->NXM_NX_XXREG0[97],resubmit(,45)",
                    1000 + r.below(5000)
                );
            }
            5 => {
                let _ = writeln!(
                    s,
                    "table=45,priority={prio},ct_state=-trk,ip,reg15={inport:#x},metadata={dp:#x},nw_src=192.168.{}.0/24 actions=ct(commit,table=46,zone=NXM_NX_REG12[0..15],nat(src=172.22.{}.{}))",
                    r.below(256),
                    r.below(256),
                    r.below(256)
                );
            }
            6 => {
                let _ = writeln!(
                    s,
                    "table=13,priority={prio},ip,reg14={inport:#x},metadata={dp:#x},nw_dst=172.22.{}.{} actions=ct(table=14,zone=NXM_NX_REG12[0..15],nat)",
                    r.below(256),
                    r.below(256)
                );
            }
            7 => {
                let _ = writeln!(
                    s,
                    "table=65,priority=100,reg15={inport:#x},metadata={dp:#x} actions=mod_vlan_vid:{},output:{inport},strip_vlan",
                    1 + r.below(4094)
                );
            }
            8 => {
                let _ = writeln!(
                    s,
                    "table=10,priority={prio},arp,reg14={inport:#x},metadata={dp:#x},arp_spa=10.{}.{}.{},arp_sha=fa:16:3e:{:02x}:{:02x}:{:02x} actions=resubmit(,11)",
                    r.below(256),
                    r.below(256),
                    r.below(256),
                    r.below(256),
                    r.below(256),
                    r.below(256)
                );
            }
            _ => {
                let _ = writeln!(
                    s,
                    "table=23,priority={prio},ip,metadata={dp:#x},reg0={:#x}/{:#x} actions=move:NXM_NX_REG0[]->NXM_NX_XXREG0[96..127],load:0->NXM_NX_REG1[0..15],set_field:{:#x}->reg15,resubmit(,24)",
                    r.below(0xffff_ffff),
                    0xffff_0000u64,
                    r.below(4096)
                );
            }
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use pipeline::flow::parse::{parse_flows, ParseContext};

    #[test]
    fn generated_flows_parse_and_are_deterministic() {
        let text = ovn_like_flows(2_000, 7);
        assert_eq!(text, ovn_like_flows(2_000, 7));
        assert_ne!(text, ovn_like_flows(2_000, 8));
        let flows =
            parse_flows(&text, &ParseContext::default()).unwrap_or_else(|e| panic!("{}", e[0]));
        assert_eq!(flows.len(), 2_000);
    }
}
