//! AF_XDP and TAP ports on real interfaces, through the null forwarder.
//!
//! Topology: namespace A (198.18.0.1/24) —veth— namespace M (forwarder between `xa` and `xb`)
//! —veth— namespace B (198.18.0.2/24). The forwarder runs in M as this very test binary
//! re-executed through `ip netns exec` with only the ignored `nullfwd_child` test selected and
//! its arguments in an environment variable, so it exercises the library code the
//! `xvs-nullfwd` binary wraps without depending on another crate's binary being built.
//!
//! Every test skips (with a message) when not run as root.

use clap::Parser;
use std::collections::HashMap;
use std::time::{Duration, Instant};
use xvs_tests::netns::{is_root, veth_pair, Daemon, Netns};

const CHILD_ENV: &str = "XVS_NULLFWD_ARGS";

/// The forwarder process started by the tests below; does nothing unless started by them.
#[test]
#[ignore]
fn nullfwd_child() {
    let Ok(args) = std::env::var(CHILD_ENV) else {
        return;
    };
    let argv = std::iter::once("xvs-nullfwd").chain(args.split_whitespace());
    let args = dataplane::nullfwd::Args::try_parse_from(argv).expect("forwarder arguments");
    dataplane::nullfwd::run(&args).expect("forwarder");
}

fn skip_unless_root(test: &str) -> bool {
    if is_root() {
        return false;
    }
    eprintln!("{test}: skipped, needs root (network namespaces and XDP)");
    true
}

struct Topo {
    a: Netns,
    m: Netns,
    b: Netns,
}

fn topo() -> Topo {
    let t = Topo {
        a: Netns::new("afxdp-a").unwrap(),
        m: Netns::new("afxdp-m").unwrap(),
        b: Netns::new("afxdp-b").unwrap(),
    };
    veth_pair(&t.a, "va", &t.m, "xa").unwrap();
    veth_pair(&t.m, "xb", &t.b, "vb").unwrap();
    t.a.addr("va", "198.18.0.1/24").unwrap();
    t.b.addr("vb", "198.18.0.2/24").unwrap();
    t
}

fn start_forwarder(m: &Netns, args: &str) -> Daemon {
    let exe = std::env::current_exe().unwrap();
    let exe = exe.to_str().unwrap();
    m.spawn(
        &[
            exe,
            "--exact",
            "nullfwd_child",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ],
        &[(CHILD_ENV, args)],
    )
    .unwrap()
}

/// Names of the interfaces in `ns` that have an XDP program attached.
fn xdp_attached(ns: &Netns) -> Vec<String> {
    let out = ns.exec_stdout(&["ip", "-d", "link", "show"]).unwrap();
    let mut names = Vec::new();
    let mut current = String::new();
    for line in out.lines() {
        if !line.starts_with(' ') {
            // "2: xa@if3: <...>": the name is the second field, up to '@' or ':'.
            current = line
                .split_whitespace()
                .nth(1)
                .unwrap_or("")
                .trim_end_matches(':')
                .split('@')
                .next()
                .unwrap_or("")
                .to_string();
        } else if line.contains("prog/xdp") {
            names.push(current.clone());
        }
    }
    names
}

fn wait_until(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !ok() {
        assert!(t0.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn wait_attached(m: &Netns, fwd: &mut Daemon, ifaces: &[&str]) {
    wait_until("XDP programs to attach", Duration::from_secs(20), || {
        assert!(!fwd.exited(), "forwarder exited early");
        let att = xdp_attached(m);
        ifaces.iter().all(|i| att.iter().any(|a| a == i))
    });
    // The program is attached just before the socket is registered in its map.
    std::thread::sleep(Duration::from_millis(300));
}

/// Stops the forwarder with SIGTERM and returns its stdout and, per port, its counters.
fn stop_forwarder(fwd: Daemon) -> (String, HashMap<String, HashMap<String, u64>>) {
    let out = fwd.stop("TERM", Duration::from_secs(10)).unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "forwarder failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut ports = HashMap::new();
    for line in stdout.lines() {
        let mut it = line.split_whitespace();
        if it.next() != Some("port") {
            continue;
        }
        let Some(name) = it.next() else { continue };
        let counters: HashMap<String, u64> = it
            .filter_map(|kv| kv.split_once('='))
            .filter_map(|(k, v)| Some((k.to_string(), v.parse().ok()?)))
            .collect();
        if !counters.is_empty() {
            ports.insert(name.to_string(), counters);
        }
    }
    (stdout, ports)
}

fn ping(from: &Netns, to: &str) -> Result<String, String> {
    from.exec_stdout(&["ping", "-c", "5", "-i", "0.2", "-W", "2", to])
        .map_err(|e| e.to_string())
}

fn forward_ping_and_clean_up(mode: &str, xdp_mode: &str) {
    let t = topo();
    let mut fwd = start_forwarder(
        &t.m,
        &format!("--in xa --out xb --bidir --mode {mode} --xdp-mode {xdp_mode}"),
    );
    wait_attached(&t.m, &mut fwd, &["xa", "xb"]);
    let ping_result = ping(&t.a, "198.18.0.2");
    let (stdout, ports) = stop_forwarder(fwd);
    println!("{stdout}");
    let out = ping_result.unwrap_or_else(|e| panic!("ping through the forwarder: {e}\n{stdout}"));
    assert!(out.contains("5 received"), "{out}");

    // What the port reported it got.
    for line in stdout.lines().filter(|l| l.contains("afxdp xdp-mode")) {
        eprintln!("[{mode}/{xdp_mode}] {line}");
        if xdp_mode == "generic" {
            assert!(line.contains("xdp-mode generic"), "{line}");
        }
    }
    // Echo requests cross A->B on xa, replies B->A on xb; ARP adds at least one each way.
    for (rx, tx) in [("xa", "xb"), ("xb", "xa")] {
        let r = &ports[rx];
        let s = &ports[tx];
        assert!(r["rx_packets"] >= 6, "{rx} received too little: {stdout}");
        assert_eq!(r["rx_packets"], s["tx_packets"], "{stdout}");
        assert_eq!(r["rx_bytes"], s["tx_bytes"], "{stdout}");
        assert_eq!(s["tx_dropped"], 0, "{stdout}");
        assert_eq!(r["invalid_descs"], 0, "{stdout}");
    }
    // A clean exit leaves no program behind.
    assert_eq!(xdp_attached(&t.m), Vec::<String>::new());
}

#[test]
fn poll_mode_generic_forwards_ping_both_ways() {
    if skip_unless_root("poll_mode_generic") {
        return;
    }
    forward_ping_and_clean_up("poll", "generic");
}

#[test]
fn interrupt_mode_generic_forwards_ping_both_ways() {
    if skip_unless_root("interrupt_mode_generic") {
        return;
    }
    forward_ping_and_clean_up("interrupt", "generic");
}

#[test]
fn poll_mode_auto_forwards_ping_both_ways() {
    if skip_unless_root("poll_mode_auto") {
        return;
    }
    forward_ping_and_clean_up("poll", "auto");
}

#[test]
fn interrupt_mode_auto_forwards_ping_both_ways() {
    if skip_unless_root("interrupt_mode_auto") {
        return;
    }
    forward_ping_and_clean_up("interrupt", "auto");
}

#[test]
fn leftover_programs_of_a_killed_forwarder_are_removed_at_next_start() {
    if skip_unless_root("leftover_programs") {
        return;
    }
    let t = topo();
    let mut fwd = start_forwarder(&t.m, "--in xa --out xb --bidir --mode interrupt");
    wait_attached(&t.m, &mut fwd, &["xa", "xb"]);
    let out = fwd.stop("KILL", Duration::from_secs(5)).unwrap();
    assert!(!out.status.success());
    // A killed process cannot detach: the programs stay, and with no socket behind them
    // nothing is forwarded any more.
    let mut left = xdp_attached(&t.m);
    left.sort();
    assert_eq!(left, vec!["xa".to_string(), "xb".to_string()]);
    assert!(ping(&t.a, "198.18.0.2").is_err());

    let mut fwd = start_forwarder(&t.m, "--in xa --out xb --bidir --mode interrupt");
    wait_attached(&t.m, &mut fwd, &["xa", "xb"]);
    let ping_result = ping(&t.a, "198.18.0.2");
    let (stdout, ports) = stop_forwarder(fwd);
    assert!(ping_result.is_ok(), "{ping_result:?}\n{stdout}");
    for ifname in ["xa", "xb"] {
        assert!(
            stdout.contains(&format!("port {ifname}: removed 1 leftover xdp program")),
            "{stdout}"
        );
        assert!(ports[ifname]["rx_packets"] >= 5, "{stdout}");
    }
    assert_eq!(xdp_attached(&t.m), Vec::<String>::new());
}

#[test]
fn tap_port_gives_the_host_stack_a_port() {
    if skip_unless_root("tap_port") {
        return;
    }
    let t = topo();
    // The forwarder creates the TAP device `xt` in M; M's own stack talks to B through it.
    let mut fwd = start_forwarder(
        &t.m,
        "--in tap:xt --out xb --bidir --mode interrupt --xdp-mode generic",
    );
    wait_attached(&t.m, &mut fwd, &["xb"]);
    t.m.addr("xt", "198.18.0.1/24").unwrap();
    let ping_result = ping(&t.m, "198.18.0.2");
    let (stdout, ports) = stop_forwarder(fwd);
    assert!(ping_result.is_ok(), "{ping_result:?}\n{stdout}");
    assert!(ports["xt"]["rx_packets"] >= 6, "{stdout}");
    assert!(ports["xt"]["tx_packets"] >= 6, "{stdout}");
    assert_eq!(ports["xt"]["rx_packets"], ports["xb"]["tx_packets"]);
    // Closing the TAP fd removed the device.
    assert!(t.m.exec(&["ip", "link", "show", "dev", "xt"]).is_err());
}
