//! The verbs that talk to a running daemon over its control socket: each builds a request,
//! prints the reply (stdout on success, stderr on failure) and returns the exit code (0, or 1
//! when the daemon refused; 2 when it could not be reached or a local file could not be read).

use crate::control::{self, Reply};
use std::io::Write;
use std::path::Path;

fn print_reply(verb: &str, r: Result<Reply, control::ControlError>) -> i32 {
    match r {
        Ok(r) if r.ok => {
            let _ = std::io::stdout().write_all(&r.body);
            0
        }
        Ok(r) => {
            let _ = std::io::stderr().write_all(&r.body);
            1
        }
        Err(e) => {
            eprintln!("xvs {verb}: {e}");
            2
        }
    }
}

/// Sends `verb` with `args` and prints the reply.
pub fn simple(control: &Path, verb: &str, args: &[String]) -> i32 {
    print_reply(verb, control::call(control, verb, args))
}

/// `add-flows`/`replace-flows BRIDGE FILE`: the file is read here, so relative paths are the
/// caller's, and its name travels with the text for error positions.
pub fn flows(control: &Path, verb: &str, bridge: &str, file: &Path) -> i32 {
    let text = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("xvs {verb}: {}: {e}", file.display());
            return 2;
        }
    };
    let args = [bridge.to_string(), file.display().to_string(), text];
    print_reply(verb, control::call(control, verb, &args))
}

/// `capture PORT -w FILE [--count N] [--duration S]`: the daemon answers with the pcap bytes.
pub fn capture(
    control: &Path,
    port: &str,
    out: &Path,
    count: Option<usize>,
    duration: Option<f64>,
) -> i32 {
    // Without a count, a capture lasts 10 s; with one, at most an hour.
    let duration = duration.unwrap_or(if count.is_some() { 3600.0 } else { 10.0 });
    let args = [
        port.to_string(),
        count.unwrap_or(usize::MAX).to_string(),
        duration.to_string(),
    ];
    match control::call(control, "capture", &args) {
        Ok(r) if r.ok => match std::fs::write(out, &r.body) {
            Ok(()) => {
                let frames = crate::pcap::PcapReader::new(&r.body[..])
                    .and_then(|mut rd| rd.read_all())
                    .map(|v| v.len())
                    .unwrap_or(0);
                eprintln!(
                    "xvs capture: {frames} frame(s) written to {}",
                    out.display()
                );
                0
            }
            Err(e) => {
                eprintln!("xvs capture: {}: {e}", out.display());
                2
            }
        },
        other => print_reply("capture", other),
    }
}
