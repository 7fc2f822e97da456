//! Small frame builders with correct checksums (test-only).

use pipeline::wire::checksum;

pub const ETH: usize = 14;

#[derive(Clone, Debug)]
pub struct P {
    pub v6: bool,
    pub src: u128,
    pub dst: u128,
    pub proto: u8,
    pub sport: u16,
    pub dport: u16,
    pub flags: u8,
    pub seq: u32,
    pub ack: u32,
    pub win: u16,
    pub icmp_type: u8,
    pub icmp_code: u8,
    pub payload: Vec<u8>,
    /// For IPv4 UDP: send a zero ("none") checksum.
    pub udp_no_csum: bool,
    /// Raw L4 bytes to use instead of building a header (ICMP errors).
    pub raw_l4: Option<Vec<u8>>,
    pub ip_id: u16,
}

impl Default for P {
    fn default() -> Self {
        P {
            v6: false,
            src: 0xc0a8_0a05,
            dst: 0x0808_0808,
            proto: 6,
            sport: 40000,
            dport: 80,
            flags: 0x02,
            seq: 1000,
            ack: 0,
            win: 65535,
            icmp_type: 8,
            icmp_code: 0,
            payload: Vec::new(),
            udp_no_csum: false,
            raw_l4: None,
            ip_id: 1,
        }
    }
}

pub fn v4(a: [u8; 4]) -> u128 {
    u32::from_be_bytes(a) as u128
}

fn pseudo(v6: bool, src: u128, dst: u128, proto: u8, len: usize) -> u32 {
    let mut b = Vec::new();
    if v6 {
        b.extend_from_slice(&src.to_be_bytes());
        b.extend_from_slice(&dst.to_be_bytes());
    } else {
        b.extend_from_slice(&(src as u32).to_be_bytes());
        b.extend_from_slice(&(dst as u32).to_be_bytes());
    }
    let mut acc = checksum::sum(0, &b);
    acc += proto as u32 + (len as u32 >> 16) + (len as u32 & 0xffff);
    acc
}

pub fn l4(p: &P) -> Vec<u8> {
    if let Some(r) = &p.raw_l4 {
        let mut r = r.clone();
        // ICMP checksum over the whole message (with pseudo-header for ICMPv6).
        r[2] = 0;
        r[3] = 0;
        let acc = if p.v6 {
            pseudo(true, p.src, p.dst, 58, r.len())
        } else {
            0
        };
        let c = checksum::finish(checksum::sum(acc, &r));
        r[2..4].copy_from_slice(&c.to_be_bytes());
        return r;
    }
    let mut s = Vec::new();
    match p.proto {
        6 => {
            s.extend_from_slice(&p.sport.to_be_bytes());
            s.extend_from_slice(&p.dport.to_be_bytes());
            s.extend_from_slice(&p.seq.to_be_bytes());
            s.extend_from_slice(&p.ack.to_be_bytes());
            s.push(5 << 4);
            s.push(p.flags);
            s.extend_from_slice(&p.win.to_be_bytes());
            s.extend_from_slice(&[0, 0, 0, 0]);
            s.extend_from_slice(&p.payload);
            let c = checksum::finish(checksum::sum(pseudo(p.v6, p.src, p.dst, 6, s.len()), &s));
            s[16..18].copy_from_slice(&c.to_be_bytes());
        }
        17 => {
            s.extend_from_slice(&p.sport.to_be_bytes());
            s.extend_from_slice(&p.dport.to_be_bytes());
            s.extend_from_slice(&((8 + p.payload.len()) as u16).to_be_bytes());
            s.extend_from_slice(&[0, 0]);
            s.extend_from_slice(&p.payload);
            if !p.udp_no_csum {
                let mut c =
                    checksum::finish(checksum::sum(pseudo(p.v6, p.src, p.dst, 17, s.len()), &s));
                if c == 0 {
                    c = 0xffff;
                }
                s[6..8].copy_from_slice(&c.to_be_bytes());
            }
        }
        1 | 58 => {
            s.push(p.icmp_type);
            s.push(p.icmp_code);
            s.extend_from_slice(&[0, 0]);
            s.extend_from_slice(&p.sport.to_be_bytes());
            s.extend_from_slice(&1u16.to_be_bytes());
            s.extend_from_slice(&p.payload);
            let acc = if p.proto == 58 {
                pseudo(true, p.src, p.dst, 58, s.len())
            } else {
                0
            };
            let c = checksum::finish(checksum::sum(acc, &s));
            s[2..4].copy_from_slice(&c.to_be_bytes());
        }
        _ => s.extend_from_slice(&p.payload),
    }
    s
}

/// IP header + L4 (no Ethernet).
pub fn ip(p: &P) -> Vec<u8> {
    let body = l4(p);
    let mut h = Vec::new();
    if p.v6 {
        h.extend_from_slice(&[0x60, 0, 0, 0]);
        h.extend_from_slice(&(body.len() as u16).to_be_bytes());
        h.push(p.proto);
        h.push(64);
        h.extend_from_slice(&p.src.to_be_bytes());
        h.extend_from_slice(&p.dst.to_be_bytes());
    } else {
        h.extend_from_slice(&[0x45, 0]);
        h.extend_from_slice(&((20 + body.len()) as u16).to_be_bytes());
        h.extend_from_slice(&p.ip_id.to_be_bytes());
        h.extend_from_slice(&[0x40, 0, 64, p.proto, 0, 0]);
        h.extend_from_slice(&(p.src as u32).to_be_bytes());
        h.extend_from_slice(&(p.dst as u32).to_be_bytes());
        let c = checksum::checksum(&h);
        h[10..12].copy_from_slice(&c.to_be_bytes());
    }
    h.extend_from_slice(&body);
    h
}

pub fn eth(v6: bool, ip: &[u8]) -> Vec<u8> {
    let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1];
    f.extend_from_slice(if v6 { &[0x86, 0xdd] } else { &[0x08, 0x00] });
    f.extend_from_slice(ip);
    f
}

pub fn frame(p: &P) -> Vec<u8> {
    eth(p.v6, &ip(p))
}

/// A TCP segment over IPv4 from `src`:`sport` to `dst`:`dport` carrying `pl`.
#[allow(clippy::too_many_arguments)]
pub fn seg(
    src: u128,
    dst: u128,
    sport: u16,
    dport: u16,
    flags: u8,
    seq: u32,
    ack: u32,
    pl: &[u8],
) -> Vec<u8> {
    tcp_segment(false, src, dst, sport, dport, flags, seq, ack, pl)
}

/// [`seg`] over IPv6.
#[allow(clippy::too_many_arguments)]
pub fn seg6(
    src: u128,
    dst: u128,
    sport: u16,
    dport: u16,
    flags: u8,
    seq: u32,
    ack: u32,
    pl: &[u8],
) -> Vec<u8> {
    tcp_segment(true, src, dst, sport, dport, flags, seq, ack, pl)
}

#[allow(clippy::too_many_arguments)]
fn tcp_segment(
    v6: bool,
    src: u128,
    dst: u128,
    sport: u16,
    dport: u16,
    flags: u8,
    seq: u32,
    ack: u32,
    pl: &[u8],
) -> Vec<u8> {
    frame(&P {
        v6,
        src,
        dst,
        sport,
        dport,
        flags,
        seq,
        ack,
        payload: pl.to_vec(),
        ..P::default()
    })
}

/// An ICMP error (`ty`/`code`) from `from` to `to` quoting the first bytes of `quoted` (an IP
/// datagram as built by [`ip`]).
pub fn icmp_error(v6: bool, from: u128, to: u128, ty: u8, code: u8, quoted: &[u8]) -> Vec<u8> {
    let mut m = vec![ty, code, 0, 0, 0, 0, 0, 0];
    let q = if v6 {
        quoted.len().min(40 + 8)
    } else {
        quoted.len().min(28)
    };
    m.extend_from_slice(&quoted[..q]);
    let p = P {
        v6,
        src: from,
        dst: to,
        proto: if v6 { 58 } else { 1 },
        raw_l4: Some(m),
        ..P::default()
    };
    frame(&p)
}

/// IPv4 fragments of `p`'s datagram, cut at multiples of 8 bytes of payload.
pub fn fragments_v4(p: &P, cut: &[usize]) -> Vec<Vec<u8>> {
    let d = ip(p);
    let body = &d[20..];
    let mut bounds = vec![0];
    bounds.extend_from_slice(cut);
    bounds.push(body.len());
    let mut out = Vec::new();
    for w in bounds.windows(2) {
        let (a, b) = (w[0], w[1]);
        let mut h = d[..20].to_vec();
        h[2..4].copy_from_slice(&((20 + b - a) as u16).to_be_bytes());
        let more = b < body.len();
        let ff = ((a / 8) as u16) | if more { 0x2000 } else { 0 };
        h[6..8].copy_from_slice(&ff.to_be_bytes());
        h[10] = 0;
        h[11] = 0;
        let c = checksum::checksum(&h);
        h[10..12].copy_from_slice(&c.to_be_bytes());
        h.extend_from_slice(&body[a..b]);
        out.push(eth(false, &h));
    }
    out
}

/// IPv6 fragments of `p`'s datagram.
pub fn fragments_v6(p: &P, cut: &[usize], id: u32) -> Vec<Vec<u8>> {
    let d = ip(p);
    let body = &d[40..];
    let mut bounds = vec![0];
    bounds.extend_from_slice(cut);
    bounds.push(body.len());
    let mut out = Vec::new();
    for w in bounds.windows(2) {
        let (a, b) = (w[0], w[1]);
        let mut h = d[..40].to_vec();
        h[4..6].copy_from_slice(&((8 + b - a) as u16).to_be_bytes());
        h[6] = 44;
        let more = b < body.len();
        h.push(p.proto);
        h.push(0);
        h.extend_from_slice(&((a as u16) | more as u16).to_be_bytes());
        h.extend_from_slice(&id.to_be_bytes());
        h.extend_from_slice(&body[a..b]);
        out.push(eth(true, &h));
    }
    out
}
