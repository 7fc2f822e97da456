//! Flow parser fuzz target: any text, parsed as a flow file, must not panic; every flow it
//! accepts must print, and the printed text must parse again and print identically (the
//! printer's output is a fixed point of parse-then-print).
#![no_main]

use libfuzzer_sys::fuzz_target;
use pipeline::flow::format::{format_flow, FormatOptions};
use pipeline::flow::parse::{parse_flows, parse_match, ParseContext};
use pipeline::flow::PortNames;
use std::sync::OnceLock;

/// Port names the flows may use, built once: parsing never changes them.
fn context() -> &'static ParseContext {
    static C: OnceLock<ParseContext> = OnceLock::new();
    C.get_or_init(|| {
        let mut ports = PortNames::new();
        ports.insert("tap2", 4);
        ports.insert("patch-brAtlas-to-br-int", 1);
        ParseContext::with_ports(ports)
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let ctx = context();
    let _ = parse_match(text, ctx);
    let flows = match parse_flows(text, ctx) {
        Ok(f) => f,
        Err(errs) => {
            for e in errs {
                assert!(e.line >= 1 && e.col >= 1);
                let _ = e.to_string();
            }
            return;
        }
    };
    for f in flows {
        let printed = format_flow(&f, &ctx.ports, FormatOptions::default());
        let again = parse_flows(&printed, ctx)
            .unwrap_or_else(|e| panic!("printed flow does not parse: {printed}\n{}", e[0]));
        assert_eq!(again.len(), 1, "{printed}");
        let reprinted = format_flow(&again[0], &ctx.ports, FormatOptions::default());
        assert_eq!(printed, reprinted, "print is not a fixed point");
    }
});
