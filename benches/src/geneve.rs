//! Geneve encapsulation as OVN uses it between chassis: the datapath's tunnel key as the VNI and
//! one 4-byte option (class 0x0102, type 0x80) in `tun_metadata0` carrying the logical ports.
//! Builds the `tnl_push`/`tnl_pop` datapath actions the switch's translation makes for such a
//! port, and inner and encapsulated frames for them.

use pipeline::compose::PacketBuilder;
use pipeline::key::{loc, FlowKey};
use pipeline::odp::{
    execute, DpSink, ExecOutcome, OdpAction, Packet, TlvMap, TunnelHeader, TunnelOpt, TunnelRx,
};
use pipeline::wire::Frame;

/// OVN's option: class 0x0102, type 0x80, 4 bytes of data, mapped to `tun_metadata0`.
pub const OVN_TLV: TlvMap = TlvMap {
    class: 0x0102,
    typ: 0x80,
    len: 4,
    field: 0,
};
/// The tunnel's underlay addresses (the throughput script's geneve scenario).
pub const LOCAL_IP: u32 = 0xc613_0101; // 198.19.1.1
pub const REMOTE_IP: u32 = 0xc613_0102; // 198.19.1.2
/// The tunnel port's virtual datapath port, and the underlay port frames leave by.
pub const TNL_VPORT: u32 = 0x4000_0000;
pub const UNDERLAY_PORT: u32 = 1;
/// Datapath tunnel key of the overlay switch (VNI) and its option: logical inport 2, outport 3.
pub const VNI: u32 = 0x2712;
pub const OPTION: [u8; 4] = [0, 2, 0, 3];

/// The outer headers of a push to the remote chassis, with or without the outer UDP checksum.
pub fn tunnel_header(csum: bool) -> TunnelHeader {
    TunnelHeader {
        tnl_port: TNL_VPORT,
        eth_dst: [0x02, 0, 0xc6, 0x13, 0x01, 0x02],
        eth_src: [0x02, 0, 0xc6, 0x13, 0x01, 0x01],
        ip_src: LOCAL_IP,
        ip_dst: REMOTE_IP,
        tos: 0,
        ttl: 64,
        df: true,
        dst_port: 6081,
        vni: VNI,
        csum,
        options: vec![TunnelOpt {
            class: OVN_TLV.class,
            typ: OVN_TLV.typ,
            data: OPTION,
        }],
        mtu: 1500,
        out_port: Some(UNDERLAY_PORT),
    }
}

/// `tnl_push(...)` then output on the underlay port: what a cached encapsulating flow runs.
pub fn push_actions(csum: bool) -> Vec<OdpAction> {
    vec![
        OdpAction::TunnelPush(Box::new(tunnel_header(csum))),
        OdpAction::Output(UNDERLAY_PORT),
    ]
}

/// `tnl_pop(...)` to the key=flow tunnel port with OVN's option mapping.
pub fn pop_actions() -> Vec<OdpAction> {
    vec![OdpAction::TunnelPop(
        vec![TunnelRx {
            vport: TNL_VPORT,
            vni: None,
            tlv: vec![OVN_TLV],
        }]
        .into_boxed_slice(),
    )]
}

/// The `i`-th VM frame to encapsulate: UDP, `payload` bytes (18 makes 60 bytes on the wire).
pub fn inner_frame(i: u32, payload: usize) -> Vec<u8> {
    PacketBuilder::udp4(
        [0x50, 0x6b, 0x8d, 0x45, 0x5a, 0x21],
        [0x50, 0x6b, 0x8d, 0x45, 0x5a, 0x23],
        [192, 168, 10, 11].into(),
        [192, 168, 10, 13].into(),
        1024 + (i % 60000) as u16,
        9,
    )
    .payload_len(payload)
    .build()
}

struct Keep(Vec<u8>);
impl DpSink for Keep {
    fn output(&mut self, _port: u32, frame: &[u8]) {
        self.0 = frame.to_vec();
    }
    fn recirculate(&mut self, _id: u32, _frame: &[u8], _key: &FlowKey) {}
}

/// `inner` as the remote chassis sends it: encapsulated by the same action a local push runs.
pub fn encapsulated(inner: &[u8], csum: bool) -> Vec<u8> {
    const HEAD: usize = 128;
    let mut buf = vec![0u8; HEAD + inner.len()];
    buf[HEAD..].copy_from_slice(inner);
    let mut key = FlowKey::ZERO;
    key.set(loc::IN_PORT, 2);
    let mut pkt = Packet::new(Frame::new(&mut buf, HEAD, inner.len()), key);
    let mut out = Keep(Vec::new());
    match execute(&push_actions(csum), &mut pkt, &mut out, &crate::NoCt, 0) {
        ExecOutcome::Done => out.0,
        other => panic!("encapsulation failed: {other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pipeline::field::Field;

    #[test]
    fn encapsulated_frames_pop_back_to_the_inner_frame_with_the_option() {
        for csum in [false, true] {
            let inner = inner_frame(5, 18);
            let enc = encapsulated(&inner, csum);
            assert_eq!(enc.len(), inner.len() + 58);
            let mut buf = enc.clone();
            let mut pkt = Packet::new(Frame::new(&mut buf, 0, enc.len()), FlowKey::ZERO);
            let mut out = Keep(Vec::new());
            let r = execute(&pop_actions(), &mut pkt, &mut out, &crate::NoCt, 0);
            assert!(matches!(r, ExecOutcome::Recirc(0)), "{r:?}");
            assert_eq!(pkt.frame.data(), &inner[..]);
            assert_eq!(pkt.key.in_port(), TNL_VPORT);
            assert_eq!(pkt.key.get(loc::TUN_ID), VNI as u128);
            let m0 = Field::TunMetadata(0).loc().expect("tun_metadata0");
            assert_eq!(pkt.key.get(m0), u32::from_be_bytes(OPTION) as u128);
        }
    }
}
