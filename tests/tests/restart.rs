//! Stopping and restarting the daemon: SIGTERM drains and exits 0 with its XDP programs
//! detached and its socket removed; SIGKILL leaves XDP programs behind, which the next start
//! removes before it forwards again.
//!
//! Topology: namespace A (198.18.N.1/24) —veth— S (`xvs run` on AF_XDP ports p0 and p1,
//! generic mode) —veth— B (198.18.N.2/24). The daemon is this test binary re-executed in S with
//! only the ignored `restart_daemon_child` test selected. Skips (with a message) unless root.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use xvs_tests::netns::{is_root, veth_pair, Daemon, Netns};

const CHILD_ENV: &str = "XVS_ROBUST_RESTART_DAEMON";

#[test]
#[ignore]
fn restart_daemon_child() {
    xvs_tests::daemon::run_child(CHILD_ENV);
}

struct Topo {
    a: Netns,
    s: Netns,
    _b: Netns,
    dir: PathBuf,
    net: u8,
}

impl Drop for Topo {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn topo(tag: &str, net: u8) -> Topo {
    let dir = std::env::temp_dir().join(format!("xvs-robust-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let a = Netns::new("robust-ra").unwrap();
    let b = Netns::new("robust-rb").unwrap();
    let s = Netns::new("robust-rs").unwrap();
    veth_pair(&a, "va", &s, "p0").unwrap();
    veth_pair(&s, "p1", &b, "vb").unwrap();
    a.addr("va", &format!("198.18.{net}.1/24")).unwrap();
    b.addr("vb", &format!("198.18.{net}.2/24")).unwrap();
    std::fs::write(
        dir.join("xvs.toml"),
        r#"
[datapath]
mode = "interrupt"
[[bridge]]
name = "br0"
[[bridge.port]]
name = "p0"
type = "afxdp"
xdp_mode = "generic"
[[bridge.port]]
name = "p1"
type = "afxdp"
xdp_mode = "generic"
"#,
    )
    .unwrap();
    Topo {
        a,
        s,
        _b: b,
        dir,
        net,
    }
}

impl Topo {
    fn ctl(&self) -> PathBuf {
        self.dir.join("xvs.ctl")
    }

    fn start(&self) -> Daemon {
        let ctl = self.ctl();
        let exe = std::env::current_exe().unwrap();
        let args = format!("{} {}", self.dir.join("xvs.toml").display(), ctl.display());
        let mut d = self
            .s
            .spawn(
                &[
                    exe.to_str().unwrap(),
                    "--ignored",
                    "--exact",
                    "restart_daemon_child",
                    "--nocapture",
                ],
                &[(CHILD_ENV, &args)],
            )
            .unwrap();
        let t0 = Instant::now();
        while !socket_answers(&ctl) {
            assert!(!d.exited(), "the daemon exited at start");
            assert!(t0.elapsed() < Duration::from_secs(20), "no control socket");
            std::thread::sleep(Duration::from_millis(50));
        }
        d
    }

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

    /// Interfaces in S with an XDP program attached, as `ip -d link` shows them.
    fn xdp_attached(&self) -> Vec<String> {
        let out = self.s.exec_stdout(&["ip", "-d", "link", "show"]).unwrap();
        let mut names = Vec::new();
        let mut current = String::new();
        for line in out.lines() {
            if !line.starts_with(' ') {
                current = line
                    .split(": ")
                    .nth(1)
                    .unwrap_or("")
                    .split('@')
                    .next()
                    .unwrap_or("")
                    .to_string();
            }
            if (line.contains(" xdp") || line.contains("prog/xdp")) && !names.contains(&current) {
                names.push(current.clone());
            }
        }
        names
    }
}

fn socket_answers(ctl: &Path) -> bool {
    ctl.exists()
        && dataplane::control::call(ctl, "show", &[]).is_ok_and(|r| r.ok && !r.body.is_empty())
}

fn skip(test: &str) -> bool {
    if is_root() {
        return false;
    }
    eprintln!("{test}: skipped, needs root (namespaces and XDP)");
    true
}

#[test]
fn sigterm_drains_detaches_and_exits_zero() {
    if skip("sigterm_drains_detaches_and_exits_zero") {
        return;
    }
    let t = topo("term", 50);
    let d = t.start();
    assert!(t.ping(2));
    assert_eq!(t.xdp_attached(), vec!["p0", "p1"]);
    // Traffic in flight while the signal arrives.
    let flood =
        t.a.spawn(
            &["ping", "-c", "200", "-i", "0.005", "-q", "198.18.50.2"],
            &[],
        )
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let t0 = Instant::now();
    let out = d.stop("TERM", Duration::from_secs(10)).unwrap();
    let took = t0.elapsed();
    let _ = flood.stop("KILL", Duration::from_secs(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "exit {:?}: {stderr}", out.status);
    assert_eq!(out.status.code(), Some(0));
    assert!(stderr.contains("xvs: stopping"), "{stderr}");
    assert!(took < Duration::from_secs(5), "stopping took {took:?}");
    assert!(t.xdp_attached().is_empty(), "{:?}", t.xdp_attached());
    assert!(!t.ctl().exists(), "socket left behind");
    eprintln!("restart: SIGTERM to exit in {took:?}");
}

#[test]
fn after_sigkill_the_next_start_cleans_up_and_forwards() {
    if skip("after_sigkill_the_next_start_cleans_up_and_forwards") {
        return;
    }
    let t = topo("kill", 51);
    let d = t.start();
    assert!(t.ping(2));
    let out = d.stop("KILL", Duration::from_secs(5)).unwrap();
    assert!(!out.status.success());
    // A killed process cannot detach: its programs stay, and its socket file too.
    assert_eq!(
        t.xdp_attached(),
        vec!["p0", "p1"],
        "programs left by SIGKILL"
    );
    assert!(t.ctl().exists());
    assert!(
        !t.ping(1),
        "nothing forwards while the programs point at dead sockets"
    );

    let t0 = Instant::now();
    let d = t.start();
    let started = t0.elapsed();
    assert!(t.ping(3), "the restarted daemon forwards");
    assert_eq!(t.xdp_attached(), vec!["p0", "p1"]);
    let out = d.stop("TERM", Duration::from_secs(10)).unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("removed 1 leftover XDP program(s) from p0")
            && stderr.contains("removed 1 leftover XDP program(s) from p1"),
        "{stderr}"
    );
    assert!(t.xdp_attached().is_empty());
    eprintln!("restart: restart after SIGKILL ready in {started:?}");
}
