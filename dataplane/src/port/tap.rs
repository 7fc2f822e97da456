//! TAP ("internal") port: a TAP device created through `/dev/net/tun`, which gives the host's
//! own network stack a port on the switch.
//!
//! Owns the TAP file descriptor (nonblocking; the device disappears when it is closed unless it
//! was made persistent elsewhere). It must not configure addresses or routes; whoever creates
//! the port does that with the usual tools. The only unsafe code is the `TUNSETIFF` ioctl.
#![allow(unsafe_code)]

use super::{HeapBufs, Port, PortError, PortStats, RxFrames, TxVerdict, MAX_FRAME_LEN};
use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;

const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const IFF_TAP: libc::c_short = 0x0002;
const IFF_NO_PI: libc::c_short = 0x1000;

/// `struct ifreq` as `TUNSETIFF` reads it: the name, then the flags in the union.
#[repr(C)]
struct IfReqFlags {
    name: [libc::c_char; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

pub struct TapPort {
    name: String,
    file: File,
    bufs: HeapBufs,
    stats: PortStats,
}

impl TapPort {
    /// Creates (or attaches to) the TAP device `ifname`. The device starts down; bring it up
    /// with `ip link set dev IFNAME up`.
    pub fn open(ifname: &str) -> Result<TapPort, PortError> {
        if ifname.is_empty() || ifname.len() >= libc::IFNAMSIZ || ifname.contains('\0') {
            return Err(PortError::Config(format!(
                "bad TAP interface name {ifname:?}"
            )));
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open("/dev/net/tun")
            .map_err(|e| PortError::os(ifname, "open /dev/net/tun", e))?;
        let mut req = IfReqFlags {
            name: [0; libc::IFNAMSIZ],
            flags: IFF_TAP | IFF_NO_PI,
            _pad: [0; 22],
        };
        for (d, s) in req.name.iter_mut().zip(ifname.bytes()) {
            *d = s as libc::c_char;
        }
        // SAFETY: the fd is an open /dev/net/tun descriptor and `req` is a live, properly sized
        // and NUL-terminated `struct ifreq` (name shorter than IFNAMSIZ, rest zeroed) that the
        // kernel reads and writes only for the duration of the call.
        let rc = unsafe { libc::ioctl(file.as_raw_fd(), TUNSETIFF as _, &mut req) };
        if rc < 0 {
            return Err(PortError::os(
                ifname,
                "TUNSETIFF",
                std::io::Error::last_os_error(),
            ));
        }
        Ok(TapPort {
            name: ifname.to_string(),
            file,
            bufs: HeapBufs::new(),
            stats: PortStats::default(),
        })
    }
}

impl Port for TapPort {
    fn name(&self) -> &str {
        &self.name
    }

    fn rx_burst(&mut self, f: &mut dyn FnMut(&mut RxFrames<'_>)) -> usize {
        while let Some(slot) = self.bufs.next_slot() {
            match self.file.read(slot) {
                Ok(0) => break,
                Ok(n) => {
                    self.stats.rx_packets += 1;
                    self.stats.rx_bytes += n as u64;
                    self.bufs.commit(n);
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                // WouldBlock: nothing more waiting. Anything else (device gone): count it and
                // let the next burst try again.
                Err(e) => {
                    if e.kind() != ErrorKind::WouldBlock {
                        self.stats.rx_dropped += 1;
                    }
                    break;
                }
            }
        }
        self.bufs.deliver(f)
    }

    fn tx(&mut self, frame: &[u8]) -> TxVerdict {
        let v = if frame.len() > MAX_FRAME_LEN {
            TxVerdict::TooBig
        } else {
            // A TAP write hands the frame to the host stack immediately; there is no ring to
            // batch into, so `flush` has nothing to do.
            match self.file.write(frame) {
                Ok(n) if n == frame.len() => TxVerdict::Queued,
                Ok(_) => TxVerdict::DeviceError,
                Err(e) if e.kind() == ErrorKind::WouldBlock => TxVerdict::RingFull,
                Err(_) => TxVerdict::DeviceError,
            }
        };
        self.stats.count_tx(v, frame.len());
        v
    }

    fn flush(&mut self) {}

    fn poll_fds(&self) -> Vec<RawFd> {
        vec![self.file.as_raw_fd()]
    }

    fn stats(&self) -> PortStats {
        self.stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_bad_names_without_touching_the_system() {
        assert!(matches!(TapPort::open(""), Err(PortError::Config(_))));
        assert!(matches!(
            TapPort::open("a-name-longer-than-16"),
            Err(PortError::Config(_))
        ));
    }
}
