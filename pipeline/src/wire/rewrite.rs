//! Placeholder with the agreed contract; replaced by the real rewrites.
use crate::extract::Layout;
use crate::key::FlowKey;
use crate::wire::Frame;
#[derive(Debug)]
pub enum RewriteError {
    NoRoom,
}
pub fn push_vlan(
    _f: &mut Frame,
    _l: &mut Layout,
    _tpid: u16,
    _tci: u16,
) -> Result<(), RewriteError> {
    unimplemented!()
}
pub fn pop_vlan(_f: &mut Frame, _l: &mut Layout) -> Result<(), RewriteError> {
    unimplemented!()
}
pub fn set_vlan_tci(_f: &mut Frame, _l: &Layout, _tci: u16) -> Result<(), RewriteError> {
    unimplemented!()
}
pub fn set_fields(
    _f: &mut Frame,
    _l: &Layout,
    _h: &FlowKey,
    _w: &FlowKey,
) -> Result<u32, RewriteError> {
    unimplemented!()
}
