//! xvs's packet pipeline: the flow language, flow tables, classifier, action execution, the
//! flow cache and trace.
//!
//! Pure by design: nothing here opens a socket, reads a clock or spawns a thread. Frames arrive
//! as borrowed buffers ([`wire::Frame`]), time as a `now` argument, connection tracking and the
//! NORMAL action through traits the caller supplies. The `dataplane` crate does the I/O.
#![deny(unsafe_code)]

pub mod cache;
pub mod classifier;
pub mod compose;
pub mod ct;
pub mod engine;
pub mod extract;
pub mod field;
pub mod flow;
pub mod key;
pub mod odp;
pub mod single;
pub mod table;
pub mod trace;
pub mod wire;
pub mod xlate;

/// Frames per batch on every batch API (receive, transmit, pipeline).
pub const BATCH_SIZE: usize = 32;
