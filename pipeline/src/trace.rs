//! `trace`: follows one frame through the tables and shows each table visited, the flow that
//! matched (or the miss), the actions run, and the result: every output with the frame as sent,
//! or the drop and why. In the spirit of `ovs-appctl ofproto/trace`, including its `--ct-next`:
//! a `ct(table=N)` resumes in table N with the next `ct_state` from a list given by the user
//! (`trk,new` when the list runs out), without touching the real connection table.
//!
//! Owns the report and its text; translation and execution are the same code the datapath runs.

use crate::ct::{ConnTracker, CtRequest, CtResult, CtVerdict, Nanos};
use crate::flow::{Action, FlowSpec};
use crate::key::{self, loc, FlowKey, PACKET_WORD};
use crate::odp::{execute, format_actions, DpSink, ExecOutcome, OdpAction, Packet};
use crate::wire::Frame;
use crate::xlate::{translate, RecircTable, TraceEvent, XlateEnv};
use std::fmt::Write as _;
use std::sync::Mutex;

/// Headroom given to the traced frame (VLAN pushes and encapsulation).
const TRACE_HEADROOM: usize = 256;
/// Recirculations a trace follows before giving up.
const MAX_PASSES: usize = 8;

/// One pass through the tables (the first, or one after a recirculation).
pub struct TracePass {
    pub recirc_id: u32,
    /// The key the pass started from.
    pub key: FlowKey,
    pub events: Vec<TraceEvent>,
    pub final_flow: FlowKey,
    pub megaflow: FlowKey,
    pub actions: Vec<OdpAction>,
    /// Connection tracking state the pass resumed with (after a recirculation).
    pub ct_state: Option<u32>,
}

pub struct TraceReport {
    pub passes: Vec<TracePass>,
    /// Every frame sent: datapath port and the bytes as they left.
    pub outputs: Vec<(u32, Vec<u8>)>,
    /// Why the frame stopped without output, if it did.
    pub verdict: String,
}

struct Recorder {
    outputs: Vec<(u32, Vec<u8>)>,
    forks: Vec<(u32, Vec<u8>, FlowKey)>,
}

impl DpSink for Recorder {
    fn output(&mut self, port: u32, frame: &[u8]) {
        self.outputs.push((port, frame.to_vec()));
    }
    fn recirculate(&mut self, id: u32, frame: &[u8], key: &FlowKey) {
        self.forks.push((id, frame.to_vec(), *key));
    }
}

/// A stand-in tracker for trace: answers with the next state from the user's list.
struct CtNext {
    states: Mutex<(Vec<u32>, usize)>,
}

impl ConnTracker for CtNext {
    fn execute(
        &self,
        _f: &mut Frame<'_>,
        _l3: usize,
        _k: &FlowKey,
        req: &CtRequest<'_>,
        _now: Nanos,
    ) -> CtVerdict {
        let mut g = self.states.lock().unwrap_or_else(|e| e.into_inner());
        let (list, i) = &mut *g;
        let state = list
            .get(*i)
            .copied()
            .unwrap_or(key::CS_TRACKED | key::CS_NEW);
        *i += 1;
        CtVerdict::Tracked(CtResult {
            state: state | key::CS_TRACKED,
            zone: req.zone,
            ..Default::default()
        })
    }
}

/// Parses a `--ct-next` value: flags like `trk,est` or `+trk+est` (one state per use).
pub fn parse_ct_state(s: &str) -> Result<u32, String> {
    let mut st = 0;
    for word in s.split([',', '+', '|']).filter(|w| !w.is_empty()) {
        st |= match word {
            "new" => key::CS_NEW,
            "est" => key::CS_ESTABLISHED,
            "rel" => key::CS_RELATED,
            "rpl" => key::CS_REPLY_DIR,
            "inv" => key::CS_INVALID,
            "trk" => key::CS_TRACKED,
            "snat" => key::CS_SRC_NAT,
            "dnat" => key::CS_DST_NAT,
            other => return Err(format!("unknown ct_state flag \"{other}\"")),
        };
    }
    Ok(st)
}

/// Traces `frame` entering datapath port `in_port`. `meta` holds port metadata (tunnel fields).
pub fn trace(
    env: &dyn XlateEnv,
    frame: &[u8],
    in_port: u32,
    meta: &FlowKey,
    ct_next: &[u32],
    now: Nanos,
) -> TraceReport {
    // A private recirculation table: a trace must not create ids the datapath would see.
    let recirc = RecircTable::new();
    let ct = CtNext {
        states: Mutex::new((ct_next.to_vec(), 0)),
    };
    let mut rec = Recorder {
        outputs: Vec::new(),
        forks: Vec::new(),
    };
    let mut buf = vec![0u8; TRACE_HEADROOM + frame.len()];
    buf[TRACE_HEADROOM..].copy_from_slice(frame);
    let mut key = *meta;
    key.set_in_port(in_port);
    key.set(loc::RECIRC_ID, 0);
    let mut pkt = Packet::new(Frame::new(&mut buf, TRACE_HEADROOM, frame.len()), key);
    let mut passes = Vec::new();
    let mut verdict = String::new();
    let mut ct_state = None;
    loop {
        let mut events = Vec::new();
        let t = translate(env, &recirc, &pkt.key, now, Some(&mut events));
        passes.push(TracePass {
            recirc_id: pkt.key.recirc_id(),
            key: pkt.key,
            events,
            final_flow: t.final_flow,
            megaflow: t.wc,
            actions: t.actions.clone(),
            ct_state,
        });
        if let Some(e) = t.error {
            verdict = format!("dropped: {}", e.name());
            break;
        }
        if t.actions.is_empty() {
            verdict = "dropped: no flow sent the frame anywhere".into();
            break;
        }
        match execute(&t.actions, &mut pkt, &mut rec, &ct, now) {
            ExecOutcome::Done => break,
            ExecOutcome::Dropped(r) => {
                verdict = format!("dropped: {}", r.name());
                break;
            }
            ExecOutcome::Recirc(id) => {
                if passes.len() >= MAX_PASSES {
                    verdict = "dropped: too many recirculations".into();
                    break;
                }
                ct_state = Some(pkt.key.ct_state());
                let mut k = FlowKey::ZERO;
                for l in [
                    loc::IN_PORT,
                    loc::CT_STATE,
                    loc::CT_ZONE,
                    loc::CT_MARK,
                    loc::CT_LABEL,
                    loc::TUN_ID,
                    loc::TUN_SRC,
                    loc::TUN_DST,
                ] {
                    k.set(l, pkt.key.get(l));
                }
                k.w[PACKET_WORD..].copy_from_slice(&pkt.key.w[PACKET_WORD..]);
                k.set(loc::RECIRC_ID, id as u128);
                pkt.key = k;
            }
            ExecOutcome::Reassembled(_) => {
                verdict = "held for reassembly".into();
                break;
            }
        }
    }
    if verdict.is_empty() && rec.outputs.is_empty() {
        verdict = "dropped: no output".into();
    }
    TraceReport {
        passes,
        outputs: rec.outputs,
        verdict,
    }
}

/// How to print flows, actions, keys and ports in a trace (the flow language's formatter).
pub struct TraceFormat<'a> {
    pub flow: &'a dyn Fn(&FlowSpec) -> String,
    pub action: &'a dyn Fn(&Action) -> String,
    /// A flow key as a match (`in_port=4,vlan_tci=0x0000,dl_src=...`).
    pub key: &'a dyn Fn(&FlowKey) -> String,
    /// A megaflow (key and mask) as a match.
    pub megaflow: &'a dyn Fn(&FlowKey, &FlowKey) -> String,
    pub dp_port: &'a dyn Fn(u32) -> String,
}

/// The report as text, laid out like `ofproto/trace`.
pub fn format_trace(r: &TraceReport, f: &TraceFormat<'_>) -> String {
    let mut s = String::new();
    for (i, p) in r.passes.iter().enumerate() {
        if i == 0 {
            let _ = writeln!(s, "Flow: {}", (f.key)(&p.key));
        } else {
            let _ = writeln!(s);
            let _ = writeln!(s, "{}", "=".repeat(79));
            let _ = writeln!(
                s,
                "recirc({:#x}) - resume conntrack with ct_state={}",
                p.recirc_id,
                ct_state_words(p.ct_state.unwrap_or(0))
            );
            let _ = writeln!(s, "{}", "=".repeat(79));
            let _ = writeln!(s);
            let _ = writeln!(s, "Flow: {}", (f.key)(&p.key));
        }
        for e in &p.events {
            match e {
                TraceEvent::Bridge { depth, name } => {
                    let ind = indent(*depth);
                    let title = format!("bridge(\"{name}\")");
                    let _ = writeln!(s);
                    let _ = writeln!(s, "{ind}{title}");
                    let _ = writeln!(s, "{ind}{}", "-".repeat(title.len()));
                }
                TraceEvent::Lookup { depth, table, rule } => {
                    let ind = indent(*depth);
                    match rule {
                        Some(r) => {
                            let spec = r.spec();
                            let _ = writeln!(s, "{ind}{:>2}. {}", table, (f.flow)(spec));
                        }
                        None => {
                            let _ = writeln!(s, "{ind}{:>2}. No match.", table);
                            let _ = writeln!(s, "{ind}    drop");
                        }
                    }
                }
                TraceEvent::Action { depth, action } => {
                    let _ = writeln!(s, "{}    {}", indent(*depth), (f.action)(action));
                }
                TraceEvent::Note { depth, text } => {
                    let _ = writeln!(s, "{}     -> {}", indent(*depth), text);
                }
            }
        }
        let _ = writeln!(s);
        let _ = writeln!(s, "Final flow: {}", (f.key)(&p.final_flow));
        let _ = writeln!(s, "Megaflow: {}", (f.megaflow)(&p.key, &p.megaflow));
        let _ = writeln!(
            s,
            "Datapath actions: {}",
            format_actions(&p.actions, &|port| Some((f.dp_port)(port)))
        );
    }
    let _ = writeln!(s);
    if r.outputs.is_empty() {
        let _ = writeln!(s, "Result: {}", r.verdict);
    } else {
        let _ = writeln!(s, "Result: {} frame(s) sent", r.outputs.len());
        for (port, bytes) in &r.outputs {
            let _ = writeln!(
                s,
                "  output to {} ({} bytes): {}",
                (f.dp_port)(*port),
                bytes.len(),
                hex(bytes)
            );
        }
        if !r.verdict.is_empty() {
            let _ = writeln!(s, "  then {}", r.verdict);
        }
    }
    s
}

fn indent(depth: u32) -> String {
    "    ".repeat(depth as usize)
}

fn hex(b: &[u8]) -> String {
    let mut s = String::with_capacity(b.len() * 2);
    for x in b {
        let _ = write!(s, "{x:02x}");
    }
    s
}

/// `trk|new` style, as `ofproto/trace` prints a resumed ct_state.
pub fn ct_state_words(st: u32) -> String {
    let names = [
        (key::CS_NEW, "new"),
        (key::CS_ESTABLISHED, "est"),
        (key::CS_RELATED, "rel"),
        (key::CS_REPLY_DIR, "rpl"),
        (key::CS_INVALID, "inv"),
        (key::CS_TRACKED, "trk"),
        (key::CS_SRC_NAT, "snat"),
        (key::CS_DST_NAT, "dnat"),
    ];
    // Open vSwitch prints trk first.
    let mut v = Vec::new();
    if st & key::CS_TRACKED != 0 {
        v.push("trk");
    }
    for (bit, n) in names {
        if bit != key::CS_TRACKED && st & bit != 0 {
            v.push(n);
        }
    }
    v.join("|")
}
