//! `xvs run`: the switch daemon in the foreground.
//!
//! Loads the configuration (nothing starts unless all of it, flow files included, is good),
//! removes XDP programs a previous run may have left on its AF_XDP interfaces, opens the ports,
//! starts the datapath threads and serves the control socket until SIGTERM or SIGINT; then it
//! stops the threads, drops the ports (detaching their XDP programs), removes the socket and
//! exits 0.
//!
//! Datapath threads own their ports (round-robin by datapath port number) and their flow cache.
//! They poll in bursts, busy (`mode = "poll"`) or sleeping on the ports' descriptors when a poll
//! finds nothing (`mode = "interrupt"`, woken by frames, by requests, or after 100 ms; while
//! frames stream in short of a full batch, an interrupt-mode thread also sleeps `coalesce_us`
//! between polls, so one wakeup serves several frames). Control
//! requests reach them as closures over a channel that they drain between polls, so nothing on
//! the per-frame path takes a lock. The main thread accepts control connections (each served on
//! a thread of its own, so a slow peer blocks nobody) and runs the 1 s housekeeping (flow and
//! MAC expiry, a bounded conntrack sweep); each datapath thread drops its own megaflows idle
//! for 10 s.
//!
//! This module owns the threads, the clock (nanoseconds since the daemon started), signals and
//! the server side of every control verb.

use crate::config::{self, Config, PortType, PortVlan, Trunks};
use crate::control::{self, Reply, Request, Server};
use crate::datapath::{Datapath, DatapathStats};
use crate::dpflow::format_megaflow;
use crate::hooks::{CaptureSlot, HookedPort, Inbox, ProxyPort};
use crate::pcap::PcapWriter;
use crate::port::{Port, PortStats};
use crate::setup;
use crate::switch::{Attachment, Switch};
use crossbeam::channel::{self, Receiver, Sender};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};
use pipeline::cache::{CacheStats, FlowCache};
use pipeline::ct::Nanos;
use pipeline::engine::EngineStats;
use pipeline::flow::format::{
    format_flow, format_flow_stats, format_match, FlowStats, FormatOptions,
};
use pipeline::flow::parse::{parse_flow_mod, parse_flows, parse_match, FlowModKind, ParseContext};
use pipeline::flow::{Match, PortNames};
use pipeline::key::{loc, FlowKey, FRAG_ANY, FRAG_LATER, PACKET_WORD};
use pipeline::odp::DropReason;
use pipeline::table::{FlowFilter, FlowMod};
use std::fmt::Write as _;
use std::io::Write as _;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const SEC: Nanos = 1_000_000_000;
/// Megaflows unused this long are removed (Open vSwitch's default idle time).
pub const MEGAFLOW_IDLE: Nanos = 10 * SEC;
/// Longest sleep of an interrupt-mode thread, so its housekeeping still runs.
const MAX_SLEEP: Duration = Duration::from_millis(100);
/// How stale OpenFlow rules' counters may be while traffic flows (see
/// [`Datapath::set_rule_stats_interval`]).
const RULE_STATS_INTERVAL: Nanos = 1_000_000;
/// Timer slack of a coalescing datapath thread, nanoseconds.
const COALESCE_SLACK_NS: std::ffi::c_ulong = 2_000;
/// Connection slots examined per housekeeping tick.
const CT_SWEEP_BUDGET: usize = 65_536;
/// How long a control request waits for the datapath threads' answers.
const THREAD_REPLY_TIMEOUT: Duration = Duration::from_secs(2);
const WAKER: Token = Token(usize::MAX);
/// Control connections served at once.
const MAX_CONNECTIONS: usize = 32;

/// Nanoseconds since the daemon started (monotonic). A read is one `clock_gettime` and a
/// multiply-add: through `Instant`, each of the datapath loop's per-poll readings also paid a
/// subtraction with carry handling and a 128-bit conversion (3% of a polling thread's
/// samples at full speed).
#[derive(Clone, Copy)]
pub struct Clock {
    start: Nanos,
}

impl Clock {
    pub fn new() -> Clock {
        Clock {
            start: monotonic_ns(),
        }
    }
    #[inline]
    pub fn now(&self) -> Nanos {
        monotonic_ns().saturating_sub(self.start)
    }
}

/// `CLOCK_MONOTONIC` in nanoseconds (the clock `Instant` reads).
#[inline]
fn monotonic_ns() -> Nanos {
    let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .expect("CLOCK_MONOTONIC is always readable");
    t.tv_sec() as Nanos * 1_000_000_000 + t.tv_nsec() as Nanos
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error(transparent)]
    Setup(#[from] setup::SetupError),
    #[error(transparent)]
    Control(#[from] control::ControlError),
    #[error("{0}")]
    Os(String),
}

/// Everything a datapath thread owns.
pub struct Worker {
    pub id: usize,
    pub dp: Datapath,
    /// Datapath ports this thread receives from.
    pub owned: Vec<u32>,
    pub cpu: Option<usize>,
}

type Query = Box<dyn FnOnce(&mut Worker, &Switch, Nanos) + Send>;

struct ThreadHandle {
    tx: Sender<Query>,
    waker: Option<Arc<Waker>>,
    owned: Vec<u32>,
    cpu: Option<usize>,
}

/// The running daemon's shared state, as the control verbs see it.
pub struct State {
    pub cfg: Config,
    pub sw: Arc<Switch>,
    pub ct: Arc<conntrack::Tracker>,
    pub clock: Clock,
    pub captures: Vec<Arc<CaptureSlot>>,
    threads: Vec<ThreadHandle>,
    stop: Arc<AtomicBool>,
}

fn pin(cpu: usize) -> Result<(), String> {
    let mut set = nix::sched::CpuSet::new();
    set.set(cpu).map_err(|e| format!("cpu {cpu}: {e}"))?;
    nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set)
        .map_err(|e| format!("pinning to cpu {cpu}: {e}"))
}

fn worker_loop(
    mut w: Worker,
    sw: Arc<Switch>,
    clock: Clock,
    rx: Receiver<Query>,
    mut poll: Option<Poll>,
    coalesce: Option<Duration>,
    stop: Arc<AtomicBool>,
) {
    if let Some(cpu) = w.cpu {
        if let Err(e) = pin(cpu) {
            eprintln!("xvs: datapath thread {}: {e}", w.id);
        }
    }
    if coalesce.is_some() {
        // The default slack (50 us for normal threads) would stretch every coalescing wait by
        // up to that much; the wait is the latency budget, so keep it close to what was asked.
        if let Err(e) = nix::sys::prctl::set_timerslack(COALESCE_SLACK_NS) {
            eprintln!("xvs: datapath thread {}: timer slack: {e}", w.id);
        }
    }
    let mut events = Events::with_capacity(64);
    let mut last_expiry = clock.now();
    // One clock read per poll: the end of a poll (or of a sleep) is the start of the next.
    let mut t0 = clock.now();
    let mut last_n = 0;
    // The wait for events just before this poll ended by its timeout.
    let mut timed_out = false;
    while !stop.load(Ordering::Relaxed) {
        let now = t0;
        let n = w.dp.poll_once(&sw, now);
        if n > 0 && timed_out {
            w.dp.stats.timeouts_with_frames += 1;
        }
        timed_out = false;
        let streaming = n > 0 && last_n > 0;
        last_n = n;
        let mut t_end = clock.now();
        let spent = t_end.saturating_sub(t0);
        if n > 0 {
            w.dp.stats.busy_ns += spent;
            w.dp.stats.busy_max_ns = w.dp.stats.busy_max_ns.max(spent);
        } else {
            w.dp.stats.idle_ns += spent;
        }
        // Asked first for the same reason as the port inboxes (see `HookedPort::flush`): an
        // empty channel's `try_recv` fences, its `is_empty` only loads.
        while !rx.is_empty() {
            let Ok(q) = rx.try_recv() else { break };
            q(&mut w, &sw, clock.now());
            t_end = clock.now();
        }
        if now >= last_expiry + SEC {
            w.dp.engine.end_batch();
            w.dp.engine.cache.expire(now.saturating_sub(MEGAFLOW_IDLE));
            last_expiry = now;
        }
        t0 = t_end;
        if n == 0 {
            if let Some(p) = poll.as_mut() {
                // Counters must not wait out a sleep.
                w.dp.credit_rule_stats(now);
                let _ = p.poll(&mut events, Some(MAX_SLEEP));
                t0 = clock.now();
                let st = &mut w.dp.stats;
                st.idle_ns += t0.saturating_sub(t_end);
                st.sleeps += 1;
                if events.is_empty() {
                    st.sleep_timeouts += 1;
                    timed_out = true;
                }
            }
        } else if let Some(wait) = coalesce.filter(|_| streaming && n < pipeline::BATCH_SIZE) {
            // Traffic is flowing (this poll and the one before found frames) but did not fill a
            // batch: polling again at once would find a frame or two and pay a wakeup and a
            // transmit kick for them. Sleeping a short fixed time lets the rings gather the next
            // several frames instead, so the per-frame cost of waking, polling and kicking
            // shrinks as the rate grows, for at most `wait` of added latency. A lone frame
            // (a ping on an idle switch, whose reply may already be waiting) is not delayed,
            // and a full batch means the thread is behind: both poll again at once.
            std::thread::sleep(wait);
            t0 = clock.now();
            let slept = t0.saturating_sub(t_end);
            let st = &mut w.dp.stats;
            st.idle_ns += slept;
            st.coalesce_waits += 1;
            st.coalesce_ns += slept;
            st.coalesce_max_ns = st.coalesce_max_ns.max(slept);
        }
    }
    w.dp.engine.end_batch();
    // Dropping the datapath closes the ports (AF_XDP ports detach their programs).
}

impl State {
    /// The control verbs over a built switch with no datapath threads and no ports open: what
    /// tests and fuzzing use to drive the dispatcher in process. Verbs that ask the threads
    /// answer from none; `capture` waits for frames that never come, so callers avoid it.
    pub fn offline(cfg: Config, built: &setup::Built) -> Arc<State> {
        Arc::new(State {
            captures: (0..built.ports.len()).map(|_| Arc::default()).collect(),
            cfg,
            sw: built.switch.clone(),
            ct: built.conntrack.clone(),
            clock: Clock::new(),
            threads: Vec::new(),
            stop: Arc::new(AtomicBool::new(false)),
        })
    }

    /// Runs `f` on every datapath thread and collects the answers, in thread order.
    fn ask<T: Send + 'static>(
        &self,
        f: impl Fn(&mut Worker, &Switch, Nanos) -> T + Send + Sync + 'static,
    ) -> Result<Vec<T>, String> {
        let f = Arc::new(f);
        let mut rxs = Vec::new();
        for t in &self.threads {
            let (tx, rx) = channel::bounded(1);
            let f = f.clone();
            let q: Query = Box::new(move |w, sw, now| {
                let _ = tx.send(f(w, sw, now));
            });
            t.tx.send(q).map_err(|_| "a datapath thread has stopped")?;
            if let Some(wk) = &t.waker {
                let _ = wk.wake();
            }
            rxs.push(rx);
        }
        rxs.iter()
            .map(|rx| {
                rx.recv_timeout(THREAD_REPLY_TIMEOUT)
                    .map_err(|_| "a datapath thread did not answer".to_string())
            })
            .collect()
    }

    fn bridge_names(&self, br: &str) -> Result<(&crate::switch::Bridge, PortNames), String> {
        let b = self.sw.bridge(br).map_err(|e| e.to_string())?;
        let names = self
            .cfg
            .bridge(br)
            .map(|c| c.port_names())
            .unwrap_or_else(|| b.port_names());
        Ok((b, names))
    }

    fn dp_port_name(&self, dp: u32) -> Option<String> {
        self.sw.dp_port_name(dp).map(str::to_string)
    }

    /// Handles one request. Verbs that wait (capture) return a deferred reply.
    pub fn handle(self: &Arc<Self>, req: &Request) -> Handled {
        let a = &req.args;
        let r = match req.verb.as_str() {
            "show" => Ok(self.show()),
            "add-flows" | "replace-flows" => match a.as_slice() {
                [br, file, text] => self.load_flows(br, file, text, req.verb == "replace-flows"),
                _ => Err("usage: add-flows|replace-flows BRIDGE FILE-NAME TEXT".into()),
            },
            "del-flows" => match a.as_slice() {
                [br] => self.del_flows(br, None),
                [br, m] => self.del_flows(br, Some(m)),
                _ => Err("usage: del-flows BRIDGE [MATCH]".into()),
            },
            "dump-flows" => match a.as_slice() {
                [br] => self.dump_flows(br),
                _ => Err("usage: dump-flows BRIDGE".into()),
            },
            "tnl-neigh-show" => Ok(self.sw.format_neigh_show()),
            "fdb-show" => match a.as_slice() {
                [br] => self
                    .sw
                    .bridge(br)
                    .map_err(|e| e.to_string())
                    .map(|b| b.fdb.format_show(self.clock.now(), &ofport_name)),
                _ => Err("usage: fdb-show BRIDGE".into()),
            },
            "dump-conntrack" => parse_zone(a.first()).map(|z| {
                let mut s = self.ct.dump(z).join("\n");
                if !s.is_empty() {
                    s.push('\n');
                }
                s
            }),
            "flush-conntrack" => self.flush_conntrack(a),
            "dump-dp-flows" => self.dump_dp_flows(),
            "pmd-stats-show" => self.pmd_stats(),
            "port-stats" => self.port_stats(a.first().map(String::as_str)),
            "trace" => self.trace(a),
            "capture" => return self.capture(a),
            other => Err(format!("unknown verb \"{other}\"")),
        };
        Handled::Now(match r {
            Ok(s) => Reply::ok(s),
            Err(e) => Reply::err(if e.ends_with('\n') { e } else { e + "\n" }),
        })
    }

    fn show(&self) -> String {
        let mut s = String::new();
        let d = &self.cfg.datapath;
        let _ = writeln!(
            s,
            "xvs: {} datapath thread(s), mode {}",
            d.threads,
            match d.mode {
                config::DatapathMode::Poll => "poll",
                config::DatapathMode::Interrupt => "interrupt",
            }
        );
        for b in &self.cfg.bridges {
            let _ = writeln!(s, "    Bridge {}", b.name);
            let fail = match b.fail_mode {
                config::FailMode::Standalone => "standalone",
                config::FailMode::Secure => "secure",
            };
            let _ = writeln!(s, "        fail_mode: {fail}");
            if let Ok(br) = self.sw.bridge(&b.name) {
                let _ = writeln!(s, "        flows: {}", br.tables.snapshot().n_rules());
            }
            for p in &b.ports {
                if p.implicit {
                    continue;
                }
                let _ = writeln!(s, "        Port {}", p.name);
                let num = if p.is_local() {
                    "LOCAL".to_string()
                } else {
                    p.ofport.to_string()
                };
                let _ = writeln!(s, "            ofport: {num}");
                let _ = writeln!(s, "            type: {}", p.kind.type_name());
                if let Some(dp) = self.sw.dp_port_by_name(&p.name) {
                    let _ = writeln!(s, "            datapath port: {dp}");
                }
                match &p.kind {
                    PortType::Afxdp { ifname, queues, .. } => {
                        let _ = writeln!(
                            s,
                            "            options: {{ifname={ifname}, queues={queues}}}"
                        );
                    }
                    PortType::Internal { ifname, .. } => {
                        let _ = writeln!(s, "            options: {{ifname={ifname}}}");
                    }
                    PortType::Patch { peer } => {
                        let _ = writeln!(s, "            options: {{peer={peer}}}");
                    }
                    _ => {}
                }
                let list = |t: &Trunks| match t {
                    Trunks::All => "all".to_string(),
                    Trunks::Only(v) => format!("{v:?}"),
                };
                match &p.vlan {
                    PortVlan::Access(t) => {
                        let _ = writeln!(s, "            tag: {t}");
                    }
                    PortVlan::Trunk(Trunks::All) => {}
                    PortVlan::Trunk(t) => {
                        let _ = writeln!(s, "            trunks: {}", list(t));
                    }
                    PortVlan::NativeTagged { tag, trunks } => {
                        let _ = writeln!(
                            s,
                            "            tag: {tag}\n            trunks: {}\n            vlan_mode: native-tagged",
                            list(trunks)
                        );
                    }
                    PortVlan::NativeUntagged { tag, trunks } => {
                        let _ = writeln!(
                            s,
                            "            tag: {tag}\n            trunks: {}\n            vlan_mode: native-untagged",
                            list(trunks)
                        );
                    }
                }
            }
        }
        s
    }

    fn load_flows(
        &self,
        br: &str,
        file: &str,
        text: &str,
        replace: bool,
    ) -> Result<String, String> {
        let (b, names) = self.bridge_names(br)?;
        let specs = parse_flows(text, &ParseContext::with_ports(names)).map_err(|es| {
            es.iter()
                .map(|e| format!("{file}:{e}\n"))
                .collect::<String>()
        })?;
        let now = self.clock.now();
        let r = if replace {
            b.tables.replace_flows(&specs, now)
        } else {
            b.tables.add_flows(&specs, now)
        };
        r.map(|o| format!("{} flow(s) added, {} deleted\n", o.added, o.deleted))
            .map_err(|e| format!("{file}: {e}"))
    }

    fn del_flows(&self, br: &str, m: Option<&String>) -> Result<String, String> {
        let (b, names) = self.bridge_names(br)?;
        let spec = parse_flow_mod(
            m.map_or("", |s| s.as_str()),
            &ParseContext::with_ports(names),
            FlowModKind::Delete,
        )
        .map_err(|e| format!("{e}"))?;
        let o = b
            .tables
            .apply(&[FlowMod::delete(spec, false)], self.clock.now())
            .map_err(|e| e.to_string())?;
        Ok(format!("{} flow(s) deleted\n", o.deleted))
    }

    fn dump_flows(&self, br: &str) -> Result<String, String> {
        let (b, names) = self.bridge_names(br)?;
        // Datapath threads credit their megaflows' counts to the rules at most every
        // millisecond: have them credit what is pending now, so a dump right after traffic
        // counts all of it. A thread that does not answer leaves its counts for later.
        let _ = self.ask(|w, _, now| w.dp.credit_rule_stats(now));
        let now = self.clock.now();
        let mut s = String::new();
        for r in b.tables.dump(&FlowFilter::all()) {
            let st = FlowStats {
                duration_secs: now.saturating_sub(r.created) as f64 / SEC as f64,
                n_packets: r.stats.n_packets(),
                n_bytes: r.stats.n_bytes(),
                idle_age: None,
                hard_age: None,
            };
            let _ = writeln!(
                s,
                " {}",
                format_flow_stats(&r.spec, &st, &names, FormatOptions::default())
            );
        }
        Ok(s)
    }

    fn flush_conntrack(&self, a: &[String]) -> Result<String, String> {
        let mut zone = None;
        let mut tuple = None;
        for x in a {
            if x.starts_with("zone=") {
                zone = parse_zone(Some(x))?;
            } else {
                tuple = Some(parse_ct_tuple(x)?);
            }
        }
        match tuple {
            Some(mut t) => {
                t.zone = zone.unwrap_or(0);
                self.ct
                    .flush_tuple(&t)
                    .map(|()| "1 connection flushed\n".to_string())
                    .map_err(|e| e.to_string())
            }
            None => Ok(format!("{} connection(s) flushed\n", self.ct.flush(zone))),
        }
    }

    fn dump_dp_flows(&self) -> Result<String, String> {
        let parts = self.ask(move |w, sw, now| {
            // Datapath ports, tunnel ports and patch port capture points by name.
            let pn = |p: u32| sw.dp_port_name(p).map(str::to_string);
            let mut s = String::new();
            w.dp.engine.end_batch();
            for (e, mask) in w.dp.engine.cache.iter() {
                let used = if e.packets == 0 {
                    "never".to_string()
                } else {
                    format!("{:.3}s", now.saturating_sub(e.used) as f64 / SEC as f64)
                };
                let _ = writeln!(
                    s,
                    "{}, packets:{}, bytes:{}, used:{}, actions:{}",
                    format_megaflow(&e.key, mask, &pn),
                    e.packets,
                    e.bytes,
                    used,
                    pipeline::odp::format_actions(&e.actions, &pn)
                );
            }
            s
        })?;
        let mut out = String::new();
        let many = parts.len() > 1;
        for (i, p) in parts.into_iter().enumerate() {
            if many {
                let _ = writeln!(out, "datapath thread {i}:");
            }
            out.push_str(&p);
        }
        Ok(out)
    }

    fn pmd_stats(&self) -> Result<String, String> {
        struct T {
            dp: DatapathStats,
            eng: EngineStats,
            cache: CacheStats,
            flows: usize,
            masks: usize,
            umem: Vec<(String, crate::port::afxdp::UmemAccount)>,
        }
        let ts = self.ask(|w, _, _| T {
            dp: w.dp.stats,
            eng: w.dp.engine.stats,
            cache: w.dp.engine.cache.stats,
            flows: w.dp.engine.cache.len(),
            masks: w.dp.engine.cache.mask_count(),
            umem: w.dp.umem_accounts(),
        })?;
        let mut s = String::new();
        for (i, (t, h)) in ts.iter().zip(&self.threads).enumerate() {
            let ports: Vec<String> = h
                .owned
                .iter()
                .filter_map(|p| self.dp_port_name(*p))
                .collect();
            let cpu = h.cpu.map_or("unpinned".to_string(), |c| format!("cpu {c}"));
            let _ = writeln!(
                s,
                "datapath thread {i} ({cpu}), ports: {}:",
                ports.join(" ")
            );
            let total = (t.dp.busy_ns + t.dp.idle_ns).max(1);
            let _ = writeln!(s, "  frames: {}", t.dp.frames);
            for (name, a) in &t.umem {
                let _ = writeln!(
                    s,
                    "  umem {name}: rx chunks {} (lent to the kernel {}, waiting to be lent {}; \
                     fill ring unread {}, bursts finding it nearly dry {}; \
                     rx ring unread {}, most waiting at a poll {}), \
                     tx chunks {} (free {}, in flight {})",
                    a.rx_chunks,
                    a.rx_in_kernel,
                    a.rx_backlog,
                    a.fill_unread,
                    a.fill_dry_bursts,
                    a.rx_unread,
                    a.rx_high,
                    a.tx_chunks,
                    a.tx_free,
                    a.tx_in_flight
                );
            }
            let _ = writeln!(s, "  polls: {} (busy {})", t.dp.polls, t.dp.busy_polls);
            let _ = writeln!(
                s,
                "  frames per busy poll: {:.2}",
                t.dp.frames as f64 / t.dp.busy_polls.max(1) as f64
            );
            let _ = writeln!(
                s,
                "  sleeps: {} (timeouts {}, of which found frames {})",
                t.dp.sleeps, t.dp.sleep_timeouts, t.dp.timeouts_with_frames
            );
            let _ = writeln!(
                s,
                "  coalesce waits: {} (avg {} ns, max {} ns)",
                t.dp.coalesce_waits,
                t.dp.coalesce_ns / t.dp.coalesce_waits.max(1),
                t.dp.coalesce_max_ns
            );
            let _ = writeln!(
                s,
                "  busy ns: {} ({:.2}%, longest poll {} ns)",
                t.dp.busy_ns,
                t.dp.busy_ns as f64 * 100.0 / total as f64,
                t.dp.busy_max_ns
            );
            let _ = writeln!(
                s,
                "  idle ns: {} ({:.2}%)",
                t.dp.idle_ns,
                t.dp.idle_ns as f64 * 100.0 / total as f64
            );
            let _ = writeln!(s, "  megaflow hits: {}", t.cache.hits);
            let _ = writeln!(
                s,
                "  megaflow misses: {} (translations {})",
                t.cache.misses, t.eng.translations
            );
            let _ = writeln!(
                s,
                "  megaflows: {} (masks {}, flushes {}, full {})",
                t.flows, t.masks, t.cache.flushes, t.cache.full
            );
            let _ = writeln!(s, "  recirculations: {}", t.eng.recirculations);
            let _ = writeln!(s, "  tx refused: {}", t.dp.tx_refused);
            let drops: Vec<String> = DropReason::ALL
                .iter()
                .map(|r| format!("{}={}", r.name(), t.eng.drop_count(*r)))
                .collect();
            let _ = writeln!(s, "  drops: {}", drops.join(", "));
        }
        Ok(s)
    }

    fn port_stats(&self, br: Option<&str>) -> Result<String, String> {
        if let Some(b) = br {
            self.sw.bridge(b).map_err(|e| e.to_string())?;
        }
        let per = self.ask(|w, _, _| {
            w.owned
                .iter()
                .filter_map(|&p| w.dp_port_stats(p).map(|s| (p, s)))
                .collect::<Vec<_>>()
        })?;
        let mut stats: Vec<Option<PortStats>> = vec![None; self.sw.dp_ports.len()];
        for (p, st) in per.into_iter().flatten() {
            if let Some(x) = stats.get_mut(p as usize) {
                *x = Some(st);
            }
        }
        let mut s = String::new();
        for b in &self.sw.bridges {
            if br.is_some_and(|x| x != b.name) {
                continue;
            }
            let ports: Vec<_> = b
                .ports
                .values()
                .filter_map(|p| match p.attachment {
                    Attachment::Datapath(dp) => Some((p.ofport, dp)),
                    Attachment::Patch { .. } | Attachment::Tunnel(_) => None,
                })
                .collect();
            let _ = writeln!(s, "{}: {} ports", b.name, ports.len());
            for (ofport, dp) in ports {
                let st = stats
                    .get(dp as usize)
                    .copied()
                    .flatten()
                    .unwrap_or_default();
                let _ = writeln!(
                    s,
                    "  port {:>2}: rx pkts={}, bytes={}, drop={}, errs={}, frame=0, over=0, crc=0",
                    ofport_name(ofport),
                    st.rx_packets,
                    st.rx_bytes,
                    st.rx_dropped,
                    st.invalid_descs
                );
                let _ = writeln!(
                    s,
                    "           tx pkts={}, bytes={}, drop={}, errs={}, coll=0",
                    st.tx_packets,
                    st.tx_bytes,
                    st.tx_ring_full + st.tx_too_big,
                    st.tx_errors
                );
                let _ = writeln!(
                    s,
                    "           tx drops: ring_full={}, too_big={}",
                    st.tx_ring_full, st.tx_too_big
                );
                let _ = writeln!(
                    s,
                    "           rx drops: fill_ring_empty={}, rx_ring_full={}",
                    st.rx_fill_empty, st.rx_ring_full
                );
            }
        }
        Ok(s)
    }

    fn trace(&self, a: &[String]) -> Result<String, String> {
        let usage = "usage: trace BRIDGE FLOW [--ct-next STATE]... [--frame HEX]";
        let (br, rest) = a.split_first().ok_or(usage)?;
        let (b, names) = self.bridge_names(br)?;
        let mut flow = None;
        let mut ct_next = Vec::new();
        let mut frame_hex = None;
        let mut it = rest.iter();
        while let Some(x) = it.next() {
            match x.as_str() {
                "--ct-next" => {
                    let v = it.next().ok_or(usage)?;
                    ct_next.push(pipeline::trace::parse_ct_state(v)?);
                }
                "--frame" => frame_hex = Some(it.next().ok_or(usage)?.clone()),
                _ if flow.is_none() => flow = Some(x.clone()),
                _ => return Err(usage.into()),
            }
        }
        let flow = flow.ok_or(usage)?;
        let m = parse_match(&flow, &ParseContext::with_ports(names.clone()))
            .map_err(|e| format!("{flow}: {e}"))?;
        if m.mask.get(loc::IN_PORT) == 0 {
            return Err("the flow must name in_port".into());
        }
        let ofport = m.value.in_port();
        let port = b
            .ports
            .get(&ofport)
            .ok_or_else(|| format!("bridge {br} has no port {ofport}"))?;
        let dp = match &port.attachment {
            Attachment::Datapath(dp) => *dp,
            // A frame from a tunnel enters by its virtual port; the flow gives the tun_* fields.
            Attachment::Tunnel(t) => t.vport,
            Attachment::Patch { .. } => {
                return Err(format!("in_port {} is a patch port", port.name))
            }
        };
        let frame = match frame_hex {
            Some(h) => parse_hex(&h)?,
            None => pipeline::compose::compose(&m.value, 0),
        };
        let mut meta = FlowKey::ZERO;
        meta.w[..PACKET_WORD].copy_from_slice(&m.value.w[..PACKET_WORD]);
        let view = self.sw.view();
        let mut report =
            pipeline::trace::trace(&view, &frame, dp, &meta, &ct_next, self.clock.now());
        // Passes start from datapath keys (in_port a datapath port); print OpenFlow ports, as
        // the final flows have.
        for p in &mut report.passes {
            if let Some(d) = self.sw.dp_ports.get(p.key.in_port() as usize) {
                p.key.set_in_port(d.ofport);
            }
        }
        let fo = FormatOptions::default();
        let n2 = names.clone();
        let n3 = names.clone();
        let n4 = names.clone();
        let flow_f = move |f: &pipeline::flow::FlowSpec| format_flow(f, &names, fo);
        let action_f = move |x: &pipeline::flow::Action| {
            pipeline::flow::format::format_actions(
                std::slice::from_ref(x),
                &Match::CATCH_ALL,
                &n2,
                fo,
            )
        };
        let key_f = |k: &FlowKey| {
            let m = Match {
                value: *k,
                mask: flow_mask(k),
            };
            format_match(&m, None, &n3, fo)
        };
        let mega_f = |k: &FlowKey, mask: &FlowKey| {
            let m = Match {
                value: k.and(mask),
                mask: *mask,
            };
            format_match(&m, None, &n4, fo)
        };
        let dp_f = |p: u32| self.dp_port_name(p).unwrap_or_else(|| p.to_string());
        Ok(pipeline::trace::format_trace(
            &report,
            &pipeline::trace::TraceFormat {
                flow: &flow_f,
                action: &action_f,
                key: &key_f,
                megaflow: &mega_f,
                dp_port: &dp_f,
            },
        ))
    }

    fn capture(self: &Arc<Self>, a: &[String]) -> Handled {
        let usage = "usage: capture PORT COUNT DURATION-SECONDS\n";
        let [port, count, secs] = a else {
            return Handled::Now(Reply::err(usage));
        };
        let (Ok(count), Ok(secs)) = (count.parse::<usize>(), secs.parse::<f64>()) else {
            return Handled::Now(Reply::err(usage));
        };
        // A port with I/O is captured where it receives and sends; a patch port where the
        // translated walk crosses it (the switch copies those frames into its slot).
        let (slot, patch) = match self.sw.dp_port_by_name(port) {
            Some(dp) => (self.captures[dp as usize].clone(), None),
            None => match self.sw.patch_capture(port) {
                Some(slot) => (slot.clone(), Some(port.clone())),
                None => {
                    let msg = if self.cfg.port(port).is_some() {
                        format!("port {port} cannot be captured (no datapath I/O)\n")
                    } else {
                        format!("no port \"{port}\"\n")
                    };
                    return Handled::Now(Reply::err(msg));
                }
            },
        };
        if slot.active() {
            return Handled::Now(Reply::err(format!(
                "a capture on {port} is already running\n"
            )));
        }
        let st = self.clone();
        Handled::Later(Box::new(move || {
            match &patch {
                Some(name) => {
                    st.sw.start_patch_capture(name, count);
                }
                None => slot.start(count),
            }
            let deadline = Instant::now() + Duration::from_secs_f64(secs.clamp(0.0, 3600.0));
            while Instant::now() < deadline
                && slot.count() < count
                && !st.stop.load(Ordering::Relaxed)
            {
                std::thread::sleep(Duration::from_millis(10));
            }
            let frames = match &patch {
                Some(name) => st.sw.stop_patch_capture(name),
                None => slot.stop(),
            };
            let mut w = match PcapWriter::new(Vec::new()) {
                Ok(w) => w,
                Err(e) => return Reply::err(e.to_string()),
            };
            for f in &frames {
                if let Err(e) = w.write(f.ts_sec, f.ts_usec, &f.data) {
                    return Reply::err(e.to_string());
                }
            }
            Reply {
                ok: true,
                body: w.into_inner(),
            }
        }))
    }
}

impl Worker {
    fn dp_port_stats(&self, p: u32) -> Option<PortStats> {
        self.dp.port_stats().get(p as usize).map(|(_, s)| *s)
    }
}

/// The answer to a request: now, or from work done on another thread.
pub enum Handled {
    Now(Reply),
    Later(Box<dyn FnOnce() -> Reply + Send>),
}

/// OpenFlow port numbers as Open vSwitch prints them.
fn ofport_name(p: u32) -> String {
    match pipeline::flow::parse::special_port_name(p) {
        Some(n) => n.to_string(),
        None => p.to_string(),
    }
}

fn parse_zone(a: Option<&String>) -> Result<Option<u16>, String> {
    match a {
        None => Ok(None),
        Some(s) => s
            .strip_prefix("zone=")
            .and_then(|z| z.parse().ok())
            .map(Some)
            .ok_or_else(|| format!("\"{s}\": expected zone=N")),
    }
}

fn parse_hex(s: &str) -> Result<Vec<u8>, String> {
    let s: String = s
        .chars()
        .filter(|c| !c.is_whitespace() && *c != ':')
        .collect();
    if !s.len().is_multiple_of(2) {
        return Err("--frame: odd number of hex digits".into());
    }
    (0..s.len())
        .step_by(2)
        .map(|i| {
            u8::from_str_radix(&s[i..i + 2], 16).map_err(|_| format!("--frame: bad hex at {i}"))
        })
        .collect()
}

/// A connection tuple in `flush-conntrack` syntax:
/// `ct_nw_src=A,ct_nw_dst=B,ct_nw_proto=P,ct_tp_src=S,ct_tp_dst=D` (`ct_ipv6_*` for IPv6;
/// `icmp_id`, `icmp_type`, `icmp_code` for ICMP).
fn parse_ct_tuple(s: &str) -> Result<conntrack::Tuple, String> {
    use conntrack::Addr;
    let mut t = conntrack::Tuple::ZERO;
    let (mut ty, mut code) = (0u16, 0u16);
    for kv in s.split(',').filter(|x| !x.is_empty()) {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| format!("\"{kv}\": expected FIELD=VALUE"))?;
        let bad = || format!("\"{kv}\": bad value");
        let num = |v: &str| v.parse::<u16>().map_err(|_| bad());
        match k {
            "ct_nw_src" | "ct_ipv6_src" | "ct_nw_dst" | "ct_ipv6_dst" => {
                let ip: std::net::IpAddr = v.parse().map_err(|_| bad())?;
                t.v6 = ip.is_ipv6();
                if k.ends_with("src") {
                    t.src = Addr::from_ip(ip);
                } else {
                    t.dst = Addr::from_ip(ip);
                }
            }
            "ct_nw_proto" => t.proto = v.parse().map_err(|_| bad())?,
            "ct_tp_src" | "icmp_id" => t.sport = num(v)?,
            "ct_tp_dst" => t.dport = num(v)?,
            "icmp_type" => ty = num(v)?,
            "icmp_code" => code = num(v)?,
            _ => return Err(format!("\"{k}\": unknown tuple field")),
        }
    }
    if conntrack::tuple::is_icmp(t.proto) {
        t.dport = (ty << 8) | (code & 0xff);
    }
    if t.proto == 0 {
        return Err("the tuple needs ct_nw_proto".into());
    }
    Ok(t)
}

/// The mask that prints a flow key the way `ofproto/trace` prints its flow: metadata that is
/// set, and every packet field the frame's protocols have.
fn flow_mask(k: &FlowKey) -> FlowKey {
    let mut m = FlowKey::ZERO;
    for w in 0..PACKET_WORD {
        m.w[w] = if k.w[w] != 0 { u64::MAX } else { 0 };
    }
    m.set(loc::RECIRC_ID, 0);
    m.set_all(loc::IN_PORT);
    for l in [loc::DL_SRC, loc::DL_DST, loc::DL_TYPE, loc::VLAN_TCI] {
        m.set_all(l);
    }
    match k.dl_type() {
        0x0800 => {
            for l in [
                loc::NW_SRC,
                loc::NW_DST,
                loc::NW_PROTO,
                loc::NW_TOS,
                loc::NW_TTL,
            ] {
                m.set_all(l);
            }
            m.set(loc::NW_FRAG, (FRAG_ANY | FRAG_LATER) as u128);
        }
        0x86dd => {
            for l in [
                loc::IPV6_SRC,
                loc::IPV6_DST,
                loc::IPV6_LABEL,
                loc::NW_PROTO,
                loc::NW_TOS,
                loc::NW_TTL,
            ] {
                m.set_all(l);
            }
            m.set(loc::NW_FRAG, (FRAG_ANY | FRAG_LATER) as u128);
        }
        0x0806 => {
            for l in [
                loc::ARP_OP,
                loc::NW_SRC,
                loc::NW_DST,
                loc::ARP_SHA,
                loc::ARP_THA,
            ] {
                m.set_all(l);
            }
        }
        _ => {}
    }
    if matches!(k.dl_type(), 0x0800 | 0x86dd) && matches!(k.nw_proto(), 1 | 6 | 17 | 58 | 132) {
        m.set_all(loc::TP_SRC);
        m.set_all(loc::TP_DST);
        if k.nw_proto() == 6 {
            m.set_all(loc::TCP_FLAGS);
        }
    }
    m
}

fn serve_one(state: &Arc<State>, mut stream: UnixStream) {
    let req = match control::accept_request(&mut stream) {
        Ok(r) => r,
        Err(_) => return,
    };
    match state.handle(&req) {
        Handled::Now(r) => {
            let _ = control::write_reply(&mut stream, &r);
        }
        Handled::Later(f) => {
            std::thread::spawn(move || {
                let r = f();
                let _ = control::write_reply(&mut stream, &r);
            });
        }
    }
}

/// Serves one connection on a thread of its own, so a peer slow to send its request (it has
/// [`control::READ_TIMEOUT`]) holds up nobody else. At most [`MAX_CONNECTIONS`] are served at
/// once; beyond that a peer is told the daemon is busy.
fn serve_in_thread(state: &Arc<State>, mut stream: UnixStream, in_flight: &Arc<AtomicUsize>) {
    if in_flight.fetch_add(1, Ordering::AcqRel) >= MAX_CONNECTIONS {
        in_flight.fetch_sub(1, Ordering::AcqRel);
        let _ = stream.set_nonblocking(true);
        let _ = control::write_reply(&mut stream, &Reply::err("busy: too many connections\n"));
        return;
    }
    let (st, n) = (state.clone(), in_flight.clone());
    let spawned = std::thread::Builder::new()
        .name("xvs-ctl".into())
        .spawn(move || {
            serve_one(&st, stream);
            n.fetch_sub(1, Ordering::AcqRel);
        });
    if spawned.is_err() {
        in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Options of `xvs run`.
pub struct RunOptions {
    pub config: PathBuf,
    pub control: PathBuf,
}

/// Runs the daemon until SIGTERM/SIGINT. Returns the process exit code.
pub fn run(opts: &RunOptions) -> i32 {
    match run_inner(opts) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("xvs run: {e}");
            1
        }
    }
}

fn run_inner(opts: &RunOptions) -> Result<(), DaemonError> {
    let cfg = config::load(&opts.config)?;
    let clock = Clock::new();
    let built = setup::build(&cfg, clock.now())?;
    crate::port::afxdp::silence_libxdp();
    for spec in &built.ports {
        if let setup::PortIo::Afxdp(c) = &spec.io {
            match crate::port::afxdp::detach_xdp_programs(&c.ifname) {
                Ok(0) => {}
                Ok(n) => eprintln!("xvs: removed {n} leftover XDP program(s) from {}", c.ifname),
                Err(e) => eprintln!("xvs: {}: {e}", c.ifname),
            }
        }
    }
    let stop = Arc::new(AtomicBool::new(false));
    let term = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(sig, term.clone())
            .map_err(|e| DaemonError::Os(format!("installing a signal handler: {e}")))?;
    }
    let server = Server::bind(&opts.control)?;
    let ports = setup::open_ports(&built.ports)?;

    let nthreads = cfg.datapath.threads.max(1);
    let interrupt = cfg.datapath.mode == config::DatapathMode::Interrupt;
    let coalesce = (interrupt && cfg.datapath.coalesce_us > 0)
        .then(|| Duration::from_micros(u64::from(cfg.datapath.coalesce_us)));
    let n_ports = ports.len();
    let owner = |p: usize| p % nthreads;
    let captures: Vec<Arc<CaptureSlot>> = (0..n_ports).map(|_| Arc::default()).collect();
    let mut polls = Vec::new();
    let mut wakers = Vec::new();
    for _ in 0..nthreads {
        if interrupt {
            let p = Poll::new().map_err(|e| DaemonError::Os(format!("mio: {e}")))?;
            let w = Waker::new(p.registry(), WAKER)
                .map_err(|e| DaemonError::Os(format!("mio waker: {e}")))?;
            wakers.push(Some(Arc::new(w)));
            polls.push(Some(p));
        } else {
            wakers.push(None);
            polls.push(None);
        }
    }
    let inboxes: Vec<Arc<Inbox>> = (0..n_ports)
        .map(|p| Arc::new(Inbox::new(wakers[owner(p)].clone())))
        .collect();
    let names: Vec<String> = built.ports.iter().map(|p| p.name.clone()).collect();
    let mut owned_ports: Vec<Option<Box<dyn Port>>> = ports.into_iter().map(Some).collect();
    let mut threads = Vec::new();
    let mut joins = Vec::new();
    let sw = built.switch.clone();
    for t in 0..nthreads {
        let mut slots: Vec<Box<dyn Port>> = Vec::with_capacity(n_ports);
        let mut owned = Vec::new();
        for p in 0..n_ports {
            if owner(p) == t {
                let inner = owned_ports[p].take().expect("each port has one owner");
                slots.push(Box::new(HookedPort::new(
                    inner,
                    captures[p].clone(),
                    inboxes[p].clone(),
                )));
                owned.push(p as u32);
            } else {
                slots.push(Box::new(ProxyPort::new(&names[p], inboxes[p].clone())));
            }
        }
        let mut poll = polls[t].take();
        if let Some(pl) = poll.as_mut() {
            for (i, fd) in owned
                .iter()
                .flat_map(|&p| slots[p as usize].poll_fds())
                .enumerate()
            {
                pl.registry()
                    .register(&mut SourceFd(&fd), Token(i), Interest::READABLE)
                    .map_err(|e| DaemonError::Os(format!("registering port fd: {e}")))?;
            }
        }
        let cpu = cfg.datapath.cpus.as_ref().and_then(|c| c.get(t).copied());
        let mut dp = Datapath::new(slots, FlowCache::default());
        dp.set_rule_stats_interval(RULE_STATS_INTERVAL);
        let worker = Worker {
            id: t,
            dp,
            owned: owned.clone(),
            cpu,
        };
        let (tx, rx) = channel::unbounded();
        let (sw2, stop2) = (sw.clone(), stop.clone());
        let join = std::thread::Builder::new()
            .name(format!("xvs-dp{t}"))
            .spawn(move || worker_loop(worker, sw2, clock, rx, poll, coalesce, stop2))
            .map_err(|e| DaemonError::Os(format!("spawning a datapath thread: {e}")))?;
        joins.push(join);
        threads.push(ThreadHandle {
            tx,
            waker: wakers[t].clone(),
            owned,
            cpu,
        });
    }
    let state = Arc::new(State {
        cfg,
        sw,
        ct: built.conntrack.clone(),
        clock,
        captures,
        threads,
        stop: stop.clone(),
    });
    eprintln!(
        "xvs: running: {} bridge(s), {} datapath port(s), {} thread(s); control socket {}",
        state.sw.bridges.len(),
        n_ports,
        nthreads,
        server.path().display()
    );
    let _ = std::io::stderr().flush();

    let mut poll = Poll::new().map_err(|e| DaemonError::Os(format!("mio: {e}")))?;
    server
        .listener
        .set_nonblocking(true)
        .map_err(|e| DaemonError::Os(format!("control socket: {e}")))?;
    use std::os::fd::AsRawFd;
    let lfd = server.listener.as_raw_fd();
    poll.registry()
        .register(&mut SourceFd(&lfd), Token(0), Interest::READABLE)
        .map_err(|e| DaemonError::Os(format!("control socket: {e}")))?;
    let mut events = Events::with_capacity(8);
    let mut last_hk = clock.now();
    let in_flight = Arc::new(AtomicUsize::new(0));
    while !term.load(Ordering::Relaxed) {
        let _ = poll.poll(&mut events, Some(MAX_SLEEP));
        loop {
            match server.listener.accept() {
                Ok((s, _)) => serve_in_thread(&state, s, &in_flight),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(_) => break,
            }
        }
        let now = clock.now();
        if now >= last_hk + SEC {
            state.sw.expire(now);
            state.ct.sweep(now, CT_SWEEP_BUDGET);
            last_hk = now;
        }
    }
    eprintln!("xvs: stopping");
    shutdown(&state, joins);
    drop(server);
    Ok(())
}

fn shutdown(state: &Arc<State>, joins: Vec<JoinHandle<()>>) {
    state.stop.store(true, Ordering::Relaxed);
    for t in &state.threads {
        if let Some(w) = &t.waker {
            let _ = w.wake();
        }
    }
    for j in joins {
        if j.join().is_err() {
            eprintln!("xvs: a datapath thread panicked");
        }
    }
}

/// Paths the CLI uses when `--control` is not given.
pub fn default_control() -> &'static Path {
    Path::new(control::DEFAULT_PATH)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The datapath's clock counts nanoseconds of the monotonic clock from its start, as
    /// `Instant` does: timeouts everywhere (connections, flows, MAC entries) depend on the unit.
    #[test]
    fn clock_counts_monotonic_nanoseconds_from_its_start() {
        let before = Instant::now();
        let c = Clock::new();
        let a = c.now();
        std::thread::sleep(Duration::from_millis(20));
        let b = c.now();
        let real = before.elapsed().as_nanos() as u64;
        assert!(a < 1_000_000, "a new clock starts near zero: {a}");
        assert!(b >= a + 20_000_000, "20 ms slept, {} ns counted", b - a);
        assert!(b <= real, "{b} ns counted within {real} ns of real time");
    }
}
