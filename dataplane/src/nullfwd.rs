//! The null forwarder behind `xvs-nullfwd`: forwards every frame received on one port to
//! another with no switching at all, through the same port code the switch uses. It is the I/O
//! ceiling the switch is measured against, so it must stay free of any per-frame work beyond
//! receive, copy and transmit.
//!
//! Ports are interface names (AF_XDP) or `tap:NAME` (a TAP device). Leftover XDP programs on
//! the AF_XDP interfaces are removed at start. Counters are printed at exit (SIGINT, SIGTERM or
//! after `--duration`), one line per port:
//! `port NAME rx_packets=.. rx_bytes=.. tx_packets=.. tx_bytes=.. rx_dropped=.. tx_dropped=.. invalid_descs=..`

use crate::port::afxdp::{
    detach_xdp_programs, silence_libxdp, AfXdpConfig, AfXdpPort, XdpMode, DEFAULT_FRAME_COUNT,
};
use crate::port::tap::TapPort;
use crate::port::{Port, PortError};
use clap::{Parser, ValueEnum};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Mode {
    /// Spin on the rings.
    Poll,
    /// Sleep on the sockets' file descriptors when idle.
    Interrupt,
}

#[derive(Parser)]
#[command(
    name = "xvs-nullfwd",
    about = "Null AF_XDP forwarder (I/O ceiling for benchmarks)"
)]
pub struct Args {
    /// Receiving port: interface name, or tap:NAME.
    #[arg(long = "in")]
    pub input: String,
    /// Transmitting port: interface name, or tap:NAME.
    #[arg(long = "out")]
    pub output: String,
    /// Also forward from --out to --in.
    #[arg(long)]
    pub bidir: bool,
    #[arg(long, value_enum, default_value = "poll")]
    pub mode: Mode,
    /// auto, native or generic.
    #[arg(long = "xdp-mode", default_value = "auto")]
    pub xdp_mode: String,
    /// Do not try zero-copy binding.
    #[arg(long = "no-zero-copy")]
    pub no_zero_copy: bool,
    /// UMEM chunks per queue (power of two).
    #[arg(long, default_value_t = DEFAULT_FRAME_COUNT)]
    pub frames: u32,
    /// Queue ids to bind on AF_XDP ports (comma separated).
    #[arg(long, default_value = "0", value_delimiter = ',')]
    pub queues: Vec<u32>,
    /// Stop after this many seconds.
    #[arg(long)]
    pub duration: Option<f64>,
    /// Keep libxdp's and libbpf's own messages on stderr.
    #[arg(long)]
    pub verbose: bool,
}

fn open_port(spec: &str, args: &Args) -> Result<Box<dyn Port>, PortError> {
    if let Some(name) = spec.strip_prefix("tap:") {
        let p = TapPort::open(name)?;
        println!("port {name}: tap");
        return Ok(Box::new(p));
    }
    let removed = detach_xdp_programs(spec)?;
    if removed > 0 {
        println!("port {spec}: removed {removed} leftover xdp program(s)");
    }
    let mut cfg = AfXdpConfig::new(spec);
    cfg.xdp_mode = args.xdp_mode.parse()?;
    cfg.zero_copy = !args.no_zero_copy;
    cfg.frame_count = args.frames;
    cfg.queues = args.queues.clone();
    let p = AfXdpPort::open(&cfg)?;
    println!(
        "port {spec}: afxdp xdp-mode {} zero-copy {} queues {:?}",
        p.mode(),
        if p.zero_copy() { "on" } else { "off" },
        p.queue_ids()
    );
    Ok(Box::new(p))
}

fn forward(src: &mut dyn Port, dst: &mut dyn Port) -> usize {
    src.rx_burst(&mut |frames| {
        for f in frames.iter() {
            // Drops are counted by the port; nothing else to do with the verdict here.
            let _ = dst.tx(f.data());
        }
    })
}

/// Opens the ports, forwards until a signal or the deadline, prints the counters.
pub fn run(args: &Args) -> Result<(), String> {
    // Validate before touching any interface.
    let _: XdpMode = args
        .xdp_mode
        .parse()
        .map_err(|e: PortError| e.to_string())?;
    if !args.verbose {
        silence_libxdp();
    }
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, stop.clone()).map_err(|e| e.to_string())?;
    }
    let mut a = open_port(&args.input, args).map_err(|e| e.to_string())?;
    let mut b = open_port(&args.output, args).map_err(|e| e.to_string())?;

    let mut poll = Poll::new().map_err(|e| e.to_string())?;
    let mut events = Events::with_capacity(16);
    if matches!(args.mode, Mode::Interrupt) {
        for (i, fd) in a.poll_fds().into_iter().chain(b.poll_fds()).enumerate() {
            poll.registry()
                .register(&mut SourceFd(&fd), Token(i), Interest::READABLE)
                .map_err(|e| e.to_string())?;
        }
    }
    println!("forwarding");
    let _ = std::io::stdout().flush();

    let deadline = args
        .duration
        .map(|s| Instant::now() + Duration::from_secs_f64(s.max(0.0)));
    while !stop.load(Ordering::Relaxed) {
        if deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        let mut moved = forward(&mut *a, &mut *b);
        if args.bidir {
            moved += forward(&mut *b, &mut *a);
        }
        a.flush();
        b.flush();
        if moved == 0 {
            match args.mode {
                Mode::Poll => std::hint::spin_loop(),
                Mode::Interrupt => {
                    // Bounded so a signal or the deadline is noticed promptly. Interrupted
                    // waits (a signal arrived) just loop around.
                    let _ = poll.poll(&mut events, Some(Duration::from_millis(100)));
                }
            }
        }
    }
    for p in [&a, &b] {
        let s = p.stats();
        println!(
            "port {} rx_packets={} rx_bytes={} tx_packets={} tx_bytes={} rx_dropped={} tx_dropped={} invalid_descs={}",
            p.name(),
            s.rx_packets,
            s.rx_bytes,
            s.tx_packets,
            s.tx_bytes,
            s.rx_dropped,
            s.tx_dropped(),
            s.invalid_descs
        );
    }
    let _ = std::io::stdout().flush();
    Ok(())
}
