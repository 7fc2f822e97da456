//! Link settings of the interfaces behind ports: setting the MTU the configuration asks for,
//! and reading the limits the kernel reports for it.
//!
//! This module owns the `SIOCSIFMTU` ioctl and one rtnetlink `RTM_GETLINK` query (for the
//! device's maximum MTU, which only netlink reports). It must not create, delete or bring up
//! interfaces, nor touch addresses or routes. Both calls are made once per port at start, never
//! on the packet path.
#![allow(unsafe_code)]

use super::PortError;
use std::io;

/// `struct ifreq` as `SIOCSIFMTU` reads it: the name, then the MTU in the union.
#[repr(C)]
struct IfReqMtu {
    name: [libc::c_char; libc::IFNAMSIZ],
    mtu: libc::c_int,
    _pad: [u8; 20],
}

/// Sets the MTU of `ifname` (in the calling thread's namespace). When the kernel refuses it,
/// the error names the interface and, when netlink reports them, the device's limits.
pub fn set_mtu(ifname: &str, mtu: u32) -> Result<(), PortError> {
    if ifname.is_empty() || ifname.len() >= libc::IFNAMSIZ || ifname.contains('\0') {
        return Err(PortError::Config(format!("bad interface name {ifname:?}")));
    }
    let index = super::afxdp::ifindex(ifname)?;
    let mut req = IfReqMtu {
        name: [0; libc::IFNAMSIZ],
        mtu: mtu.min(i32::MAX as u32) as libc::c_int,
        _pad: [0; 20],
    };
    for (d, s) in req.name.iter_mut().zip(ifname.bytes()) {
        *d = s as libc::c_char;
    }
    // SAFETY: creating a plain datagram socket; checked, and closed below exactly once.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(PortError::os(ifname, "socket", io::Error::last_os_error()));
    }
    // SAFETY: `req` is a live `struct ifreq`-sized buffer with a NUL-terminated name (shorter
    // than IFNAMSIZ, rest zeroed) that the kernel only reads during the call.
    let rc = unsafe { libc::ioctl(fd, libc::SIOCSIFMTU as _, &mut req) };
    let err = io::Error::last_os_error();
    // SAFETY: `fd` was opened above and is not used after this.
    unsafe { libc::close(fd) };
    if rc == 0 {
        return Ok(());
    }
    let limits = match mtu_limits(index) {
        Some((min, max)) => format!(" (the device takes {min}..={max})"),
        None => String::new(),
    };
    Err(PortError::Config(format!(
        "the kernel refused MTU {mtu} on interface {ifname}{limits}: {err}"
    )))
}

/// The interface's current MTU, from netlink.
pub fn mtu(ifname: &str) -> Result<u32, PortError> {
    let index = super::afxdp::ifindex(ifname)?;
    link_attrs(index)
        .and_then(|a| a.mtu)
        .ok_or_else(|| PortError::Config(format!("cannot read the MTU of {ifname}")))
}

/// `(min_mtu, max_mtu)` of the interface, as the kernel reports them; `None` when it reports
/// none or no upper limit (a maximum of 0, as loopback does).
pub fn mtu_limits(index: u32) -> Option<(u32, u32)> {
    let a = link_attrs(index)?;
    let (min, max) = (a.min_mtu?, a.max_mtu?);
    (max > 0).then_some((min, max))
}

#[derive(Default)]
struct LinkAttrs {
    mtu: Option<u32>,
    min_mtu: Option<u32>,
    max_mtu: Option<u32>,
}

const RTM_GETLINK: u16 = 18;
const NLM_F_REQUEST: u16 = 1;
const NLMSG_HDR: usize = 16;
const IFINFOMSG: usize = 16;
const IFLA_MTU: u16 = 4;
const IFLA_MIN_MTU: u16 = 50;
const IFLA_MAX_MTU: u16 = 51;

/// One `RTM_GETLINK` request for `index`; parses the MTU attributes of the answer.
fn link_attrs(index: u32) -> Option<LinkAttrs> {
    let mut req = [0u8; NLMSG_HDR + IFINFOMSG];
    req[0..4].copy_from_slice(&((NLMSG_HDR + IFINFOMSG) as u32).to_ne_bytes());
    req[4..6].copy_from_slice(&RTM_GETLINK.to_ne_bytes());
    req[6..8].copy_from_slice(&NLM_F_REQUEST.to_ne_bytes());
    req[8..12].copy_from_slice(&1u32.to_ne_bytes());
    // ifinfomsg: family 0, type 0, index, flags 0, change 0.
    req[NLMSG_HDR + 4..NLMSG_HDR + 8].copy_from_slice(&index.to_ne_bytes());
    // SAFETY: creating a netlink socket; checked, and closed below exactly once.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_ROUTE,
        )
    };
    if fd < 0 {
        return None;
    }
    let mut buf = vec![0u8; 16384];
    // SAFETY: sending `req.len()` bytes from `req` and receiving at most `buf.len()` bytes into
    // `buf`, both live for the calls, on the socket opened above (the kernel is the default
    // destination of an unbound netlink socket).
    let got = unsafe {
        let sent = libc::send(fd, req.as_ptr().cast(), req.len(), 0);
        let got = if sent == req.len() as isize {
            libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0)
        } else {
            -1
        };
        libc::close(fd);
        got
    };
    let msg = buf.get(..usize::try_from(got).ok()?)?;
    let msg_type = u16::from_ne_bytes(msg.get(4..6)?.try_into().ok()?);
    if msg_type != 16 {
        // RTM_NEWLINK is the answer; anything else (NLMSG_ERROR) means no data.
        return None;
    }
    let msg_len = u32::from_ne_bytes(msg.get(0..4)?.try_into().ok()?) as usize;
    let mut attrs = msg.get(NLMSG_HDR + IFINFOMSG..msg_len.min(msg.len()))?;
    let mut out = LinkAttrs::default();
    while attrs.len() >= 4 {
        let len = u16::from_ne_bytes([attrs[0], attrs[1]]) as usize;
        let typ = u16::from_ne_bytes([attrs[2], attrs[3]]) & 0x3fff;
        if len < 4 {
            break;
        }
        let val = attrs
            .get(4..len)
            .and_then(|v| v.get(..4))
            .and_then(|v| v.try_into().ok())
            .map(u32::from_ne_bytes);
        match typ {
            IFLA_MTU => out.mtu = val,
            IFLA_MIN_MTU => out.min_mtu = val,
            IFLA_MAX_MTU => out.max_mtu = val,
            _ => {}
        }
        attrs = attrs.get(len.next_multiple_of(4)..).unwrap_or(&[]);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn netlink_reports_what_sysfs_says_for_loopback() {
        let sys: u32 = std::fs::read_to_string("/sys/class/net/lo/mtu")
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert_eq!(mtu("lo").unwrap(), sys);
        // Loopback reports a maximum of 0: no upper limit.
        assert_eq!(
            mtu_limits(super::super::afxdp::ifindex("lo").unwrap()),
            None
        );
    }

    #[test]
    fn a_missing_interface_is_named() {
        let e = set_mtu("xvs-no-such0", 9000).unwrap_err().to_string();
        assert!(e.contains("xvs-no-such0"), "{e}");
    }
}
