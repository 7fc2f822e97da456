//! `xvs replay` end to end, in process (no root): a two-bridge configuration joined by a patch
//! pair, NORMAL learning with access and trunk ports on one bridge, VLAN push and strip flows on
//! the other; capture files in, expected frames out on every port, byte for byte, with the
//! input frames' timestamps.

use dataplane::pcap::{PcapReader, PcapWriter, Record};
use dataplane::replay::{replay, ReplayInput};
use pipeline::compose::PacketBuilder;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!("xvs-replay-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

const A: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0a];
const B: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0b];
const C: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0c];
const E: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0e];
const BCAST: [u8; 6] = [0xff; 6];

fn udp(src: [u8; 6], dst: [u8; 6], n: u8) -> PacketBuilder {
    PacketBuilder::udp4(
        src,
        dst,
        Ipv4Addr::new(198, 18, 0, n),
        Ipv4Addr::new(198, 18, 0, 200),
        1000 + n as u16,
        53,
    )
    .payload_len(20)
}

fn write_pcap(path: &Path, frames: &[(u32, u32, Vec<u8>)]) {
    let f = std::fs::File::create(path).unwrap();
    let mut w = PcapWriter::new(std::io::BufWriter::new(f)).unwrap();
    for (s, us, d) in frames {
        w.write(*s, *us, d).unwrap();
    }
    w.flush().unwrap();
}

fn read_pcap(path: &Path) -> Vec<Record> {
    let f = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    PcapReader::new(std::io::BufReader::new(f))
        .unwrap()
        .read_all()
        .unwrap()
}

const CONFIG: &str = r#"
[[bridge]]
name = "br0"
fail_mode = "standalone"

[[bridge.port]]
name = "h1"
type = "memory"
ofport = 1
tag = 10

[[bridge.port]]
name = "h2"
type = "memory"
ofport = 2
tag = 10

[[bridge.port]]
name = "trunk"
type = "memory"
ofport = 3
trunks = [10, 20]

[[bridge.port]]
name = "patch0"
type = "patch"
ofport = 4
peer = "patch1"

[[bridge]]
name = "br1"
fail_mode = "secure"
flows = "br1.flows"

[[bridge.port]]
name = "patch1"
type = "patch"
ofport = 1
peer = "patch0"

[[bridge.port]]
name = "ext"
type = "pcap"
ofport = 2
rx_pcap = "does-not-matter.pcap"
"#;

const BR1_FLOWS: &str = "\
# VLAN 10 on the patch is the untagged network on ext.
table=0,priority=10,in_port=patch1,dl_vlan=10,actions=strip_vlan,output:ext
table=0,priority=10,in_port=ext,actions=mod_vlan_vid:10,output:patch1
table=0,priority=0,actions=drop
";

#[test]
fn replay_switches_through_learning_vlans_and_a_patch_pair() {
    let dir = TempDir::new("vlan");
    std::fs::write(dir.0.join("br1.flows"), BR1_FLOWS).unwrap();
    std::fs::write(dir.0.join("does-not-matter.pcap"), b"").unwrap();
    let cfg = dataplane::config::parse(CONFIG, &dir.0, "replay.toml").unwrap();

    // 1: A floods a broadcast in VLAN 10 (h2 untagged, trunk tagged, ext via the patch).
    let f1 = udp(A, BCAST, 1).build();
    // 2: E answers A from ext: tagged by br1, learned on patch0, delivered to h1 only.
    let f2 = udp(E, A, 2).build();
    // 3: B to E: E is known behind the patch, so only ext sees it.
    let f3 = udp(B, E, 3).build();
    // 4: C on the trunk, tagged 10, to B: B is on h2, which strips the tag.
    let f4_tagged = udp(C, B, 4).vlan(10).build();
    let f4_untagged = udp(C, B, 4).build();
    // 5: a VLAN 20 frame on the trunk to A: A is in VLAN 10, so it floods VLAN 20 only (no
    // other port carries 20): nothing is sent.
    let f5 = udp(C, A, 5).vlan(20).build();

    write_pcap(&dir.0.join("in-h1.pcap"), &[(100, 1, f1.clone())]);
    write_pcap(&dir.0.join("in-ext.pcap"), &[(100, 2, f2.clone())]);
    write_pcap(&dir.0.join("in-h2.pcap"), &[(100, 3, f3.clone())]);
    write_pcap(
        &dir.0.join("in-trunk.pcap"),
        &[(101, 0, f4_tagged.clone()), (102, 0, f5.clone())],
    );
    let out = dir.0.join("out");
    std::fs::create_dir_all(&out).unwrap();
    let inputs = [
        ("trunk", "in-trunk.pcap"),
        ("h2", "in-h2.pcap"),
        ("ext", "in-ext.pcap"),
        ("h1", "in-h1.pcap"),
    ]
    .map(|(p, f)| ReplayInput {
        port: p.into(),
        path: dir.0.join(f),
    });
    let summary = replay(&cfg, &inputs, &out).unwrap();
    assert_eq!(summary.frames_in, 5);

    let frames = |port: &str| -> Vec<(u32, u32, Vec<u8>)> {
        read_pcap(&out.join(format!("{port}.pcap")))
            .into_iter()
            .map(|r| (r.ts_sec, r.ts_usec, r.data))
            .collect()
    };
    assert_eq!(frames("h1"), vec![(100, 2, f2.clone())]);
    assert_eq!(
        frames("h2"),
        vec![(100, 1, f1.clone()), (101, 0, f4_untagged.clone())]
    );
    assert_eq!(
        frames("trunk"),
        vec![(100, 1, udp(A, BCAST, 1).vlan(10).build())]
    );
    assert_eq!(
        frames("ext"),
        vec![(100, 1, f1.clone()), (100, 3, f3.clone())]
    );
    assert_eq!(
        summary.frames_out.values().sum::<u64>(),
        6,
        "{:?}",
        summary.frames_out
    );
}

#[test]
fn equal_timestamps_follow_the_order_of_the_inputs() {
    // Two frames from different ports with the same timestamp: the one whose input is given
    // first is switched first, so the learning it causes decides the second's fate.
    let dir = TempDir::new("ties");
    std::fs::write(dir.0.join("br1.flows"), BR1_FLOWS).unwrap();
    std::fs::write(dir.0.join("does-not-matter.pcap"), b"").unwrap();
    let cfg = dataplane::config::parse(CONFIG, &dir.0, "replay.toml").unwrap();
    let from_b = udp(B, A, 1).build();
    let from_a = udp(A, B, 2).build();
    write_pcap(&dir.0.join("h2.in"), &[(5, 0, from_b.clone())]);
    write_pcap(&dir.0.join("h1.in"), &[(5, 0, from_a.clone())]);
    let run = |order: [(&str, &str); 2], tag: &str| {
        let out = dir.0.join(tag);
        std::fs::create_dir_all(&out).unwrap();
        let inputs = order.map(|(p, f)| ReplayInput {
            port: p.into(),
            path: dir.0.join(f),
        });
        replay(&cfg, &inputs, &out).unwrap();
        out
    };
    // h2 first: B's frame floods (A unknown, reaching h1), then A's frame goes to h2 only.
    let out = run([("h2", "h2.in"), ("h1", "h1.in")], "b-first");
    assert!(out.join("trunk.pcap").exists());
    assert_eq!(read_pcap(&out.join("h2.pcap")).len(), 1);
    assert_eq!(read_pcap(&out.join("h1.pcap")).len(), 1);
    assert_eq!(read_pcap(&out.join("trunk.pcap")).len(), 1);
    // h1 first: A's frame floods, B's goes to h1 only; the trunk sees A's frame, not B's.
    let out = run([("h1", "h1.in"), ("h2", "h2.in")], "a-first");
    let trunk = read_pcap(&out.join("trunk.pcap"));
    assert_eq!(trunk.len(), 1);
    assert_eq!(trunk[0].data, udp(A, B, 2).vlan(10).build());
}

#[test]
fn unknown_input_ports_and_bad_flow_files_are_refused() {
    let dir = TempDir::new("errors");
    std::fs::write(dir.0.join("br1.flows"), BR1_FLOWS).unwrap();
    std::fs::write(dir.0.join("does-not-matter.pcap"), b"").unwrap();
    write_pcap(&dir.0.join("x.pcap"), &[(1, 0, udp(A, B, 1).build())]);
    let cfg = dataplane::config::parse(CONFIG, &dir.0, "replay.toml").unwrap();
    let bad = [ReplayInput {
        port: "patch0".into(),
        path: dir.0.join("x.pcap"),
    }];
    let e = replay(&cfg, &bad, &dir.0).unwrap_err().to_string();
    assert!(e.contains("patch0"), "{e}");

    std::fs::write(
        dir.0.join("br1.flows"),
        "priority=1,actions=drop\npriority=2,in_port=nowhere,actions=drop\n",
    )
    .unwrap();
    let ok = [ReplayInput {
        port: "h1".into(),
        path: dir.0.join("x.pcap"),
    }];
    let e = replay(&cfg, &ok, &dir.0).unwrap_err().to_string();
    assert!(e.contains("br1.flows:2:"), "{e}");
    assert!(!dir.0.join("h2.pcap").exists());
}
