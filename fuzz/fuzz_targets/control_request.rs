//! Control-socket requests: arbitrary bytes through the wire decoder, and every request that
//! decodes (or one built from the input's verb choice and arguments) through the daemon's verb
//! dispatcher over an in-process switch with no datapath threads. Checked: no panic, every
//! reply to a verb it does not know is an error, and a request that fails leaves the flow
//! tables as they were.
#![no_main]

use dataplane::control::{decode_request, read_request, Request};
use dataplane::daemon::{Handled, State};
use libfuzzer_sys::fuzz_target;
use pipeline::table::FlowFilter;
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

fn state() -> &'static (Arc<State>, Vec<pipeline::flow::FlowSpec>) {
    static S: OnceLock<(Arc<State>, Vec<pipeline::flow::FlowSpec>)> = OnceLock::new();
    S.get_or_init(|| {
        let cfg = dataplane::config::parse(CONFIG, Path::new("/"), "fuzz.toml").expect("config");
        let built = dataplane::setup::build(&cfg, 0).expect("switch");
        let b = built.switch.bridge("brAtlas").expect("bridge");
        let ctx = pipeline::flow::parse::ParseContext::with_ports(b.port_names());
        let specs = pipeline::flow::parse::parse_flows(FLOWS, &ctx).expect("flows");
        (State::offline(cfg, &built), specs)
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

fuzz_target!(|data: &[u8]| {
    let (st, base) = state();
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
    let before = dump(st);
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
        assert_eq!(before, dump(st), "{:?} changed the tables", req.verb);
    }
    if mutating {
        // Back to the starting tables for the next input.
        for b in &st.sw.bridges {
            let specs: &[pipeline::flow::FlowSpec] = if b.name == "brAtlas" { base } else { &[] };
            b.tables.replace_flows(specs, 0).expect("restore");
        }
    }
});
