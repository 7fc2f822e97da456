//! A one-bridge switch environment for tests, benchmarks and offline tools: OpenFlow port N is
//! datapath port N, flows live in a [`FlowTables`], NORMAL does nothing.
//!
//! The real switch (bridges, patch ports, MAC learning) is `dataplane::switch`; this exists so
//! the pipeline can be exercised and measured without it.

use crate::ct::Nanos;
use crate::flow::parse::{parse_flows, ParseContext};
use crate::flow::{FlowSpec, PortNames};
use crate::key::FlowKey;
use crate::table::{FlowTables, Snapshot};
use crate::xlate::{BridgeId, NormalOutput, PortKind, RuleRef, XlateEnv};
use std::sync::Arc;

pub struct SingleBridge {
    pub tables: FlowTables,
    pub ports: PortNames,
}

impl SingleBridge {
    /// A bridge with the given `(name, number)` ports and flows (flow-file text).
    pub fn new(ports: &[(&str, u32)], flows: &str) -> Result<SingleBridge, String> {
        let mut names = PortNames::new();
        for (n, p) in ports {
            names.insert(n, *p);
        }
        let b = SingleBridge {
            tables: FlowTables::new(),
            ports: names,
        };
        b.replace(flows)?;
        Ok(b)
    }

    /// Replaces every flow with those in `flows`.
    pub fn replace(&self, flows: &str) -> Result<(), String> {
        let specs = self.parse(flows)?;
        self.tables
            .replace_flows(&specs, 0)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    pub fn parse(&self, flows: &str) -> Result<Vec<FlowSpec>, String> {
        parse_flows(flows, &ParseContext::with_ports(self.ports.clone())).map_err(|errs| {
            errs.iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join("\n")
        })
    }

    /// The tables pinned for a batch of frames.
    pub fn view(&self) -> SingleBridgeView<'_> {
        SingleBridgeView {
            bridge: self,
            snap: self.tables.snapshot(),
        }
    }
}

pub struct SingleBridgeView<'a> {
    bridge: &'a SingleBridge,
    snap: Arc<Snapshot>,
}

impl SingleBridgeView<'_> {
    pub fn generation(&self) -> u64 {
        self.snap.generation()
    }
}

impl XlateEnv for SingleBridgeView<'_> {
    fn ingress(&self, dp_port: u32) -> Option<(BridgeId, u32)> {
        self.bridge.ports.name(dp_port).map(|_| (0, dp_port))
    }
    fn lookup(&self, _b: BridgeId, table: u8, key: &FlowKey, wc: &mut FlowKey) -> Option<RuleRef> {
        self.snap
            .lookup(table, key, wc)
            .map(|r| r.clone() as RuleRef)
    }
    fn port(&self, _b: BridgeId, ofport: u32) -> Option<PortKind> {
        self.bridge
            .ports
            .name(ofport)
            .map(|_| PortKind::Datapath(ofport))
    }
    fn ports(&self, _b: BridgeId, out: &mut Vec<u32>) {
        out.extend(self.bridge.ports.iter().map(|(n, _)| n));
    }
    fn normal(
        &self,
        _b: BridgeId,
        _f: &FlowKey,
        _wc: &mut FlowKey,
        _now: Nanos,
        _out: &mut Vec<NormalOutput>,
    ) {
    }
    fn bridge_name(&self, _b: BridgeId) -> String {
        "br0".into()
    }
    fn port_name(&self, _b: BridgeId, ofport: u32) -> Option<String> {
        self.bridge.ports.name(ofport).map(str::to_string)
    }
}
