use super::build::*;
use crate::packet::{self, TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN};
use crate::*;
use pipeline::flow::{NatKind, NatSpec};
use std::net::{IpAddr, Ipv4Addr};

pub const S: Nanos = 1_000_000_000;
const VM: u128 = 0xc0a8_0a05; // 192.168.10.5
const REMOTE: u128 = 0x0808_0808; // 8.8.8.8
const PUB: u128 = 0xac16_071b; // 172.22.7.27

pub fn key_of(f: &[u8]) -> FlowKey {
    let mut k = FlowKey::ZERO;
    let frag = if f.get(12) == Some(&0x86) {
        f.get(ETH + 6) == Some(&44)
    } else {
        f.len() > ETH + 8 && u16::from_be_bytes([f[ETH + 6], f[ETH + 7]]) & 0x3fff != 0
    };
    if frag {
        k.set(loc::NW_FRAG, FRAG_ANY as u128);
    }
    k
}

pub fn req(zone: u16) -> CtRequest<'static> {
    CtRequest {
        zone,
        commit: false,
        force: false,
        nat: None,
        set_mark: None,
        set_label: None,
        alg: None,
    }
}

pub fn commit(zone: u16) -> CtRequest<'static> {
    CtRequest {
        commit: true,
        ..req(zone)
    }
}

/// A commit in `zone` with NAT as `spec` says (a bare spec: the connection's own NAT).
pub fn commit_nat(spec: &NatSpec, zone: u16) -> CtRequest<'_> {
    CtRequest {
        nat: Some(spec),
        ..commit(zone)
    }
}

pub fn go(t: &Tracker, f: &mut [u8], r: &CtRequest<'_>, now: Nanos) -> CtVerdict {
    let k = key_of(f);
    let len = f.len();
    let mut fr = Frame::new(f, 0, len);
    t.execute(&mut fr, ETH, &k, r, now)
}

#[track_caller]
pub fn st(t: &Tracker, f: &mut [u8], r: &CtRequest<'_>, now: Nanos) -> CtResult {
    match go(t, f, r, now) {
        CtVerdict::Tracked(r) => r,
        v => panic!("expected Tracked, got {v:?}"),
    }
}

/// Addresses and ports of a frame, asserting every checksum verifies from scratch.
#[track_caller]
pub fn view(f: &[u8]) -> (u128, u128, u16, u16) {
    let p = packet::parse(f, ETH, 0, true).expect("frame parses and its checksums verify");
    (
        p.tuple.src.to_u128(),
        p.tuple.dst.to_u128(),
        p.tuple.sport,
        p.tuple.dport,
    )
}

pub fn snat(addr: [u8; 4]) -> NatSpec {
    NatSpec {
        kind: Some(NatKind::Src),
        addr_min: Some(IpAddr::V4(Ipv4Addr::from(addr))),
        ..NatSpec::default()
    }
}

/// SNAT to 10.0.0.1, ports `min` to `max`.
fn snat_ports(min: u16, max: u16) -> NatSpec {
    NatSpec {
        port_min: Some(min),
        port_max: Some(max),
        ..snat([10, 0, 0, 1])
    }
}

fn tcp(src: u128, dst: u128, sport: u16, dport: u16, flags: u8, seq: u32, ack: u32) -> Vec<u8> {
    seg(src, dst, sport, dport, flags, seq, ack, &[])
}

fn udp(src: u128, dst: u128, sport: u16, dport: u16) -> Vec<u8> {
    frame(&P {
        src,
        dst,
        sport,
        dport,
        proto: 17,
        payload: b"hello".to_vec(),
        ..P::default()
    })
}

const EST: u32 = CS_TRACKED | CS_ESTABLISHED;
const NEW: u32 = CS_TRACKED | CS_NEW;
const INV: u32 = CS_TRACKED | CS_INVALID;

fn state_of(t: &Tracker) -> String {
    let d = t.dump(None);
    assert_eq!(d.len(), 1, "{d:?}");
    let s = &d[0];
    let i = s.find("state=").expect("tcp state") + 6;
    s[i..s.len() - 1].to_string()
}

#[test]
fn tcp_handshake_data_and_close_walk_every_state() {
    let t = Tracker::new(Config::default());
    let c = commit(1);
    let (a, b) = (VM, REMOTE);
    assert_eq!(
        st(&t, &mut tcp(a, b, 40000, 80, TCP_SYN, 100, 0), &c, 0).state,
        NEW
    );
    assert_eq!(state_of(&t), "SYN_SENT");
    // A retransmitted SYN is still +new.
    assert_eq!(
        st(&t, &mut tcp(a, b, 40000, 80, TCP_SYN, 100, 0), &c, 0).state,
        NEW
    );
    let r = st(
        &t,
        &mut tcp(b, a, 80, 40000, TCP_SYN | TCP_ACK, 5000, 101),
        &c,
        1,
    );
    assert_eq!(r.state, EST | CS_REPLY_DIR);
    assert_eq!(state_of(&t), "SYN_RECV");
    assert_eq!(
        st(&t, &mut tcp(a, b, 40000, 80, TCP_ACK, 101, 5001), &c, 2).state,
        EST
    );
    assert_eq!(state_of(&t), "ESTABLISHED");
    let mut data = frame(&P {
        src: a,
        dst: b,
        flags: TCP_ACK,
        seq: 101,
        ack: 5001,
        payload: vec![7; 100],
        ..P::default()
    });
    assert_eq!(st(&t, &mut data, &c, 3).state, EST);
    assert_eq!(
        st(&t, &mut tcp(b, a, 80, 40000, TCP_ACK, 5001, 201), &c, 3).state,
        EST | CS_REPLY_DIR
    );
    assert_eq!(
        st(
            &t,
            &mut tcp(a, b, 40000, 80, TCP_FIN | TCP_ACK, 201, 5001),
            &c,
            4
        )
        .state,
        EST
    );
    assert_eq!(state_of(&t), "FIN_WAIT_1");
    assert_eq!(
        st(&t, &mut tcp(b, a, 80, 40000, TCP_ACK, 5001, 202), &c, 5).state,
        EST | CS_REPLY_DIR
    );
    assert_eq!(state_of(&t), "CLOSE_WAIT");
    assert_eq!(
        st(
            &t,
            &mut tcp(b, a, 80, 40000, TCP_FIN | TCP_ACK, 5001, 202),
            &c,
            6
        )
        .state,
        EST | CS_REPLY_DIR
    );
    assert_eq!(state_of(&t), "LAST_ACK");
    assert_eq!(
        st(&t, &mut tcp(a, b, 40000, 80, TCP_ACK, 202, 5002), &c, 7).state,
        EST
    );
    assert_eq!(state_of(&t), "TIME_WAIT");
    // TIME_WAIT lasts 120 s, then the sweep removes it.
    assert_eq!(t.sweep(7 + 119 * S, 1000), 0);
    assert_eq!(t.sweep(7 + 120 * S, 1000), 1);
    assert!(t.is_empty());
}

#[test]
fn syn_in_time_wait_reopens_the_connection() {
    let t = Tracker::new(Config::default());
    let c = commit(0);
    let (a, b) = (VM, REMOTE);
    st(&t, &mut tcp(a, b, 1, 2, TCP_SYN, 100, 0), &c, 0);
    st(
        &t,
        &mut tcp(b, a, 2, 1, TCP_SYN | TCP_ACK, 5000, 101),
        &c,
        0,
    );
    st(
        &t,
        &mut tcp(a, b, 1, 2, TCP_RST | TCP_ACK, 101, 5001),
        &c,
        0,
    );
    assert_eq!(state_of(&t), "CLOSED");
    assert_eq!(
        st(&t, &mut tcp(a, b, 1, 2, TCP_SYN, 9000, 0), &c, 1).state,
        NEW
    );
    assert_eq!(state_of(&t), "SYN_SENT");
    assert_eq!(t.len(), 1);
}

#[test]
fn rst_closes_and_close_times_out_in_ten_seconds() {
    let t = Tracker::new(Config::default());
    let c = commit(0);
    st(&t, &mut tcp(VM, REMOTE, 1, 2, TCP_SYN, 100, 0), &c, 0);
    st(
        &t,
        &mut tcp(REMOTE, VM, 2, 1, TCP_SYN | TCP_ACK, 5000, 101),
        &c,
        0,
    );
    st(&t, &mut tcp(VM, REMOTE, 1, 2, TCP_ACK, 101, 5001), &c, 0);
    assert_eq!(
        st(&t, &mut tcp(REMOTE, VM, 2, 1, TCP_RST, 5001, 0), &c, S).state,
        EST | CS_REPLY_DIR
    );
    assert_eq!(state_of(&t), "CLOSED");
    assert_eq!(t.sweep(S + 9 * S, 100), 0);
    assert_eq!(t.sweep(S + 10 * S, 100), 1);
}

#[test]
fn reply_rst_to_syn_closes() {
    let t = Tracker::new(Config::default());
    let c = commit(0);
    st(&t, &mut tcp(VM, REMOTE, 1, 2, TCP_SYN, 100, 0), &c, 0);
    assert_eq!(
        st(
            &t,
            &mut tcp(REMOTE, VM, 2, 1, TCP_RST | TCP_ACK, 0, 101),
            &c,
            0
        )
        .state,
        EST | CS_REPLY_DIR
    );
    assert_eq!(state_of(&t), "CLOSED");
}

#[test]
fn syn_sent_and_established_timeouts_follow_state() {
    let t = Tracker::new(Config::default());
    let c = commit(0);
    st(&t, &mut tcp(VM, REMOTE, 1, 2, TCP_SYN, 100, 0), &c, 0);
    assert_eq!(t.sweep(119 * S, 100), 0);
    assert_eq!(t.sweep(120 * S, 100), 1);
    st(&t, &mut tcp(VM, REMOTE, 1, 2, TCP_SYN, 100, 0), &c, 0);
    st(
        &t,
        &mut tcp(REMOTE, VM, 2, 1, TCP_SYN | TCP_ACK, 5000, 101),
        &c,
        0,
    );
    // SYN_RECV: 60 s.
    assert_eq!(t.sweep(59 * S, 100), 0);
    st(
        &t,
        &mut tcp(VM, REMOTE, 1, 2, TCP_ACK, 101, 5001),
        &c,
        59 * S,
    );
    assert_eq!(t.sweep(59 * S + 431_999 * S, 100), 0);
    assert_eq!(t.sweep(59 * S + 432_000 * S, 100), 1);
}

#[test]
fn out_of_window_segments_are_invalid_and_change_nothing() {
    let t = Tracker::new(Config::default());
    let c = commit(0);
    st(&t, &mut tcp(VM, REMOTE, 1, 2, TCP_SYN, 100, 0), &c, 0);
    st(
        &t,
        &mut tcp(REMOTE, VM, 2, 1, TCP_SYN | TCP_ACK, 5000, 101),
        &c,
        0,
    );
    st(&t, &mut tcp(VM, REMOTE, 1, 2, TCP_ACK, 101, 5001), &c, 0);
    // Far beyond the advertised window.
    assert_eq!(
        st(
            &t,
            &mut tcp(VM, REMOTE, 1, 2, TCP_ACK, 101 + 10_000_000, 5001),
            &c,
            0
        )
        .state,
        INV
    );
    // Acknowledging data never sent.
    assert_eq!(
        st(
            &t,
            &mut tcp(VM, REMOTE, 1, 2, TCP_ACK, 101, 9_000_000),
            &c,
            0
        )
        .state,
        INV
    );
    // A blind RST far outside the window.
    assert_eq!(
        st(
            &t,
            &mut tcp(REMOTE, VM, 2, 1, TCP_RST, 3_000_000_000, 0),
            &c,
            0
        )
        .state,
        INV
    );
    assert_eq!(state_of(&t), "ESTABLISHED");
    assert_eq!(
        st(&t, &mut tcp(VM, REMOTE, 1, 2, TCP_ACK, 101, 5001), &c, 0).state,
        EST
    );
    assert_eq!(t.counters().invalid, 3);
}

#[test]
fn bad_flags_and_unknown_syn_ack_are_invalid_and_pickup_is_configurable() {
    let t = Tracker::new(Config::default());
    let c = commit(0);
    assert_eq!(
        st(
            &t,
            &mut tcp(VM, REMOTE, 1, 2, TCP_SYN | TCP_FIN, 1, 0),
            &c,
            0
        )
        .state,
        INV
    );
    assert_eq!(
        st(
            &t,
            &mut tcp(VM, REMOTE, 1, 2, TCP_SYN | TCP_RST, 1, 0),
            &c,
            0
        )
        .state,
        INV
    );
    assert_eq!(
        st(&t, &mut tcp(VM, REMOTE, 1, 2, 0, 1, 0), &c, 0).state,
        INV
    );
    assert_eq!(
        st(
            &t,
            &mut tcp(VM, REMOTE, 1, 2, TCP_SYN | TCP_ACK, 1, 1),
            &c,
            0
        )
        .state,
        INV
    );
    assert!(t.is_empty());
    // Mid-stream pickup, as Open vSwitch: +new, then the reply makes it established.
    assert_eq!(
        st(&t, &mut tcp(VM, REMOTE, 1, 2, TCP_ACK, 1, 1), &c, 0).state,
        NEW
    );
    assert_eq!(
        st(&t, &mut tcp(REMOTE, VM, 2, 1, TCP_ACK, 1, 1), &c, 0).state,
        EST | CS_REPLY_DIR
    );
    let strict = Tracker::new(Config {
        tcp_pickup: false,
        ..Config::default()
    });
    assert_eq!(
        st(&strict, &mut tcp(VM, REMOTE, 1, 2, TCP_ACK, 1, 1), &c, 0).state,
        INV
    );
}

#[test]
fn bad_checksums_and_truncated_headers_are_invalid() {
    let t = Tracker::new(Config::default());
    let mut f = udp(VM, REMOTE, 1, 2);
    let n = f.len();
    f[n - 1] ^= 0xff;
    assert_eq!(st(&t, &mut f, &commit(0), 0).state, INV);
    let mut f = udp(VM, REMOTE, 1, 2);
    f[ETH + 10] ^= 1;
    assert_eq!(st(&t, &mut f, &commit(0), 0).state, INV);
    let mut f = udp(VM, REMOTE, 1, 2);
    f.truncate(ETH + 24);
    assert_eq!(st(&t, &mut f, &commit(0), 0).state, INV);
    let mut junk = vec![0u8; ETH + 3];
    assert_eq!(st(&t, &mut junk, &commit(0), 0).state, INV);
    assert!(t.is_empty());
    assert_eq!(t.counters().invalid, 4);
}

/// A frame whose checksums one `ct()` verified is not summed again by the next: the frame
/// remembers it, through `execute` and through a batch. Damage done behind the pipeline's back
/// (no action writes without updating checksums) shows it. A bad frame is invalid every time,
/// and a new frame over the same bytes, or one cut short since, is verified afresh.
#[test]
fn checksums_are_verified_once_per_frame() {
    fn one(t: &Tracker, f: &mut Frame<'_>, k: &FlowKey) -> u32 {
        match t.execute(f, ETH, k, &req(0), 0) {
            CtVerdict::Tracked(r) => r.state,
            v => panic!("expected Tracked, got {v:?}"),
        }
    }
    fn batch(t: &Tracker, f: &mut Frame<'_>, k: &FlowKey) -> u32 {
        let mut items = [CtItem {
            frame: f,
            l3_ofs: ETH,
            key: k,
        }];
        let mut out = [None];
        t.execute_batch(&mut items, &req(0), 0, &mut out);
        match out {
            [Some(CtVerdict::Tracked(r))] => r.state,
            v => panic!("expected Tracked, got {v:?}"),
        }
    }
    // Batches from the first connection on, so both paths run.
    let t = Tracker::new(Config {
        prefetch_min_conns: 0,
        ..Config::default()
    });
    for track in [one, batch] {
        let mut bytes = udp(VM, REMOTE, 1, 2);
        let (n, k) = (bytes.len(), key_of(&bytes));
        let mut f = Frame::new(&mut bytes, 0, n);
        assert_eq!(track(&t, &mut f, &k), NEW);
        f.data_mut()[n - 1] ^= 0xff;
        assert_eq!(track(&t, &mut f, &k), NEW, "verified once already");
        f.truncate(n - 1);
        f.push_tail(1).unwrap();
        assert_eq!(track(&t, &mut f, &k), INV, "cut and grown: verified again");
        assert_eq!(
            track(&t, &mut f, &k),
            INV,
            "a bad frame is never taken as good"
        );
        let mut f = Frame::new(&mut bytes, 0, n);
        assert_eq!(track(&t, &mut f, &k), INV, "a new frame knows nothing");
    }
}

#[test]
fn an_ip_version_the_ethertype_does_not_name_is_invalid() {
    let t = Tracker::new(Config::default());
    let p6 = P {
        v6: true,
        src: 0xfd00 << 112 | 5,
        dst: 0xfd00 << 112 | 8,
        ..big_udp()
    };
    // Well-formed IPv6 under ethertype 0x0800: the pipeline sees IPv4 with a bad header, so
    // conntrack must not track it as IPv6 either.
    let mut whole = frame(&p6);
    whole[12..14].copy_from_slice(&[0x08, 0x00]);
    assert_eq!(st(&t, &mut whole, &commit(0), 0).state, INV);
    // Nor reassemble such fragments into a datagram the pipeline cannot parse as what it says.
    let mut f6 = fragments_v6(&p6, &[96], 42);
    for f in &mut f6 {
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        match go(&t, f, &commit(0), 0) {
            CtVerdict::Tracked(r) => assert_eq!(r.state, INV),
            v => panic!("{v:?}"),
        }
    }
    assert_eq!(t.counters().frag_held, 0);
    assert!(t.is_empty());
}

#[test]
fn uncommitted_connections_are_not_remembered() {
    let t = Tracker::new(Config::default());
    assert_eq!(st(&t, &mut udp(VM, REMOTE, 1, 2), &req(0), 0).state, NEW);
    assert_eq!(st(&t, &mut udp(VM, REMOTE, 1, 2), &req(0), 0).state, NEW);
    assert!(t.is_empty());
    assert_eq!(st(&t, &mut udp(VM, REMOTE, 1, 2), &commit(0), 0).state, NEW);
    assert_eq!(st(&t, &mut udp(VM, REMOTE, 1, 2), &req(0), 0).state, NEW);
    assert_eq!(
        st(&t, &mut udp(REMOTE, VM, 2, 1), &req(0), 0).state,
        EST | CS_REPLY_DIR
    );
    assert_eq!(st(&t, &mut udp(VM, REMOTE, 1, 2), &req(0), 0).state, EST);
    let c = t.counters();
    assert_eq!((c.new, c.committed, c.established_lookups), (3, 1, 3));
}

#[test]
fn udp_timeouts_first_and_stream() {
    let t = Tracker::new(Config::default());
    st(&t, &mut udp(VM, REMOTE, 1, 2), &commit(0), 0);
    assert_eq!(t.sweep(29 * S, 10), 0);
    assert_eq!(t.sweep(30 * S, 10), 1);
    st(&t, &mut udp(VM, REMOTE, 1, 2), &commit(0), 0);
    st(&t, &mut udp(REMOTE, VM, 2, 1), &req(0), S);
    assert_eq!(t.sweep(S + 119 * S, 10), 0);
    assert_eq!(t.sweep(S + 120 * S, 10), 1);
    assert_eq!(t.counters().expired, 2);
}

#[test]
fn expired_connection_is_new_again_without_a_sweep() {
    let t = Tracker::new(Config::default());
    st(&t, &mut udp(VM, REMOTE, 1, 2), &commit(0), 0);
    assert_eq!(
        st(&t, &mut udp(REMOTE, VM, 2, 1), &req(0), 31 * S).state,
        NEW
    );
    assert!(t.is_empty());
}

#[test]
fn sweep_examines_at_most_budget_entries() {
    let t = Tracker::new(Config::default());
    for p in 0..200 {
        st(&t, &mut udp(VM, REMOTE, 1000 + p, 53), &commit(0), 0);
    }
    let mut total = 0;
    let mut calls = 0;
    while total < 200 {
        let n = t.sweep(31 * S, 7);
        assert!(n <= 7);
        total += n;
        calls += 1;
        assert!(calls < 2000);
    }
    assert!(calls >= 200 / 7);
    assert!(t.is_empty());
}

#[test]
fn snat_address_only_keeps_port_and_reply_is_unnated_by_bare_nat() {
    let t = Tracker::new(Config::default());
    let spec = snat([172, 22, 7, 27]);
    let c = commit_nat(&spec, 9);
    let mut f = tcp(VM, REMOTE, 40000, 80, TCP_SYN, 100, 0);
    let r = st(&t, &mut f, &c, 0);
    assert_eq!(r.state, NEW | CS_SRC_NAT);
    assert_eq!(view(&f), (PUB, REMOTE, 40000, 80));
    let orig = r.orig.unwrap();
    assert_eq!(
        (orig.src, orig.dst, orig.src_port, orig.dst_port, orig.proto),
        (VM, REMOTE, 40000, 80, 6)
    );
    assert_eq!(
        t.dump(None),
        vec!["tcp,orig=(src=192.168.10.5,dst=8.8.8.8,sport=40000,dport=80),reply=(src=8.8.8.8,dst=172.22.7.27,sport=80,dport=40000),zone=9,protoinfo=(state=SYN_SENT)"]
    );
    // The seed's return path: ct(zone=9,nat) on the reply.
    let bare = NatSpec::default();
    let n = CtRequest {
        nat: Some(&bare),
        ..req(9)
    };
    let mut f = tcp(REMOTE, PUB, 80, 40000, TCP_SYN | TCP_ACK, 5000, 101);
    let r = st(&t, &mut f, &n, 1);
    assert_eq!(r.state, EST | CS_REPLY_DIR | CS_DST_NAT);
    assert_eq!(view(&f), (REMOTE, VM, 80, 40000));
    // Without `nat` the reply is tracked but not translated.
    let mut f = tcp(REMOTE, PUB, 80, 40000, TCP_ACK, 5001, 101);
    assert_eq!(st(&t, &mut f, &req(9), 1).state, EST | CS_REPLY_DIR);
    assert_eq!(view(&f), (REMOTE, PUB, 80, 40000));
    // Forward direction with bare nat: translated again.
    let mut f = tcp(VM, REMOTE, 40000, 80, TCP_ACK, 101, 5001);
    assert_eq!(st(&t, &mut f, &n, 2).state, EST | CS_SRC_NAT);
    assert_eq!(view(&f), (PUB, REMOTE, 40000, 80));
}

#[test]
fn snat_port_range_collision_forces_a_search() {
    let t = Tracker::new(Config::default());
    let spec = snat_ports(2000, 2002);
    let c = commit_nat(&spec, 0);
    let mut seen = Vec::new();
    for host in 0..3u128 {
        let mut f = udp(VM + host, REMOTE, 2001, 53);
        assert_eq!(st(&t, &mut f, &c, 0).state, NEW | CS_SRC_NAT);
        let (s, d, sp, dp) = view(&f);
        assert_eq!((s, d, dp), (0x0a00_0001, REMOTE, 53));
        seen.push(sp);
    }
    // The first keeps its port (inside the range); the others had to search.
    assert_eq!(seen[0], 2001);
    let by_host = seen.clone();
    seen.sort();
    assert_eq!(seen, vec![2000, 2001, 2002]);
    // Each reply finds its own connection.
    for (host, sp) in by_host.into_iter().enumerate() {
        let host = host as u128;
        let bare = NatSpec::default();
        let mut f = udp(REMOTE, 0x0a00_0001, 53, sp);
        st(
            &t,
            &mut f,
            &CtRequest {
                nat: Some(&bare),
                ..req(0)
            },
            0,
        );
        assert_eq!(view(&f), (REMOTE, VM + host, 53, 2001));
    }
}

#[test]
fn exhausted_range_is_counted_and_never_collides() {
    let t = Tracker::new(Config::default());
    let spec = snat_ports(5000, 5001);
    let c = commit_nat(&spec, 0);
    for host in 0..2u128 {
        assert_eq!(
            st(&t, &mut udp(VM + host, REMOTE, 1234, 53), &c, 0).state,
            NEW | CS_SRC_NAT
        );
    }
    let mut f = udp(VM + 2, REMOTE, 1234, 53);
    let before = f.clone();
    assert_eq!(st(&t, &mut f, &c, 0).state, INV);
    assert_eq!(
        f, before,
        "an untranslatable packet is left alone and marked invalid"
    );
    assert_eq!(t.counters().nat_exhausted, 1);
    assert_eq!(t.len(), 2);
    // A different zone has its own tuple space.
    let c1 = commit_nat(&spec, 1);
    assert_eq!(
        st(&t, &mut udp(VM + 2, REMOTE, 1234, 53), &c1, 0).state,
        NEW | CS_SRC_NAT
    );
}

#[test]
fn snat_address_range_uses_several_addresses() {
    let t = Tracker::new(Config::default());
    let spec = NatSpec {
        addr_max: Some(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 4))),
        port_min: Some(7000),
        port_max: Some(7000),
        ..snat([10, 0, 0, 1])
    };
    let c = commit_nat(&spec, 0);
    let mut addrs = Vec::new();
    for host in 0..4u128 {
        let mut f = udp(VM + host, REMOTE, 7000, 53);
        st(&t, &mut f, &c, 0);
        addrs.push(view(&f).0);
    }
    addrs.sort();
    assert_eq!(
        addrs,
        vec![0x0a00_0001, 0x0a00_0002, 0x0a00_0003, 0x0a00_0004]
    );
    assert_eq!(st(&t, &mut udp(VM + 9, REMOTE, 7000, 53), &c, 0).state, INV);
}

#[test]
fn default_snat_port_range_moves_ephemeral_ports_within_ephemeral_range() {
    let t = Tracker::new(Config::default());
    let spec = snat([10, 0, 0, 1]);
    let c = commit_nat(&spec, 0);
    st(&t, &mut udp(VM, REMOTE, 40000, 53), &c, 0);
    let mut f = udp(VM + 1, REMOTE, 40000, 53);
    st(&t, &mut f, &c, 0);
    let p = view(&f).2;
    assert!(p >= 1024 && p != 40000, "{p}");
    st(&t, &mut udp(VM, REMOTE, 700, 53), &c, 0);
    let mut f = udp(VM + 1, REMOTE, 700, 53);
    st(&t, &mut f, &c, 0);
    let p = view(&f).2;
    assert!((600..=1023).contains(&p) && p != 700, "{p}");
}

#[test]
fn dnat_translates_destination_and_reply_source() {
    let t = Tracker::new(Config::default());
    let spec = NatSpec {
        kind: Some(NatKind::Dst),
        addr_min: Some(IpAddr::V4(Ipv4Addr::new(10, 1, 1, 1))),
        port_min: Some(8080),
        ..NatSpec::default()
    };
    let c = commit_nat(&spec, 3);
    let mut f = tcp(REMOTE, PUB, 5555, 80, TCP_SYN, 1, 0);
    assert_eq!(st(&t, &mut f, &c, 0).state, NEW | CS_DST_NAT);
    assert_eq!(view(&f), (REMOTE, 0x0a01_0101, 5555, 8080));
    let bare = NatSpec::default();
    let mut f = tcp(0x0a01_0101, REMOTE, 8080, 5555, TCP_SYN | TCP_ACK, 100, 2);
    let r = st(
        &t,
        &mut f,
        &CtRequest {
            nat: Some(&bare),
            ..req(3)
        },
        0,
    );
    assert_eq!(r.state, EST | CS_REPLY_DIR | CS_SRC_NAT);
    assert_eq!(view(&f), (PUB, REMOTE, 80, 5555));
    assert_eq!(
        t.dump(Some(3)),
        vec!["tcp,orig=(src=8.8.8.8,dst=172.22.7.27,sport=5555,dport=80),reply=(src=10.1.1.1,dst=8.8.8.8,sport=8080,dport=5555),zone=3,protoinfo=(state=SYN_RECV)"]
    );
}

#[test]
fn icmp_echo_is_tracked_and_natted_with_id_search_on_collision() {
    let t = Tracker::new(Config::default());
    let spec = snat([172, 22, 7, 27]);
    let c = commit_nat(&spec, 9);
    let echo = |src, dst, id, ty| {
        frame(&P {
            src,
            dst,
            proto: 1,
            sport: id,
            icmp_type: ty,
            payload: vec![1; 8],
            ..P::default()
        })
    };
    let mut f = echo(VM, REMOTE, 77, 8);
    assert_eq!(st(&t, &mut f, &c, 0).state, NEW | CS_SRC_NAT);
    assert_eq!(view(&f), (PUB, REMOTE, 77, 8 << 8));
    assert_eq!(
        t.dump(None),
        vec!["icmp,orig=(src=192.168.10.5,dst=8.8.8.8,id=77,type=8,code=0),reply=(src=8.8.8.8,dst=172.22.7.27,id=77,type=0,code=0),zone=9"]
    );
    // A second host with the same identifier gets another one.
    let mut f2 = echo(VM + 1, REMOTE, 77, 8);
    st(&t, &mut f2, &c, 0);
    let id2 = view(&f2).2;
    assert_ne!(id2, 77);
    let bare = NatSpec::default();
    let n = CtRequest {
        nat: Some(&bare),
        ..req(9)
    };
    let mut r = echo(REMOTE, PUB, id2, 0);
    assert_eq!(st(&t, &mut r, &n, 0).state, EST | CS_REPLY_DIR | CS_DST_NAT);
    assert_eq!(view(&r), (REMOTE, VM + 1, 77, 0));
    // A request in the reverse direction is not the reply.
    assert_eq!(st(&t, &mut echo(REMOTE, PUB, 77, 8), &req(9), 0).state, NEW);
    // An unsolicited echo reply is invalid.
    assert_eq!(
        st(&t, &mut echo(REMOTE, VM, 5, 0), &commit(9), 0).state,
        INV
    );
    // ICMP times out after 30 s.
    assert_eq!(t.sweep(30 * S, 100), 2);
}

#[test]
fn icmp_error_is_related_and_translated_back() {
    let t = Tracker::new(Config::default());
    let spec = NatSpec {
        port_min: Some(3000),
        port_max: Some(3000),
        ..snat([172, 22, 7, 27])
    };
    let c = commit_nat(&spec, 9);
    let mut f = udp(VM, REMOTE, 40000, 53);
    st(&t, &mut f, &c, 0);
    // The translated datagram as it left: 172.22.7.27:3000 -> 8.8.8.8:53.
    let sent = f[ETH..].to_vec();
    let router = v4([10, 9, 9, 9]);
    let mut err = icmp_error(false, router, PUB, 3, 3, &sent);
    let bare = NatSpec::default();
    let n = CtRequest {
        nat: Some(&bare),
        ..req(9)
    };
    let r = st(&t, &mut err, &n, 1);
    assert_eq!(r.state, CS_TRACKED | CS_RELATED | CS_REPLY_DIR | CS_DST_NAT);
    assert_eq!(r.orig.unwrap().src, VM);
    let (s, d, _, _) = view(&err);
    assert_eq!((s, d), (router, VM), "outer destination translated back");
    let inner = packet::parse_inner(&err, ETH + 28, 0).unwrap();
    assert_eq!(
        (
            inner.tuple.src.to_u128(),
            inner.tuple.dst.to_u128(),
            inner.tuple.sport,
            inner.tuple.dport
        ),
        (VM, REMOTE, 40000, 53)
    );
    // The embedded IPv4 header checksum is right again.
    assert_eq!(
        pipeline::wire::checksum::checksum(&err[ETH + 28..ETH + 48]),
        0
    );
    // Without NAT it is still related but untouched; an error about nothing is invalid.
    let mut err2 = icmp_error(false, router, PUB, 3, 3, &sent);
    assert_eq!(
        st(&t, &mut err2, &req(9), 1).state,
        CS_TRACKED | CS_RELATED | CS_REPLY_DIR
    );
    let mut stray = icmp_error(false, router, PUB, 11, 0, &udp(VM, REMOTE, 1, 1)[ETH..]);
    assert_eq!(st(&t, &mut stray, &req(9), 1).state, INV);
}

#[test]
fn icmp_error_with_dnat_translates_inner_destination() {
    let t = Tracker::new(Config::default());
    let spec = NatSpec {
        kind: Some(NatKind::Dst),
        addr_min: Some(IpAddr::V4(Ipv4Addr::new(10, 1, 1, 1))),
        ..NatSpec::default()
    };
    let c = commit_nat(&spec, 0);
    let mut f = tcp(REMOTE, PUB, 5555, 80, TCP_SYN, 1, 0);
    st(&t, &mut f, &c, 0);
    let sent = f[ETH..].to_vec();
    let router = v4([10, 1, 1, 254]);
    let mut err = icmp_error(false, router, REMOTE, 3, 1, &sent);
    let bare = NatSpec::default();
    let r = st(
        &t,
        &mut err,
        &CtRequest {
            nat: Some(&bare),
            ..req(0)
        },
        0,
    );
    assert_eq!(
        r.state & (CS_RELATED | CS_REPLY_DIR),
        CS_RELATED | CS_REPLY_DIR
    );
    assert_eq!(view(&err).1, REMOTE);
    let inner = packet::parse_inner(&err, ETH + 28, 0).unwrap();
    assert_eq!((inner.tuple.dst.to_u128(), inner.tuple.dport), (PUB, 80));
}

#[test]
fn global_and_zone_limits_refuse_new_but_keep_established() {
    let t = Tracker::new(Config {
        max_conns: 2,
        ..Config::default()
    });
    st(&t, &mut udp(VM, REMOTE, 1, 53), &commit(0), 0);
    st(&t, &mut udp(VM, REMOTE, 2, 53), &commit(0), 0);
    assert_eq!(
        st(&t, &mut udp(VM, REMOTE, 3, 53), &commit(0), 0).state,
        NEW
    );
    assert_eq!(t.len(), 2);
    assert_eq!(t.counters().refused, 1);
    assert_eq!(
        st(&t, &mut udp(REMOTE, VM, 53, 1), &req(0), 0).state,
        EST | CS_REPLY_DIR
    );
    let z = Tracker::new(Config::default());
    z.set_zone_limit(5, 1);
    assert_eq!(z.zone_limit(5), 1);
    st(&z, &mut udp(VM, REMOTE, 1, 53), &commit(5), 0);
    st(&z, &mut udp(VM, REMOTE, 2, 53), &commit(5), 0);
    st(&z, &mut udp(VM, REMOTE, 2, 53), &commit(6), 0);
    assert_eq!((z.zone_len(5), z.zone_len(6), z.len()), (1, 1, 2));
    assert_eq!(z.counters().refused, 1);
    z.flush(Some(5));
    assert_eq!(z.zone_len(5), 0);
    st(&z, &mut udp(VM, REMOTE, 2, 53), &commit(5), 0);
    assert_eq!(z.zone_len(5), 1);
}

/// A range found full is not searched again by commits for the same peer until a connection
/// goes; then the next commit searches it and takes the tuple that was freed.
#[test]
fn a_full_range_is_remembered_until_a_connection_goes() {
    let t = Tracker::new(Config::default());
    let spec = snat_ports(5000, 5063);
    let c = commit_nat(&spec, 0);
    let mut ports = Vec::new();
    for host in 0..64u128 {
        let mut f = udp(VM + host, REMOTE, 1234, 53);
        assert_eq!(st(&t, &mut f, &c, 0).state, NEW | CS_SRC_NAT);
        ports.push(view(&f).2);
    }
    let exhausted = |t: &Tracker| {
        let c = t.counters();
        (c.nat_exhausted, c.nat_exhausted_known)
    };
    // The first refusal searches the range; the next ones know it is full.
    for host in 64..74u128 {
        assert_eq!(
            st(&t, &mut udp(VM + host, REMOTE, 1234, 53), &c, 0).state,
            INV
        );
    }
    assert_eq!(exhausted(&t), (10, 9));
    // Another server is another set of translated tuples: searched, and free.
    assert_eq!(
        st(&t, &mut udp(VM, REMOTE + 1, 1234, 53), &c, 0).state,
        NEW | CS_SRC_NAT
    );
    // A connection goes: the next commit searches again and takes its port.
    let gone = Tuple {
        src: Addr::from_u128(VM + 5),
        dst: Addr::from_u128(REMOTE),
        sport: 1234,
        dport: 53,
        zone: 0,
        proto: 17,
        v6: false,
    };
    assert_eq!(t.flush_tuple(&gone), Ok(()));
    let mut f = udp(VM + 100, REMOTE, 1234, 53);
    assert_eq!(st(&t, &mut f, &c, 0).state, NEW | CS_SRC_NAT);
    assert_eq!(view(&f).2, ports[5]);
    assert_eq!(exhausted(&t), (10, 9));
    // Full again: found so by a search, then known.
    for host in 101..103u128 {
        assert_eq!(
            st(&t, &mut udp(VM + host, REMOTE, 1234, 53), &c, 0).state,
            INV
        );
    }
    assert_eq!(exhausted(&t), (12, 10));
}

#[test]
fn zones_are_separate() {
    let t = Tracker::new(Config::default());
    st(&t, &mut udp(VM, REMOTE, 1, 53), &commit(1), 0);
    assert_eq!(st(&t, &mut udp(REMOTE, VM, 53, 1), &req(2), 0).state, NEW);
    assert_eq!(
        st(&t, &mut udp(REMOTE, VM, 53, 1), &req(1), 0).state,
        EST | CS_REPLY_DIR
    );
    st(&t, &mut udp(VM, REMOTE, 1, 53), &commit(2), 0);
    assert_eq!(t.len(), 2);
    assert_eq!(t.flush(Some(1)), 1);
    assert_eq!(t.dump(None).len(), 1);
    assert_eq!(t.flush(None), 1);
    assert!(t.is_empty());
}

/// Dump and flush walk each shard a slice at a time; with hundreds of connections per shard
/// every slice must be visited once: each connection listed once, a zone's flush taking all of
/// its connections and no other.
#[test]
fn dump_and_flush_cover_shards_larger_than_a_slice() {
    const PER_ZONE: u16 = 20_000;
    let t = Tracker::new(Config::default());
    for zone in [1, 2] {
        for sport in 1..=PER_ZONE {
            st(&t, &mut udp(VM, REMOTE, sport, 53), &commit(zone), 0);
        }
    }
    assert_eq!(t.len(), 2 * PER_ZONE as usize);
    let all = t.dump(None);
    let distinct: std::collections::HashSet<&String> = all.iter().collect();
    assert_eq!((all.len(), distinct.len()), (t.len(), t.len()));
    let zone2 = t.dump(Some(2));
    assert_eq!(zone2.len(), PER_ZONE as usize);
    assert!(zone2.iter().all(|l| l.contains(",zone=2")));
    assert_eq!(t.flush(Some(1)), PER_ZONE as usize);
    assert_eq!(t.zone_len(1), 0);
    let mut left = t.dump(None);
    let mut expected = zone2;
    left.sort();
    expected.sort();
    assert_eq!(left, expected);
    assert_eq!(t.flush(None), PER_ZONE as usize);
    assert!(t.is_empty() && t.dump(None).is_empty());
}

/// The sweeper also holds a shard for one slice at a time: a budget larger than a slice must
/// still examine (and expire) every slot it pays for, and a budget smaller than a shard must
/// pick up where it stopped.
#[test]
fn sweep_covers_shards_larger_than_a_slice() {
    const CONNS: u16 = 40_000;
    let t = Tracker::new(Config::default());
    for sport in 1..=CONNS {
        st(&t, &mut udp(VM, REMOTE, sport, 53), &commit(1), 0);
    }
    let later = 3600 * S;
    // A budget of a few slices per call: every slot is examined exactly once per pass, so
    // the whole table (slab capacity, not connections, is what the budget counts) goes in a
    // bounded number of calls, each removing no more than its budget.
    let mut removed = 0;
    let mut calls = 0;
    while removed < CONNS as usize {
        let n = t.sweep(later, 1000);
        assert!(n <= 1000);
        removed += n;
        calls += 1;
        assert!(calls <= 200, "the sweep stalled at {removed} of {CONNS}");
    }
    assert!(t.is_empty());
    // Under SNAT most reply keys live in another shard than their connection: they go too,
    // and the zone is uncounted once they have.
    let spec = snat_ports(10000, 60000);
    for sport in 1..=CONNS {
        // A server each: with one, every commit would search the port range past the ports
        // taken before it.
        let server = REMOTE + sport as u128;
        st(
            &t,
            &mut udp(VM, server, sport, 53),
            &commit_nat(&spec, 2),
            later,
        );
    }
    assert_eq!(t.zone_len(2), CONNS as u32);
    assert_eq!(t.sweep(2 * later, usize::MAX), CONNS as usize);
    assert!(t.is_empty());
    assert_eq!(t.zone_len(2), 0);
}

#[test]
fn mark_and_label_are_set_on_commit_with_masks() {
    let t = Tracker::new(Config::default());
    let c = CtRequest {
        set_mark: Some((0x5, 0xff)),
        set_label: Some((0x1234, u128::MAX)),
        ..commit(9)
    };
    let r = st(&t, &mut udp(VM, REMOTE, 1, 53), &c, 0);
    assert_eq!((r.mark, r.label), (5, 0x1234));
    // Without commit, exec writes are not applied.
    let nc = CtRequest {
        commit: false,
        set_mark: Some((0xff00, 0xff00)),
        ..c
    };
    assert_eq!(st(&t, &mut udp(REMOTE, VM, 53, 1), &nc, 0).mark, 5);
    // Masked update on a later commit keeps the other bits.
    let c2 = CtRequest {
        set_mark: Some((0x30, 0xf0)),
        set_label: None,
        ..commit(9)
    };
    let r = st(&t, &mut udp(VM, REMOTE, 1, 53), &c2, 0);
    assert_eq!((r.mark, r.label), (0x35, 0x1234));
    assert_eq!(
        t.dump(None),
        vec!["udp,orig=(src=192.168.10.5,dst=8.8.8.8,sport=1,dport=53),reply=(src=8.8.8.8,dst=192.168.10.5,sport=53,dport=1),zone=9,mark=53,labels=0x1234"]
    );
}

#[test]
fn force_commit_replaces_a_connection_seen_in_reply_direction() {
    let t = Tracker::new(Config::default());
    st(&t, &mut udp(VM, REMOTE, 1, 53), &commit(0), 0);
    let f = CtRequest {
        force: true,
        ..commit(0)
    };
    assert_eq!(st(&t, &mut udp(REMOTE, VM, 53, 1), &f, 0).state, NEW);
    assert_eq!(
        t.dump(None),
        vec!["udp,orig=(src=8.8.8.8,dst=192.168.10.5,sport=53,dport=1),reply=(src=192.168.10.5,dst=8.8.8.8,sport=1,dport=53)"]
    );
    // In the original direction force changes nothing.
    assert_eq!(st(&t, &mut udp(REMOTE, VM, 53, 1), &f, 0).state, NEW);
    assert_eq!(t.len(), 1);
}

#[test]
fn flush_by_tuple_accepts_either_direction() {
    let t = Tracker::new(Config::default());
    let spec = snat([10, 0, 0, 1]);
    st(&t, &mut udp(VM, REMOTE, 1, 53), &commit_nat(&spec, 4), 0);
    st(&t, &mut udp(VM, REMOTE, 2, 53), &commit(4), 0);
    let reply = Tuple {
        src: Addr::from_u128(REMOTE),
        dst: Addr::v4(0x0a00_0001),
        sport: 53,
        dport: 1,
        zone: 4,
        proto: 17,
        v6: false,
    };
    assert_eq!(t.flush_tuple(&reply), Ok(()));
    assert_eq!(t.flush_tuple(&reply), Err(CtError::NotFound));
    let orig = Tuple {
        src: Addr::from_u128(VM),
        dst: Addr::from_u128(REMOTE),
        sport: 2,
        dport: 53,
        ..reply
    };
    assert_eq!(t.flush_tuple(&orig), Ok(()));
    assert!(t.is_empty());
}

#[test]
fn udp_zero_checksum_stays_zero_under_nat() {
    let t = Tracker::new(Config::default());
    let spec = snat([10, 0, 0, 1]);
    let mut f = frame(&P {
        proto: 17,
        udp_no_csum: true,
        payload: vec![1, 2, 3],
        ..P::default()
    });
    st(&t, &mut f, &commit_nat(&spec, 0), 0);
    assert_eq!(&f[ETH + 26..ETH + 28], &[0, 0]);
    assert_eq!(view(&f).0, 0x0a00_0001);
}

#[test]
fn ipv6_snat_tcp_and_icmpv6_echo() {
    let t = Tracker::new(Config::default());
    let a: u128 = 0xfd00_0000_0000_0000_0000_0000_0000_0005;
    let b: u128 = 0x2001_0db8_0000_0000_0000_0000_0000_0008;
    let n: u128 = 0x2001_0db8_ffff_0000_0000_0000_0000_0001;
    let spec = NatSpec {
        kind: Some(NatKind::Src),
        addr_min: Some(IpAddr::V6(n.into())),
        ..NatSpec::default()
    };
    let c = commit_nat(&spec, 2);
    let mut f = frame(&P {
        v6: true,
        src: a,
        dst: b,
        ..P::default()
    });
    assert_eq!(st(&t, &mut f, &c, 0).state, NEW | CS_SRC_NAT);
    assert_eq!(view(&f), (n, b, 40000, 80));
    let bare = NatSpec::default();
    let mut r = frame(&P {
        v6: true,
        src: b,
        dst: n,
        sport: 80,
        dport: 40000,
        flags: TCP_SYN | TCP_ACK,
        seq: 9,
        ack: 1001,
        ..P::default()
    });
    assert_eq!(
        st(
            &t,
            &mut r,
            &CtRequest {
                nat: Some(&bare),
                ..req(2)
            },
            0
        )
        .state,
        EST | CS_REPLY_DIR | CS_DST_NAT
    );
    assert_eq!(view(&r), (b, a, 80, 40000));
    let mut e = frame(&P {
        v6: true,
        src: a,
        dst: b,
        proto: 58,
        icmp_type: 128,
        sport: 9,
        ..P::default()
    });
    st(&t, &mut e, &c, 0);
    assert_eq!(view(&e).0, n);
    let d = t.dump(Some(2));
    assert!(d.iter().any(|l| l.starts_with("icmp6,orig=(src=fd00::5,dst=2001:db8::8,id=9,type=128,code=0),reply=(src=2001:db8::8,dst=2001:db8:ffff::1,id=9,type=129,code=0)")), "{d:?}");
}

#[test]
fn other_protocols_are_tracked_by_address_pair() {
    let t = Tracker::new(Config::default());
    let mut g = frame(&P {
        proto: 47,
        payload: vec![0; 8],
        ..P::default()
    });
    assert_eq!(st(&t, &mut g, &commit(0), 0).state, NEW);
    let mut back = frame(&P {
        proto: 47,
        src: REMOTE,
        dst: VM,
        payload: vec![0; 8],
        ..P::default()
    });
    assert_eq!(st(&t, &mut back, &req(0), 0).state, EST | CS_REPLY_DIR);
    assert_eq!(
        t.dump(None),
        vec!["47,orig=(src=192.168.10.5,dst=8.8.8.8,sport=0,dport=0),reply=(src=8.8.8.8,dst=192.168.10.5,sport=0,dport=0)"]
    );
    assert_eq!(t.sweep(599 * S, 10), 0);
    assert_eq!(t.sweep(600 * S, 10), 1);
}

fn big_udp() -> P {
    P {
        proto: 17,
        sport: 5000,
        dport: 6000,
        payload: (0..200u8).collect(),
        ip_id: 77,
        ..P::default()
    }
}

#[test]
fn fragments_in_order_reassemble_and_are_tracked() {
    let t = Tracker::new(Config::default());
    let p = big_udp();
    let whole = frame(&p);
    let frags = fragments_v4(&p, &[64, 128]);
    let spec = snat([10, 0, 0, 1]);
    let c = commit_nat(&spec, 0);
    for f in &frags[..2] {
        assert!(matches!(go(&t, &mut f.clone(), &c, 0), CtVerdict::Held));
    }
    match go(&t, &mut frags[2].clone(), &c, 0) {
        CtVerdict::Reassembled { frame, result } => {
            assert_eq!(result.state, NEW | CS_SRC_NAT);
            assert_eq!(frame.len(), whole.len());
            assert_eq!(view(&frame), (0x0a00_0001, REMOTE, 5000, 6000));
            assert_eq!(&frame[ETH + 28..], &whole[ETH + 28..], "payload intact");
        }
        v => panic!("{v:?}"),
    }
    let k = t.counters();
    assert_eq!((k.frag_held, k.frag_reassembled, k.frag_dropped), (3, 1, 0));
}

#[test]
fn fragments_out_of_order_and_ipv6() {
    let t = Tracker::new(Config::default());
    let p = big_udp();
    let frags = fragments_v4(&p, &[64, 128]);
    assert!(matches!(
        go(&t, &mut frags[2].clone(), &commit(0), 0),
        CtVerdict::Held
    ));
    assert!(matches!(
        go(&t, &mut frags[0].clone(), &commit(0), 0),
        CtVerdict::Held
    ));
    assert!(matches!(
        go(&t, &mut frags[1].clone(), &commit(0), 0),
        CtVerdict::Reassembled { .. }
    ));
    let p6 = P {
        v6: true,
        src: 0xfd00 << 112 | 5,
        dst: 0xfd00 << 112 | 8,
        ..big_udp()
    };
    let whole = frame(&p6);
    let f6 = fragments_v6(&p6, &[96], 42);
    assert!(matches!(
        go(&t, &mut f6[1].clone(), &commit(0), 0),
        CtVerdict::Held
    ));
    match go(&t, &mut f6[0].clone(), &commit(0), 0) {
        CtVerdict::Reassembled { frame, result } => {
            assert_eq!(result.state, NEW);
            assert_eq!(frame, whole, "fragment header removed, lengths fixed");
        }
        v => panic!("{v:?}"),
    }
    assert_eq!(t.len(), 2);
}

#[test]
fn overlapping_and_malformed_fragments_are_dropped_and_counted() {
    let t = Tracker::new(Config::default());
    let p = big_udp();
    let a = fragments_v4(&p, &[64]);
    let b = fragments_v4(&p, &[32]);
    assert!(matches!(
        go(&t, &mut a[0].clone(), &commit(0), 0),
        CtVerdict::Held
    ));
    // Bytes 32.. overlap the held 0..64.
    match go(&t, &mut b[1].clone(), &commit(0), 0) {
        CtVerdict::Tracked(r) => assert_eq!(r.state, INV),
        v => panic!("{v:?}"),
    }
    // Non-final fragment whose length is not a multiple of 8.
    let mut odd = fragments_v4(&p, &[60]);
    assert!(matches!(
        go(&t, &mut odd.remove(0), &commit(0), 0),
        CtVerdict::Tracked(_)
    ));
    assert_eq!(t.counters().frag_dropped, 2);
    // The original datagram still completes with its own pieces.
    assert!(matches!(
        go(&t, &mut a[1].clone(), &commit(0), 0),
        CtVerdict::Reassembled { .. }
    ));
}

#[test]
fn incomplete_datagrams_time_out_and_limits_hold() {
    let t = Tracker::new(Config {
        frag: frag::FragConfig {
            max_datagrams: 1,
            max_bytes: 1000,
            timeout: 5 * S,
        },
        ..Config::default()
    });
    let p = big_udp();
    let f = fragments_v4(&p, &[64]);
    assert!(matches!(
        go(&t, &mut f[0].clone(), &commit(0), 0),
        CtVerdict::Held
    ));
    let q = P {
        ip_id: 78,
        ..big_udp()
    };
    let g = fragments_v4(&q, &[64]);
    assert!(
        matches!(
            go(&t, &mut g[0].clone(), &commit(0), 0),
            CtVerdict::Tracked(_)
        ),
        "second datagram over the limit"
    );
    assert_eq!(t.sweep(5 * S, 10), 0);
    assert_eq!(t.counters().frag_dropped, 2);
    // The first datagram's last fragment arrives too late: held as a new, incomplete one.
    assert!(matches!(
        go(&t, &mut f[1].clone(), &commit(0), 6 * S),
        CtVerdict::Held
    ));
}

#[test]
fn concurrent_threads_commit_and_look_up() {
    let t = std::sync::Arc::new(Tracker::new(Config::default()));
    let spec = std::sync::Arc::new(snat_ports(10000, 60000));
    let hs: Vec<_> = (0..4u128)
        .map(|th| {
            let t = t.clone();
            let spec = spec.clone();
            std::thread::spawn(move || {
                let mut ports = Vec::new();
                for i in 0..500u16 {
                    let mut f = udp(VM + th, REMOTE, 20000, 1000 + i % 5);
                    let _ = i;
                    let c = commit_nat(&spec, 0);
                    let r = st(&t, &mut f, &c, 0);
                    assert!(r.state & CS_INVALID == 0);
                    ports.push((view(&f).2, 1000 + i % 5));
                }
                ports
            })
        })
        .collect();
    let mut all: Vec<(u16, u16)> = hs.into_iter().flat_map(|h| h.join().unwrap()).collect();
    all.sort();
    all.dedup();
    // 4 hosts x 5 destinations, each a distinct translated (port, destination).
    assert_eq!(all.len(), 20);
    assert_eq!(t.len(), 20);
}

/// Datapath threads committing and looking up while a control thread dumps, sweeps and
/// flushes the same shards slice by slice: every lock is taken and given back (the test ends),
/// and the table's counts agree with what it lists afterwards.
#[test]
fn datapath_threads_and_control_walks_share_the_shards() {
    const PER_THREAD: u16 = 3_000;
    let t = std::sync::Arc::new(Tracker::new(Config::default()));
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let walker = {
        let (t, done) = (t.clone(), done.clone());
        std::thread::spawn(move || {
            let mut walks = 0u32;
            while !done.load(std::sync::atomic::Ordering::Relaxed) || walks < 3 {
                // Zone 7 holds the connections the flushes take; nothing expires at time 0.
                let listed = t.dump(None);
                assert!(listed
                    .iter()
                    .all(|l| l.starts_with("udp,orig=(src=192.168.10.")
                        && (l.ends_with(",zone=1") || l.ends_with(",zone=7"))));
                assert_eq!(t.sweep(0, 1 << 20), 0);
                t.flush(Some(7));
                walks += 1;
            }
            walks
        })
    };
    let spec = std::sync::Arc::new(snat_ports(10000, 60000));
    let workers: Vec<_> = (0..2u128)
        .map(|th| {
            let (t, spec) = (t.clone(), spec.clone());
            std::thread::spawn(move || {
                for sport in 1..=PER_THREAD {
                    let mut f = udp(VM + th, REMOTE, sport, 53);
                    let r = st(&t, &mut f, &commit_nat(&spec, 1), 0);
                    assert_eq!(r.state & CS_INVALID, 0);
                    st(&t, &mut udp(VM + th, REMOTE, sport, 53), &commit(7), 0);
                    let again = st(&t, &mut udp(VM + th, REMOTE, sport, 53), &req(1), 0);
                    assert_eq!(again.state & CS_ESTABLISHED, 0, "no reply seen yet");
                    assert_ne!(again.state & CS_TRACKED, 0);
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(walker.join().unwrap() >= 3);
    t.flush(Some(7));
    let kept = 2 * PER_THREAD as usize;
    assert_eq!(
        (t.len(), t.zone_len(1) as usize, t.zone_len(7)),
        (kept, kept, 0)
    );
    assert_eq!(t.dump(None).len(), kept);
    assert_eq!(t.dump(Some(1)).len(), kept);
    // Those are SNATed: their reply keys, mostly in other shards, go with them.
    assert_eq!(t.flush(Some(1)), kept);
    assert_eq!((t.len(), t.zone_len(1)), (0, 0));
    let back = st(&t, &mut udp(REMOTE, 0x0a00_0001, 53, 10000), &req(1), 0);
    assert_eq!(back.state & (CS_ESTABLISHED | CS_REPLY_DIR), 0);
}

/// The reply tuple of a TCP connection from `VM:port` to `REMOTE:80` in zone 9, coming back to
/// `to` (the VM, or the address SNAT gave it).
fn reply_to(to: u128, port: u16) -> Tuple {
    Tuple {
        src: Addr::from_u128(REMOTE),
        dst: Addr::from_u128(to),
        sport: 80,
        dport: port,
        zone: 9,
        proto: 6,
        v6: false,
    }
}

/// A connection without NAT has its reply tuple in its own shard (the hash is the same both
/// ways but for the bit that tells the directions apart), so a reply-direction packet is found
/// with one lock and no key record.
#[test]
fn replies_without_nat_are_indexed_beside_their_connections() {
    let t = Tracker::new(Config::default());
    for port in 40000..40200u16 {
        let mut f = tcp(VM, REMOTE, port, 80, TCP_SYN, 100, 0);
        st(&t, &mut f, &commit(9), 0);
        let reply = reply_to(VM, port);
        let h = reply.hash(t.cfg.seed);
        let g = t.shards.lock(Shards::shard_of(h));
        assert!(
            matches!(
                g.find(&reply, h),
                Some(table::Found::Local { reply: true, .. })
            ),
            "port {port}"
        );
        let mut back = tcp(REMOTE, VM, 80, port, TCP_SYN | TCP_ACK, 500, 101);
        drop(g);
        let r = st(&t, &mut back, &req(9), 0);
        assert_ne!(r.state & CS_REPLY_DIR, 0);
    }
    assert_eq!(t.len(), 200);
    assert!((0..SHARDS).all(|s| t.shards.lock(s).keys.high_water() == 0));
}

/// A reply key record kept in another shard than its connection carries the connection's
/// address, which a batch prefetches the reply direction's connection through: it must be the
/// record a lookup of that reply tuple ends at.
#[test]
fn reply_key_records_point_at_their_connections() {
    let t = Tracker::new(Config::default());
    let spec = snat([172, 22, 7, 27]);
    let c = commit_nat(&spec, 9);
    let mut remote = 0;
    for port in 40000..40200u16 {
        let mut f = tcp(VM, REMOTE, port, 80, TCP_SYN, 100, 0);
        st(&t, &mut f, &c, 0);
        let reply = reply_to(PUB, port);
        let h = reply.hash(t.cfg.seed);
        let g = t.shards.lock(Shards::shard_of(h));
        let Some(table::Found::Remote { shard, idx, .. }) = g.find(&reply, h) else {
            continue;
        };
        remote += 1;
        let at = g
            .index_entries_for_test(h)
            .into_iter()
            .find_map(|k| (g.keys.get(k).tuple == reply).then(|| g.keys.get(k).conn_at))
            .expect("the key record is in its home bucket");
        drop(g);
        let owner = t.shards.lock(shard as usize);
        assert_eq!(at, owner.conns.get(idx) as *const Conn as usize);
    }
    assert!(
        remote > 150,
        "most reply tuples land in another shard ({remote})"
    );
}

/// A key record can outlive its connection for a moment (another thread removes the record
/// after dropping the connection's lock). A lookup through it then finds a freed slot, or one
/// a new connection took since: neither is the connection the key record was made for.
#[test]
fn a_key_record_outliving_its_connection_finds_nothing() {
    let t = Tracker::new(Config::default());
    let spec = snat([172, 22, 7, 27]);
    let c = commit_nat(&spec, 9);
    let seed = t.cfg.seed;
    // A connection whose reply tuple is indexed in another shard.
    let (orig, reply) = (40000..40100u16)
        .map(|port| {
            let mut f = tcp(VM, REMOTE, port, 80, TCP_SYN, 100, 0);
            st(&t, &mut f, &c, 0);
            (reply_to(VM, port).reverse(), reply_to(PUB, port))
        })
        .find(|(o, r)| Shards::shard_of(o.hash(seed)) != Shards::shard_of(r.hash(seed)))
        .expect("most replies land in another shard");
    let shard = Shards::shard_of(orig.hash(seed));
    let idx = match t.shards.lock(shard).find(&orig, orig.hash(seed)) {
        Some(table::Found::Local { idx, .. }) => idx,
        _ => panic!("the connection is in its original tuple's shard"),
    };
    // Its record goes, its key record stays.
    assert!(t.shards.lock(shard).remove_conn(idx, seed).is_some());
    assert!(matches!(t.lookup(&reply), Lookup::Miss), "freed slot");
    // A new connection in the same shard takes the freed slot.
    let taken = (1000..2000u16).any(|port| {
        let o = Tuple {
            sport: port,
            ..orig
        };
        if Shards::shard_of(o.hash(seed)) != shard {
            return false;
        }
        let mut f = tcp(VM, REMOTE, port, 80, TCP_SYN, 100, 0);
        st(&t, &mut f, &commit(9), 0);
        true
    });
    assert!(taken);
    assert!(t.shards.lock(shard).conns.get(idx).flags & F_LIVE != 0);
    assert!(matches!(t.lookup(&reply), Lookup::Miss), "reused slot");
}

/// Runs a fixed mixed sequence (random-port SNAT, a held fragment, a partial sweep) and
/// returns everything observable: each verdict, each frame as it left, the dump, the counters.
fn reset_probe(t: &Tracker) -> (Vec<String>, Vec<Vec<u8>>, Vec<String>, Counters) {
    let spec = NatSpec {
        kind: Some(NatKind::Src),
        addr_min: Some(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1))),
        port_min: Some(1000),
        port_max: Some(60000),
        random: true,
        ..NatSpec::default()
    };
    let c = commit_nat(&spec, 3);
    let (mut verdicts, mut frames) = (Vec::new(), Vec::new());
    for i in 0..40u16 {
        let mut f = udp(VM + (i % 7) as u128, REMOTE, 1000 + i, 53);
        verdicts.push(format!("{:?}", go(t, &mut f, &c, i as Nanos * S)));
        frames.push(f);
    }
    let mut frag = fragments_v4(&big_udp(), &[64]).remove(0);
    verdicts.push(format!("{:?}", go(t, &mut frag, &c, 41 * S)));
    t.sweep(35 * S, 5);
    (verdicts, frames, t.dump(None), t.counters())
}

#[test]
fn reset_behaves_as_a_fresh_tracker() {
    let cfg = Config {
        udp_first: 5 * S,
        ..Config::default()
    };
    let fresh = reset_probe(&Tracker::new(cfg.clone()));
    let t = Tracker::new(cfg);
    let first = reset_probe(&t);
    assert_eq!(first, fresh);
    assert!(t.counters().frag_held > 0 && !t.is_empty());
    // Left dirty: live connections, a held fragment, a moved sweep cursor, an advanced PRNG.
    t.reset();
    assert!(t.is_empty() && t.zone_len(3) == 0);
    assert_eq!(t.counters(), Counters::default());
    assert_eq!(
        reset_probe(&t),
        fresh,
        "a reset tracker behaved differently"
    );
}
