//! MTU 9000 end to end: `xvs run` on AF_XDP ports in multi-buffer mode, between network
//! namespaces whose interfaces all have MTU 9000 (the daemon sets its own side from the
//! configuration). First a plain NORMAL bridge (9000-byte pings with DF, a 10 MB TCP transfer
//! in 8948-byte segments (MSS), a frame over a smaller port's MTU dropped and counted), then the
//! reference gateway's SNAT pipeline (scripts/vpc/ahv01.toml and its brAtlas flows: VM on tap2
//! → SNAT to 172.22.7.27 → tagged 2207 → patch → br0 → eth1, here br0's access port of VLAN
//! 2207 → an external namespace).
//!
//! The daemon is this test binary re-executed in the switch namespace; daemons are stopped and
//! namespaces removed by guards, on failure too. Every test skips (saying so) unless root.

use dataplane::control;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;
use xvs_tests::daemon::TempDir;
use xvs_tests::netns::{is_root, veth_pair, Daemon, Netns};

const CHILD_ENV: &str = "XVS_JUMBO_DAEMON_ARGS";
/// Bytes each TCP transfer sends.
const TRANSFER: usize = 10 * 1000 * 1000;

/// The daemon process started by the tests below; does nothing unless started by them.
#[test]
#[ignore]
fn jumbo_daemon_child() {
    xvs_tests::daemon::run_child(CHILD_ENV);
}

fn skip_unless_root(test: &str) -> bool {
    if is_root() {
        return false;
    }
    eprintln!("{test}: skipped, needs root (network namespaces and XDP)");
    true
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Starts the daemon in `s` with `config`; keep it after the namespaces it uses.
fn start(s: &Netns, tag: &str, config: &str) -> (Daemon, PathBuf, TempDir) {
    let started = xvs_tests::daemon::start(
        s,
        &format!("jumbo-{tag}"),
        "jumbo_daemon_child",
        CHILD_ENV,
        config,
    );
    // Sockets are registered in their map right after the control socket appears.
    std::thread::sleep(Duration::from_millis(300));
    started
}

/// MTU 9000 and no offloads on a host's interface: with TSO/GSO the kernel would hand the
/// switch 64 KB super-frames, and with partial checksums frames the other host rejects.
fn host_if(ns: &Netns, ifname: &str, cidr: &str) {
    ns.exec(&["ip", "link", "set", "dev", ifname, "mtu", "9000"])
        .unwrap();
    let _ = ns.exec(&[
        "ethtool", "-K", ifname, "tx", "off", "tso", "off", "gso", "off",
    ]);
    if !cidr.is_empty() {
        ns.addr(ifname, cidr).unwrap();
    }
}

fn mtu_of(ns: &Netns, ifname: &str) -> u32 {
    ns.exec_stdout(&["cat", &format!("/sys/class/net/{ifname}/mtu")])
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// `ping -s SIZE -M do` (don't fragment): whether all answers came back.
fn ping(ns: &Netns, dst: &str, size: u32) -> bool {
    ns.exec(&[
        "ping",
        "-c",
        "3",
        "-i",
        "0.2",
        "-W",
        "2",
        "-M",
        "do",
        "-s",
        &size.to_string(),
        dst,
    ])
    .is_ok()
}

const TCP_PY: &str = r#"
import socket, sys, time
if sys.argv[1] == "serve":
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", int(sys.argv[2]))); s.listen(1); s.settimeout(15)
    c, peer = s.accept(); c.settimeout(15)
    n = 0
    while True:
        d = c.recv(1 << 20)
        if not d: break
        n += len(d)
    c.sendall(str(n).encode()); c.close()
    print(peer[0], n)
else:
    n = int(sys.argv[4])
    s = socket.create_connection((sys.argv[2], int(sys.argv[3])), timeout=15)
    mss = s.getsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG)
    buf = bytes(range(256)) * 4096
    t0 = time.monotonic(); sent = 0
    while sent < n:
        k = s.send(buf[: min(len(buf), n - sent)]); sent += k
    s.shutdown(socket.SHUT_WR)
    ack = s.recv(64)
    dt = time.monotonic() - t0
    print(mss, sent, ack.decode(), "%.6f" % dt)
"#;

/// What a TCP transfer of [`TRANSFER`] bytes found.
struct Transfer {
    /// The client's MSS.
    mss: u32,
    /// Bytes the server counted.
    received: usize,
    /// The address the server saw the client connect from.
    peer: String,
    gbit_s: f64,
}

fn tcp_transfer(server: &Netns, client: &Netns, addr: &str, port: u16) -> Transfer {
    let port_s = port.to_string();
    let srv = Command::new("ip")
        .args(["netns", "exec", server.name()])
        .args(["timeout", "30", "python3", "-c", TCP_PY, "serve", &port_s])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let out = client
        .exec_stdout(&[
            "timeout",
            "30",
            "python3",
            "-c",
            TCP_PY,
            "client",
            addr,
            &port_s,
            &TRANSFER.to_string(),
        ])
        .unwrap_or_else(|e| panic!("tcp client: {e}"));
    let srv = srv.wait_with_output().unwrap();
    let srv_out = String::from_utf8_lossy(&srv.stdout).into_owned();
    let c: Vec<&str> = out.split_whitespace().collect();
    let s: Vec<&str> = srv_out.split_whitespace().collect();
    assert!(
        c.len() == 4 && s.len() == 2,
        "client said {out:?}, server said {srv_out:?} {}",
        String::from_utf8_lossy(&srv.stderr)
    );
    let secs: f64 = c[3].parse().unwrap();
    let received: usize = s[1].parse().unwrap();
    assert_eq!(c[2], s[1], "the server's count reached the client");
    Transfer {
        mss: c[0].parse().unwrap(),
        received,
        peer: s[0].to_string(),
        gbit_s: received as f64 * 8.0 / secs / 1e9,
    }
}

fn ctl_text(ctl: &Path, verb: &str, args: &[&str]) -> String {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let r = control::call(ctl, verb, &args).unwrap();
    assert!(r.ok, "{verb}: {}", String::from_utf8_lossy(&r.body));
    String::from_utf8_lossy(&r.body).into_owned()
}

/// `(rx_packets, rx_bytes, tx_too_big)` of `ofport` in `port-stats` output.
fn port_counters(stats: &str, ofport: u32) -> (u64, u64, u64) {
    let head = format!("port {ofport:>2}:");
    let mut lines = stats.lines().skip_while(|l| !l.contains(&head));
    let rx = lines.next().unwrap_or_else(|| panic!("no port {ofport}"));
    let field = |l: &str, k: &str| -> u64 {
        let at = l.find(k).unwrap_or_else(|| panic!("{k} in {l}")) + k.len();
        l[at..]
            .split(|c: char| !c.is_ascii_digit())
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    let drops = lines.nth(1).unwrap();
    (
        field(rx, "rx pkts="),
        field(rx, "bytes="),
        field(drops, "too_big="),
    )
}

fn afxdp_port(name: &str, ofport: u32, mode: &str, mtu: u32) -> String {
    format!(
        "[[bridge.port]]\nname = \"{name}\"\ntype = \"afxdp\"\nofport = {ofport}\n\
         xdp_mode = \"{mode}\"\nmtu = {mtu}\n"
    )
}

#[test]
fn jumbo_frames_cross_a_normal_bridge_and_oversize_is_dropped_and_counted() {
    if skip_unless_root("jumbo_frames_cross_a_normal_bridge") {
        return;
    }
    let h1 = Netns::new("jumbo-h1").unwrap();
    let h2 = Netns::new("jumbo-h2").unwrap();
    let h3 = Netns::new("jumbo-h3").unwrap();
    let s = Netns::new("jumbo-vs").unwrap();
    veth_pair(&h1, "v1", &s, "a1").unwrap();
    veth_pair(&h2, "v2", &s, "a2").unwrap();
    veth_pair(&h3, "v3", &s, "a3").unwrap();
    host_if(&h1, "v1", "198.18.44.1/24");
    host_if(&h2, "v2", "198.18.44.2/24");
    host_if(&h3, "v3", "198.18.44.3/24");
    // Native mode: veth takes a frags-aware program at MTU 9000 (a plain one is refused).
    // Port 3 stays at 1500, so jumbo frames for host 3 must be dropped, not truncated.
    let mode = std::env::var("XVS_JUMBO_XDP_MODE").unwrap_or_else(|_| "native".into());
    let cfg = format!(
        "[datapath]\nmode = \"poll\"\n[[bridge]]\nname = \"br0\"\n{}{}{}",
        afxdp_port("a1", 1, &mode, 9000),
        afxdp_port("a2", 2, &mode, 9000),
        afxdp_port("a3", 3, &mode, 1500),
    );
    let (d, ctl, _dir) = start(&s, "l2", &cfg);
    assert_eq!(mtu_of(&s, "a1"), 9000, "the daemon set the configured MTU");
    assert_eq!(mtu_of(&s, "a3"), 1500);
    let shown = ctl_text(&ctl, "show", &[]);
    eprintln!("{shown}");

    assert!(ping(&h1, "198.18.44.2", 8972), "9000-byte ping with DF");
    let t = tcp_transfer(&h2, &h1, "198.18.44.2", 5201);
    assert_eq!(t.received, TRANSFER, "every byte arrived");
    // 9000 - 40 bytes of headers, less 12 of TCP timestamps.
    assert_eq!(t.mss, 8948, "segments of 9000-byte packets");
    eprintln!(
        "jumbo L2 ({mode}): {} bytes in 8948-byte segments (MSS), {:.2} Gbit/s",
        t.received, t.gbit_s
    );
    let stats = ctl_text(&ctl, "port-stats", &["br0"]);
    let (pk1, by1, _) = port_counters(&stats, 1);
    assert!(
        by1 / pk1.max(1) > 4096,
        "port 1 received mostly multi-buffer frames: {pk1} frames, {by1} bytes\n{stats}"
    );

    // Small frames still reach host 3; jumbo ones are dropped at port 3 and counted.
    assert!(ping(&h1, "198.18.44.3", 1000), "small ping to host 3");
    let (.., before) = port_counters(&ctl_text(&ctl, "port-stats", &["br0"]), 3);
    assert!(
        !ping(&h1, "198.18.44.3", 8972),
        "a 9014-byte frame must not cross a port with MTU 1500"
    );
    let stats = ctl_text(&ctl, "port-stats", &["br0"]);
    let (.., after) = port_counters(&stats, 3);
    assert!(after >= before + 3, "too_big counted per frame\n{stats}");
    let rx3 = h3
        .exec_stdout(&["cat", "/sys/class/net/v3/statistics/rx_bytes"])
        .unwrap();
    eprintln!("host 3 received {} bytes in all", rx3.trim());
    drop(d);
}

/// A config for the gateway host of the reference deployment with MTU 9000 on its VM port and
/// uplink, the uplink an access port of VLAN 2207, its flow file named by absolute path.
fn ahv01_config(mtu: u32) -> String {
    let vpc = repo().join("scripts/vpc");
    let text = std::fs::read_to_string(vpc.join("ahv01.toml")).unwrap();
    let flows = vpc.join("ahv01-brAtlas.flows");
    let text = text.replace(
        "flows = \"ahv01-brAtlas.flows\"",
        &format!("flows = \"{}\"", flows.display()),
    );
    let text = text.replace("ofport = 10\n", "ofport = 10\ntag = 2207\n");
    // The deployment sleeps when idle; XVS_JUMBO_POLL=1 measures the busy-polling datapath.
    let text = if std::env::var_os("XVS_JUMBO_POLL").is_some() {
        text.replace("mode = \"interrupt\"", "mode = \"poll\"")
    } else {
        text
    };
    let mode = std::env::var("XVS_JUMBO_XDP_MODE").unwrap_or_else(|_| "generic".into());
    // The two AF_XDP ports are the only ones with an xdp_mode.
    assert_eq!(text.matches("xdp_mode = \"generic\"").count(), 2);
    text.replace(
        "xdp_mode = \"generic\"",
        &format!("xdp_mode = \"{mode}\"\nmtu = {mtu}"),
    )
}

#[test]
fn jumbo_frames_through_the_gateway_snat_pipeline() {
    if skip_unless_root("jumbo_frames_through_the_gateway_snat_pipeline") {
        return;
    }
    let vm = Netns::new("jumbo-vm").unwrap();
    let ext = Netns::new("jumbo-ext").unwrap();
    let s = Netns::new("jumbo-gw").unwrap();
    veth_pair(&vm, "eth0", &s, "tap2").unwrap();
    veth_pair(&ext, "ext0", &s, "eth1").unwrap();
    vm.exec(&[
        "ip",
        "link",
        "set",
        "dev",
        "eth0",
        "address",
        "50:6b:8d:45:5a:21",
    ])
    .unwrap();
    host_if(&vm, "eth0", "192.168.10.11/24");
    vm.exec(&["ip", "route", "add", "default", "via", "192.168.10.1"])
        .unwrap();
    // The external router. This kernel has no 8021q module for a VLAN interface, so eth1 is
    // the access port of VLAN 2207 the fabric gives the router in the full topology: brAtlas
    // still tags with 2207 before the patch and br0 pops the tag on the way out (and pushes
    // it on the way in), on the jumbo frames.
    ext.exec(&[
        "ip",
        "link",
        "set",
        "dev",
        "ext0",
        "address",
        "00:50:56:b0:42:b2",
    ])
    .unwrap();
    host_if(&ext, "ext0", "172.22.7.1/24");

    let (d, ctl, _dir) = start(&s, "snat", &ahv01_config(9000));
    assert_eq!(mtu_of(&s, "tap2"), 9000);
    assert_eq!(mtu_of(&s, "eth1"), 9000);
    // The first packet waits for the router's ARP; then 9000-byte pings with DF.
    let _ = ping(&vm, "172.22.7.1", 56);
    assert!(
        ping(&vm, "172.22.7.1", 8972),
        "9000-byte ping through SNAT and VLAN 2207"
    );
    let t = tcp_transfer(&ext, &vm, "172.22.7.1", 5202);
    assert_eq!(t.peer, "172.22.7.27", "the VM's address was translated");
    assert_eq!(t.received, TRANSFER, "every byte arrived");
    assert_eq!(t.mss, 8948);
    eprintln!(
        "jumbo SNAT: {} bytes in 8948-byte segments (MSS), {:.2} Gbit/s",
        t.received, t.gbit_s
    );
    let ct = ctl_text(&ctl, "dump-conntrack", &["zone=9"]);
    assert!(ct.contains("172.22.7.27"), "SNAT entry in zone 9: {ct}");
    // The VM sends the data: tap2 (brAtlas port 4) received it in multi-buffer frames.
    let stats = ctl_text(&ctl, "port-stats", &["brAtlas"]);
    eprintln!("{stats}{}", ctl_text(&ctl, "port-stats", &["br0"]));
    if let Ok(n) = vm.exec_stdout(&["nstat", "-az", "TcpRetransSegs"]) {
        eprintln!("VM TCP: {}", n.lines().last().unwrap_or(""));
    }
    let (pk, by, _) = port_counters(&stats, 4);
    assert!(
        by / pk.max(1) > 4096,
        "tap2 received mostly multi-buffer frames: {pk} frames, {by} bytes\n{stats}"
    );
    drop(d);
}

/// An MTU the device cannot take is refused at start with the port and the limit named.
#[test]
fn an_mtu_above_the_limit_is_refused_naming_the_port() {
    if skip_unless_root("an_mtu_above_the_limit_is_refused_naming_the_port") {
        return;
    }
    let h = Netns::new("jumbo-hx").unwrap();
    let s = Netns::new("jumbo-vx").unwrap();
    veth_pair(&h, "vx", &s, "ax").unwrap();
    let dir = std::env::temp_dir().join(format!("xvs-jumbo-refuse-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let _g = TempDir(dir.clone());
    let tap =
        "[[bridge.port]]\nname = \"ax\"\ntype = \"internal\"\nifname = \"jumbotap0\"\nmtu = 9000\n";
    for (port, mtu, want) in [
        (
            afxdp_port("ax", 1, "generic", 9500),
            9500,
            "mtu 9500 is above 9216, the largest an AF_XDP port carries",
        ),
        (afxdp_port("ax", 1, "generic", 60), 60, ""),
        (
            tap.to_string(),
            9000,
            "mtu 9000 is above 3822, the largest an internal (TAP) port carries",
        ),
    ] {
        let cfg = format!("[[bridge]]\nname = \"br0\"\n{port}");
        std::fs::write(dir.join("x.toml"), &cfg).unwrap();
        let args = format!(
            "{} {}",
            dir.join("x.toml").display(),
            dir.join("x.ctl").display()
        );
        let exe = std::env::current_exe().unwrap();
        let out = Command::new("ip")
            .args(["netns", "exec", s.name()])
            .arg(&exe)
            .args(["--ignored", "--exact", "jumbo_daemon_child", "--nocapture"])
            .env(CHILD_ENV, &args)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "mtu {mtu} must be refused");
        if want.is_empty() {
            // Below 68: the configuration itself refuses it.
            assert!(err.contains("mtu"), "{err}");
        } else {
            assert!(err.contains("port \"ax\"") && err.contains(want), "{err}");
        }
    }
}
