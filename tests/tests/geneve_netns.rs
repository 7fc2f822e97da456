//! The daemon's underlay side against a real host stack: namespace H (a kernel host at
//! 172.22.1.62/24) —veth— namespace S (`xvs run`: underlay bridge br0 with AF_XDP uplink `p1`,
//! overlay bridge brov with a geneve port to 172.22.1.62 and local_ip 172.22.1.61).
//!
//! The kernel's ARP for 172.22.1.61 must be answered by the switch (it owns its underlay
//! address), and the switch must learn the kernel host as a tunnel next hop from that request,
//! shown by `tnl-neigh-show`. Skips when not root; namespaces and the daemon are removed by
//! guards, on failure too.

use dataplane::control;
use std::path::PathBuf;
use std::time::Duration;
use xvs_tests::daemon::TempDir;
use xvs_tests::netns::{is_root, veth_pair, Daemon, Netns};

const CHILD_ENV: &str = "XVS_GENEVE_DAEMON_ARGS";

/// The daemon process started by the test below; does nothing unless started by it.
#[test]
#[ignore]
fn geneve_daemon_child() {
    xvs_tests::daemon::run_child(CHILD_ENV);
}

/// Field order is drop order: the daemon dies before its namespaces.
struct Rig {
    daemon: Option<Daemon>,
    h: Netns,
    _s: Netns,
    ctl: PathBuf,
    _dir: TempDir,
}

impl Drop for Rig {
    fn drop(&mut self) {
        if let Some(d) = self.daemon.take() {
            let _ = d.stop("TERM", Duration::from_secs(10));
        }
    }
}

fn rig() -> Rig {
    let h = Netns::new("geneve-h").unwrap();
    let s = Netns::new("geneve-s").unwrap();
    veth_pair(&s, "p1", &h, "vh").unwrap();
    h.addr("vh", "172.22.1.62/24").unwrap();
    let cfg = r#"
[datapath]
mode = "interrupt"

[[bridge]]
name = "br0"

[[bridge.port]]
name = "p1"
type = "afxdp"
ofport = 10
xdp_mode = "generic"

[[bridge]]
name = "brov"
fail_mode = "secure"

[[bridge.port]]
name = "gnv"
type = "geneve"
remote_ip = "172.22.1.62"
local_ip = "172.22.1.61"
key = "flow"
csum = true
"#;
    let (daemon, ctl, dir) =
        xvs_tests::daemon::start(&s, "geneve-netns", "geneve_daemon_child", CHILD_ENV, cfg);
    Rig {
        daemon: Some(daemon),
        h,
        _s: s,
        ctl,
        _dir: dir,
    }
}

#[test]
fn the_switch_answers_arp_for_its_underlay_address_and_learns_the_asker() {
    if !is_root() {
        eprintln!("skipped: needs root (network namespaces and XDP)");
        return;
    }
    let r = rig();
    // Nothing answers ICMP on the switch's address; the ping is only there to make the kernel
    // resolve it.
    let _ =
        r.h.exec(&["ping", "-c", "2", "-i", "0.3", "-W", "1", "172.22.1.61"]);
    let neigh =
        r.h.exec_stdout(&["ip", "neigh", "show", "172.22.1.61"])
            .unwrap();
    assert!(
        neigh.contains("02:00:ac:16:01:3d"),
        "the kernel did not learn the switch's MAC: {neigh:?}"
    );
    let h_mac =
        r.h.exec_stdout(&["cat", "/sys/class/net/vh/address"])
            .unwrap()
            .trim()
            .to_string();
    let reply = control::call(&r.ctl, "tnl-neigh-show", &[]).unwrap();
    let text = String::from_utf8_lossy(&reply.body);
    assert!(reply.ok, "{text}");
    let line = text
        .lines()
        .find(|l| l.starts_with("172.22.1.62 "))
        .unwrap_or_else(|| panic!("no entry for the kernel host:\n{text}"));
    assert!(line.contains(&h_mac) && line.ends_with("br0"), "{text}");
}
