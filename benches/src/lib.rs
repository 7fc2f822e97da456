//! Shared set-up for xvs's criterion benchmarks (the benchmarks themselves are in `benches/`):
//! flow-file generators, the reference SNAT switch and frame generators, so tests can reuse them.

pub mod ct_load;
pub mod geneve;
pub mod ovn_flows;
pub mod snat;
pub use ovn_flows::ovn_like_flows;

#[doc(hidden)]
pub use dataplane;

/// Makes the invoking bench binary allocate as the `xvs` daemon does
/// ([`dataplane::DaemonAllocator`]): on another allocator the tables would sit on other pages,
/// and a bench would not measure the daemon.
#[macro_export]
macro_rules! daemon_allocator {
    () => {
        #[global_allocator]
        static GLOBAL: $crate::dataplane::DaemonAllocator = $crate::dataplane::DaemonAllocator;
    };
}

use pipeline::ct::{ConnTracker, CtRequest, CtVerdict, Nanos};
use pipeline::key::FlowKey;
use pipeline::odp::DpSink;
use pipeline::wire::Frame;

/// A connection tracker for benches whose flows have no `ct()`: any call would be a bench bug,
/// and holding the frame makes it show as a missing output.
pub struct NoCt;

impl ConnTracker for NoCt {
    fn execute(
        &self,
        _f: &mut Frame<'_>,
        _l3: usize,
        _k: &FlowKey,
        _r: &CtRequest<'_>,
        _now: Nanos,
    ) -> CtVerdict {
        CtVerdict::Held
    }
}

/// A datapath sink that only folds what it is given into a number, so the optimiser cannot
/// drop the work that produced it.
#[derive(Default)]
pub struct CountSink(pub u64);

impl DpSink for CountSink {
    fn output(&mut self, port: u32, frame: &[u8]) {
        self.0 += port as u64 + frame.len() as u64;
    }
    fn recirculate(&mut self, _id: u32, _frame: &[u8], _key: &FlowKey) {}
}
