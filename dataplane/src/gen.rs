//! The paced traffic generator behind `xvs-gen`: sends one UDP frame over and over from an
//! AF_XDP socket bound for transmission only, at a fixed rate spread evenly over time (or at
//! full speed), for the throughput benchmark's fixed loads and rate search.
//!
//! A rate limiter that lets a second's worth of frames out as fast as it can and then waits
//! offers the switch bursts at the generator's full speed, whatever the nominal rate, so a
//! switch that keeps up with the nominal rate still overflows its rings. Here frame `k` leaves
//! at `k / rate` seconds after the start, in batches of at most `--burst` frames when the
//! generator falls behind (descheduled, or the kernel slow to take frames), and the largest
//! backlog it ever had is reported so a run can be judged on how even it was.
//!
//! Output, one line at exit:
//! `sent N elapsed_s S largest_backlog B ring_full_waits W invalid_descs I`, where `sent`
//! counts frames handed to the kernel and `invalid_descs` the descriptors the kernel refused
//! (non-zero means some "sent" frames never left, and a benchmark would blame their loss on
//! the device under test).

use crate::port::afxdp::{silence_libxdp, AfXdpConfig, AfXdpPort, XdpMode};
use crate::port::{Port, PortError, TxVerdict};
use clap::Parser;
use pipeline::compose::PacketBuilder;
use std::io::Write;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(
    name = "xvs-gen",
    about = "Paced UDP traffic generator on AF_XDP (for benchmarks)"
)]
pub struct Args {
    /// Interface to send on.
    #[arg(long)]
    pub dev: String,
    #[arg(long = "eth-src", value_parser = parse_mac)]
    pub eth_src: [u8; 6],
    #[arg(long = "eth-dst", value_parser = parse_mac)]
    pub eth_dst: [u8; 6],
    #[arg(long = "ip-src")]
    pub ip_src: Ipv4Addr,
    #[arg(long = "ip-dst")]
    pub ip_dst: Ipv4Addr,
    #[arg(long, default_value_t = 4000)]
    pub sport: u16,
    #[arg(long, default_value_t = 9)]
    pub dport: u16,
    /// UDP payload bytes.
    #[arg(long, default_value_t = 18)]
    pub payload: usize,
    /// Frames per second, spread evenly; 0 sends at full speed.
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// Frames to send.
    #[arg(long)]
    pub count: u64,
    /// Stop after this many seconds even if frames are left.
    #[arg(long)]
    pub seconds: Option<f64>,
    /// Most frames handed to the kernel in one transmit kick.
    #[arg(long, default_value_t = 32)]
    pub burst: u32,
    /// auto, native or generic.
    #[arg(long = "xdp-mode", default_value = "auto")]
    pub xdp_mode: String,
    /// The interface's MTU when frames are longer than 1518 bytes (multi-buffer).
    #[arg(long)]
    pub mtu: Option<u32>,
    /// Keep libxdp's and libbpf's own messages on stderr.
    #[arg(long)]
    pub verbose: bool,
}

fn parse_mac(s: &str) -> Result<[u8; 6], String> {
    let mut out = [0u8; 6];
    let mut parts = s.split(':');
    for b in out.iter_mut() {
        let p = parts
            .next()
            .ok_or_else(|| format!("{s}: six octets expected"))?;
        *b = u8::from_str_radix(p, 16).map_err(|_| format!("{s}: bad octet {p:?}"))?;
    }
    if parts.next().is_some() {
        return Err(format!("{s}: six octets expected"));
    }
    Ok(out)
}

/// When frames are due: frame `k` (from 0) at `start + k / rate`. Pure: the caller passes the
/// time, so tests drive it.
#[derive(Clone, Debug)]
pub struct Pacer {
    rate: u64,
    start_ns: u64,
    released: u64,
    total: u64,
}

impl Pacer {
    /// `total` frames at `rate` per second (0: all at once), the first due at `start_ns`.
    pub fn new(rate: u64, total: u64, start_ns: u64) -> Pacer {
        Pacer {
            rate,
            start_ns,
            released: 0,
            total,
        }
    }

    /// Frames due at `now_ns` and not yet released.
    pub fn due(&self, now_ns: u64) -> u64 {
        if now_ns < self.start_ns {
            return 0;
        }
        let by_now = if self.rate == 0 {
            self.total
        } else {
            let elapsed = u128::from(now_ns - self.start_ns);
            let k = elapsed * u128::from(self.rate) / 1_000_000_000 + 1;
            u64::try_from(k).unwrap_or(u64::MAX).min(self.total)
        };
        by_now.saturating_sub(self.released)
    }

    /// Marks `n` more frames as sent.
    pub fn release(&mut self, n: u64) {
        self.released = (self.released + n).min(self.total);
    }

    pub fn released(&self) -> u64 {
        self.released
    }

    pub fn done(&self) -> bool {
        self.released >= self.total
    }
}

/// What a run did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    pub sent: u64,
    pub elapsed: Duration,
    /// The most frames that were due at once beyond one burst: how far behind the schedule
    /// the generator ever fell (0: every frame left in its own slot or with the few just due;
    /// always 0 at full speed, which has no schedule).
    pub largest_backlog: u64,
    /// Times the transmit ring had no room and the generator waited for completions.
    pub ring_full_waits: u64,
    /// Descriptors the kernel refused (filled in by [`run`] from the port's counters).
    pub invalid_descs: u64,
    /// The port refused the frame for good (too long, device gone): the run stopped early.
    pub refused: bool,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "sent {} elapsed_s {:.6} largest_backlog {} ring_full_waits {} invalid_descs {}",
            self.sent,
            self.elapsed.as_secs_f64(),
            self.largest_backlog,
            self.ring_full_waits,
            self.invalid_descs
        )
    }
}

/// Sends `frame` on `port` as `pacer` schedules it, at most `burst` frames per kick, until
/// the pacer is done, `stop` is set or `deadline` passes. `clock` gives nanoseconds since
/// some fixed start.
pub fn send_paced(
    port: &mut dyn Port,
    frame: &[u8],
    pacer: &mut Pacer,
    burst: u64,
    stop: &AtomicBool,
    deadline: Option<u64>,
    clock: &mut dyn FnMut() -> u64,
) -> Report {
    let burst = burst.max(1);
    let t0 = clock();
    let mut rep = Report::default();
    while !pacer.done() && !stop.load(Ordering::Relaxed) {
        let now = clock();
        if deadline.is_some_and(|d| now >= d) {
            break;
        }
        let due = pacer.due(now);
        if due == 0 {
            std::hint::spin_loop();
            continue;
        }
        if pacer.rate > 0 {
            rep.largest_backlog = rep.largest_backlog.max(due.saturating_sub(burst));
        }
        let mut queued = 0;
        let mut refused = false;
        while queued < due.min(burst) {
            match port.tx(frame) {
                TxVerdict::Queued => queued += 1,
                // The ring is full until the kernel completes what it holds: kick and retry.
                TxVerdict::RingFull => {
                    rep.ring_full_waits += 1;
                    break;
                }
                // Too long for the port, or the device is gone: retrying cannot help.
                TxVerdict::TooBig | TxVerdict::DeviceError => {
                    refused = true;
                    break;
                }
            }
        }
        port.flush();
        pacer.release(queued);
        if refused {
            rep.refused = true;
            break;
        }
    }
    rep.sent = pacer.released();
    rep.elapsed = Duration::from_nanos(clock().saturating_sub(t0));
    rep
}

/// Opens the port, sends, prints the report.
pub fn run(args: &Args) -> Result<Report, String> {
    let xdp_mode: XdpMode = args
        .xdp_mode
        .parse()
        .map_err(|e: PortError| e.to_string())?;
    if !args.verbose {
        silence_libxdp();
    }
    let frame = PacketBuilder::udp4(
        args.eth_src,
        args.eth_dst,
        args.ip_src,
        args.ip_dst,
        args.sport,
        args.dport,
    )
    .payload_len(args.payload)
    .build();
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, stop.clone()).map_err(|e| e.to_string())?;
    }
    let mut cfg = AfXdpConfig::new(&args.dev);
    cfg.xdp_mode = xdp_mode;
    cfg.zero_copy = false;
    cfg.tx_only = true;
    cfg.mtu = args.mtu;
    if frame.len() > cfg.max_frame_len() {
        return Err(format!(
            "a {}-byte frame is longer than the port carries ({} bytes); set --mtu",
            frame.len(),
            cfg.max_frame_len()
        ));
    }
    let seconds = args
        .seconds
        .map(|s| Duration::try_from_secs_f64(s).map_err(|e| format!("--seconds {s}: {e}")))
        .transpose()?;
    let mut port = AfXdpPort::open(&cfg).map_err(|e| e.to_string())?;
    let origin = Instant::now();
    let mut clock = || origin.elapsed().as_nanos() as u64;
    let deadline = seconds.map(|d| clock().saturating_add(d.as_nanos() as u64));
    let mut pacer = Pacer::new(args.rate, args.count, clock());
    let mut rep = send_paced(
        &mut port,
        &frame,
        &mut pacer,
        u64::from(args.burst),
        &stop,
        deadline,
        &mut clock,
    );
    // Let the last kicks complete before the socket closes.
    port.flush();
    rep.invalid_descs = port.stats().invalid_descs;
    println!("{rep}");
    if rep.refused {
        return Err(format!(
            "{}: the port refused the frame after {} were sent",
            args.dev, rep.sent
        ));
    }
    let _ = std::io::stdout().flush();
    Ok(rep)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::port::{PortStats, RxFrames};
    use std::os::fd::RawFd;

    #[test]
    fn frames_are_due_one_per_interval() {
        // 100 kpps: one frame every 10 us, the first at the start.
        let p = Pacer::new(100_000, 1_000, 5_000);
        assert_eq!(p.due(4_999), 0);
        assert_eq!(p.due(5_000), 1);
        assert_eq!(p.due(5_000 + 9_999), 1);
        assert_eq!(p.due(5_000 + 10_000), 2);
        assert_eq!(p.due(5_000 + 1_000_000), 101);
        // Never more than the total.
        assert_eq!(p.due(u64::MAX), 1_000);
    }

    #[test]
    fn released_frames_are_not_due_again() {
        let mut p = Pacer::new(1_000, 10, 0);
        assert_eq!(p.due(2_500_000), 3);
        p.release(3);
        assert_eq!(p.due(2_500_000), 0);
        assert_eq!(p.due(3_000_000), 1);
        p.release(100);
        assert!(p.done());
        assert_eq!(p.released(), 10);
    }

    #[test]
    fn full_speed_releases_everything_at_once() {
        let p = Pacer::new(0, 500, 7);
        assert_eq!(p.due(7), 500);
    }

    /// A port that records when each frame was queued (by the fake clock) and refuses frames
    /// when its ring of `room` slots is full, until flushed.
    struct Recorder {
        now: Arc<std::sync::atomic::AtomicU64>,
        at: Vec<u64>,
        room: usize,
        queued: usize,
        kicks: usize,
    }

    impl Port for Recorder {
        fn name(&self) -> &str {
            "rec"
        }
        fn rx_burst(&mut self, _f: &mut dyn FnMut(&mut RxFrames<'_>)) -> usize {
            0
        }
        fn tx(&mut self, _frame: &[u8]) -> TxVerdict {
            if self.queued == self.room {
                return TxVerdict::RingFull;
            }
            self.queued += 1;
            self.at.push(self.now.load(Ordering::Relaxed));
            TxVerdict::Queued
        }
        fn flush(&mut self) {
            self.kicks += 1;
            self.queued = 0;
        }
        fn poll_fds(&self) -> Vec<RawFd> {
            Vec::new()
        }
        fn stats(&self) -> PortStats {
            PortStats::default()
        }
    }

    fn recorder(room: usize) -> (Recorder, Arc<std::sync::atomic::AtomicU64>) {
        let now = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let r = Recorder {
            now: now.clone(),
            at: Vec::new(),
            room,
            queued: 0,
            kicks: 0,
        };
        (r, now)
    }

    #[test]
    fn paced_frames_leave_evenly_spread() {
        let (mut port, now) = recorder(64);
        let mut pacer = Pacer::new(200_000, 1_000, 0);
        // Each clock read advances 1 us.
        let n2 = now.clone();
        let mut clock = move || n2.fetch_add(1_000, Ordering::Relaxed) + 1_000;
        let stop = AtomicBool::new(false);
        let rep = send_paced(&mut port, &[0; 60], &mut pacer, 32, &stop, None, &mut clock);
        assert_eq!(rep.sent, 1_000);
        assert_eq!(port.at.len(), 1_000);
        assert_eq!(rep.largest_backlog, 0);
        // 200 kpps: 5 us apart (after the first, sent at the first clock read past the start).
        for w in port.at.windows(2).skip(1) {
            let gap = w[1] - w[0];
            assert!((4_000..=6_000).contains(&gap), "gap {gap} ns");
        }
        // 1,000 frames at 200 kpps take 5 ms.
        let e = rep.elapsed.as_nanos() as u64;
        assert!((4_900_000..=5_100_000).contains(&e), "elapsed {e}");
    }

    #[test]
    fn a_late_generator_catches_up_in_bursts_and_says_how_far_behind_it_was() {
        let (mut port, now) = recorder(1 << 20);
        let mut pacer = Pacer::new(1_000_000, 500, 0);
        let n2 = now.clone();
        let mut first = true;
        // The first read starts the clock at 0; then it jumps 100 us (100 frames late) and
        // afterwards advances 10 ns per read.
        let mut clock = move || {
            if first {
                first = false;
                return 0;
            }
            let t = n2.load(Ordering::Relaxed);
            let t = if t == 0 { 100_000 } else { t + 10 };
            n2.store(t, Ordering::Relaxed);
            t
        };
        let stop = AtomicBool::new(false);
        let rep = send_paced(&mut port, &[0; 60], &mut pacer, 32, &stop, None, &mut clock);
        assert_eq!(rep.sent, 500);
        // 101 frames were due at 100 us: one burst of 32 took 69 beyond it.
        assert_eq!(rep.largest_backlog, 101 - 32);
        // No kick carried more than one burst.
        let mut per_time = std::collections::HashMap::new();
        for t in &port.at {
            *per_time.entry(*t).or_insert(0) += 1;
        }
        assert!(per_time.values().all(|&n| n <= 32));
    }

    #[test]
    fn a_full_ring_waits_for_the_kick_and_loses_nothing() {
        let (mut port, now) = recorder(8);
        let mut pacer = Pacer::new(0, 100, 0);
        let n2 = now.clone();
        let mut clock = move || n2.fetch_add(1, Ordering::Relaxed);
        let stop = AtomicBool::new(false);
        let rep = send_paced(&mut port, &[0; 60], &mut pacer, 32, &stop, None, &mut clock);
        assert_eq!(rep.sent, 100);
        assert_eq!(rep.largest_backlog, 0, "full speed has no schedule");
        assert_eq!(port.at.len(), 100);
        assert!(rep.ring_full_waits > 0);
        assert!(port.kicks >= 100 / 8);
    }

    #[test]
    fn a_frame_the_port_refuses_for_good_stops_the_run() {
        struct Refuser(u32);
        impl Port for Refuser {
            fn name(&self) -> &str {
                "refuser"
            }
            fn rx_burst(&mut self, _f: &mut dyn FnMut(&mut RxFrames<'_>)) -> usize {
                0
            }
            fn tx(&mut self, _frame: &[u8]) -> TxVerdict {
                // Three frames go, then the device is gone.
                if self.0 < 3 {
                    self.0 += 1;
                    TxVerdict::Queued
                } else {
                    TxVerdict::DeviceError
                }
            }
            fn flush(&mut self) {}
            fn poll_fds(&self) -> Vec<RawFd> {
                Vec::new()
            }
            fn stats(&self) -> PortStats {
                PortStats::default()
            }
        }
        let mut pacer = Pacer::new(0, 1_000, 0);
        let mut t = 0;
        let mut clock = move || {
            t += 1;
            t
        };
        let stop = AtomicBool::new(false);
        let rep = send_paced(
            &mut Refuser(0),
            &[0; 60],
            &mut pacer,
            32,
            &stop,
            None,
            &mut clock,
        );
        assert!(rep.refused);
        assert_eq!(rep.sent, 3);
    }

    #[test]
    fn the_deadline_stops_a_run_short() {
        let (mut port, now) = recorder(64);
        let mut pacer = Pacer::new(1_000, 1_000_000, 0);
        let n2 = now.clone();
        let mut clock = move || n2.fetch_add(100_000, Ordering::Relaxed);
        let stop = AtomicBool::new(false);
        let rep = send_paced(
            &mut port,
            &[0; 60],
            &mut pacer,
            32,
            &stop,
            Some(10_000_000),
            &mut clock,
        );
        // 1 kpps for 10 ms: about 10 frames, certainly not the million asked for.
        assert!((9..=12).contains(&rep.sent), "sent {}", rep.sent);
    }

    #[test]
    fn macs_parse_and_bad_ones_are_refused() {
        assert_eq!(
            parse_mac("02:00:0a:ff:00:01").unwrap(),
            [2, 0, 10, 255, 0, 1]
        );
        assert!(parse_mac("02:00:0a:ff:00").is_err());
        assert!(parse_mac("02:00:0a:ff:00:01:02").is_err());
        assert!(parse_mac("02:00:0a:ff:00:zz").is_err());
    }
}
