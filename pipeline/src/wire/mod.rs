//! Frames and header views over byte slices.
//!
//! This module owns the representation of a frame being switched ([`Frame`]: a borrowed buffer
//! with headroom, so VLAN push and tunnel encapsulation grow it in place), header views with
//! named byte offsets for reading and rewriting fields in place, and checksum arithmetic.
//! Parsing into a flow key is [`crate::extract`]; deciding what to rewrite is [`crate::xlate`].

pub mod arp;
pub mod checksum;
pub mod ethernet;
pub mod geneve;
pub mod ipv4;
pub mod ipv6;
pub mod l4;
pub mod rewrite;

/// A frame being switched: `buf[head..head + len]` is the frame; bytes before `head` are
/// headroom that pushes (VLAN tags, encapsulation) grow into without moving the payload.
///
/// It borrows its buffer, so the same code runs on an AF_XDP UMEM chunk, a test's `Vec<u8>`, or
/// a reassembled datagram owned by connection tracking.
///
/// A frame also remembers where in its buffer an IP header sits whose checksums connection
/// tracking found good (those it verifies: the IPv4 header's, and TCP's, UDP's and ICMP's in
/// the datagram; other protocols it tracks by addresses), so that a pipeline running `ct()`
/// several times on one frame (the seed's gateway twice, OVN's pipelines more often) verifies
/// them once. That holds because every rewrite of an IP or L4 header here updates their
/// checksums as it goes, keeping a good checksum good. Pushes and pulls at the front (VLAN
/// tags, tunnel headers) move the frame's start, not its IP header, and the mark is kept by
/// buffer offset, so it stays with the header; a gap inserted or removed in front of the
/// header that moves it, and cutting or growing the frame's end, forget it.
#[derive(Debug)]
pub struct Frame<'a> {
    buf: &'a mut [u8],
    head: usize,
    len: usize,
    /// Buffer offset of the IP header whose checksums were found good, or [`NOT_CHECKED`].
    checked_l3: usize,
}

/// [`Frame::checked_l3`] when no header's checksums are known good.
const NOT_CHECKED: usize = usize::MAX;

/// The buffer has no room for the requested growth.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NoRoom;

impl<'a> Frame<'a> {
    /// A frame occupying `buf[head..head + len]`. Panics if that range is outside `buf` (a
    /// caller bug, never a property of traffic).
    pub fn new(buf: &'a mut [u8], head: usize, len: usize) -> Frame<'a> {
        assert!(head + len <= buf.len(), "frame range outside its buffer");
        Frame {
            buf,
            head,
            len,
            checked_l3: NOT_CHECKED,
        }
    }

    /// Whether the IP header at offset `l3` of the frame is one whose checksums were found
    /// good (see [`Frame::set_checksums_good`]) since the frame was made.
    #[inline]
    pub fn checksums_good(&self, l3: usize) -> bool {
        self.checked_l3 == self.head.wrapping_add(l3)
    }

    /// Records that the checksums of the IP header at offset `l3` of the frame, and of its
    /// datagram's L4 header, were verified and found good.
    #[inline]
    pub fn set_checksums_good(&mut self, l3: usize) {
        self.checked_l3 = self.head + l3;
    }

    #[inline]
    pub fn data(&self) -> &[u8] {
        &self.buf[self.head..self.head + self.len]
    }

    #[inline]
    pub fn data_mut(&mut self) -> &mut [u8] {
        &mut self.buf[self.head..self.head + self.len]
    }

    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes available in front of the frame.
    #[inline]
    pub fn headroom(&self) -> usize {
        self.head
    }

    /// Offset of the frame's first byte in the underlying buffer.
    #[inline]
    pub fn head(&self) -> usize {
        self.head
    }

    /// Grows the frame by `n` bytes at the front (contents of the new bytes unspecified).
    #[inline]
    pub fn push_head(&mut self, n: usize) -> Result<(), NoRoom> {
        if n > self.head {
            return Err(NoRoom);
        }
        self.head -= n;
        self.len += n;
        Ok(())
    }

    /// Removes `n` bytes from the front (`n` is clamped to the length).
    #[inline]
    pub fn pull_head(&mut self, n: usize) {
        let n = n.min(self.len);
        self.head += n;
        self.len -= n;
    }

    /// Inserts `n` bytes at offset `at` of the frame by moving the first `at` bytes forward
    /// into the headroom (cheap when `at` is small, as for a VLAN tag after the MAC addresses).
    pub fn insert_gap(&mut self, at: usize, n: usize) -> Result<(), NoRoom> {
        if at > self.len {
            return Err(NoRoom);
        }
        self.forget_checked_before(at);
        self.push_head(n)?;
        let h = self.head;
        self.buf.copy_within(h + n..h + n + at, h);
        Ok(())
    }

    /// Removes `n` bytes at offset `at` by moving the first `at` bytes back.
    pub fn remove_gap(&mut self, at: usize, n: usize) {
        if at + n > self.len {
            return;
        }
        self.forget_checked_before(at + n);
        let h = self.head;
        self.buf.copy_within(h..h + at, h + n);
        self.pull_head(n);
    }

    /// Forgets the good-checksums mark when its header starts in the frame's first `end`
    /// bytes, which a gap's insertion or removal moves.
    fn forget_checked_before(&mut self, end: usize) {
        if self.checked_l3 != NOT_CHECKED && self.checked_l3 < self.head + end {
            self.checked_l3 = NOT_CHECKED;
        }
    }

    /// Shortens the frame to `len` bytes (no effect if already shorter).
    #[inline]
    pub fn truncate(&mut self, len: usize) {
        if len < self.len {
            self.checked_l3 = NOT_CHECKED;
        }
        self.len = self.len.min(len);
    }

    /// Grows the frame by `n` bytes at the back, if the buffer has room.
    pub fn push_tail(&mut self, n: usize) -> Result<(), NoRoom> {
        if self.head + self.len + n > self.buf.len() {
            return Err(NoRoom);
        }
        self.len += n;
        self.checked_l3 = NOT_CHECKED;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gap_insert_and_remove_roundtrip() {
        let mut buf = vec![0u8; 8 + 6];
        buf[8..].copy_from_slice(&[1, 2, 3, 4, 5, 6]);
        let mut f = Frame::new(&mut buf, 8, 6);
        f.insert_gap(2, 4).unwrap();
        assert_eq!(f.len(), 10);
        assert_eq!(&f.data()[..2], &[1, 2]);
        assert_eq!(&f.data()[6..], &[3, 4, 5, 6]);
        f.remove_gap(2, 4);
        assert_eq!(f.data(), &[1, 2, 3, 4, 5, 6]);
        assert_eq!(f.insert_gap(0, 100), Err(NoRoom));
    }

    /// The good-checksums mark stays with the IP header through a VLAN tag's insertion and
    /// removal in front of it, and is gone once the header moves or the frame's end changes.
    #[test]
    fn checksum_mark_follows_the_ip_header() {
        let mut buf = vec![0u8; 64 + 60];
        let mut f = Frame::new(&mut buf, 64, 60);
        assert!(!f.checksums_good(14), "a new frame knows nothing");
        f.set_checksums_good(14);
        assert!(f.checksums_good(14));
        f.insert_gap(12, 4).unwrap();
        assert!(
            f.checksums_good(18) && !f.checksums_good(14),
            "tagged: 4 bytes further in"
        );
        f.remove_gap(12, 4);
        assert!(f.checksums_good(14));
        f.insert_gap(20, 8).unwrap();
        assert!(
            !f.checksums_good(14) && !f.checksums_good(22),
            "the header itself moved"
        );
        let mut f = Frame::new(&mut buf, 64, 60);
        f.set_checksums_good(14);
        f.pull_head(14);
        assert!(f.checksums_good(0), "decapsulated down to the header");
        f.truncate(40);
        assert!(!f.checksums_good(0), "cut");
        f.set_checksums_good(0);
        f.truncate(50);
        assert!(f.checksums_good(0), "a truncate that cuts nothing keeps it");
        f.push_tail(4).unwrap();
        assert!(!f.checksums_good(0), "grown");
    }
}
