//! The xvs host switch: ports (AF_XDP, patch, internal, pcap, in-memory), bridges, tunnels, MAC
//! learning, datapath threads, the daemon and its command-line verbs.
//!
//! The only crate that touches the system: sockets, interfaces, clocks and threads live here.
//! Unsafe code is confined to the AF_XDP module.
#![deny(unsafe_code)]

pub mod cli;
pub mod config;
pub mod control;
pub mod daemon;
pub mod datapath;
pub mod dpflow;
pub mod gen;
pub mod hooks;
pub mod mac_learning;
pub mod nullfwd;
pub mod pcap;
pub mod port;
pub mod replay;
pub mod setup;
pub mod switch;
