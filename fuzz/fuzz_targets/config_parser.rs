//! Arbitrary text as a switch configuration: parsing never panics, an error always names a
//! position inside the text when it has one, and a configuration that parses builds a switch
//! (or fails with an error) without panicking either. Flow and pcap files are looked up in a
//! directory that does not exist, so nothing outside the input is read.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let dir = Path::new("/nonexistent-xvs-fuzz");
    match dataplane::config::parse(text, dir, "fuzz.toml") {
        Ok(cfg) => {
            let _ = dataplane::setup::build(&cfg, 0);
        }
        Err(e) => {
            let msg = e.to_string();
            assert!(!msg.is_empty());
            if let Some((line, col)) = e.position() {
                assert!(line >= 1 && col >= 1, "{msg}");
                assert!(line <= text.lines().count().max(1) + 1, "{msg}");
            }
        }
    }
});
