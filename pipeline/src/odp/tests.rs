//! Execution of the tunnel actions on frames, without a switch.

use super::*;
use crate::compose::PacketBuilder;
use crate::ct::{CtRequest, CtVerdict};
use crate::field::Field;

struct NoCt;
impl ConnTracker for NoCt {
    fn execute(
        &self,
        _f: &mut Frame<'_>,
        _l3: usize,
        _k: &FlowKey,
        _r: &CtRequest<'_>,
        _now: Nanos,
    ) -> CtVerdict {
        unreachable!("no ct action in these tests")
    }
}

#[derive(Default)]
struct Out {
    sent: Vec<(u32, Vec<u8>)>,
    dropped: Vec<DropReason>,
}
impl DpSink for Out {
    fn output(&mut self, port: u32, frame: &[u8]) {
        self.sent.push((port, frame.to_vec()));
    }
    fn recirculate(&mut self, _id: u32, _frame: &[u8], _key: &FlowKey) {}
    fn dropped(&mut self, reason: DropReason) {
        self.dropped.push(reason);
    }
}

const SRC: u32 = 0xac16_013d;
const DST: u32 = 0xac16_013e;

fn inner() -> Vec<u8> {
    PacketBuilder::udp4(
        [2, 0, 0, 0, 0, 1],
        [2, 0, 0, 0, 0, 2],
        "10.0.0.1".parse().unwrap(),
        "10.0.0.2".parse().unwrap(),
        1000,
        2000,
    )
    .payload_len(10)
    .build()
}

fn header(options: Vec<TunnelOpt>, mtu: u32) -> TunnelHeader {
    TunnelHeader {
        tnl_port: 7,
        eth_dst: [2, 0, 0, 0, 0, 0x3e],
        eth_src: [2, 0, 0, 0, 0, 0x3d],
        ip_src: SRC,
        ip_dst: DST,
        tos: 0,
        ttl: 64,
        df: true,
        dst_port: 6081,
        vni: 0x1234,
        csum: false,
        options,
        mtu,
        out_port: None,
    }
}

const OVN: TlvMap = TlvMap {
    class: 0x0102,
    typ: 0x80,
    len: 4,
    field: 0,
};

/// Runs `actions` on `frame` (with headroom) and returns the outcome, the frame after, its key
/// and what the sink saw.
fn run(actions: &[OdpAction], frame: &[u8]) -> (ExecOutcome, Vec<u8>, FlowKey, Out) {
    let mut buf = vec![0u8; 256 + frame.len()];
    buf[256..].copy_from_slice(frame);
    let mut key = FlowKey::ZERO;
    key.set(loc::IN_PORT, 3);
    let mut pkt = Packet::new(Frame::new(&mut buf, 256, frame.len()), key);
    let mut out = Out::default();
    let r = execute(actions, &mut pkt, &mut out, &NoCt, 0);
    (r, pkt.frame.data().to_vec(), pkt.key, out)
}

fn pushed(options: Vec<TunnelOpt>) -> Vec<u8> {
    let (r, f, _, out) = run(
        &[
            OdpAction::TunnelPush(Box::new(header(options, 1500))),
            OdpAction::Output(1),
        ],
        &inner(),
    );
    assert!(matches!(r, ExecOutcome::Done), "{r:?}");
    assert_eq!(out.sent, vec![(1, f.clone())]);
    f
}

#[test]
fn push_then_pop_restores_the_frame_and_sets_tunnel_fields() {
    let opt = TunnelOpt {
        class: 0x0102,
        typ: 0x80,
        data: [0, 3, 0, 4],
    };
    let enc = pushed(vec![opt]);
    assert_eq!(enc.len(), inner().len() + 58);
    let rx = vec![TunnelRx {
        vport: 0x4000_0001,
        vni: None,
        tlv: vec![OVN],
    }];
    let (r, f, k, _) = run(&[OdpAction::TunnelPop(rx.into_boxed_slice())], &enc);
    assert!(matches!(r, ExecOutcome::Recirc(0)), "{r:?}");
    assert_eq!(f, inner());
    assert_eq!(k.in_port(), 0x4000_0001);
    assert_eq!(k.get(loc::TUN_ID), 0x1234);
    assert_eq!(k.get(loc::TUN_SRC), SRC as u128);
    assert_eq!(k.get(loc::TUN_DST), DST as u128);
    assert_eq!(k.get(loc::TUN_FLAGS), 0);
    let m0 = Field::TunMetadata(0).loc().unwrap();
    assert_eq!(k.get(m0), 0x0003_0004);
    assert_eq!(k.get(Field::TunMetadata(1).loc().unwrap()), 0);
    // The packet words are the inner frame's.
    assert_eq!(k.get(loc::TP_DST), 2000);
}

#[test]
fn pop_picks_the_port_whose_key_takes_the_vni() {
    let enc = pushed(vec![]);
    let rx = |fixed: u32| {
        vec![
            TunnelRx {
                vport: 0x4000_0005,
                vni: Some(fixed),
                tlv: vec![],
            },
            TunnelRx {
                vport: 0x4000_0006,
                vni: None,
                tlv: vec![],
            },
        ]
        .into_boxed_slice()
    };
    let (_, _, k, _) = run(&[OdpAction::TunnelPop(rx(0x1234))], &enc);
    assert_eq!(k.in_port(), 0x4000_0005);
    let (_, _, k, _) = run(&[OdpAction::TunnelPop(rx(0x9))], &enc);
    assert_eq!(k.in_port(), 0x4000_0006);
    let only_fixed = vec![TunnelRx {
        vport: 0x4000_0005,
        vni: Some(0x9),
        tlv: vec![],
    }];
    let (r, f, _, _) = run(&[OdpAction::TunnelPop(only_fixed.into_boxed_slice())], &enc);
    assert!(matches!(
        r,
        ExecOutcome::Dropped(DropReason::TunnelUnknownRemote)
    ));
    assert_eq!(f, enc, "a refused frame is not touched");
}

#[test]
fn unknown_options_pass_unless_critical() {
    let rx = || {
        vec![TunnelRx {
            vport: 0x4000_0000,
            vni: None,
            tlv: vec![OVN],
        }]
        .into_boxed_slice()
    };
    let other = |typ| TunnelOpt {
        class: 0x0999,
        typ,
        data: [1, 2, 3, 4],
    };
    let (r, f, _, _) = run(&[OdpAction::TunnelPop(rx())], &pushed(vec![other(0x01)]));
    assert!(matches!(r, ExecOutcome::Recirc(0)), "{r:?}");
    assert_eq!(f, inner());
    let (r, _, _, _) = run(&[OdpAction::TunnelPop(rx())], &pushed(vec![other(0x81)]));
    assert!(matches!(
        r,
        ExecOutcome::Dropped(DropReason::TunnelMalformed)
    ));
}

#[test]
fn too_big_inside_a_clone_is_counted_and_the_frame_goes_on() {
    let f = inner();
    // Outer datagram = inner + 44 bytes (no options): an MTU one short of it refuses.
    let mtu = (f.len() + 50 - 14) as u32;
    let acts = [
        OdpAction::Clone(vec![
            OdpAction::TunnelPush(Box::new(header(vec![], mtu - 1))),
            OdpAction::Output(1),
        ]),
        OdpAction::Clone(vec![
            OdpAction::TunnelPush(Box::new(header(vec![], mtu))),
            OdpAction::Output(2),
        ]),
        OdpAction::Output(3),
    ];
    let (r, after, _, out) = run(&acts, &f);
    assert!(matches!(r, ExecOutcome::Done));
    assert_eq!(after, f, "clones leave the frame alone");
    assert_eq!(out.dropped, vec![DropReason::TooBig]);
    let ports: Vec<u32> = out.sent.iter().map(|(p, _)| *p).collect();
    assert_eq!(ports, vec![2, 3]);
    assert_eq!(out.sent[0].1.len(), f.len() + 50);
    assert_eq!(out.sent[1].1, f);
}

#[test]
fn pop_not_last_works_on_a_copy() {
    let enc = pushed(vec![]);
    let rx = vec![TunnelRx {
        vport: 0x4000_0000,
        vni: None,
        tlv: vec![],
    }];
    let (r, after, _, out) = run(
        &[
            OdpAction::TunnelPop(rx.into_boxed_slice()),
            OdpAction::Output(4),
        ],
        &enc,
    );
    assert!(matches!(r, ExecOutcome::Done));
    assert_eq!(after, enc);
    assert_eq!(out.sent, vec![(4, enc)]);
}

#[test]
fn tunnel_actions_print_like_open_vswitch() {
    let mut h = header(
        vec![TunnelOpt {
            class: 0x0102,
            typ: 0x80,
            data: [0, 1, 0, 2],
        }],
        1500,
    );
    h.out_port = Some(10);
    h.csum = true;
    let names = |p: u32| (p == 10).then(|| "eth1".to_string());
    assert_eq!(
        format_actions(
            &[OdpAction::TunnelPush(Box::new(h)), OdpAction::Output(10)],
            &names
        ),
        "tnl_push(tnl_port(7),header(size=58,type=5,eth(dst=02:00:00:00:00:3e,src=02:00:00:00:00:3d,dl_type=0x0800),ipv4(src=172.22.1.61,dst=172.22.1.62,proto=17,tos=0x0,ttl=64,frag=0x4000),udp(src=0,dst=6081,csum=0xffff),geneve(crit,vni=0x1234,options({class=0x102,type=0x80,len=4,0x10002}))),out_port(eth1)),eth1"
    );
    let rx = vec![TunnelRx {
        vport: 9,
        vni: None,
        tlv: vec![],
    }];
    assert_eq!(
        format_actions(
            &[
                OdpAction::TunnelPop(rx.into_boxed_slice()),
                OdpAction::Drop(DropReason::TooBig)
            ],
            &names
        ),
        "tnl_pop(9),drop(too_big)"
    );
}

#[test]
fn a_frame_for_the_missing_controller_is_counted() {
    // dec_ttl at TTL 1 translates to userspace(invalid_ttl) and nothing else: without a count
    // the frame would vanish from every statistic.
    let mut buf = inner();
    let len = buf.len();
    let mut k = FlowKey::ZERO;
    extract(&buf, &mut k);
    let mut pkt = Packet::new(Frame::new(&mut buf, 0, len), k);
    let mut out = Out::default();
    let r = execute(
        &[OdpAction::Userspace("invalid_ttl")],
        &mut pkt,
        &mut out,
        &NoCt,
        0,
    );
    assert!(matches!(r, ExecOutcome::Done));
    assert!(out.sent.is_empty());
    assert_eq!(out.dropped, vec![DropReason::Controller]);
}

#[test]
fn jumbo_inner_frames_need_a_9058_byte_underlay_with_the_ovn_option() {
    // A VM with MTU 9000 sends 9014-byte frames. The outer IPv4 datagram (what the underlay
    // MTU bounds) is the whole inner frame + IPv4 20 + UDP 8 + Geneve 8 = 9050, + 8 for OVN's
    // one option (4-byte option header, 4 bytes of data) = 9058.
    let f = PacketBuilder::udp4(
        [2, 0, 0, 0, 0, 1],
        [2, 0, 0, 0, 0, 2],
        "10.0.0.1".parse().unwrap(),
        "10.0.0.2".parse().unwrap(),
        1000,
        2000,
    )
    .payload_len(9000 - 28)
    .build();
    assert_eq!(f.len(), 9014);
    let opt = TunnelOpt {
        class: 0x0102,
        typ: 0x80,
        data: [0, 3, 0, 4],
    };
    for (options, need) in [(vec![], 9050u32), (vec![opt], 9058)] {
        let n = options.len();
        let push = |mtu| {
            run(
                &[
                    OdpAction::TunnelPush(Box::new(header(options.clone(), mtu))),
                    OdpAction::Output(1),
                ],
                &f,
            )
        };
        let (r, _, _, out) = push(need - 1);
        assert!(
            matches!(r, ExecOutcome::Dropped(DropReason::TooBig)),
            "{n} options, underlay {}: {r:?}",
            need - 1
        );
        assert!(out.sent.is_empty(), "dropped whole, never truncated");
        let (r, after, _, out) = push(need);
        assert!(matches!(r, ExecOutcome::Done), "{r:?}");
        assert_eq!(
            after.len() - 14,
            need as usize,
            "outer datagram fills the MTU"
        );
        assert_eq!(out.sent.len(), 1);
    }
}

/// The word-wise `apply_ct_result` writes what field-by-field writes would, and leaves the
/// fields sharing its words (`tun_flags`, `conj_id`) alone.
#[test]
fn apply_ct_result_matches_field_writes() {
    use crate::ct::CtTuple;
    let mut base = FlowKey::ZERO;
    for (i, w) in base.w.iter_mut().enumerate() {
        *w = 0xfedc_ba98_7654_3210_u64.rotate_left(i as u32 * 7);
    }
    let results = [
        CtResult {
            state: key::CS_TRACKED | key::CS_ESTABLISHED | key::CS_SRC_NAT,
            zone: 9,
            mark: 0xdead_beef,
            label: 0x0102_0304_0506_0708_090a_0b0c_0d0e_0f10,
            orig: Some(CtTuple {
                src: 0xc612_0a0b,
                dst: 0xc613_0701,
                proto: 17,
                src_port: 4000,
                dst_port: 9,
            }),
        },
        CtResult {
            state: key::CS_TRACKED | key::CS_INVALID,
            zone: 0xffff,
            ..Default::default()
        },
    ];
    for r in results {
        let mut want = base;
        want.set(loc::CT_STATE, r.state as u128);
        want.set(loc::CT_ZONE, r.zone as u128);
        want.set(loc::CT_MARK, r.mark as u128);
        want.set(loc::CT_LABEL, r.label);
        let o = r.orig.unwrap_or_default();
        want.set(loc::CT_NW_SRC, o.src & 0xffff_ffff);
        want.set(loc::CT_NW_DST, o.dst & 0xffff_ffff);
        want.set(loc::CT_NW_PROTO, o.proto as u128);
        want.set(loc::CT_TP_SRC, o.src_port as u128);
        want.set(loc::CT_TP_DST, o.dst_port as u128);
        let mut got = base;
        apply_ct_result(&mut got, &r);
        assert_eq!(got, want, "{r:?}");
        assert_eq!(got.get(loc::TUN_FLAGS), base.get(loc::TUN_FLAGS));
        assert_eq!(got.get(loc::CONJ_ID), base.get(loc::CONJ_ID));
    }
}
