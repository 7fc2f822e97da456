//! Connection tracking and NAT for xvs (to be written).
#![deny(unsafe_code)]
