//! Capture files: arbitrary bytes through the pcap reader (either byte order, microsecond or
//! nanosecond timestamps). Checked: no panic, no record beyond the reader's limit, and every
//! file read to its end writes back (little-endian, microseconds) to one that reads as the
//! same frames with the same timestamps.
#![no_main]

use dataplane::pcap::{PcapReader, PcapWriter, MAX_RECORD};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // A bad header or record ends the file: nothing more to check.
    let Ok(records) = PcapReader::new(data).and_then(|mut r| r.read_all()) else {
        return;
    };
    assert!(records.iter().all(|r| r.data.len() <= MAX_RECORD as usize));
    let mut writer = PcapWriter::new(Vec::new()).expect("writing to memory");
    for r in &records {
        writer
            .write(r.ts_sec, r.ts_usec, &r.data)
            .expect("writing to memory");
    }
    let bytes = writer.into_inner();
    let back = PcapReader::new(&bytes[..])
        .and_then(|mut r| r.read_all())
        .expect("a written file reads back");
    assert_eq!(back.len(), records.len());
    for (a, b) in records.iter().zip(&back) {
        assert_eq!(
            (a.ts_sec, a.ts_usec, &a.data),
            (b.ts_sec, b.ts_usec, &b.data)
        );
        assert_eq!(b.orig_len as usize, b.data.len());
    }
});
