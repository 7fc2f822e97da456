//! Shared set-up for xvs's criterion benchmarks (the benchmarks themselves are in `benches/`).

pub mod ovn_flows;
pub use ovn_flows::ovn_like_flows;
