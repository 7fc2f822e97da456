//! The FTP and TFTP helpers: message parsing, expectations, related connections, NAT rewrites
//! with sequence-number adjustment.

use super::build::*;
use super::cases::{commit, commit_nat, key_of, req, snat, view, S};
use crate::ftp::{self, Mode, Parse, Syntax};
use crate::packet::{self, TCP_ACK, TCP_SYN};
use crate::*;
use pipeline::flow::{NatKind, NatSpec};
use proptest::prelude::*;
use std::net::{IpAddr, Ipv4Addr};

const C: u128 = 0x0a00_0001; // 10.0.0.1
const SRV: u128 = 0x0a00_0002; // 10.0.0.2
const VM: u128 = 0xc0a8_0a05; // 192.168.10.5
const REMOTE: u128 = 0x0808_0808; // 8.8.8.8
const PUB: u128 = 0xac16_071b; // 172.22.7.27
const PA: u8 = 0x18; // PSH|ACK

const NEW: u32 = CS_TRACKED | CS_NEW;
const EST: u32 = CS_TRACKED | CS_ESTABLISHED;

/// Runs `f` through the tracker in a buffer with `room` bytes of headroom and tailroom (so a
/// rewrite may grow it); the verdict's result and the frame as it leaves.
#[track_caller]
fn run_room(
    t: &Tracker,
    f: &[u8],
    r: &CtRequest<'_>,
    now: Nanos,
    room: usize,
) -> (CtResult, Vec<u8>) {
    let mut buf = vec![0u8; f.len() + 2 * room];
    buf[room..room + f.len()].copy_from_slice(f);
    let k = key_of(f);
    let mut fr = Frame::new(&mut buf, room, f.len());
    match t.execute(&mut fr, ETH, &k, r, now) {
        CtVerdict::Tracked(res) => (res, fr.data().to_vec()),
        v => panic!("expected Tracked, got {v:?}"),
    }
}

#[track_caller]
fn run(t: &Tracker, f: &[u8], r: &CtRequest<'_>, now: Nanos) -> (CtResult, Vec<u8>) {
    run_room(t, f, r, now, 64)
}

fn with_alg<'a>(r: CtRequest<'a>, alg: &'a str) -> CtRequest<'a> {
    CtRequest {
        alg: Some(alg),
        ..r
    }
}

fn with_nat<'a>(r: CtRequest<'a>, n: &'a NatSpec) -> CtRequest<'a> {
    CtRequest { nat: Some(n), ..r }
}

/// TCP payload of a frame built by [`seg`] (IPv4 or IPv6, 20-byte TCP header).
fn payload(f: &[u8]) -> &[u8] {
    let p = packet::parse(f, ETH, 0, false).expect("parses");
    let (s, e) = packet::tcp_payload(f, &p).expect("tcp");
    &f[s..e]
}

fn seq_ack(f: &[u8]) -> (u32, u32) {
    let p = packet::parse(f, ETH, 0, false).expect("parses");
    match p.kind {
        packet::L4::Tcp(s) => (s.seq, s.ack),
        _ => panic!("not tcp"),
    }
}

/// A committed FTP control connection client:40000 -> server:port, handshake done (client
/// sequence 101, server 501), in zone 1, committed with mark 7 and `commit_req`'s extras.
fn control(t: &Tracker, client: u128, server: u128, port: u16, commit_req: &CtRequest<'_>) {
    let r = run(
        t,
        &seg(client, server, 40000, port, TCP_SYN, 100, 0, b""),
        commit_req,
        0,
    )
    .0;
    assert_eq!(r.state & (NEW | CS_INVALID), NEW);
    let r = run(
        t,
        &seg(
            server,
            client,
            port,
            40000,
            TCP_SYN | TCP_ACK,
            500,
            101,
            b"",
        ),
        &req(1),
        0,
    )
    .0;
    assert_eq!(r.state, EST | CS_REPLY_DIR);
    let r = run(
        t,
        &seg(client, server, 40000, port, TCP_ACK, 101, 501, b""),
        &req(1),
        0,
    )
    .0;
    assert_eq!(r.state, EST);
}

fn marked(alg: &str) -> CtRequest<'_> {
    CtRequest {
        set_mark: Some((7, u32::MAX)),
        alg: Some(alg),
        ..commit(1)
    }
}

// ---------------------------------------------------------------------------------------------
// Parsing

#[test]
fn parses_each_message_form() {
    let m = |s: &[u8], v6: bool| match ftp::parse(s, v6, false) {
        Parse::Msg(m) => m,
        o => panic!("{:?}: {o:?}", String::from_utf8_lossy(s)),
    };
    let p = m(b"PORT 10,0,0,1,156,65\r\n", false);
    assert_eq!(
        (p.mode, p.syntax, p.port),
        (Mode::Active, Syntax::Commas, 40001)
    );
    assert_eq!(p.addr, Some(Addr::v4(0x0a00_0001)));
    assert_eq!((p.addr_at, p.addr_len), (5, 8));
    // Any case, extra blanks, a bare LF.
    assert_eq!(m(b"port  192,168,10,5,4,1\n", false).port, 1025);
    let p = m(b"227 Entering Passive Mode (10,0,0,2,100,1).\r\n", false);
    assert_eq!((p.mode, p.port, p.addr_at), (Mode::Passive, 25601, 27));
    assert_eq!(p.addr, Some(Addr::v4(0x0a00_0002)));
    let p = m(b"EPRT |2|fd00::1|6275|\r\n", true);
    assert_eq!(
        (p.mode, p.syntax, p.port),
        (Mode::Active, Syntax::Text, 6275)
    );
    assert_eq!(p.addr, Some(Addr::from_u128(0xfd00 << 112 | 1)));
    assert_eq!(
        &b"EPRT |2|fd00::1|6275|"[p.addr_at..p.addr_at + p.addr_len],
        b"fd00::1"
    );
    let p = m(b"229 Entering Extended Passive Mode (|||6446|)\r\n", true);
    assert_eq!(
        (p.mode, p.syntax, p.port, p.addr),
        (Mode::Passive, Syntax::None, 6446, None)
    );
    // Other delimiters are allowed by RFC 2428.
    assert_eq!(m(b"EPRT !2!::1!80!\r\n", true).port, 80);
    // IPv4 extended forms only when asked for.
    assert_eq!(
        ftp::parse(b"EPRT |1|10.0.0.1|6275|\r\n", false, false),
        Parse::Other
    );
    assert_eq!(
        ftp::parse(b"229 x (|||6446|)\r\n", false, false),
        Parse::Other
    );
    match ftp::parse(b"EPRT |1|10.0.0.1|6275|\r\n", false, true) {
        Parse::Msg(p) => assert_eq!((p.addr, p.port), (Some(Addr::v4(0x0a00_0001)), 6275)),
        o => panic!("{o:?}"),
    }
    // And the classic forms are IPv4 only.
    assert_eq!(
        ftp::parse(b"PORT 10,0,0,1,1,1\r\n", true, false),
        Parse::Other
    );
}

#[test]
fn malformed_and_partial_messages() {
    let bad: &[&[u8]] = &[
        b"PORT 10,0,0,1,300,1\r\n",
        b"PORT 10,0,0,1,1\r\n",
        b"PORT 10,0,0,256,1,1\r\n",
        b"PORT 10,0,0,01,1,1\r\n",
        b"PORT10,0,0,1,1,1\r\n",
        b"PORT \r\n",
        b"PORT 1,2,3,4,5,6666\r\n",
        b"227 no numbers\r\n",
        b"227 (10,0,0,2,100)\r\n",
    ];
    for b in bad {
        assert_eq!(
            ftp::parse(b, false, false),
            Parse::Malformed,
            "{:?}",
            String::from_utf8_lossy(b)
        );
    }
    let bad6: &[&[u8]] = &[
        b"EPRT |1|10.0.0.1|80|\r\n",
        b"EPRT |2|zz::1|80|\r\n",
        b"EPRT |2|::1|0|\r\n",
        b"EPRT |2|::1|70000|\r\n",
        b"EPRT |2|::1|80\r\n",
        b"EPRT 2|::1|80|\r\n",
        b"229 (||6446|)\r\n",
        b"229 (|||6446)\r\n",
    ];
    for b in bad6 {
        assert_eq!(
            ftp::parse(b, true, false),
            Parse::Malformed,
            "{:?}",
            String::from_utf8_lossy(b)
        );
    }
    // A message cut by the segment boundary, the rest of one, and ordinary traffic.
    let other: &[&[u8]] = &[
        b"PORT 10,0,0",
        b",1,156,65\r\n",
        b"PORT 10,0,0,1,156,65",
        b"USER anonymous\r\n",
        b"200 PORT command successful\r\n",
        b"",
        b"22",
    ];
    for b in other {
        assert_eq!(
            ftp::parse(b, false, false),
            Parse::Other,
            "{:?}",
            String::from_utf8_lossy(b)
        );
    }
}

#[test]
fn replacement_addresses_are_written_in_the_message_syntax() {
    let mut out = [0u8; ftp::MAX_ADDR_TEXT];
    let n = ftp::format_addr(Addr::v4(0xac16_071b), false, Syntax::Commas, &mut out);
    assert_eq!(&out[..n], b"172,22,7,27");
    let n = ftp::format_addr(Addr::v4(0xac16_071b), false, Syntax::Text, &mut out);
    assert_eq!(&out[..n], b"172.22.7.27");
    let full = Addr::from_u128(0x2001_0db8_0001_0002_0003_0004_0005_0006);
    let n = ftp::format_addr(full, true, Syntax::Text, &mut out);
    assert_eq!(&out[..n], b"2001:db8:1:2:3:4:5:6");
    let n = ftp::format_addr(Addr::v4(0xffff_ffff), false, Syntax::Commas, &mut out);
    assert_eq!(&out[..n], b"255,255,255,255");
    assert_eq!(ftp::format_addr(full, true, Syntax::None, &mut out), 0);
}

// ---------------------------------------------------------------------------------------------
// Expectations and related connections, without NAT

#[test]
fn active_ftp_data_connection_is_related_for_life() {
    let t = Tracker::new(Config::default());
    control(&t, C, SRV, 21, &marked("ftp"));
    let port = seg(C, SRV, 40000, 21, PA, 101, 501, b"PORT 10,0,0,1,156,65\r\n");
    let (r, out) = run(&t, &port, &req(1), 0);
    assert_eq!(r.state, EST);
    assert_eq!(out, port, "no NAT: not a byte changes");
    assert_eq!(t.expectation_count(), 1);
    assert_eq!(t.counters().expectations, 1);

    let parent = CtTuple {
        src: C,
        dst: SRV,
        proto: 6,
        src_port: 40000,
        dst_port: 21,
    };
    // The server's data SYN, before any commit: new, related, the parent's mark and tuple.
    let syn = seg(SRV, C, 20, 40001, TCP_SYN, 900, 0, b"");
    let r = run(&t, &syn, &req(1), 0).0;
    assert_eq!(r.state, NEW | CS_RELATED);
    assert_eq!((r.mark, r.orig), (7, Some(parent)));
    // Committed (an exec on top of the inherited mark applies after it).
    let set_bit = CtRequest {
        set_mark: Some((0x100, 0x100)),
        ..commit(1)
    };
    let r = run(&t, &syn, &set_bit, 0).0;
    assert_eq!((r.state, r.mark), (NEW | CS_RELATED, 0x107));
    let r = run(
        &t,
        &seg(C, SRV, 40001, 20, TCP_SYN | TCP_ACK, 300, 901, b""),
        &req(1),
        0,
    )
    .0;
    assert_eq!(r.state, EST | CS_RELATED | CS_REPLY_DIR);
    assert_eq!((r.mark, r.orig), (0x107, Some(parent)));
    let r = run(
        &t,
        &seg(SRV, C, 20, 40001, TCP_ACK, 901, 301, b"data"),
        &req(1),
        0,
    )
    .0;
    assert_eq!(r.state, EST | CS_RELATED);

    // The announcement stays (Open vSwitch does not consume it): another source port matches.
    let r = run(
        &t,
        &seg(SRV, C, 2020, 40001, TCP_SYN, 900, 0, b""),
        &req(1),
        0,
    )
    .0;
    assert_eq!(r.state, NEW | CS_RELATED);
    // Another destination port, another host, another zone: unrelated.
    for f in [
        seg(SRV, C, 20, 40002, TCP_SYN, 900, 0, b""),
        seg(0x0a00_0003, C, 20, 40001, TCP_SYN, 900, 0, b""),
    ] {
        assert_eq!(run(&t, &f, &req(1), 0).0.state, NEW);
    }
    assert_eq!(run(&t, &syn, &req(2), 0).0.state, NEW);

    let mut d = t.dump(None);
    d.sort();
    assert_eq!(
        d,
        vec![
            "tcp,orig=(src=10.0.0.1,dst=10.0.0.2,sport=40000,dport=21),reply=(src=10.0.0.2,dst=10.0.0.1,sport=21,dport=40000),zone=1,mark=7,protoinfo=(state=ESTABLISHED),helper=ftp",
            "tcp,orig=(src=10.0.0.2,dst=10.0.0.1,sport=20,dport=40001),reply=(src=10.0.0.1,dst=10.0.0.2,sport=40001,dport=20),zone=1,mark=263,protoinfo=(state=ESTABLISHED)",
        ]
    );
}

#[test]
fn passive_ftp_announces_the_servers_port() {
    let t = Tracker::new(Config::default());
    control(&t, C, SRV, 21, &commit(1));
    // Committed without alg: nothing is read.
    let pasv = seg(
        SRV,
        C,
        21,
        40000,
        PA,
        501,
        101,
        b"227 Entering Passive Mode (10,0,0,2,100,1).\r\n",
    );
    run(&t, &pasv, &req(1), 0);
    assert_eq!(t.expectation_count(), 0);

    let t = Tracker::new(Config::default());
    control(&t, C, SRV, 21, &with_alg(commit(1), "ftp"));
    let r = run(&t, &pasv, &req(1), 0).0;
    assert_eq!(r.state, EST | CS_REPLY_DIR);
    let r = run(
        &t,
        &seg(C, SRV, 40005, 25601, TCP_SYN, 700, 0, b""),
        &req(1),
        0,
    )
    .0;
    assert_eq!(r.state, NEW | CS_RELATED);
    // The announcement is for the client's connection to the server, not the reverse.
    let r = run(
        &t,
        &seg(SRV, C, 40005, 25601, TCP_SYN, 700, 0, b""),
        &req(1),
        0,
    )
    .0;
    assert_eq!(r.state, NEW);
}

#[test]
fn malformed_or_foreign_announcements_are_invalid_and_announce_nothing() {
    let t = Tracker::new(Config::default());
    control(&t, C, SRV, 21, &marked("ftp"));
    let mut seq = 101;
    let mut send = |pl: &[u8]| {
        let r = run(&t, &seg(C, SRV, 40000, 21, PA, seq, 501, pl), &req(1), 0).0;
        seq += pl.len() as u32;
        r
    };
    // A port number out of range, and an address that is neither end of the connection (the
    // classic bounce attack): invalid, as Open vSwitch marks them, on top of the state.
    assert_eq!(send(b"PORT 10,0,0,1,300,1\r\n").state, EST | CS_INVALID);
    assert_eq!(send(b"PORT 10,0,0,9,1,1\r\n").state, EST | CS_INVALID);
    // A command split across segments is ignored, never half-parsed.
    assert_eq!(send(b"PORT 10,0,0").state, EST);
    assert_eq!(send(b",1,156,65\r\n").state, EST);
    assert_eq!(t.expectation_count(), 0);
    assert_eq!(t.counters().invalid, 2);
    // The connection is still fine for a proper one.
    assert_eq!(send(b"port 10,0,0,1,4,1\r\n").state, EST);
    let r = run(&t, &seg(SRV, C, 20, 1025, TCP_SYN, 1, 0, b""), &req(1), 0).0;
    assert_eq!(r.state, NEW | CS_RELATED);
}

#[test]
fn helper_reads_other_ports_only_through_an_action_naming_it() {
    let t = Tracker::new(Config::default());
    control(&t, C, SRV, 2121, &with_alg(commit(1), "ftp"));
    let port = |seq: u32| {
        seg(
            C,
            SRV,
            40000,
            2121,
            PA,
            seq,
            501,
            b"PORT 10,0,0,1,156,65\r\n",
        )
    };
    run(&t, &port(101), &req(1), 0);
    assert_eq!(
        t.expectation_count(),
        0,
        "ct() without alg=ftp, not port 21"
    );
    run(&t, &port(101), &with_alg(req(1), "ftp"), 0);
    assert_eq!(t.expectation_count(), 1);
}

#[test]
fn expectations_expire_are_bounded_and_go_with_their_parent() {
    let cfg = Config {
        max_expectations: 2,
        expectation_timeout: 10 * S,
        ..Config::default()
    };
    let t = Tracker::new(cfg.clone());
    control(&t, C, SRV, 21, &marked("ftp"));
    for (i, p) in [1u8, 2, 3].iter().enumerate() {
        let pl = format!("PORT 10,0,0,1,4,{p}\r\n");
        run(
            &t,
            &seg(
                C,
                SRV,
                40000,
                21,
                PA,
                101 + 19 * i as u32,
                501,
                pl.as_bytes(),
            ),
            &req(1),
            0,
        );
    }
    let c = t.counters();
    assert_eq!((c.expectations, c.expectations_refused), (2, 1));
    assert_eq!(t.expectation_count(), 2);
    let data = |p: u16| seg(SRV, C, 20, p, TCP_SYN, 1, 0, b"");
    assert_eq!(
        run(&t, &data(1025), &req(1), 9 * S).0.state,
        NEW | CS_RELATED
    );
    assert_eq!(
        run(&t, &data(1027), &req(1), 9 * S).0.state,
        NEW,
        "refused one"
    );
    // Past their lifetime: a lookup no longer finds them, and the sweep removes the rest.
    assert_eq!(run(&t, &data(1025), &req(1), 10 * S).0.state, NEW);
    t.sweep(10 * S, 1 << 20);
    assert_eq!(t.expectation_count(), 0);

    // Removing the parent removes its expectations: by zone, by tuple, and by timeout.
    let announce = |t: &Tracker| {
        control(t, C, SRV, 21, &marked("ftp"));
        run(
            t,
            &seg(C, SRV, 40000, 21, PA, 101, 501, b"PORT 10,0,0,1,4,1\r\n"),
            &req(1),
            0,
        );
        assert_eq!(t.expectation_count(), 1);
    };
    let t = Tracker::new(cfg.clone());
    announce(&t);
    t.flush(Some(2));
    assert_eq!(t.expectation_count(), 1);
    t.flush(Some(1));
    assert_eq!(t.expectation_count(), 0);
    assert_eq!(run(&t, &data(1025), &req(1), 0).0.state, NEW);
    let t = Tracker::new(cfg.clone());
    announce(&t);
    let parent = packet::parse(&seg(C, SRV, 40000, 21, TCP_ACK, 1, 1, b""), ETH, 1, false).unwrap();
    t.flush_tuple(&parent.tuple).unwrap();
    assert_eq!(t.expectation_count(), 0);
    let t = Tracker::new(Config {
        tcp_established: 5 * S,
        expectation_timeout: 100 * S,
        ..cfg
    });
    announce(&t);
    t.sweep(6 * S, 1 << 20);
    assert!(t.is_empty());
    assert_eq!(t.expectation_count(), 0);
}

#[test]
fn tftp_answer_from_any_port_is_related() {
    let t = Tracker::new(Config::default());
    let udp = |src: u128, dst: u128, sport: u16, dport: u16| {
        frame(&P {
            src,
            dst,
            sport,
            dport,
            proto: 17,
            payload: b"\x00\x01file\x00octet\x00".to_vec(),
            ..P::default()
        })
    };
    let r = run(&t, &udp(C, SRV, 40000, 69), &marked("tftp"), 0).0;
    assert_eq!(r.state, NEW);
    assert_eq!(t.expectation_count(), 1);
    let r = run(&t, &udp(SRV, C, 3333, 40000), &commit(1), 0).0;
    assert_eq!((r.state, r.mark), (NEW | CS_RELATED, 7));
    let r = run(&t, &udp(C, SRV, 40000, 3333), &req(1), 0).0;
    assert_eq!(r.state, EST | CS_RELATED | CS_REPLY_DIR);
    // The request's own reply direction is the parent, not related.
    let r = run(&t, &udp(SRV, C, 69, 40000), &req(1), 0).0;
    assert_eq!(r.state, EST | CS_REPLY_DIR);
    assert_eq!(
        run(&t, &udp(0x0a00_0003, C, 3335, 40000), &req(1), 0)
            .0
            .state,
        NEW
    );
    let d = t.dump(None);
    assert!(d.iter().any(|l| l.ends_with("mark=7,helper=tftp")), "{d:?}");
    // Any server port with alg=tftp; alg=tftp on TCP (or ftp on UDP) is no helper at all.
    let t = Tracker::new(Config::default());
    run(&t, &udp(C, SRV, 40000, 6969), &marked("tftp"), 0);
    assert_eq!(t.expectation_count(), 1);
    run(&t, &udp(C, SRV, 40001, 21), &marked("ftp"), 0);
    run(
        &t,
        &seg(C, SRV, 40002, 69, TCP_SYN, 1, 0, b""),
        &marked("tftp"),
        0,
    );
    assert_eq!(t.expectation_count(), 1);
    assert_eq!(
        t.dump(None).iter().filter(|l| l.contains("helper")).count(),
        1
    );
}

#[test]
fn ipv6_eprt_and_epsv_and_ipv4_extended_forms_when_enabled() {
    let c6: u128 = 0xfd00 << 112 | 1;
    let s6: u128 = 0xfd00 << 112 | 2;
    let t = Tracker::new(Config::default());
    run(
        &t,
        &seg6(c6, s6, 40000, 21, TCP_SYN, 100, 0, b""),
        &with_alg(commit(1), "ftp"),
        0,
    );
    run(
        &t,
        &seg6(s6, c6, 21, 40000, TCP_SYN | TCP_ACK, 500, 101, b""),
        &req(1),
        0,
    );
    run(
        &t,
        &seg6(
            c6,
            s6,
            40000,
            21,
            PA,
            101,
            501,
            b"EPRT |2|fd00::1|6275|\r\n",
        ),
        &req(1),
        0,
    );
    let r = run(&t, &seg6(s6, c6, 20, 6275, TCP_SYN, 1, 0, b""), &req(1), 0).0;
    assert_eq!(r.state, NEW | CS_RELATED);
    run(
        &t,
        &seg6(
            s6,
            c6,
            21,
            40000,
            PA,
            501,
            124,
            b"229 Entering Extended Passive Mode (|||6446|)\r\n",
        ),
        &req(1),
        0,
    );
    let r = run(
        &t,
        &seg6(c6, s6, 5000, 6446, TCP_SYN, 1, 0, b""),
        &req(1),
        0,
    )
    .0;
    assert_eq!(r.state, NEW | CS_RELATED);

    for (ext, want) in [(false, NEW), (true, NEW | CS_RELATED)] {
        let t = Tracker::new(Config {
            ftp_extended_v4: ext,
            ..Config::default()
        });
        control(&t, C, SRV, 21, &with_alg(commit(1), "ftp"));
        run(
            &t,
            &seg(
                C,
                SRV,
                40000,
                21,
                PA,
                101,
                501,
                b"EPRT |1|10.0.0.1|6275|\r\n",
            ),
            &req(1),
            0,
        );
        assert_eq!(
            run(&t, &seg(SRV, C, 20, 6275, TCP_SYN, 1, 0, b""), &req(1), 0)
                .0
                .state,
            want
        );
    }
}

// ---------------------------------------------------------------------------------------------
// NAT

/// An SNATed control connection from `client` to 8.8.8.8:21 leaving as 172.22.7.27, a PORT
/// rewritten to the public address (length `delta` different), then traffic both ways with
/// sequence numbers shifted consistently, then the data connection translated back to the
/// client.
fn snat_port_case(client: u128, text: &str, delta: i32) {
    let t = Tracker::new(Config::default());
    let spec = snat([172, 22, 7, 27]);
    let bare = NatSpec::default();
    let n = with_nat(req(1), &bare);
    let first = CtRequest {
        alg: Some("ftp"),
        nat: Some(&spec),
        ..commit(1)
    };
    let (r, out) = run(
        &t,
        &seg(client, REMOTE, 40000, 21, TCP_SYN, 100, 0, b""),
        &first,
        0,
    );
    assert_eq!(r.state, NEW | CS_SRC_NAT);
    assert_eq!(view(&out), (PUB, REMOTE, 40000, 21));
    run(
        &t,
        &seg(REMOTE, PUB, 21, 40000, TCP_SYN | TCP_ACK, 500, 101, b""),
        &n,
        0,
    );
    run(
        &t,
        &seg(client, REMOTE, 40000, 21, TCP_ACK, 101, 501, b""),
        &n,
        0,
    );

    let cmd = format!("PORT {text},156,65\r\n");
    let f = seg(client, REMOTE, 40000, 21, PA, 101, 501, cmd.as_bytes());
    let (r, out) = run(&t, &f, &n, 0);
    assert_eq!(r.state, EST | CS_SRC_NAT);
    assert_eq!(payload(&out), b"PORT 172,22,7,27,156,65\r\n");
    assert_eq!(out.len() as i32, f.len() as i32 + delta);
    // Addresses translated, every checksum right from scratch, the IP length consistent
    // (parse refuses a frame whose IP length exceeds it).
    assert_eq!(view(&out), (PUB, REMOTE, 40000, 21));
    assert_eq!(
        seq_ack(&out),
        (101, 501),
        "the rewritten segment keeps its number"
    );
    assert_eq!(t.counters().alg_rewrites, 1);
    let sent = cmd.len() as u32; // in the client's numbering
    let seen = (sent as i32 + delta) as u32; // in the server's

    // The server acknowledges what it received; the client must see its own numbering.
    let (r, out) = run(
        &t,
        &seg(REMOTE, PUB, 21, 40000, TCP_ACK, 501, 101 + seen, b""),
        &n,
        0,
    );
    assert_eq!(r.state, EST | CS_REPLY_DIR | CS_DST_NAT);
    assert_eq!(seq_ack(&out), (501, 101 + sent));
    view(&out);
    let (_, out) = run(
        &t,
        &seg(REMOTE, PUB, 21, 40000, PA, 501, 101 + seen, b"200 ok\r\n"),
        &n,
        0,
    );
    assert_eq!(
        (seq_ack(&out), payload(&out)),
        ((501, 101 + sent), &b"200 ok\r\n"[..])
    );
    view(&out);
    // The client's next segment is shifted into the server's numbering.
    let (r, out) = run(
        &t,
        &seg(client, REMOTE, 40000, 21, PA, 101 + sent, 509, b"LIST\r\n"),
        &n,
        0,
    );
    assert_eq!(r.state & CS_INVALID, 0);
    assert_eq!(seq_ack(&out), (101 + seen, 509));
    view(&out);
    let (r, out) = run(
        &t,
        &seg(REMOTE, PUB, 21, 40000, TCP_ACK, 509, 107 + seen, b""),
        &n,
        0,
    );
    assert_eq!(r.state & CS_INVALID, 0);
    assert_eq!(seq_ack(&out), (509, 107 + sent));
    // A retransmission of the PORT segment is rewritten again, in its old numbering, and not
    // counted twice.
    let (r, out) = run(&t, &f, &n, 0);
    assert_eq!(r.state & CS_INVALID, 0);
    assert_eq!(
        (seq_ack(&out).0, payload(&out)),
        (101, &b"PORT 172,22,7,27,156,65\r\n"[..])
    );
    let (_, out) = run(
        &t,
        &seg(client, REMOTE, 40000, 21, PA, 107 + sent, 509, b"QUIT\r\n"),
        &n,
        0,
    );
    assert_eq!(seq_ack(&out).0, 107 + seen);

    // The data connection reaches the public address and is translated to the client, port
    // unchanged; its answer leaves as the public address.
    let c = commit_nat(&bare, 1);
    let (r, out) = run(
        &t,
        &seg(REMOTE, PUB, 20, 40001, TCP_SYN, 900, 0, b""),
        &c,
        0,
    );
    assert_eq!(r.state, NEW | CS_RELATED | CS_DST_NAT);
    assert_eq!(view(&out), (REMOTE, client, 20, 40001));
    let (r, out) = run(
        &t,
        &seg(client, REMOTE, 40001, 20, TCP_SYN | TCP_ACK, 300, 901, b""),
        &n,
        0,
    );
    assert_eq!(r.state, EST | CS_RELATED | CS_REPLY_DIR | CS_SRC_NAT);
    assert_eq!(view(&out), (PUB, REMOTE, 40001, 20));
}

#[test]
fn snat_port_rewrite_growing_the_payload() {
    snat_port_case(C, "10,0,0,1", 3);
}

#[test]
fn snat_port_rewrite_shrinking_the_payload() {
    snat_port_case(VM, "192,168,10,5", -1);
}

#[test]
fn dnat_227_rewrite_and_data_connection_to_the_real_server() {
    // Clients reach 172.22.7.27:21, translated to the server 192.168.10.5.
    let t = Tracker::new(Config::default());
    let client: u128 = 0x0102_0304;
    let spec = NatSpec {
        kind: Some(NatKind::Dst),
        addr_min: Some(IpAddr::V4(Ipv4Addr::new(192, 168, 10, 5))),
        ..NatSpec::default()
    };
    let bare = NatSpec::default();
    let n = with_nat(req(1), &bare);
    let first = CtRequest {
        alg: Some("ftp"),
        nat: Some(&spec),
        ..commit(1)
    };
    let (_, out) = run(
        &t,
        &seg(client, PUB, 40000, 21, TCP_SYN, 100, 0, b""),
        &first,
        0,
    );
    assert_eq!(view(&out), (client, VM, 40000, 21));
    run(
        &t,
        &seg(VM, client, 21, 40000, TCP_SYN | TCP_ACK, 500, 101, b""),
        &n,
        0,
    );
    run(
        &t,
        &seg(client, PUB, 40000, 21, TCP_ACK, 101, 501, b""),
        &n,
        0,
    );
    let msg = b"227 Entering Passive Mode (192,168,10,5,100,1).\r\n";
    let (r, out) = run(&t, &seg(VM, client, 21, 40000, PA, 501, 101, msg), &n, 0);
    assert_eq!(r.state, EST | CS_REPLY_DIR | CS_SRC_NAT);
    assert_eq!(
        payload(&out),
        b"227 Entering Passive Mode (172,22,7,27,100,1).\r\n"
    );
    assert_eq!(view(&out), (PUB, client, 21, 40000));
    let (sent, seen) = (msg.len() as u32, msg.len() as u32 - 1);
    // The client's ack comes back into the server's numbering, the server's next data moves.
    let (_, out) = run(
        &t,
        &seg(client, PUB, 40000, 21, TCP_ACK, 101, 501 + seen, b""),
        &n,
        0,
    );
    assert_eq!(seq_ack(&out), (101, 501 + sent));
    view(&out);
    let (_, out) = run(
        &t,
        &seg(VM, client, 21, 40000, PA, 501 + sent, 101, b"150 ok\r\n"),
        &n,
        0,
    );
    assert_eq!(seq_ack(&out), (501 + seen, 101));
    view(&out);
    // The client's data connection to the public address goes to the server.
    let c = commit_nat(&bare, 1);
    let (r, out) = run(
        &t,
        &seg(client, PUB, 5555, 25601, TCP_SYN, 1, 0, b""),
        &c,
        0,
    );
    assert_eq!(r.state, NEW | CS_RELATED | CS_DST_NAT);
    assert_eq!(view(&out), (client, VM, 5555, 25601));
}

#[test]
fn no_room_to_grow_leaves_the_payload_but_still_announces() {
    let t = Tracker::new(Config::default());
    let spec = snat([172, 22, 7, 27]);
    let bare = NatSpec::default();
    let n = with_nat(req(1), &bare);
    let first = CtRequest {
        alg: Some("ftp"),
        nat: Some(&spec),
        ..commit(1)
    };
    run(
        &t,
        &seg(C, REMOTE, 40000, 21, TCP_SYN, 100, 0, b""),
        &first,
        0,
    );
    run(
        &t,
        &seg(REMOTE, PUB, 21, 40000, TCP_SYN | TCP_ACK, 500, 101, b""),
        &n,
        0,
    );
    run(
        &t,
        &seg(C, REMOTE, 40000, 21, TCP_ACK, 101, 501, b""),
        &n,
        0,
    );
    let f = seg(
        C,
        REMOTE,
        40000,
        21,
        PA,
        101,
        501,
        b"PORT 10,0,0,1,156,65\r\n",
    );
    let (r, out) = run_room(&t, &f, &n, 0, 0);
    assert_eq!(r.state, EST | CS_SRC_NAT);
    assert_eq!(payload(&out), b"PORT 10,0,0,1,156,65\r\n");
    view(&out);
    assert_eq!(t.counters().alg_rewrites, 0);
    assert_eq!(t.expectation_count(), 1);
    // Nothing shifted: the server's ack passes unchanged.
    let (_, out) = run(
        &t,
        &seg(REMOTE, PUB, 21, 40000, TCP_ACK, 501, 123, b""),
        &n,
        0,
    );
    assert_eq!(seq_ack(&out), (501, 123));
    // Headroom alone is enough.
    let mut buf = vec![0u8; 16 + f.len()];
    buf[16..].copy_from_slice(&f);
    let mut fr = Frame::new(&mut buf, 16, f.len());
    let k = key_of(&f);
    t.execute(&mut fr, ETH, &k, &n, 0);
    assert_eq!(payload(fr.data()), b"PORT 172,22,7,27,156,65\r\n");
    view(fr.data());
}

// ---------------------------------------------------------------------------------------------
// Properties

fn payload_strategy() -> impl Strategy<Value = Vec<u8>> {
    let prefix = prop_oneof![
        Just(&b""[..]),
        Just(&b"PORT "[..]),
        Just(&b"port 10,0,0,1,"[..]),
        Just(&b"PORT 10,0,0,1,156,"[..]),
        Just(&b"227 ("[..]),
        Just(&b"227 x (10,0,0,2,"[..]),
        Just(&b"EPRT |1|"[..]),
        Just(&b"229 (|||"[..]),
    ];
    let tail = proptest::collection::vec(
        prop_oneof![
            4 => any::<u8>(),
            4 => prop_oneof![Just(b','), Just(b'|'), Just(b'\r'), Just(b'\n'), Just(b'('), Just(b')')],
            8 => b'0'..=b'9',
        ],
        0..48,
    );
    (prefix, tail).prop_map(|(p, t)| {
        let mut v = p.to_vec();
        v.extend(t);
        v
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Whatever an FTP control connection carries, the helper never panics; without NAT it never
    /// changes a byte; under SNAT the payload changes only when a message naming the client's
    /// own address was recognised, and then only to name the public one.
    #[test]
    fn random_control_payloads(pls in proptest::collection::vec(payload_strategy(), 1..6), nat in any::<bool>(), ext in any::<bool>()) {
        let t = Tracker::new(Config { ftp_extended_v4: ext, ..Config::default() });
        let spec = snat([172, 22, 7, 27]);
        let bare = NatSpec::default();
        let first = CtRequest { alg: Some("ftp"), nat: nat.then_some(&spec), ..commit(1) };
        let n = CtRequest { nat: nat.then_some(&bare), ..req(1) };
        let (srv_addr, _) = if nat { (PUB, 0) } else { (C, 0) };
        run(&t, &seg(C, REMOTE, 40000, 21, TCP_SYN, 100, 0, b""), &first, 0);
        run(&t, &seg(REMOTE, srv_addr, 21, 40000, TCP_SYN | TCP_ACK, 500, 101, b""), &n, 0);
        let mut seq = 101;
        for (i, pl) in pls.iter().enumerate() {
            // Alternate directions so both are read.
            let f = if i % 2 == 0 {
                seg(C, REMOTE, 40000, 21, PA, seq, 501, pl)
            } else {
                seg(REMOTE, srv_addr, 21, 40000, PA, 501, seq, pl)
            };
            let (r, out) = run(&t, &f, &n, 0);
            view(&out);
            if i % 2 == 0 {
                seq = seq.wrapping_add(pl.len() as u32);
            }
            let msg = ftp::parse(pl, false, ext);
            if !nat {
                prop_assert_eq!(&out, &f);
                continue;
            }
            let rewritten = match msg {
                ftp::Parse::Msg(m) if r.state & CS_INVALID == 0 && m.addr == Some(Addr::v4(C as u32)) && m.mode == Mode::Active => Some(m),
                _ => None,
            };
            if let Some(m) = rewritten {
                let new: &[u8] = if m.syntax == Syntax::Commas { b"172,22,7,27" } else { b"172.22.7.27" };
                let want = [&pl[..m.addr_at], new, &pl[m.addr_at + m.addr_len..]].concat();
                prop_assert_eq!(payload(&out), &want[..]);
            } else {
                prop_assert_eq!(payload(&out), &pl[..]);
            }
        }
    }

    /// The parser never panics and never points outside what it was given.
    #[test]
    fn parser_stays_in_bounds(b in proptest::collection::vec(any::<u8>(), 0..300), pre in payload_strategy(), v6 in any::<bool>(), ext in any::<bool>()) {
        for input in [&b[..], &pre[..]] {
            if let ftp::Parse::Msg(m) = ftp::parse(input, v6, ext) {
                prop_assert!(m.addr_at + m.addr_len <= input.len());
            }
        }
    }
}

#[test]
fn ipv6_snat_eprt_rewrite_grows_the_payload_and_shifts_sequence_numbers() {
    let c6: u128 = 0xfd00 << 112 | 5; // fd00::5
    let s6: u128 = 0x2001_0db8 << 96 | 8; // 2001:db8::8
    let n6: u128 = 0x2001_0db8_ffff << 80 | 1; // 2001:db8:ffff::1
    let t = Tracker::new(Config::default());
    let spec = NatSpec {
        kind: Some(NatKind::Src),
        addr_min: Some(IpAddr::V6(n6.into())),
        ..NatSpec::default()
    };
    let bare = NatSpec::default();
    let n = with_nat(req(1), &bare);
    let first = CtRequest {
        alg: Some("ftp"),
        nat: Some(&spec),
        ..commit(1)
    };
    run(
        &t,
        &seg6(c6, s6, 40000, 21, TCP_SYN, 100, 0, b""),
        &first,
        0,
    );
    run(
        &t,
        &seg6(s6, n6, 21, 40000, TCP_SYN | TCP_ACK, 500, 101, b""),
        &n,
        0,
    );
    let cmd = b"EPRT |2|fd00::5|6275|\r\n";
    let (r, out) = run(&t, &seg6(c6, s6, 40000, 21, PA, 101, 501, cmd), &n, 0);
    assert_eq!(r.state, EST | CS_SRC_NAT);
    assert_eq!(payload(&out), b"EPRT |2|2001:db8:ffff::1|6275|\r\n");
    assert_eq!(view(&out), (n6, s6, 40000, 21));
    let (sent, seen) = (cmd.len() as u32, cmd.len() as u32 + 9);
    let (_, out) = run(
        &t,
        &seg6(s6, n6, 21, 40000, TCP_ACK, 501, 101 + seen, b""),
        &n,
        0,
    );
    assert_eq!(seq_ack(&out), (501, 101 + sent));
    view(&out);
    let (_, out) = run(
        &t,
        &seg6(c6, s6, 40000, 21, PA, 101 + sent, 501, b"LIST\r\n"),
        &n,
        0,
    );
    assert_eq!(seq_ack(&out), (101 + seen, 501));
    view(&out);
    // The server's data connection to the translated address goes to the client.
    let c = commit_nat(&bare, 1);
    let (r, out) = run(&t, &seg6(s6, n6, 20, 6275, TCP_SYN, 1, 0, b""), &c, 0);
    assert_eq!(r.state, NEW | CS_RELATED | CS_DST_NAT);
    assert_eq!(view(&out), (s6, c6, 20, 6275));
}
