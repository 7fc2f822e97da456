//! The control socket under abuse, against a real daemon in a namespace: malformed requests
//! (bad length prefix, truncated, non-UTF-8, unknown verb, 2 MiB, silent peers) get errors and
//! the daemon keeps serving; a peer that is not root is refused; a flow file with errors leaves
//! the running tables as they were; and replacing the flow table 50 times under steady traffic
//! loses no frame.
//!
//! Topology: namespace A (198.18.N.1/24) —veth— S (`xvs run`, AF_XDP ports p0 and p1, generic
//! mode) —veth— B (198.18.N.2/24). The daemon is this test binary re-executed in S with only
//! the ignored `robust_daemon_child` test selected. Skips (with a message) unless root.

use dataplane::control::{self, Reply};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use xvs_tests::netns::{is_root, veth_pair, Daemon, Netns};

const CHILD_ENV: &str = "XVS_ROBUST_CTL_DAEMON";

#[test]
#[ignore]
fn robust_daemon_child() {
    xvs_tests::daemon::run_child(CHILD_ENV);
}

struct Rig {
    daemon: Option<Daemon>,
    a: Netns,
    b: Netns,
    _s: Netns,
    ctl: PathBuf,
    dir: PathBuf,
    net: u8,
}

impl Drop for Rig {
    fn drop(&mut self) {
        self.daemon.take();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn rig(tag: &str, net: u8) -> Rig {
    let dir = std::env::temp_dir().join(format!("xvs-robust-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let a = Netns::new("robust-ca").unwrap();
    let b = Netns::new("robust-cb").unwrap();
    let s = Netns::new("robust-cs").unwrap();
    veth_pair(&a, "va", &s, "p0").unwrap();
    veth_pair(&s, "p1", &b, "vb").unwrap();
    a.addr("va", &format!("198.18.{net}.1/24")).unwrap();
    b.addr("vb", &format!("198.18.{net}.2/24")).unwrap();
    let cfg = r#"
[datapath]
mode = "interrupt"

[[bridge]]
name = "br0"

[[bridge.port]]
name = "p0"
type = "afxdp"
ofport = 1
xdp_mode = "generic"
# Room for a burst: a paced sender that a host stall held up catches up all at once.
frames = 16384

[[bridge.port]]
name = "p1"
type = "afxdp"
ofport = 2
xdp_mode = "generic"
frames = 16384
"#;
    std::fs::write(dir.join("xvs.toml"), cfg).unwrap();
    // In a directory the daemon creates (mode 0700).
    let ctl = dir.join("run").join("xvs.ctl");
    let exe = std::env::current_exe().unwrap();
    let args = format!("{} {}", dir.join("xvs.toml").display(), ctl.display());
    let daemon = s
        .spawn(
            &[
                exe.to_str().unwrap(),
                "--ignored",
                "--exact",
                "robust_daemon_child",
                "--nocapture",
            ],
            &[(CHILD_ENV, &args)],
        )
        .unwrap();
    let mut r = Rig {
        daemon: Some(daemon),
        a,
        b,
        _s: s,
        ctl,
        dir,
        net,
    };
    let t0 = Instant::now();
    while !r.ctl.exists() {
        assert!(!r.daemon.as_mut().unwrap().exited(), "daemon exited");
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
        assert!(r.ok, "{verb} {args:?}: {text}");
        text
    }

    /// Sends raw bytes as a request (optionally closing the write side) and returns the reply.
    fn raw(&self, bytes: &[u8], close_write: bool) -> Vec<u8> {
        let mut s = UnixStream::connect(&self.ctl).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        // The daemon may stop reading (and close) before a large request is all written.
        let _ = s.write_all(bytes);
        if close_write {
            let _ = s.shutdown(std::net::Shutdown::Write);
        }
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        out
    }

    fn replace(&self, name: &str, text: &str) -> Reply {
        let p = self.dir.join(name);
        std::fs::write(&p, text).unwrap();
        control::call(
            &self.ctl,
            "replace-flows",
            &["br0".into(), p.display().to_string(), text.into()],
        )
        .unwrap()
    }

    fn alive(&self) {
        assert!(self.ok("show", &[]).contains("Bridge br0"));
    }
}

fn skip(test: &str) -> bool {
    if is_root() {
        return false;
    }
    eprintln!("{test}: skipped, needs root (namespaces, XDP, the control socket's peer check)");
    true
}

fn is_error(reply: &[u8]) -> bool {
    reply.first() == Some(&control::STATUS_ERROR)
}

/// `dump-flows` without the fields that change by themselves (durations, ages).
fn stable_dump(r: &Rig) -> Vec<String> {
    r.ok("dump-flows", &["br0"])
        .lines()
        .map(|l| {
            l.split(", ")
                .filter(|f| {
                    !f.trim_start().starts_with("duration=")
                        && !f.starts_with("idle_age=")
                        && !f.starts_with("hard_age=")
                })
                .collect::<Vec<_>>()
                .join(", ")
        })
        .collect()
}

/// Asserts that the rules of dump `after` are those of `before` and that no rule's packet
/// count went back. The hosts send frames of their own at any moment (IPv6 neighbour
/// discovery, ARP refreshes), so counters may grow between two dumps; a replaced table would
/// restart them from zero.
fn assert_untouched(before: &[String], after: &[String], what: &str) {
    let split = |dump: &[String]| -> Vec<(String, u64)> {
        dump.iter()
            .map(|l| {
                let mut packets = 0;
                let rule = l
                    .split(", ")
                    .filter(|f| match f.strip_prefix("n_packets=") {
                        Some(v) => {
                            packets = v.parse().unwrap_or(0);
                            false
                        }
                        None => !f.starts_with("n_bytes="),
                    })
                    .collect::<Vec<_>>()
                    .join(", ");
                (rule, packets)
            })
            .collect()
    };
    let (b, a) = (split(before), split(after));
    let rules = |d: &[(String, u64)]| d.iter().map(|(r, _)| r.clone()).collect::<Vec<_>>();
    assert_eq!(rules(&b), rules(&a), "{what} changed the rules");
    for ((rule, was), (_, now)) in b.iter().zip(&a) {
        assert!(
            now >= was,
            "{what}: {rule} went from {was} to {now} packets"
        );
    }
}

#[test]
fn malformed_requests_get_errors_and_the_daemon_keeps_serving() {
    if skip("malformed_requests_get_errors_and_the_daemon_keeps_serving") {
        return;
    }
    let r = rig("malformed", 40);
    let body = |b: &[u8]| {
        let mut v = (b.len() as u32).to_be_bytes().to_vec();
        v.extend_from_slice(b);
        v
    };
    let cases: Vec<(&str, Vec<u8>, bool)> = vec![
        (
            "length prefix of 4 GiB",
            vec![0xff, 0xff, 0xff, 0xff],
            false,
        ),
        ("length prefix cut short", vec![0, 0], true),
        (
            "body shorter than its prefix",
            {
                let mut v = 100u32.to_be_bytes().to_vec();
                v.extend_from_slice(b"show");
                v
            },
            true,
        ),
        ("empty body", body(b""), true),
        ("not UTF-8", body(&[0xff, 0xfe, 0x00, 0xc3, 0x28]), true),
        ("unknown verb", body(b"rm-rf\0/"), true),
        ("verb with NULs only", body(b"\0\0\0"), true),
        ("add-flows without arguments", body(b"add-flows"), true),
        ("2 MiB", body(&vec![b'a'; 2 << 20]), true),
    ];
    for (what, bytes, close) in &cases {
        let reply = r.raw(bytes, *close);
        assert!(
            is_error(&reply),
            "{what}: {:?}",
            String::from_utf8_lossy(&reply)
        );
        r.alive();
    }
    // Non-UTF-8 inside an argument (the flow text) is refused, and changes nothing.
    let before = stable_dump(&r);
    let reply = r.raw(
        &body(b"replace-flows\0br0\0f\0priority=0,actions=\xff"),
        true,
    );
    assert!(is_error(&reply));
    assert_untouched(&before, &stable_dump(&r), "non-UTF-8 flow text");

    // A peer that connects and says nothing does not hold the daemon up for the others.
    let silent: Vec<UnixStream> = (0..3)
        .map(|_| UnixStream::connect(&r.ctl).unwrap())
        .collect();
    let t0 = Instant::now();
    r.alive();
    let waited = t0.elapsed();
    drop(silent);
    assert!(
        waited < Duration::from_secs(2),
        "show waited {waited:?} behind silent peers"
    );
    assert!(r.ping(1));
}

impl Rig {
    fn ping(&self, count: u32) -> bool {
        self.a
            .exec(&[
                "ping",
                "-c",
                &count.to_string(),
                "-i",
                "0.2",
                "-W",
                "2",
                &format!("198.18.{}.2", self.net),
            ])
            .is_ok()
    }
}

#[test]
fn a_peer_that_is_not_root_is_refused() {
    if skip("a_peer_that_is_not_root_is_refused") {
        return;
    }
    let r = rig("nonroot", 41);
    let client = |path: &str| {
        let script = format!(
            "import socket,sys\n\
             s=socket.socket(socket.AF_UNIX)\n\
             try:\n    s.connect('{path}')\n\
             except OSError as e:\n    print('connect:', e.strerror); sys.exit(0)\n\
             s.sendall(b'\\x00\\x00\\x00\\x04show')\n\
             d=b''\n\
             while True:\n\
             \x20   c=s.recv(4096)\n\
             \x20   if not c: break\n\
             \x20   d+=c\n\
             print('status', d[0], d[1:].decode())\n"
        );
        let out = std::process::Command::new("setpriv")
            .args([
                "--reuid",
                "nobody",
                "--regid",
                "nogroup",
                "--clear-groups",
                // The system interpreter: a per-user one may not be reachable by nobody.
                "/usr/bin/python3",
                "-c",
                &script,
            ])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    // The socket's directory keeps others out before the peer check is even reached.
    let out = client(&r.ctl.display().to_string());
    assert!(out.starts_with("connect: Permission denied"), "{out}");
    // With the permissions opened up by mistake, the peer check still refuses.
    use std::os::unix::fs::PermissionsExt;
    let dir = r.ctl.parent().unwrap();
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    std::fs::set_permissions(&r.ctl, std::fs::Permissions::from_mode(0o777)).unwrap();
    let out = client(&r.ctl.display().to_string());
    assert!(
        out.starts_with("status 1 peer uid 65534 is not root"),
        "{out}"
    );
    r.alive();
}

#[test]
fn a_flow_file_with_errors_leaves_the_tables_untouched() {
    if skip("a_flow_file_with_errors_leaves_the_tables_untouched") {
        return;
    }
    let r = rig("badflows", 42);
    let good = "cookie=0x1,priority=100,arp,actions=NORMAL\n\
                cookie=0x1,priority=100,ip,nw_dst=198.18.42.0/24,actions=NORMAL\n\
                cookie=0x1,priority=0,actions=drop\n";
    assert!(r.replace("good.flows", good).ok);
    assert!(r.ping(2));
    let before = stable_dump(&r);
    assert_eq!(before.len(), 3);
    let bad_files = [
        "priority=0,actions=drop\npriority=5,in_port=nosuch,actions=NORMAL\n",
        "priority=1,actions=output:p1\npriority=2,nw_dst=1.2.3.4,actions=drop\n",
        "table=300,actions=drop\n",
        "priority=1,actions=resubmit(,8),ct(commit,nat(src=1.2.3.4-1.2.3.1))\n",
        "priority=1,actions=load:0x1ffff->NXM_NX_REG0[0..15]\n",
        "\u{0}\u{1}garbage\n",
    ];
    for (i, text) in bad_files.iter().enumerate() {
        for verb in ["replace-flows", "add-flows"] {
            let p = r.dir.join(format!("bad{i}.flows"));
            std::fs::write(&p, text).unwrap();
            let rep = control::call(
                &r.ctl,
                verb,
                &["br0".into(), p.display().to_string(), (*text).into()],
            )
            .unwrap();
            assert!(!rep.ok, "{verb} accepted {text:?}");
            assert_untouched(&before, &stable_dump(&r), &format!("{verb} of bad{i}"));
        }
    }
    assert!(r.ping(1));
}

#[test]
fn replacing_flows_under_traffic_loses_nothing() {
    if skip("replacing_flows_under_traffic_loses_nothing") {
        return;
    }
    let r = rig("replace", 43);
    // Two equivalent tables (only the cookies differ) whose last rule drops: a replacement
    // that is not atomic would let frames meet an empty or half-loaded table.
    let table = |cookie: u32| {
        format!(
            "cookie={cookie:#x},priority=100,arp,actions=NORMAL\n\
             cookie={cookie:#x},priority=100,ip,nw_dst=198.18.43.1,actions=NORMAL\n\
             cookie={cookie:#x},priority=100,ip,nw_dst=198.18.43.2,actions=NORMAL\n\
             cookie={cookie:#x},priority=0,actions=drop\n"
        )
    };
    // The hosts' UDP would leave with checksums left to an offload that a copy through
    // AF_XDP never completes; have their stacks compute them.
    r.a.exec(&["ethtool", "-K", "va", "tx", "off"]).unwrap();
    r.b.exec(&["ethtool", "-K", "vb", "tx", "off"]).unwrap();
    assert!(r.replace("t1.flows", &table(0x1)).ok);
    assert!(r.ping(2), "warm-up ping (ARP learned both ways)");

    const N: u32 = 20_000;
    const RATE: u32 = 4_000;
    let receiver =
        r.b.spawn(
            &[
                "python3",
                "-c",
                "import socket\n\
                 s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n\
                 s.setsockopt(socket.SOL_SOCKET,socket.SO_RCVBUF,1<<22)\n\
                 s.bind(('198.18.43.2',9999))\n\
                 n=0\n\
                 print('ready',flush=True)\n\
                 s.recv(2048); n+=1\n\
                 s.settimeout(3.0)\n\
                 try:\n\
                 \x20   while True:\n\
                 \x20       s.recv(2048); n+=1\n\
                 except socket.timeout:\n\
                 \x20   pass\n\
                 print(n,flush=True)\n",
            ],
            &[],
        )
        .unwrap();
    let t0 = Instant::now();
    while !r
        .b
        .exec_stdout(&["ss", "-Hlun", "sport = :9999"])
        .unwrap()
        .contains("9999")
    {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "receiver never bound"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let sender_script = format!(
        "import socket,time\n\
         s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n\
         t0=time.time()\n\
         for i in range({N}):\n\
         \x20   s.sendto(i.to_bytes(4,'big')*16,('198.18.43.2',9999))\n\
         \x20   d=t0+(i+1)/{RATE}-time.time()\n\
         \x20   if d>0: time.sleep(d)\n\
         print({N})\n"
    );
    let sender = std::thread::spawn({
        let a = r.a.name().to_string();
        move || {
            std::process::Command::new("ip")
                .args(["netns", "exec", &a, "python3", "-c", &sender_script])
                .output()
                .unwrap()
        }
    });
    let pinger =
        r.a.spawn(
            &[
                "ping",
                "-c",
                "400",
                "-i",
                "0.01",
                "-W",
                "2",
                "-q",
                "198.18.43.2",
            ],
            &[],
        )
        .unwrap();
    let mut latencies = Vec::new();
    for i in 0..50u32 {
        let t = Instant::now();
        let rep = r.replace(&format!("t{}.flows", i % 2), &table(0x100 + i));
        latencies.push(t.elapsed());
        assert!(rep.ok, "{}", String::from_utf8_lossy(&rep.body));
        std::thread::sleep(Duration::from_millis(60));
    }
    let sent_out = sender.join().unwrap();
    assert!(sent_out.status.success(), "{sent_out:?}");
    let recv_out = receiver.stop("CONT", Duration::from_secs(15)).unwrap();
    let text = String::from_utf8_lossy(&recv_out.stdout).into_owned();
    let received: u32 = text
        .lines()
        .last()
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or_else(|| panic!("receiver said {text:?}"));
    let ping_out = pinger.stop("CONT", Duration::from_secs(15)).unwrap();
    let ping_text = String::from_utf8_lossy(&ping_out.stdout).into_owned();
    latencies.sort();
    eprintln!(
        "replace under traffic: {N} UDP datagrams at {RATE}/s, {received} received; 50 \
         replace-flows, median {:?}, max {:?}; ping: {}",
        latencies[25],
        latencies[49],
        ping_text
            .lines()
            .find(|l| l.contains("transmitted"))
            .unwrap_or("?")
    );
    // Where lost frames went tells a non-atomic replacement (the drop rule's counter) from
    // a stalled host (a paced sender catching up in one burst overflows a receive ring).
    assert_eq!(
        received,
        N,
        "datagrams lost while replacing flows\n{}\n{}",
        r.ok("dump-flows", &["br0"]),
        r.ok("port-stats", &[])
    );
    assert!(
        ping_text.contains(" 0% packet loss"),
        "pings lost: {ping_text}"
    );
    // The last table loaded is the one in place.
    let dump = r.ok("dump-flows", &["br0"]);
    assert!(dump.contains("cookie=0x131"), "{dump}");
}
