//! The benchmark's traffic generator (`xvs-gen`, `dataplane::gen`) on a real veth pair: it
//! sends what it was asked, no faster than its schedule, and leaves the interface's own
//! receive path alone (no XDP program), so pings through the same interface keep working
//! during a run.
//!
//! The generator runs as this test binary re-executed in the sending namespace with only the
//! ignored `gen_child` test selected and its arguments in an environment variable. Every test
//! skips (with a message) when not run as root.

use clap::Parser;
use std::time::{Duration, Instant};
use xvs_tests::netns::{is_root, veth_pair, Daemon, Netns};

const CHILD_ENV: &str = "XVS_GEN_ARGS";

/// The generator process started by the tests below; does nothing unless started by them.
#[test]
#[ignore]
fn gen_child() {
    let Ok(args) = std::env::var(CHILD_ENV) else {
        return;
    };
    let argv = std::iter::once("xvs-gen").chain(args.split_whitespace());
    let args = dataplane::gen::Args::try_parse_from(argv).expect("generator arguments");
    dataplane::gen::run(&args).expect("generator");
}

fn start_gen(ns: &Netns, args: &str) -> Daemon {
    let exe = std::env::current_exe().unwrap();
    ns.spawn(
        &[
            exe.to_str().unwrap(),
            "--exact",
            "gen_child",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ],
        &[(CHILD_ENV, args)],
    )
    .unwrap()
}

/// Waits (bounded) for the generator to finish on its own and returns its output.
fn wait_exit(mut g: Daemon, limit: Duration) -> std::process::Output {
    let t0 = Instant::now();
    while !g.exited() {
        assert!(
            t0.elapsed() < limit,
            "generator still running after {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = g.stop("TERM", Duration::from_secs(5)).unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Two namespaces joined by a veth pair, `ga` in the first and `gb` in the second; `None`
/// (with a message) when not root.
fn pair() -> Option<(Netns, Netns)> {
    if !is_root() {
        eprintln!("generator: skipped, needs root (network namespaces and AF_XDP)");
        return None;
    }
    let a = Netns::new("gen-a").unwrap();
    let b = Netns::new("gen-b").unwrap();
    veth_pair(&a, "ga", &b, "gb").unwrap();
    Some((a, b))
}

fn rx_packets(ns: &Netns, ifname: &str) -> u64 {
    ns.exec_stdout(&[
        "cat",
        &format!("/sys/class/net/{ifname}/statistics/rx_packets"),
    ])
    .unwrap()
    .trim()
    .parse()
    .unwrap()
}

/// The generator's report line, parsed: (sent, elapsed seconds, largest backlog). The kernel
/// must have refused no descriptor.
fn report(stdout: &str) -> (u64, f64, u64) {
    // libtest may print its own "test gen_child ... " before the line.
    let line = stdout
        .lines()
        .find_map(|l| l.find("sent ").map(|i| &l[i..]))
        .unwrap_or_else(|| panic!("no report in {stdout:?}"));
    let f: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(
        (f[0], f[2], f[4], f[6], f[8]),
        (
            "sent",
            "elapsed_s",
            "largest_backlog",
            "ring_full_waits",
            "invalid_descs"
        ),
        "{line}"
    );
    assert_eq!(f[9], "0", "{line}");
    (
        f[1].parse().unwrap(),
        f[3].parse().unwrap(),
        f[5].parse().unwrap(),
    )
}

#[test]
fn paced_frames_arrive_no_faster_than_the_rate_and_the_stack_keeps_working() {
    let Some((a, b)) = pair() else {
        return;
    };
    a.addr("ga", "198.18.0.1/24").unwrap();
    b.addr("gb", "198.18.0.2/24").unwrap();
    let before = rx_packets(&b, "gb");
    // 4,000 frames at 20 kpps: the schedule takes 0.2 s, whatever the machine does.
    let g = start_gen(
        &a,
        "--dev ga --eth-src 02:00:00:00:00:01 --eth-dst ff:ff:ff:ff:ff:ff \
         --ip-src 198.18.0.1 --ip-dst 198.18.0.2 --rate 20000 --count 4000 --seconds 20",
    );
    // While it sends, the interface still answers through the kernel: no program took its
    // receive path.
    let ping = a
        .exec(&["ping", "-c", "3", "-i", "0.05", "-W", "2", "198.18.0.2"])
        .unwrap();
    assert!(
        ping.status.success(),
        "ping during a run: {}",
        String::from_utf8_lossy(&ping.stdout)
    );
    let out = wait_exit(g, Duration::from_secs(30));
    let (sent, elapsed, _) = report(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(sent, 4000);
    // Frame k leaves k / rate after the start: the last one no sooner than 3999 / 20000 s.
    assert!(
        elapsed >= 0.199,
        "4000 frames at 20 kpps took only {elapsed} s"
    );
    let got = rx_packets(&b, "gb") - before;
    // The pings and their neighbour resolution arrive too.
    assert!(got >= 4000, "the peer received {got} frames of 4000");
}

#[test]
fn full_speed_stops_at_the_deadline_and_reports_what_it_sent() {
    let Some((a, b)) = pair() else {
        return;
    };
    let before = rx_packets(&b, "gb");
    let g = start_gen(
        &a,
        "--dev ga --eth-src 02:00:00:00:00:01 --eth-dst 02:00:00:00:00:02 \
         --ip-src 198.18.0.1 --ip-dst 198.18.0.2 --count 1000000000 --seconds 0.3",
    );
    // Bounded by its 0.3 s deadline, not by the billion frames.
    let out = wait_exit(g, Duration::from_secs(20));
    let (sent, elapsed, backlog) = report(&String::from_utf8_lossy(&out.stdout));
    // Full speed has no schedule to fall behind.
    assert_eq!(backlog, 0);
    assert!(sent > 0 && sent < 1_000_000_000, "sent {sent}");
    assert!((0.25..5.0).contains(&elapsed), "elapsed {elapsed}");
    let got = rx_packets(&b, "gb") - before;
    assert!(got >= sent, "the peer received {got} of {sent}");
}
