//! `xvs replay --config FILE --input PORT=IN.pcap ... --output-dir DIR` (see
//! [`crate::replay`]).

use crate::replay::{replay, ReplayInput};
use std::path::{Path, PathBuf};

/// Runs the verb; returns the exit code.
pub fn run(config: &Path, inputs: &[String], out_dir: &Path) -> i32 {
    let mut ins = Vec::new();
    for i in inputs {
        let Some((port, file)) = i.split_once('=') else {
            eprintln!("xvs replay: --input {i}: expected PORT=FILE");
            return 2;
        };
        ins.push(ReplayInput {
            port: port.to_string(),
            path: PathBuf::from(file),
        });
    }
    let cfg = match crate::config::load(config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("xvs replay: {e}");
            return 1;
        }
    };
    if let Err(e) = std::fs::create_dir_all(out_dir) {
        eprintln!("xvs replay: {}: {e}", out_dir.display());
        return 2;
    }
    match replay(&cfg, &ins, out_dir) {
        Ok(s) => {
            eprintln!("xvs replay: {} frame(s) in", s.frames_in);
            for (port, n) in &s.frames_out {
                eprintln!("  {port}: {n} frame(s) out");
            }
            0
        }
        Err(e) => {
            eprintln!("xvs replay: {e}");
            1
        }
    }
}
