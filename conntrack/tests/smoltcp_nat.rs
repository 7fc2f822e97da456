//! Two smoltcp hosts talk TCP through the tracker: a real handshake, a 100 KiB transfer and a
//! close, with SNAT (and, separately, DNAT) applied in one direction and undone in the other.

use conntrack::{Config, Tracker};
use pipeline::ct::{ConnTracker, CtRequest, CtVerdict};
use pipeline::flow::{NatKind, NatSpec};
use pipeline::key::{FlowKey, CS_INVALID};
use pipeline::wire::Frame;
use smoltcp::iface::{Config as IfConfig, Interface, SocketHandle, SocketSet};
use smoltcp::phy::{Device, DeviceCapabilities, Medium, RxToken, TxToken};
use smoltcp::socket::tcp;
use smoltcp::time::Instant;
use smoltcp::wire::{EthernetAddress, HardwareAddress, IpAddress, IpCidr, IpEndpoint};
use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr};

#[derive(Default)]
struct QueueDev {
    rx: VecDeque<Vec<u8>>,
    tx: VecDeque<Vec<u8>>,
}

struct Rx(Vec<u8>);
struct Tx<'a>(&'a mut VecDeque<Vec<u8>>);

impl RxToken for Rx {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

impl TxToken for Tx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut b = vec![0; len];
        let r = f(&mut b);
        self.0.push_back(b);
        r
    }
}

impl Device for QueueDev {
    type RxToken<'a> = Rx;
    type TxToken<'a> = Tx<'a>;
    fn receive(&mut self, _t: Instant) -> Option<(Rx, Tx<'_>)> {
        let f = self.rx.pop_front()?;
        Some((Rx(f), Tx(&mut self.tx)))
    }
    fn transmit(&mut self, _t: Instant) -> Option<Tx<'_>> {
        Some(Tx(&mut self.tx))
    }
    fn capabilities(&self) -> DeviceCapabilities {
        let mut c = DeviceCapabilities::default();
        c.medium = Medium::Ethernet;
        c.max_transmission_unit = 1514;
        c
    }
}

struct Host {
    mac: [u8; 6],
    iface: Interface,
    dev: QueueDev,
    sockets: SocketSet<'static>,
    sock: SocketHandle,
}

fn host(mac: [u8; 6], ip: [u8; 4]) -> Host {
    let mut dev = QueueDev::default();
    let cfg = IfConfig::new(HardwareAddress::Ethernet(EthernetAddress(mac)));
    let mut iface = Interface::new(cfg, &mut dev, Instant::ZERO);
    iface.update_ip_addrs(|a| {
        a.push(IpCidr::new(IpAddress::v4(ip[0], ip[1], ip[2], ip[3]), 24))
            .unwrap();
    });
    let mut sockets = SocketSet::new(Vec::new());
    let s = tcp::Socket::new(
        tcp::SocketBuffer::new(vec![0; 65535]),
        tcp::SocketBuffer::new(vec![0; 65535]),
    );
    let sock = sockets.add(s);
    Host {
        mac,
        iface,
        dev,
        sockets,
        sock,
    }
}

/// Answers every ARP request with `mac` (the wire stands in for the NATed addresses).
fn arp_reply(req: &[u8], mac: [u8; 6]) -> Option<Vec<u8>> {
    if req.len() < 42 || req[12..14] != [0x08, 0x06] || req[20..22] != [0, 1] {
        return None;
    }
    let mut r = req[..42].to_vec();
    r[0..6].copy_from_slice(&req[6..12]);
    r[6..12].copy_from_slice(&mac);
    r[21] = 2;
    r[22..28].copy_from_slice(&mac);
    r[28..32].copy_from_slice(&req[38..42]);
    r[32..38].copy_from_slice(&req[22..28]);
    r[38..42].copy_from_slice(&req[28..32]);
    Some(r)
}

/// Moves frames from `from` to `to` through the tracker; returns invalid frames dropped.
fn carry(t: &Tracker, from: &mut Host, to: &mut Host, req: &CtRequest<'_>, now: u64) -> usize {
    let mut bad = 0;
    while let Some(mut f) = from.dev.tx.pop_front() {
        if let Some(r) = arp_reply(&f, to.mac) {
            from.dev.rx.push_back(r);
            continue;
        }
        let len = f.len();
        let v = t.execute(
            &mut Frame::new(&mut f, 0, len),
            14,
            &FlowKey::ZERO,
            req,
            now,
        );
        match v {
            CtVerdict::Tracked(r) if r.state & CS_INVALID == 0 => to.dev.rx.push_back(f),
            _ => bad += 1,
        }
    }
    bad
}

struct Plan {
    connect_to: [u8; 4],
    connect_port: u16,
    nat: NatSpec,
    /// What the server should see as the client's address.
    server_sees: [u8; 4],
}

fn transfer(plan: Plan) -> Tracker {
    let t = Tracker::new(Config::default());
    let mut a = host([2, 0, 0, 0, 0, 5], [10, 0, 0, 5]);
    let mut b = host([2, 0, 0, 0, 0, 8], [10, 0, 0, 8]);
    b.sockets.get_mut::<tcp::Socket>(b.sock).listen(80).unwrap();
    let [w, x, y, z] = plan.connect_to;
    a.sockets
        .get_mut::<tcp::Socket>(a.sock)
        .connect(
            a.iface.context(),
            (IpAddress::v4(w, x, y, z), plan.connect_port),
            40000,
        )
        .unwrap();
    let fwd = CtRequest {
        zone: 9,
        commit: true,
        force: false,
        nat: Some(&plan.nat),
        set_mark: None,
        set_label: None,
        alg: None,
    };
    let bare = NatSpec::default();
    let back = CtRequest {
        commit: false,
        nat: Some(&bare),
        ..fwd
    };
    const TOTAL: usize = 100 * 1024;
    let data: Vec<u8> = (0..TOTAL).map(|i| (i * 7 % 251) as u8).collect();
    let (mut sent, mut got) = (0usize, Vec::new());
    let mut closed_a = false;
    let mut server_peer = None;
    let mut bad = 0;
    for ms in 0..200_000u64 {
        let now = Instant::from_millis(ms as i64);
        let ns = ms * 1_000_000;
        a.iface.poll(now, &mut a.dev, &mut a.sockets);
        bad += carry(&t, &mut a, &mut b, &fwd, ns);
        b.iface.poll(now, &mut b.dev, &mut b.sockets);
        bad += carry(&t, &mut b, &mut a, &back, ns);
        let sa = a.sockets.get_mut::<tcp::Socket>(a.sock);
        if sa.may_send() && sent < TOTAL {
            sent += sa.send_slice(&data[sent..]).unwrap();
        }
        if sent == TOTAL && !closed_a && sa.send_queue() == 0 {
            sa.close();
            closed_a = true;
        }
        let sb = b.sockets.get_mut::<tcp::Socket>(b.sock);
        if server_peer.is_none() {
            server_peer = sb.remote_endpoint();
        }
        let mut buf = [0u8; 4096];
        while sb.can_recv() {
            let n = sb.recv_slice(&mut buf).unwrap();
            got.extend_from_slice(&buf[..n]);
        }
        if closed_a && !sb.may_recv() && sb.state() == tcp::State::CloseWait {
            sb.close();
        }
        let sa_state = a.sockets.get::<tcp::Socket>(a.sock).state();
        let sb_state = b.sockets.get::<tcp::Socket>(b.sock).state();
        if matches!(sa_state, tcp::State::TimeWait | tcp::State::Closed)
            && sb_state == tcp::State::Closed
        {
            break;
        }
    }
    assert_eq!(got.len(), TOTAL, "all bytes arrived");
    assert!(got == data, "bytes intact");
    let [p, q, r, s] = plan.server_sees;
    assert_eq!(
        server_peer.map(|e: IpEndpoint| e.addr),
        Some(IpAddress::v4(p, q, r, s))
    );
    assert_eq!(
        b.sockets.get::<tcp::Socket>(b.sock).state(),
        tcp::State::Closed,
        "server closed"
    );
    assert_eq!(bad, 0, "no frame was invalid");
    assert_eq!(t.counters().invalid, 0);
    t
}

#[test]
fn tcp_transfer_through_snat() {
    let t = transfer(Plan {
        connect_to: [10, 0, 0, 8],
        connect_port: 80,
        nat: NatSpec {
            kind: Some(NatKind::Src),
            addr_min: Some(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 27))),
            ..NatSpec::default()
        },
        server_sees: [10, 0, 0, 27],
    });
    let d = t.dump(None);
    assert_eq!(d.len(), 1);
    assert!(
        d[0].starts_with("tcp,orig=(src=10.0.0.5,dst=10.0.0.8,sport=40000,dport=80),reply=(src=10.0.0.8,dst=10.0.0.27,sport=80,dport=40000),zone=9,protoinfo=(state=TIME_WAIT)"),
        "{d:?}"
    );
}

#[test]
fn tcp_transfer_through_dnat() {
    let t = transfer(Plan {
        connect_to: [10, 0, 0, 100],
        connect_port: 8080,
        nat: NatSpec {
            kind: Some(NatKind::Dst),
            addr_min: Some(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 8))),
            port_min: Some(80),
            ..NatSpec::default()
        },
        server_sees: [10, 0, 0, 5],
    });
    let d = t.dump(None);
    assert!(
        d[0].contains("reply=(src=10.0.0.8,dst=10.0.0.5,sport=80,dport=40000)"),
        "{d:?}"
    );
}
