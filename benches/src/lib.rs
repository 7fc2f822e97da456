//! Shared set-up for xvs's criterion benchmarks (the benchmarks themselves are in `benches/`).
