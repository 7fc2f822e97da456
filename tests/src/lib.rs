//! Helpers shared by xvs's integration tests: private Open vSwitch instances used as an oracle,
//! network namespaces that clean up after themselves, and daemon guards.

pub mod daemon;
pub mod diff;
pub mod netns;
pub mod ovs;
