//! Shared set-up for xvs's criterion benchmarks (the benchmarks themselves are in `benches/`):
//! flow-file generators, the reference SNAT switch and frame generators, so tests can reuse them.

pub mod geneve;
pub mod ovn_flows;
pub mod snat;
pub use ovn_flows::ovn_like_flows;
