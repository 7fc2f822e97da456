//! Command-line verbs of the `xvs` binary. Each verb lives in its own module and returns the
//! process exit code.

pub mod check_flows;
pub mod ctl;
pub mod replay;
