//! Tracker tests over hand-built frames.

mod alg;
mod build;
mod cases;
mod props;
