//! Tracker tests over hand-built frames.

mod build;
mod cases;
mod props;
