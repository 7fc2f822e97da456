//! Control-socket requests: arbitrary bytes through the wire decoder, and every request that
//! decodes (or one built from the input's verb choice and arguments) through the daemon's verb
//! dispatcher over an in-process switch with no datapath threads. Checked: no panic, every
//! reply to a verb it does not know is an error, and a request that fails leaves the flow
//! tables as they were.
#![no_main]

use dataplane::control::{decode_request, read_request, Request};
use dataplane::daemon::{Handled, State};
use libfuzzer_sys::fuzz_target;
use pipeline::flow::FlowSpec;
use pipeline::table::{FlowFilter, Snapshot};
use std::path::Path;
use std::sync::{Arc, OnceLock};

const CONFIG: &str = r#"
[datapath]
ct_zone_limits = { 9 = 100 }

[[bridge]]
name = "br0"
[[bridge.port]]
name = "p1"
type = "memory"
ofport = 1
[[bridge.port]]
name = "patch-br0"
type = "patch"
peer = "patch-brAtlas"

[[bridge]]
name = "brAtlas"
fail_mode = "secure"
[[bridge.port]]
name = "patch-brAtlas"
type = "patch"
ofport = 14
peer = "patch-br0"
[[bridge.port]]
name = "tap2"
type = "memory"
ofport = 4
"#;

const FLOWS: &str =
    "table=0,priority=100,in_port=tap2 actions=load:0x2->NXM_NX_REG14[],resubmit(,8)\n\
table=8,priority=10,ip actions=ct(commit,zone=9,nat(src=172.22.7.27)),output:14\n";

const VERBS: [&str; 14] = [
    "show",
    "add-flows",
    "replace-flows",
    "del-flows",
    "dump-flows",
    "tnl-neigh-show",
    "fdb-show",
    "dump-conntrack",
    "flush-conntrack",
    "dump-dp-flows",
    "pmd-stats-show",
    "port-stats",
    "trace",
    "no-such-verb",
];

/// The switch, and each bridge's flows as every input starts with them: br0's default
/// NORMAL flow, brAtlas's `FLOWS`.
struct Fixture {
    st: Arc<State>,
    start: Vec<Vec<FlowSpec>>,
    start_dump: Vec<String>,
}

fn fixture() -> &'static Fixture {
    static S: OnceLock<Fixture> = OnceLock::new();
    S.get_or_init(|| {
        let cfg = dataplane::config::parse(CONFIG, Path::new("/"), "fuzz.toml").expect("config");
        let built = dataplane::setup::build(&cfg, 0).expect("switch");
        let b = built.switch.bridge("brAtlas").expect("bridge");
        let ctx = pipeline::flow::parse::ParseContext::with_ports(b.port_names());
        let specs = pipeline::flow::parse::parse_flows(FLOWS, &ctx).expect("flows");
        b.tables.add_flows(&specs, 0).expect("brAtlas flows");
        let st = State::offline(cfg, &built);
        let start = st
            .sw
            .bridges
            .iter()
            .map(|b| {
                b.tables
                    .dump(&FlowFilter::all())
                    .iter()
                    .map(|r| r.spec.clone())
                    .collect()
            })
            .collect();
        let start_dump = dump(&st);
        Fixture {
            st,
            start,
            start_dump,
        }
    })
}

fn dump(st: &State) -> Vec<String> {
    st.sw
        .bridges
        .iter()
        .flat_map(|b| b.tables.dump(&FlowFilter::all()))
        .map(|r| format!("{:?}", r.spec))
        .collect()
}

/// Every bridge's published table snapshot: a table write that publishes nothing leaves the
/// very same snapshot, so comparing these is the cheap first test of "unchanged".
fn snapshots(st: &State) -> Vec<Arc<Snapshot>> {
    st.sw.bridges.iter().map(|b| b.tables.snapshot()).collect()
}

/// The tables are as they were: the same snapshots, or (a republished copy) the same flows.
fn assert_unchanged(st: &State, before: &[Arc<Snapshot>], verb: &str) {
    let after = snapshots(st);
    if before.iter().zip(&after).all(|(a, b)| Arc::ptr_eq(a, b)) {
        return;
    }
    let dump_of = |snaps: &[Arc<Snapshot>]| -> Vec<String> {
        snaps
            .iter()
            .flat_map(|s| s.dump(&FlowFilter::all()))
            .map(|r| format!("{:?}", r.spec))
            .collect()
    };
    assert_eq!(
        dump_of(before),
        dump_of(&after),
        "{verb:?} changed the tables"
    );
}

fuzz_target!(|data: &[u8]| {
    let fx = fixture();
    let st = &fx.st;
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let req = if sel & 0x80 != 0 {
        // Raw wire bytes: length prefix and body as given.
        match read_request(&mut &rest[..]) {
            Ok(r) => r,
            Err(_) => return,
        }
    } else if sel & 0x40 != 0 {
        match decode_request(rest) {
            Ok(r) => r,
            Err(_) => return,
        }
    } else {
        let text = String::from_utf8_lossy(rest);
        let mut args: Vec<String> = text.split('\u{1}').map(str::to_string).collect();
        if sel & 0x20 != 0 {
            args.insert(0, "brAtlas".into());
        }
        Request {
            verb: VERBS[sel as usize % VERBS.len()].to_string(),
            args,
        }
    };
    if req.verb == "capture" {
        // Waits for frames for up to the requested duration: not a fuzzing subject.
        return;
    }
    // Connections a trace or an earlier input left would make this input depend on history.
    st.ct.reset();
    let before = snapshots(st);
    let reply = match st.handle(&req) {
        Handled::Now(r) => r,
        Handled::Later(f) => f(),
    };
    if !VERBS[..13].contains(&req.verb.as_str()) {
        assert!(!reply.ok, "unknown verb {:?} accepted", req.verb);
    }
    let mutating = matches!(
        req.verb.as_str(),
        "add-flows" | "replace-flows" | "del-flows"
    );
    if !reply.ok || !mutating {
        assert_unchanged(st, &before, &req.verb);
    }
    let changed = st
        .sw
        .bridges
        .iter()
        .zip(&before)
        .any(|(b, s)| b.tables.generation() != s.generation());
    if changed {
        // Back to the starting tables for the next input.
        for (b, specs) in st.sw.bridges.iter().zip(&fx.start) {
            b.tables.replace_flows(specs, 0).expect("restore");
        }
        assert_eq!(dump(st), fx.start_dump, "restoring the tables failed");
    }
});
