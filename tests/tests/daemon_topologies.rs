//! The daemon on AF_XDP ports in two more topologies: VLAN access and trunk ports on one
//! bridge, and two bridges joined by a patch pair. As in `daemon_cli.rs`, the daemon is this
//! test binary re-executed inside the switch namespace; everything is removed by guards.

use dataplane::control;
use std::path::PathBuf;
use std::time::Duration;
use xvs_tests::daemon::TempDir;
use xvs_tests::netns::{is_root, veth_pair, Daemon, Netns};

const CHILD_ENV: &str = "XVS_TOPO_DAEMON_ARGS";

/// The daemon process started by the tests below; does nothing unless started by them.
#[test]
#[ignore]
fn topo_daemon_child() {
    xvs_tests::daemon::run_child(CHILD_ENV);
}

/// Starts the daemon in `s` with `config`; keep it after the namespaces it uses.
fn start(s: &Netns, tag: &str, config: &str) -> (Daemon, PathBuf, TempDir) {
    let started = xvs_tests::daemon::start(
        s,
        &format!("topo-{tag}"),
        "topo_daemon_child",
        CHILD_ENV,
        config,
    );
    started
}

fn ping(ns: &Netns, dst: &str) -> bool {
    ns.exec(&["ping", "-c", "2", "-i", "0.2", "-W", "1", dst])
        .is_ok()
}

fn port(name: &str, ofport: u32, vlan: &str) -> String {
    format!(
        "[[bridge.port]]\nname = \"{name}\"\ntype = \"afxdp\"\nofport = {ofport}\nxdp_mode = \"generic\"\n{vlan}\n"
    )
}

#[test]
fn access_ports_and_a_trunk_carry_vlan_10() {
    if !is_root() {
        eprintln!("access_ports_and_a_trunk_carry_vlan_10: skipped, needs root");
        return;
    }
    let h1 = Netns::new("daemon-h1").unwrap();
    let h2 = Netns::new("daemon-h2").unwrap();
    let h3 = Netns::new("daemon-h3").unwrap();
    let h4 = Netns::new("daemon-h4").unwrap();
    let s = Netns::new("daemon-vs").unwrap();
    veth_pair(&h1, "v1", &s, "a1").unwrap();
    veth_pair(&h2, "v2", &s, "a2").unwrap();
    veth_pair(&h3, "v3", &s, "t3").unwrap();
    veth_pair(&h4, "v4", &s, "a4").unwrap();
    h1.addr("v1", "198.18.30.1/24").unwrap();
    h2.addr("v2", "198.18.30.2/24").unwrap();
    h4.addr("v4", "198.18.30.4/24").unwrap();
    let cfg = format!(
        "[datapath]\nmode = \"interrupt\"\n[[bridge]]\nname = \"br0\"\n{}{}{}{}",
        port("a1", 1, "tag = 10"),
        port("a2", 2, "tag = 10"),
        port("t3", 3, "trunks = [10, 20]"),
        port("a4", 4, "tag = 20"),
    );
    let (d, ctl, _dir) = start(&s, "vlan", &cfg);

    let capture = |port: &str| {
        let ctl = ctl.clone();
        let port = port.to_string();
        std::thread::spawn(move || {
            let rep = control::call(
                &ctl,
                "capture",
                &[port, "1000".to_string(), "3".to_string()],
            )
            .unwrap();
            assert!(rep.ok);
            dataplane::pcap::PcapReader::new(&rep.body[..])
                .unwrap()
                .read_all()
                .unwrap()
        })
    };
    let (cap_trunk, cap_other) = (capture("t3"), capture("a4"));
    std::thread::sleep(Duration::from_millis(300));
    assert!(ping(&h1, "198.18.30.2"), "access to access in VLAN 10");
    assert!(!ping(&h1, "198.18.30.4"), "VLAN 10 must not reach VLAN 20");
    let mac = |ns: &Netns, ifname: &str| -> String {
        ns.exec_stdout(&["cat", &format!("/sys/class/net/{ifname}/address")])
            .unwrap()
            .trim()
            .to_string()
    };
    let bytes = |m: &str| -> Vec<u8> {
        m.split(':')
            .map(|x| u8::from_str_radix(x, 16).unwrap())
            .collect()
    };
    let vid = |f: &dataplane::pcap::Record| {
        (f.data[12..14] == [0x81, 0x00])
            .then(|| u16::from_be_bytes([f.data[14], f.data[15]]) & 0xfff)
    };
    let (mac1, mac3, mac4) = (mac(&h1, "v1"), mac(&h3, "v3"), mac(&h4, "v4"));
    let (b1, b3, b4) = (bytes(&mac1), bytes(&mac3), bytes(&mac4));
    // Every frame the switch sent on the trunk is tagged with its source's VLAN: 10 for host 1
    // (its ARP broadcasts were flooded there), 20 for host 4's own chatter. Host 3's frames
    // are received on the trunk (and so captured too), untagged.
    let trunk = cap_trunk.join().unwrap();
    assert!(trunk.iter().any(|f| f.data[6..12] == b1[..]));
    for f in &trunk {
        let src = &f.data[6..12];
        if src == &b3[..] {
            continue;
        }
        let want = if src == &b4[..] { 20 } else { 10 };
        assert_eq!(vid(f), Some(want), "frame from {src:02x?} on the trunk");
    }
    // Host 4 sends its own frames (IPv6 neighbour discovery); none of host 1's may arrive.
    let other = cap_other.join().unwrap();
    let leaked = other.iter().filter(|f| f.data[6..12] == b1[..]).count();
    assert_eq!(leaked, 0, "host 1's frames leaked into VLAN 20");
    let fdb = String::from_utf8(
        control::call(&ctl, "fdb-show", &["br0".to_string()])
            .unwrap()
            .body,
    )
    .unwrap();
    let line = fdb
        .lines()
        .find(|l| l.contains(&mac1))
        .unwrap_or_else(|| panic!("{fdb}"));
    assert!(line.contains("    1    10  "), "{fdb}");
    let out = d.stop("TERM", Duration::from_secs(10)).unwrap();
    assert!(out.status.success());
}

#[test]
fn patch_ports_join_two_bridges() {
    if !is_root() {
        eprintln!("patch_ports_join_two_bridges: skipped, needs root");
        return;
    }
    let a = Netns::new("daemon-pa").unwrap();
    let b = Netns::new("daemon-pb").unwrap();
    let s = Netns::new("daemon-ps").unwrap();
    veth_pair(&a, "va", &s, "x0").unwrap();
    veth_pair(&s, "x1", &b, "vb").unwrap();
    a.addr("va", "198.18.31.1/24").unwrap();
    b.addr("vb", "198.18.31.2/24").unwrap();
    let cfg = format!(
        "[datapath]\nmode = \"interrupt\"\n[[bridge]]\nname = \"br0\"\n{}\
         [[bridge.port]]\nname = \"patch0\"\ntype = \"patch\"\nofport = 9\npeer = \"patch1\"\n\
         [[bridge]]\nname = \"br1\"\n\
         [[bridge.port]]\nname = \"patch1\"\ntype = \"patch\"\nofport = 9\npeer = \"patch0\"\n{}",
        port("x0", 1, ""),
        port("x1", 1, ""),
    );
    let (d, ctl, _dir) = start(&s, "patch", &cfg);
    assert!(ping(&a, "198.18.31.2"), "ping across the patch pair");
    // Both bridges learned both hosts: br0 sees B behind the patch (port 9).
    let mac_b = b
        .exec_stdout(&["cat", "/sys/class/net/vb/address"])
        .unwrap();
    let fdb0 = String::from_utf8(
        control::call(&ctl, "fdb-show", &["br0".to_string()])
            .unwrap()
            .body,
    )
    .unwrap();
    let line = fdb0
        .lines()
        .find(|l| l.contains(mac_b.trim()))
        .unwrap_or_else(|| panic!("{fdb0}"));
    assert!(line.trim_start().starts_with("9 "), "{fdb0}");
    let out = d.stop("TERM", Duration::from_secs(10)).unwrap();
    assert!(out.status.success());
}

/// The `coalesce waits` and `frames per busy poll` lines of `pmd-stats-show`.
fn coalescing(ctl: &std::path::Path) -> (u64, f64) {
    let rep = control::call(ctl, "pmd-stats-show", &[]).unwrap();
    assert!(rep.ok);
    let text = String::from_utf8(rep.body).unwrap();
    let value = |key: &str| -> String {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(key))
            .unwrap_or_else(|| panic!("no {key:?} in {text}"))
            .trim()
            .to_string()
    };
    (
        value("coalesce waits:")
            .split_whitespace()
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("coalesce waits in {text}")),
        value("frames per busy poll:").parse().unwrap(),
    )
}

/// Interrupt mode with `coalesce_us`: a stream of frames (a ping flood with 64 requests in
/// flight) makes the thread wait between bursts, and every request is still answered; with
/// `coalesce_us = 0` it never waits.
#[test]
fn interrupt_mode_coalesces_a_stream_and_loses_nothing() {
    if !is_root() {
        eprintln!("interrupt_mode_coalesces: skipped, needs root");
        return;
    }
    for (tag, coalesce_us) in [("c200", 200u32), ("c0", 0)] {
        let a = Netns::new(&format!("daemon-{tag}a")).unwrap();
        let b = Netns::new(&format!("daemon-{tag}b")).unwrap();
        let s = Netns::new(&format!("daemon-{tag}s")).unwrap();
        veth_pair(&a, "va", &s, "x0").unwrap();
        veth_pair(&s, "x1", &b, "vb").unwrap();
        a.addr("va", "198.18.32.1/24").unwrap();
        b.addr("vb", "198.18.32.2/24").unwrap();
        let cfg = format!(
            "[datapath]\nmode = \"interrupt\"\ncoalesce_us = {coalesce_us}\n\
             [[bridge]]\nname = \"br0\"\n{}{}",
            port("x0", 1, ""),
            port("x1", 2, ""),
        );
        let (d, ctl, _dir) = start(&s, tag, &cfg);
        assert!(ping(&a, "198.18.32.2"), "{tag}: ping before the flood");
        let flood = a
            .exec_stdout(&[
                "ping",
                "-q",
                "-f",
                "-l",
                "64",
                "-c",
                "4000",
                "-W",
                "2",
                "198.18.32.2",
            ])
            .unwrap_or_else(|e| panic!("{tag}: flood ping failed: {e}"));
        assert!(
            flood.contains("4000 packets transmitted, 4000 received"),
            "{tag}: {flood}"
        );
        let (waits, per_poll) = coalescing(&ctl);
        eprintln!("{tag}: {waits} coalesce waits, {per_poll} frames per busy poll");
        if coalesce_us > 0 {
            assert!(waits > 0, "{tag}: a stream must be coalesced");
        } else {
            assert_eq!(waits, 0, "{tag}: coalesce_us = 0 never waits");
        }
        assert!(per_poll >= 1.0, "{tag}: {per_poll} frames per busy poll");
        let out = d.stop("TERM", Duration::from_secs(10)).unwrap();
        assert!(out.status.success());
    }
}
