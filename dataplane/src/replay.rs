//! `xvs replay`: runs the configured bridges offline over capture files.
//!
//! Every datapath port becomes an in-memory port whatever its configured type, flows come from
//! the configuration's flow files, and the frames of all inputs are fed one at a time in
//! timestamp order (ties keep the order the inputs were given, then file order), each with `now`
//! equal to its capture timestamp, so MAC aging, flow timeouts and conntrack see the capture's
//! own clock. What each port sends is written to `DIR/PORT.pcap`, stamped with the timestamp of
//! the input frame that caused it.
//!
//! This module owns the offline run loop and its output files; it touches no interface and
//! starts no thread.

use crate::config::Config;
use crate::datapath::Datapath;
use crate::pcap::{PcapError, PcapReader, PcapWriter};
use crate::setup::{self, SetupError};
use pipeline::cache::FlowCache;
use pipeline::ct::Nanos;
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, BufWriter};
use std::path::{Path, PathBuf};

const SEC: Nanos = 1_000_000_000;
/// Housekeeping period, in capture time (as the daemon's, in its clock).
const HOUSEKEEPING: Nanos = SEC;
/// Megaflows idle this long are dropped (Open vSwitch's default).
pub const MEGAFLOW_IDLE: Nanos = 10 * SEC;

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error(transparent)]
    Setup(#[from] SetupError),
    #[error("--input {0}: no datapath port of that name (patch ports have no I/O)")]
    NoSuchPort(String),
    #[error("{path}: {source}")]
    Pcap {
        path: String,
        #[source]
        source: PcapError,
    },
}

/// One `--input PORT=FILE`.
#[derive(Clone, Debug)]
pub struct ReplayInput {
    pub port: String,
    pub path: PathBuf,
}

/// Counts of a finished replay.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReplaySummary {
    pub frames_in: u64,
    /// Frames written per port name (ports that sent nothing are absent).
    pub frames_out: BTreeMap<String, u64>,
}

fn pcap_err(p: &Path) -> impl Fn(PcapError) -> ReplayError + '_ {
    move |source| ReplayError::Pcap {
        path: p.display().to_string(),
        source,
    }
}

/// Runs the replay and writes the output files into `out_dir` (which must exist).
pub fn replay(
    cfg: &Config,
    inputs: &[ReplayInput],
    out_dir: &Path,
) -> Result<ReplaySummary, ReplayError> {
    struct In {
        ts: Nanos,
        sec: u32,
        usec: u32,
        input: usize,
        seq: usize,
        port: u32,
        data: Vec<u8>,
    }
    // Reading everything first keeps the merge simple; captures given to replay are test-sized.
    let mut frames = Vec::new();
    let mut first_ts = None;
    for (ii, inp) in inputs.iter().enumerate() {
        let f = File::open(&inp.path).map_err(|e| pcap_err(&inp.path)(e.into()))?;
        let recs = PcapReader::new(BufReader::new(f))
            .and_then(|mut r| r.read_all())
            .map_err(pcap_err(&inp.path))?;
        for (seq, r) in recs.into_iter().enumerate() {
            let ts = r.ts_sec as u64 * SEC + r.ts_usec as u64 * 1000;
            first_ts = Some(first_ts.map_or(ts, |t: Nanos| t.min(ts)));
            frames.push(In {
                ts,
                sec: r.ts_sec,
                usec: r.ts_usec,
                input: ii,
                seq,
                port: 0,
                data: r.data,
            });
        }
    }
    frames.sort_by_key(|f| (f.ts, f.input, f.seq));

    let built = setup::build(cfg, first_ts.unwrap_or(0))?;
    let mut in_ports = Vec::new();
    for inp in inputs {
        match built.switch.dp_port_by_name(&inp.port) {
            Some(p) => in_ports.push(p),
            None => return Err(ReplayError::NoSuchPort(inp.port.clone())),
        }
    }
    for f in &mut frames {
        f.port = in_ports[f.input];
    }
    let (ports, handles) = setup::memory_ports(&built.ports);
    let mut dp = Datapath::new(ports, FlowCache::default());
    let sw = &*built.switch;
    let mut writers: Vec<Option<PcapWriter<BufWriter<File>>>> =
        (0..handles.len()).map(|_| None).collect();
    let mut summary = ReplaySummary::default();
    let mut last_housekeeping = first_ts.unwrap_or(0);
    for f in &frames {
        let now = f.ts;
        if now >= last_housekeeping + HOUSEKEEPING {
            sw.expire(now);
            built.conntrack.sweep(now, usize::MAX);
            dp.engine.cache.expire(now.saturating_sub(MEGAFLOW_IDLE));
            last_housekeeping = now;
        }
        summary.frames_in += 1;
        handles[f.port as usize].inject(&f.data);
        dp.poll_once(sw, now);
        for (i, h) in handles.iter().enumerate() {
            let sent = h.take_transmitted();
            if sent.is_empty() {
                continue;
            }
            let name = &built.ports[i].name;
            if writers[i].is_none() {
                let path = out_dir.join(format!("{name}.pcap"));
                let file = File::create(&path).map_err(|e| pcap_err(&path)(e.into()))?;
                writers[i] = Some(PcapWriter::new(BufWriter::new(file)).map_err(pcap_err(&path))?);
            }
            let w = writers[i].as_mut().expect("created above");
            for frame in &sent {
                w.write(f.sec, f.usec, frame)
                    .map_err(pcap_err(&out_dir.join(format!("{name}.pcap"))))?;
            }
            *summary.frames_out.entry(name.clone()).or_default() += sent.len() as u64;
        }
    }
    for (i, w) in writers.iter_mut().enumerate() {
        if let Some(w) = w {
            let path = out_dir.join(format!("{}.pcap", built.ports[i].name));
            w.flush().map_err(pcap_err(&path))?;
        }
    }
    Ok(summary)
}
