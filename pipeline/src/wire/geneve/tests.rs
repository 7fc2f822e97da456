use super::*;
use crate::compose::from_hex;

// Produced by an independent packet generator: Ethernet / IPv4 172.22.1.61 > 172.22.1.62 (DF,
// TTL 64) / UDP 50000 > 6081 with checksum / Geneve VNI 5, C bit, one option (class 0x0102,
// type 0x80, 4 bytes 00 01 00 02) / the inner frame below.
const INNER: &str =
    "e01995ad56d0506b8d455a2108004500001c000100004001e584c0a80a05c0a80a060800f7fd00010001";
const OUTER: &str = "aabbcc00003eaabbcc00003d080045000056000040004011dfefac16013dac16013ec35017c10042cfa702406558000005000102800100010002e01995ad56d0506b8d455a2108004500001c000100004001e584c0a80a05c0a80a060800f7fd00010001";

const OPT_DATA: [u8; 4] = [0, 1, 0, 2];

fn outer<'a>(opts: &'a [GeneveOpt<'a>]) -> GeneveOuter<'a> {
    GeneveOuter {
        src_mac: [0xaa, 0xbb, 0xcc, 0, 0, 0x3d],
        dst_mac: [0xaa, 0xbb, 0xcc, 0, 0, 0x3e],
        src_ip: 0xac16_013d,
        dst_ip: 0xac16_013e,
        tos: 0,
        ttl: 64,
        df: true,
        src_port: 50000,
        vni: 5,
        oam: false,
        options: opts,
        csum: true,
    }
}

fn encapped() -> Vec<u8> {
    let inner = from_hex(INNER);
    let mut buf = vec![0u8; 128 + inner.len()];
    buf[128..].copy_from_slice(&inner);
    let opts = [GeneveOpt {
        class: 0x0102,
        typ: 0x80,
        data: &OPT_DATA,
    }];
    let mut f = Frame::new(&mut buf, 128, inner.len());
    encap(&mut f, &outer(&opts)).unwrap();
    f.data().to_vec()
}

#[test]
fn encap_matches_fixture() {
    assert_eq!(encapped(), from_hex(OUTER));
}

#[test]
fn decap_fixture() {
    let mut buf = from_hex(OUTER);
    let n = buf.len();
    let mut f = Frame::new(&mut buf, 0, n);
    let d = decap(&mut f).unwrap();
    assert_eq!(
        (d.vni, d.src_ip, d.dst_ip, d.ttl, d.src_port),
        (5, 0xac16_013d, 0xac16_013e, 64, 50000)
    );
    assert!(d.critical && !d.oam);
    let opts: Vec<_> = d.options().collect();
    assert_eq!(
        opts,
        vec![Ok(GeneveOpt {
            class: 0x0102,
            typ: 0x80,
            data: &OPT_DATA[..]
        })]
    );
    assert_eq!(f.data(), &from_hex(INNER)[..]);
}

#[test]
fn bad_frames_are_refused() {
    let good = from_hex(OUTER);
    // Option length running past the option area (checksum zeroed so that is not what fails).
    let mut g = good.clone();
    g[40..42].fill(0);
    assert!(parse(&g).is_ok());
    g[53] = 2;
    assert_eq!(parse(&g), Err(RewriteError::Malformed));
    // Version 1.
    let mut g = good.clone();
    g[40..42].fill(0);
    g[42] |= 0x40;
    assert_eq!(parse(&g), Err(RewriteError::Malformed));
    // Corrupted payload with a checksum.
    let mut g = good.clone();
    *g.last_mut().unwrap() ^= 0xff;
    assert_eq!(parse(&g), Err(RewriteError::BadChecksum));
    // Other UDP port, not UDP, truncated.
    let mut g = good.clone();
    g[40..42].fill(0);
    g[37] = 0xc2;
    assert_eq!(parse(&g), Err(RewriteError::NotPresent));
    for n in 0..good.len() {
        assert!(parse(&good[..n]).is_err(), "truncated to {n}");
    }
}

#[test]
fn options_iterator_stops_at_bad_length() {
    let area = [0, 1, 2, 1, 9, 9, 9, 9, 0, 1, 3, 2, 7, 7];
    let mut it = Options::new(&area);
    assert_eq!(
        it.next(),
        Some(Ok(GeneveOpt {
            class: 1,
            typ: 2,
            data: &[9, 9, 9, 9]
        }))
    );
    assert_eq!(it.next(), Some(Err(RewriteError::Malformed)));
    assert_eq!(it.next(), None);
    assert_eq!(
        Options::new(&[0, 1]).next(),
        Some(Err(RewriteError::Malformed))
    );
    let mut out = [0u8; 8];
    let bad = [GeneveOpt {
        class: 1,
        typ: 1,
        data: &[1, 2, 3],
    }];
    assert_eq!(write_options(&bad, &mut out), Err(RewriteError::Malformed));
}

#[test]
fn encap_without_room_or_checksum() {
    let inner = from_hex(INNER);
    let mut buf = inner.clone();
    let mut f = Frame::new(&mut buf, 0, inner.len());
    assert_eq!(encap(&mut f, &outer(&[])), Err(RewriteError::NoRoom));
    let mut buf = vec![0u8; 64 + inner.len()];
    buf[64..].copy_from_slice(&inner);
    let mut f = Frame::new(&mut buf, 64, inner.len());
    let o = GeneveOuter {
        csum: false,
        ..outer(&[])
    };
    encap(&mut f, &o).unwrap();
    assert_eq!(&f.data()[40..42], &[0, 0]);
    let info = parse(f.data()).unwrap();
    assert!(!info.critical && info.options.is_empty());
    assert_eq!(&f.data()[info.inner_ofs..], &inner[..]);
}

/// Writes the encapsulated frame to a pcap and asks tshark's dissector, when it is installed.
#[test]
fn tshark_dissects_encap() {
    if std::process::Command::new("tshark")
        .arg("-v")
        .output()
        .is_err()
    {
        eprintln!("tshark not installed: skipped");
        return;
    }
    let f = encapped();
    let mut pcap = Vec::new();
    pcap.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    pcap.extend_from_slice(&2u16.to_le_bytes());
    pcap.extend_from_slice(&4u16.to_le_bytes());
    for v in [0u32, 0, 65535, 1] {
        pcap.extend_from_slice(&v.to_le_bytes());
    }
    for v in [0u32, 0, f.len() as u32, f.len() as u32] {
        pcap.extend_from_slice(&v.to_le_bytes());
    }
    pcap.extend_from_slice(&f);
    let path = std::env::temp_dir().join(format!("xvs-wire-geneve-{}.pcap", std::process::id()));
    std::fs::write(&path, &pcap).unwrap();
    let out = std::process::Command::new("tshark")
        .args([
            "-r",
            path.to_str().unwrap(),
            "-o",
            "udp.check_checksum:TRUE",
            "-T",
            "fields",
        ])
        .args([
            "-e",
            "geneve.vni",
            "-e",
            "geneve.option.class",
            "-e",
            "udp.checksum.status",
            "-e",
            "icmp.type",
        ])
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&path);
    let text = String::from_utf8_lossy(&out.stdout);
    let cols: Vec<&str> = text.trim().split('\t').collect();
    assert_eq!(
        cols.len(),
        4,
        "tshark said: {text:?} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        u32::from_str_radix(cols[0].trim_start_matches("0x"), 16).unwrap(),
        5
    );
    assert_eq!(
        u32::from_str_radix(cols[1].trim_start_matches("0x"), 16).unwrap(),
        0x0102
    );
    assert_eq!(
        cols[2], "1",
        "UDP checksum status: 1 is good, 0 bad, 2 unverified"
    );
    assert_eq!(cols[3], "8");
}
