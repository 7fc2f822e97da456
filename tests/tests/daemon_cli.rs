//! The daemon on real AF_XDP ports, driven through its control socket.
//!
//! Topology per switch: namespace A (198.18.x.1/24) —veth— switch namespace S (`xvs run` with
//! AF_XDP ports `p0`, `p1`) —veth— namespace B (198.18.x.2/24). The daemon is this test binary
//! re-executed inside S with only the ignored `daemon_child` test selected and its arguments in
//! the environment, so it runs the library's daemon without needing another crate's binary. The
//! verbs are sent in process with `dataplane::control::call`, exactly as the CLI sends them.
//!
//! Every test skips (with a message) when not run as root; namespaces and the daemon are
//! removed by guards, on failure too.

use dataplane::control::{self, Reply};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use xvs_tests::netns::{is_root, veth_pair, Daemon, Netns};

const CHILD_ENV: &str = "XVS_DAEMON_ARGS";

/// The daemon process started by the tests below; does nothing unless started by them.
#[test]
#[ignore]
fn daemon_child() {
    xvs_tests::daemon::run_child(CHILD_ENV);
}

fn skip_unless_root(test: &str) -> bool {
    if is_root() {
        return false;
    }
    eprintln!("{test}: skipped, needs root (network namespaces and XDP)");
    true
}

struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!("xvs-daemon-{tag}-{}", std::process::id()));
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

/// One switch between two hosts. Field order is drop order: the daemon dies first.
struct Rig {
    daemon: Option<Daemon>,
    a: Netns,
    b: Netns,
    s: Netns,
    ctl: PathBuf,
    dir: TempDir,
    net: u8,
}

fn rig(tag: &str, net: u8, config_extra: &str) -> Rig {
    let dir = TempDir::new(tag);
    let a = Netns::new("daemon-a").unwrap();
    let b = Netns::new("daemon-b").unwrap();
    let s = Netns::new("daemon-s").unwrap();
    veth_pair(&a, "va", &s, "p0").unwrap();
    veth_pair(&s, "p1", &b, "vb").unwrap();
    a.addr("va", &format!("198.18.{net}.1/24")).unwrap();
    b.addr("vb", &format!("198.18.{net}.2/24")).unwrap();
    let cfg = format!(
        r#"
[datapath]
mode = "interrupt"
{config_extra}
[[bridge]]
name = "br0"
fail_mode = "standalone"

[[bridge.port]]
name = "p0"
type = "afxdp"
ofport = 1
xdp_mode = "generic"

[[bridge.port]]
name = "p1"
type = "afxdp"
ofport = 2
xdp_mode = "generic"
"#
    );
    std::fs::write(dir.0.join("xvs.toml"), cfg).unwrap();
    let ctl = dir.0.join("xvs.ctl");
    let exe = std::env::current_exe().unwrap();
    let args = format!("{} {}", dir.0.join("xvs.toml").display(), ctl.display());
    let daemon = s
        .spawn(
            &[
                exe.to_str().unwrap(),
                "--ignored",
                "--exact",
                "daemon_child",
                "--nocapture",
            ],
            &[(CHILD_ENV, &args)],
        )
        .unwrap();
    let mut r = Rig {
        daemon: Some(daemon),
        a,
        b,
        s,
        ctl,
        dir,
        net,
    };
    let t0 = Instant::now();
    while !r.ctl.exists() {
        assert!(
            !r.daemon.as_mut().unwrap().exited(),
            "the daemon exited at start"
        );
        assert!(t0.elapsed() < Duration::from_secs(20), "no control socket");
        std::thread::sleep(Duration::from_millis(50));
    }
    r
}

impl Rig {
    fn call(&self, verb: &str, args: &[&str]) -> Reply {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        control::call(&self.ctl, verb, &args).unwrap()
    }

    fn ok(&self, verb: &str, args: &[&str]) -> String {
        let r = self.call(verb, args);
        let text = String::from_utf8_lossy(&r.body).into_owned();
        assert!(r.ok, "{verb} {args:?} failed: {text}");
        text
    }

    fn ping(&self, count: u32) -> bool {
        let dst = format!("198.18.{}.2", self.net);
        let c = count.to_string();
        self.a
            .exec(&["ping", "-c", &c, "-i", "0.2", "-W", "1", &dst])
            .is_ok()
    }

    fn mac(ns: &Netns, ifname: &str) -> String {
        ns.exec_stdout(&["cat", &format!("/sys/class/net/{ifname}/address")])
            .unwrap()
            .trim()
            .to_string()
    }

    fn flows(&self, name: &str, text: &str) -> String {
        let p = self.dir.0.join(name);
        std::fs::write(&p, text).unwrap();
        p.display().to_string()
    }

    fn load(&self, verb: &str, file: &str) -> Reply {
        let text = std::fs::read_to_string(file).unwrap();
        control::call(
            &self.ctl,
            verb,
            &["br0".to_string(), file.to_string(), text],
        )
        .unwrap()
    }

    fn has_xdp(&self, ifname: &str) -> bool {
        self.s
            .exec_stdout(&["ip", "link", "show", "dev", ifname])
            .unwrap()
            .contains("xdp")
    }
}

fn stop(rig: &mut Rig) -> std::process::Output {
    rig.daemon
        .take()
        .unwrap()
        .stop("TERM", Duration::from_secs(10))
        .unwrap()
}

#[test]
fn daemon_switches_and_answers_its_verbs() {
    if skip_unless_root("daemon_switches_and_answers_its_verbs") {
        return;
    }
    let mut r = rig("verbs", 10, "");
    assert!(r.ping(3), "ping through the switch");
    let (mac_a, mac_b) = (Rig::mac(&r.a, "va"), Rig::mac(&r.b, "vb"));

    let fdb = r.ok("fdb-show", &["br0"]);
    assert!(fdb.contains(&mac_a) && fdb.contains(&mac_b), "{fdb}");
    let dump = r.ok("dump-flows", &["br0"]);
    assert!(dump.starts_with(" cookie=0x0, duration="), "{dump}");
    assert!(!dump.contains("n_packets=0,"), "{dump}");
    assert!(dump.contains("priority=0 actions=NORMAL"), "{dump}");
    let show = r.ok("show", &[]);
    assert!(
        show.contains("Bridge br0") && show.contains("Port p1"),
        "{show}"
    );
    let dp = r.ok("dump-dp-flows", &[]);
    assert!(
        dp.contains("in_port(p0)") && dp.contains("actions:p1"),
        "{dp}"
    );
    let ps = r.ok("port-stats", &["br0"]);
    assert!(
        ps.contains("port  1: rx pkts=")
            && !ps.contains("rx pkts=0,")
            && ps.contains("rx drops: fill_ring_empty="),
        "{ps}"
    );
    let pmd = r.ok("pmd-stats-show", &[]);
    assert!(pmd.contains("megaflow hits:"), "{pmd}");
    let flow = format!(
        "in_port=p0,icmp,dl_src={mac_a},dl_dst={mac_b},nw_src=198.18.10.1,nw_dst=198.18.10.2"
    );
    let tr = r.ok("trace", &["br0", &flow]);
    assert!(tr.contains("output to p1"), "{tr}");

    // A drop table stops the ping; the NORMAL table brings it back.
    let drop = r.flows("drop.flows", "priority=0,actions=drop\n");
    let normal = r.flows("normal.flows", "priority=0,actions=NORMAL\n");
    assert!(r.load("replace-flows", &drop).ok);
    assert!(!r.ping(2), "ping must fail with a drop table");
    assert!(r.load("replace-flows", &normal).ok);
    assert!(r.ping(2), "ping must work again");

    // A file with an error changes nothing, and says where the error is.
    let before = r.ok("dump-flows", &["br0"]);
    let bad = r.flows(
        "bad.flows",
        "priority=0,actions=drop\npriority=5,in_port=nosuch,actions=drop\n",
    );
    let rep = r.load("replace-flows", &bad);
    let msg = String::from_utf8_lossy(&rep.body).into_owned();
    assert!(!rep.ok);
    assert!(msg.contains(&format!("{bad}:2:")), "{msg}");
    let after = r.ok("dump-flows", &["br0"]);
    assert_eq!(
        before.lines().count(),
        after.lines().count(),
        "{before}\n{after}"
    );
    assert!(after.contains("actions=NORMAL"), "{after}");
    assert!(r.ping(1));

    // del-flows with a match, then add-flows.
    r.ok("del-flows", &["br0", "priority=0"]);
    assert_eq!(r.ok("dump-flows", &["br0"]), "");
    assert!(r.load("add-flows", &normal).ok);
    assert!(r.ok("dump-flows", &["br0"]).contains("actions=NORMAL"));

    // Capture: the ping's frames on p1 end up in a pcap file.
    let cap = {
        let ctl = r.ctl.clone();
        std::thread::spawn(move || {
            control::call(
                &ctl,
                "capture",
                // Up to 16 frames or 4 s: the namespaces' own ARP and IPv6 chatter may be
                // captured too, so the check below counts ICMP frames only.
                &["p1".to_string(), "16".to_string(), "4".to_string()],
            )
            .unwrap()
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    assert!(r.ping(3));
    let rep = cap.join().unwrap();
    assert!(rep.ok, "{}", String::from_utf8_lossy(&rep.body));
    let recs = dataplane::pcap::PcapReader::new(&rep.body[..])
        .unwrap()
        .read_all()
        .unwrap();
    assert!(
        !recs.is_empty() && recs.len() <= 16,
        "{} frames",
        recs.len()
    );
    let icmp = recs
        .iter()
        .filter(|f| f.data.len() > 23 && f.data[12..14] == [8, 0] && f.data[23] == 1)
        .count();
    assert!(icmp >= 3, "{icmp} ICMP frames of {}", recs.len());

    // Malformed requests get an error, and the daemon lives on.
    let rep = r.call("no-such-verb", &[]);
    assert!(!rep.ok);
    {
        use std::io::{Read, Write};
        let mut s = std::os::unix::net::UnixStream::connect(&r.ctl).unwrap();
        s.write_all(&(2u32 << 20).to_be_bytes()).unwrap();
        let mut out = Vec::new();
        s.read_to_end(&mut out).unwrap();
        assert_eq!(out.first(), Some(&control::STATUS_ERROR));
    }
    assert!(r.ok("show", &[]).contains("br0"));

    assert!(r.has_xdp("p0"));
    let out = stop(&mut r);
    assert!(
        out.status.success(),
        "exit {:?}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!r.ctl.exists(), "socket left behind");
    assert!(
        !r.has_xdp("p0") && !r.has_xdp("p1"),
        "XDP program left behind"
    );
}

#[test]
fn two_daemons_run_side_by_side_with_their_own_sockets() {
    if skip_unless_root("two_daemons_run_side_by_side_with_their_own_sockets") {
        return;
    }
    let mut one = rig("one", 20, "threads = 2");
    let mut two = rig("two", 21, "");
    assert_ne!(one.ctl, two.ctl);
    assert!(one.ping(2) && two.ping(2));
    // Each answers for its own switch.
    let drop = two.flows("drop.flows", "priority=0,actions=drop\n");
    assert!(two.load("replace-flows", &drop).ok);
    assert!(!two.ping(1));
    assert!(one.ping(1));
    let pmd = one.ok("pmd-stats-show", &[]);
    assert!(pmd.contains("datapath thread 1"), "{pmd}");
    for r in [&mut one, &mut two] {
        let out = stop(r);
        assert!(out.status.success());
    }
}
