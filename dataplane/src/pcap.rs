//! Classic libpcap capture files: reading and writing.
//!
//! Owns the file format only: the 24-byte global header (magic `0xa1b2c3d4`, version 2.4,
//! microsecond timestamps, link type 1 = Ethernet) and the 16-byte record headers. Files written
//! here are little-endian; files read may be either byte order. The nanosecond variant is read
//! too (its timestamps are scaled to microseconds). No other capture format (pcapng) is handled.

use std::io::{self, Read, Write};

/// Link type of Ethernet frames.
pub const LINKTYPE_ETHERNET: u32 = 1;

const MAGIC_US: u32 = 0xa1b2_c3d4;
const MAGIC_NS: u32 = 0xa1b2_3c4d;
/// Largest record the reader accepts; larger lengths mean a corrupt file.
pub const MAX_RECORD: u32 = 256 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum PcapError {
    #[error("I/O error: {0}")]
    Io(#[from] io::Error),
    #[error("not a classic pcap file (magic {0:#010x})")]
    BadMagic(u32),
    #[error("unsupported link type {0} (only Ethernet, 1)")]
    LinkType(u32),
    #[error("record of {0} bytes is larger than any frame")]
    RecordTooLong(u32),
    #[error("file ends inside a record")]
    Truncated,
}

/// One captured frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub ts_sec: u32,
    pub ts_usec: u32,
    /// Length of the frame on the wire (may exceed `data.len()` if the capture was snapped).
    pub orig_len: u32,
    pub data: Vec<u8>,
}

/// Writes a pcap file record by record.
pub struct PcapWriter<W: Write> {
    out: W,
}

impl<W: Write> PcapWriter<W> {
    /// Writes the global header (snap length 65535, Ethernet).
    pub fn new(mut out: W) -> Result<PcapWriter<W>, PcapError> {
        let mut h = [0u8; 24];
        h[0..4].copy_from_slice(&MAGIC_US.to_le_bytes());
        h[4..6].copy_from_slice(&2u16.to_le_bytes());
        h[6..8].copy_from_slice(&4u16.to_le_bytes());
        // thiszone and sigfigs stay zero.
        h[16..20].copy_from_slice(&65535u32.to_le_bytes());
        h[20..24].copy_from_slice(&LINKTYPE_ETHERNET.to_le_bytes());
        out.write_all(&h)?;
        Ok(PcapWriter { out })
    }

    /// Appends one frame with the given timestamp.
    pub fn write(&mut self, ts_sec: u32, ts_usec: u32, frame: &[u8]) -> Result<(), PcapError> {
        let len = u32::try_from(frame.len()).map_err(|_| PcapError::RecordTooLong(u32::MAX))?;
        let mut h = [0u8; 16];
        h[0..4].copy_from_slice(&ts_sec.to_le_bytes());
        h[4..8].copy_from_slice(&ts_usec.to_le_bytes());
        h[8..12].copy_from_slice(&len.to_le_bytes());
        h[12..16].copy_from_slice(&len.to_le_bytes());
        self.out.write_all(&h)?;
        self.out.write_all(frame)?;
        Ok(())
    }

    /// Appends one frame stamped with the current wall-clock time.
    pub fn write_now(&mut self, frame: &[u8]) -> Result<(), PcapError> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        self.write(now.as_secs() as u32, now.subsec_micros(), frame)
    }

    pub fn flush(&mut self) -> Result<(), PcapError> {
        self.out.flush()?;
        Ok(())
    }

    pub fn into_inner(self) -> W {
        self.out
    }
}

/// Reads a pcap file record by record.
pub struct PcapReader<R: Read> {
    input: R,
    big_endian: bool,
    nanos: bool,
}

impl<R: Read> PcapReader<R> {
    /// Reads and checks the global header.
    pub fn new(mut input: R) -> Result<PcapReader<R>, PcapError> {
        let mut h = [0u8; 24];
        input.read_exact(&mut h)?;
        let magic_le = u32::from_le_bytes([h[0], h[1], h[2], h[3]]);
        let magic_be = u32::from_be_bytes([h[0], h[1], h[2], h[3]]);
        let (big_endian, nanos) = match (magic_le, magic_be) {
            (MAGIC_US, _) => (false, false),
            (MAGIC_NS, _) => (false, true),
            (_, MAGIC_US) => (true, false),
            (_, MAGIC_NS) => (true, true),
            _ => return Err(PcapError::BadMagic(magic_le)),
        };
        let r = PcapReader {
            input,
            big_endian,
            nanos,
        };
        let linktype = r.u32_at(&h, 20);
        if linktype != LINKTYPE_ETHERNET {
            return Err(PcapError::LinkType(linktype));
        }
        Ok(r)
    }

    fn u32_at(&self, b: &[u8], at: usize) -> u32 {
        let w = [b[at], b[at + 1], b[at + 2], b[at + 3]];
        if self.big_endian {
            u32::from_be_bytes(w)
        } else {
            u32::from_le_bytes(w)
        }
    }

    /// The next record, or `None` at a clean end of file.
    pub fn next_record(&mut self) -> Result<Option<Record>, PcapError> {
        let mut h = [0u8; 16];
        // Distinguish a clean end (no bytes of a header) from a truncated header.
        let mut got = 0;
        while got < h.len() {
            match self.input.read(&mut h[got..]) {
                Ok(0) if got == 0 => return Ok(None),
                Ok(0) => return Err(PcapError::Truncated),
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
        let ts_sec = self.u32_at(&h, 0);
        let mut ts_usec = self.u32_at(&h, 4);
        if self.nanos {
            ts_usec /= 1000;
        }
        let incl_len = self.u32_at(&h, 8);
        let orig_len = self.u32_at(&h, 12);
        if incl_len > MAX_RECORD {
            return Err(PcapError::RecordTooLong(incl_len));
        }
        let mut data = vec![0u8; incl_len as usize];
        self.input.read_exact(&mut data).map_err(|e| {
            if e.kind() == io::ErrorKind::UnexpectedEof {
                PcapError::Truncated
            } else {
                PcapError::Io(e)
            }
        })?;
        Ok(Some(Record {
            ts_sec,
            ts_usec,
            orig_len,
            data,
        }))
    }

    /// Reads every remaining record.
    pub fn read_all(&mut self) -> Result<Vec<Record>, PcapError> {
        let mut v = Vec::new();
        while let Some(r) = self.next_record()? {
            v.push(r);
        }
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_then_read_roundtrip() {
        let frames: Vec<Vec<u8>> =
            vec![vec![0xff; 60], (0..=255u8).collect(), vec![], vec![1, 2, 3]];
        let mut w = PcapWriter::new(Vec::new()).unwrap();
        for (i, f) in frames.iter().enumerate() {
            w.write(1_700_000_000 + i as u32, 10 * i as u32, f).unwrap();
        }
        let bytes = w.into_inner();
        assert_eq!(
            bytes.len(),
            24 + frames.iter().map(|f| 16 + f.len()).sum::<usize>()
        );
        // Global header fields as the format defines them.
        assert_eq!(&bytes[0..4], &[0xd4, 0xc3, 0xb2, 0xa1]);
        assert_eq!(u32::from_le_bytes(bytes[20..24].try_into().unwrap()), 1);

        let mut r = PcapReader::new(&bytes[..]).unwrap();
        let recs = r.read_all().unwrap();
        assert_eq!(recs.len(), frames.len());
        for (i, (rec, f)) in recs.iter().zip(&frames).enumerate() {
            assert_eq!(&rec.data, f);
            assert_eq!(rec.orig_len as usize, f.len());
            assert_eq!(rec.ts_sec, 1_700_000_000 + i as u32);
            assert_eq!(rec.ts_usec, 10 * i as u32);
        }
    }

    #[test]
    fn reads_big_endian_nanosecond_files() {
        let mut b = Vec::new();
        b.extend_from_slice(&MAGIC_NS.to_be_bytes());
        b.extend_from_slice(&2u16.to_be_bytes());
        b.extend_from_slice(&4u16.to_be_bytes());
        b.extend_from_slice(&[0; 8]);
        b.extend_from_slice(&65535u32.to_be_bytes());
        b.extend_from_slice(&1u32.to_be_bytes());
        b.extend_from_slice(&5u32.to_be_bytes());
        b.extend_from_slice(&7_000u32.to_be_bytes());
        b.extend_from_slice(&2u32.to_be_bytes());
        b.extend_from_slice(&9u32.to_be_bytes());
        b.extend_from_slice(&[0xaa, 0xbb]);
        let recs = PcapReader::new(&b[..]).unwrap().read_all().unwrap();
        assert_eq!(
            recs,
            vec![Record {
                ts_sec: 5,
                ts_usec: 7,
                orig_len: 9,
                data: vec![0xaa, 0xbb]
            }]
        );
    }

    #[test]
    fn rejects_corrupt_files() {
        assert!(matches!(
            PcapReader::new(&[0u8; 24][..]),
            Err(PcapError::BadMagic(0))
        ));
        let mut w = PcapWriter::new(Vec::new()).unwrap();
        w.write(0, 0, &[1, 2, 3, 4]).unwrap();
        let mut bytes = w.into_inner();
        bytes.pop();
        let mut r = PcapReader::new(&bytes[..]).unwrap();
        assert!(matches!(r.next_record(), Err(PcapError::Truncated)));
        // A header claiming a huge record is refused before allocating.
        let mut bytes = PcapWriter::new(Vec::new()).unwrap().into_inner();
        bytes.extend_from_slice(&[0; 8]);
        bytes.extend_from_slice(&u32::MAX.to_le_bytes());
        bytes.extend_from_slice(&u32::MAX.to_le_bytes());
        let mut r = PcapReader::new(&bytes[..]).unwrap();
        assert!(matches!(r.next_record(), Err(PcapError::RecordTooLong(_))));
    }
}
