//! A datapath: a set of ports and the packet engine that switches frames between them, polled
//! in bursts. A datapath thread owns one; the daemon decides when it polls and sleeps.
//!
//! Owns port I/O scheduling and frame accounting per burst. Switching decisions are the
//! pipeline's; shared switch state is [`crate::switch::Switch`].

use crate::port::afxdp::UmemAccount;
use crate::port::{Port, PortStats, RxFrames, TxVerdict};
use crate::switch::{PinnedTables, Switch};
use pipeline::cache::FlowCache;
use pipeline::ct::Nanos;
use pipeline::engine::Engine;
use pipeline::key::FlowKey;
use pipeline::odp::DpSink;
use std::os::fd::RawFd;

/// Frames a port sent to itself during its own receive burst wait here (the burst holds the
/// port) and leave right after it.
struct Sink<'a> {
    before: &'a mut [Box<dyn Port>],
    after: &'a mut [Box<dyn Port>],
    me: usize,
    deferred: &'a mut Vec<(u32, Vec<u8>)>,
    recirculated: &'a mut Vec<(u32, u32, Vec<u8>, FlowKey)>,
    tx_refused: &'a mut u64,
    sw: &'a Switch,
}

impl DpSink for Sink<'_> {
    fn output(&mut self, port: u32, frame: &[u8]) {
        let p = port as usize;
        let verdict = if p < self.me {
            self.before[p].tx(frame)
        } else if p == self.me {
            self.deferred.push((port, frame.to_vec()));
            TxVerdict::Queued
        } else if let Some(port) = self.after.get_mut(p - self.me - 1) {
            port.tx(frame)
        } else {
            TxVerdict::DeviceError
        };
        if verdict != TxVerdict::Queued {
            *self.tx_refused += 1;
        }
    }

    fn recirculate(&mut self, id: u32, frame: &[u8], key: &FlowKey) {
        self.recirculated
            .push((self.me as u32, id, frame.to_vec(), *key));
    }

    fn capture(&mut self, id: u32, frame: &[u8]) {
        self.sw.record_capture(id, frame);
    }
}

/// Counters of one datapath, in the spirit of `dpif-netdev/pmd-stats-show`.
#[derive(Clone, Copy, Debug, Default)]
pub struct DatapathStats {
    pub polls: u64,
    /// Polls that received at least one frame.
    pub busy_polls: u64,
    /// Interrupt mode: sleeps of `coalesce_us` taken after a burst short of a batch.
    pub coalesce_waits: u64,
    /// Interrupt mode: waits for a receive event, and those that ended by the timeout rather
    /// than an event.
    pub sleeps: u64,
    pub sleep_timeouts: u64,
    /// Timeouts after which the next poll found frames: frames whose arrival woke nobody.
    pub timeouts_with_frames: u64,
    /// Time those sleeps took, in all and the longest one (a sleep that overruns by
    /// milliseconds lets the receive rings overflow).
    pub coalesce_ns: u64,
    pub coalesce_max_ns: u64,
    pub frames: u64,
    /// Outputs a port refused (ring full, too big, no such port).
    pub tx_refused: u64,
    /// Nanoseconds spent in polls that found work and in polls that did not.
    pub busy_ns: u64,
    pub idle_ns: u64,
    /// The longest poll that found frames (receive, switch, transmit), in ns.
    pub busy_max_ns: u64,
}

pub struct Datapath {
    /// Index = datapath port number.
    ports: Vec<Box<dyn Port>>,
    pub engine: Engine,
    deferred: Vec<(u32, Vec<u8>)>,
    recirculated: Vec<(u32, u32, Vec<u8>, FlowKey)>,
    pub stats: DatapathStats,
    /// Least time between creditings of the megaflows' counts to the OpenFlow rules (see
    /// [`Datapath::set_rule_stats_interval`]); 0 credits after every poll.
    rule_stats_interval: Nanos,
    rule_stats_at: Nanos,
    /// The flow tables this thread switches with, kept from poll to poll.
    pinned: PinnedTables,
}

impl Datapath {
    /// `ports[i]` must be the I/O of datapath port `i` of the switch.
    pub fn new(ports: Vec<Box<dyn Port>>, cache: FlowCache) -> Self {
        Datapath {
            ports,
            engine: Engine::new(cache),
            deferred: Vec::new(),
            recirculated: Vec::new(),
            stats: DatapathStats::default(),
            rule_stats_interval: 0,
            rule_stats_at: 0,
            pinned: PinnedTables::default(),
        }
    }

    /// Credits the frames counted on megaflows to the OpenFlow rules they went through at
    /// most every `interval` ns instead of after every poll.
    ///
    /// Crediting is two shared atomic additions per rule a megaflow went through, every
    /// thread adding to the same lines: through the seed's SNAT pipeline that was a tenth of
    /// a polling thread's time at a few frames per poll. Rules' counters (`dump-flows`) lag
    /// by at most `interval` while traffic flows; a thread about to sleep credits first
    /// ([`Datapath::credit_rule_stats`]), and a flow table change or megaflow expiry credits
    /// what is pending before dropping entries.
    pub fn set_rule_stats_interval(&mut self, interval: Nanos) {
        self.rule_stats_interval = interval;
    }

    /// Credits pending megaflow counts to the rules now.
    pub fn credit_rule_stats(&mut self, now: Nanos) {
        self.engine.end_batch();
        self.rule_stats_at = now;
    }

    pub fn port_stats(&self) -> Vec<(String, PortStats)> {
        self.ports
            .iter()
            .map(|p| (p.name().to_string(), p.stats()))
            .collect()
    }

    /// UMEM chunk accounting of every port that has a UMEM, by port name.
    pub fn umem_accounts(&self) -> Vec<(String, UmemAccount)> {
        self.ports
            .iter()
            .filter_map(|p| p.umem_account().map(|a| (p.name().to_string(), a)))
            .collect()
    }

    pub fn poll_fds(&self) -> Vec<RawFd> {
        self.ports.iter().flat_map(|p| p.poll_fds()).collect()
    }

    /// Receives one burst from every port and switches it. Returns the number of frames.
    pub fn poll_once(&mut self, sw: &Switch, now: Nanos) -> usize {
        let view = sw.view_pinned(&mut self.pinned);
        let shared = view.shared();
        // Received frames carry no metadata; a shared zero key spares a 296-byte fill per poll.
        static NO_METADATA: FlowKey = FlowKey::ZERO;
        let meta = &NO_METADATA;
        let mut total = 0;
        for i in 0..self.ports.len() {
            let (before, rest) = self.ports.split_at_mut(i);
            let Some((me, after)) = rest.split_first_mut() else {
                break;
            };
            let mut sink = Sink {
                before,
                after,
                me: i,
                deferred: &mut self.deferred,
                recirculated: &mut self.recirculated,
                tx_refused: &mut self.stats.tx_refused,
                sw,
            };
            let engine = &mut self.engine;
            let n = me.rx_burst(&mut |frames: &mut RxFrames<'_>| {
                engine.process_batch(frames.drain(..), i as u32, meta, &shared, &mut sink, now);
            });
            total += n;
        }
        // Copies made for forked recirculations run now, from the port they came in on.
        while let Some((port, id, mut bytes, key)) = self.recirculated.pop() {
            let len = bytes.len();
            let mut buf = vec![0u8; crate::port::HEADROOM + len];
            buf[crate::port::HEADROOM..].copy_from_slice(&bytes);
            bytes.clear();
            let frame = pipeline::wire::Frame::new(&mut buf, crate::port::HEADROOM, len);
            let (before, rest) = self.ports.split_at_mut(port as usize);
            let Some((_, after)) = rest.split_first_mut() else {
                continue;
            };
            let mut sink = Sink {
                before,
                after,
                me: port as usize,
                deferred: &mut self.deferred,
                recirculated: &mut bytes_sink(),
                tx_refused: &mut self.stats.tx_refused,
                sw,
            };
            self.engine
                .process_recirculated(frame, id, &key, &shared, &mut sink, now);
        }
        for (port, bytes) in self.deferred.drain(..) {
            if let Some(p) = self.ports.get_mut(port as usize) {
                let v = p.tx(&bytes);
                if v != TxVerdict::Queued {
                    self.stats.tx_refused += 1;
                }
            }
        }
        for p in &mut self.ports {
            p.flush();
        }
        if now.saturating_sub(self.rule_stats_at) >= self.rule_stats_interval {
            self.credit_rule_stats(now);
        }
        self.stats.polls += 1;
        if total > 0 {
            self.stats.busy_polls += 1;
            self.stats.frames += total as u64;
        }
        total
    }
}

/// Recirculations forked while running a forked recirculation are not followed further (a
/// bound on work per frame).
fn bytes_sink() -> Vec<(u32, u32, Vec<u8>, FlowKey)> {
    Vec::new()
}
