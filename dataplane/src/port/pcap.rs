//! Pcap port: receives the frames of a capture file once, in order, and writes every frame
//! transmitted to it into another capture file.
//!
//! Owns the two files; used for offline runs and tests. It never blocks and has no file
//! descriptor to poll; when the input is exhausted `rx_burst` returns 0 forever.

use super::{HeapBufs, Port, PortError, PortStats, RxFrames, TxVerdict, MAX_FRAME_LEN};
use crate::pcap::{PcapReader, PcapWriter};
use std::fs::File;
use std::io::{BufReader, BufWriter};
use std::os::fd::RawFd;
use std::path::Path;

pub struct PcapPort {
    name: String,
    input: Option<PcapReader<BufReader<File>>>,
    output: Option<PcapWriter<BufWriter<File>>>,
    bufs: HeapBufs,
    stats: PortStats,
}

impl PcapPort {
    /// A port reading frames from `input` (if any) and writing transmitted frames to `output`
    /// (if any; the file is created or truncated).
    pub fn open(
        name: &str,
        input: Option<&Path>,
        output: Option<&Path>,
    ) -> Result<PcapPort, PortError> {
        let pcap_err = |p: &Path, e| PortError::Pcap {
            path: p.display().to_string(),
            source: e,
        };
        let input = match input {
            Some(p) => {
                let f = File::open(p).map_err(|e| pcap_err(p, e.into()))?;
                Some(PcapReader::new(BufReader::new(f)).map_err(|e| pcap_err(p, e))?)
            }
            None => None,
        };
        let output = match output {
            Some(p) => {
                let f = File::create(p).map_err(|e| pcap_err(p, e.into()))?;
                Some(PcapWriter::new(BufWriter::new(f)).map_err(|e| pcap_err(p, e))?)
            }
            None => None,
        };
        Ok(PcapPort {
            name: name.to_string(),
            input,
            output,
            bufs: HeapBufs::new(),
            stats: PortStats::default(),
        })
    }

    /// Whether every input frame has been received.
    pub fn input_done(&self) -> bool {
        self.input.is_none()
    }
}

impl Port for PcapPort {
    fn name(&self) -> &str {
        &self.name
    }

    fn rx_burst(&mut self, f: &mut dyn FnMut(&mut RxFrames<'_>)) -> usize {
        while let Some(reader) = self.input.as_mut() {
            let Some(slot) = self.bufs.next_slot() else {
                break;
            };
            match reader.next_record() {
                Ok(Some(rec)) => {
                    if rec.data.len() > slot.len() {
                        self.stats.rx_dropped += 1;
                        continue;
                    }
                    slot[..rec.data.len()].copy_from_slice(&rec.data);
                    self.stats.rx_packets += 1;
                    self.stats.rx_bytes += rec.data.len() as u64;
                    self.bufs.commit(rec.data.len());
                }
                // End of file, or a corrupt tail: either way nothing more can be received.
                Ok(None) => self.input = None,
                Err(_) => {
                    self.stats.invalid_descs += 1;
                    self.input = None;
                }
            }
        }
        self.bufs.deliver(f)
    }

    fn tx(&mut self, frame: &[u8]) -> TxVerdict {
        let v = if frame.len() > MAX_FRAME_LEN {
            TxVerdict::TooBig
        } else {
            match self.output.as_mut().map(|w| w.write_now(frame)) {
                Some(Ok(())) => TxVerdict::Queued,
                _ => TxVerdict::DeviceError,
            }
        };
        self.stats.count_tx(v, frame.len());
        v
    }

    fn flush(&mut self) {
        if let Some(w) = self.output.as_mut() {
            if w.flush().is_err() {
                self.stats.tx_errors += 1;
            }
        }
    }

    fn poll_fds(&self) -> Vec<RawFd> {
        Vec::new()
    }

    fn stats(&self) -> PortStats {
        self.stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pcap::{PcapReader, PcapWriter};

    #[test]
    fn frames_flow_from_input_file_to_output_file() {
        let dir = std::env::temp_dir().join(format!("xvs-pcap-port-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (inp, out) = (dir.join("in.pcap"), dir.join("out.pcap"));
        let frames: Vec<Vec<u8>> = (0..40u8).map(|i| vec![i; 60 + i as usize]).collect();
        let mut w = PcapWriter::new(File::create(&inp).unwrap()).unwrap();
        for f in &frames {
            w.write(0, 0, f).unwrap();
        }
        drop(w);

        let mut port = PcapPort::open("p0", Some(&inp), Some(&out)).unwrap();
        let mut got = Vec::new();
        while !port.input_done() {
            port.rx_burst(&mut |fr| got.extend(fr.iter().map(|f| f.data().to_vec())));
        }
        assert_eq!(got, frames);
        for f in &got {
            assert_eq!(port.tx(f), TxVerdict::Queued);
        }
        port.flush();
        assert_eq!(port.stats().rx_packets, 40);
        assert_eq!(port.stats().tx_packets, 40);
        let recs = PcapReader::new(File::open(&out).unwrap())
            .unwrap()
            .read_all()
            .unwrap();
        assert_eq!(recs.into_iter().map(|r| r.data).collect::<Vec<_>>(), frames);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
