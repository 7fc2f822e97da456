//! `xvs check-flows FILE [--port NAME=NUMBER ...]`: parses a flow file with the names given and
//! prints each flow normalised the way `ovs-ofctl dump-flows --no-stats` prints it, one per line
//! (exit 0). On errors it prints `FILE:LINE:COL: message` for every bad line on stderr (exit 1).
//! A malformed `--port` or an unreadable file exits 2. This verb loads nothing into a switch.

use std::io::Write;
use std::path::Path;

use pipeline::flow::format::{format_flow, FormatOptions};
use pipeline::flow::parse::{parse_flows, ParseContext};
use pipeline::flow::PortNames;

/// Parses `NAME=NUMBER` port arguments.
pub fn parse_port_args(args: &[String]) -> Result<PortNames, String> {
    let mut ports = PortNames::new();
    for a in args {
        let Some((name, num)) = a.rsplit_once('=') else {
            return Err(format!("--port {a}: expected NAME=NUMBER"));
        };
        if name.is_empty() {
            return Err(format!("--port {a}: the port name is empty"));
        }
        let n: u32 = match num.parse() {
            Ok(n) if (1..0xff00).contains(&n) => n,
            _ => {
                return Err(format!(
                    "--port {a}: `{num}` is not a port number (1-65279)"
                ))
            }
        };
        ports.insert(name, n);
    }
    Ok(ports)
}

/// Runs the verb; returns the exit code.
pub fn run(file: &Path, port_args: &[String]) -> i32 {
    let ports = match parse_port_args(port_args) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("xvs check-flows: {e}");
            return 2;
        }
    };
    let text = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("xvs check-flows: {}: {e}", file.display());
            return 2;
        }
    };
    let ctx = ParseContext::with_ports(ports);
    match parse_flows(&text, &ctx) {
        Ok(flows) => {
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::new(stdout.lock());
            for f in &flows {
                if writeln!(
                    out,
                    "{}",
                    format_flow(f, &ctx.ports, FormatOptions::default())
                )
                .is_err()
                {
                    return 2;
                }
            }
            if out.flush().is_err() {
                return 2;
            }
            0
        }
        Err(errors) => {
            for e in &errors {
                eprintln!("{}:{e}", file.display());
            }
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_args() {
        let p = parse_port_args(&["tap2=4".into(), "patch-brAtlas-t=1".into()]).unwrap();
        assert_eq!(p.number("tap2"), Some(4));
        assert_eq!(p.number("patch-brAtlas-t"), Some(1));
        assert!(parse_port_args(&["tap2".into()])
            .unwrap_err()
            .contains("NAME=NUMBER"));
        assert!(parse_port_args(&["tap2=x".into()])
            .unwrap_err()
            .contains("not a port number"));
        assert!(parse_port_args(&["tap2=0".into()]).is_err());
        assert!(parse_port_args(&["=3".into()]).is_err());
    }

    fn temp_file(name: &str, text: &str) -> std::path::PathBuf {
        let p = std::env::temp_dir().join(format!("xvs-check-flows-{}-{name}", std::process::id()));
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn exit_codes() {
        let ports = vec!["tap2=4".to_string(), "patch-brAtlas-t=1".to_string()];
        let good = temp_file(
            "good",
            "# seed\npriority=100,in_port=tap2 actions=output: tap2\n",
        );
        assert_eq!(run(&good, &ports), 0);
        let bad = temp_file(
            "bad",
            "in_port=tap9,actions=drop\nip,tp_dst=1,actions=drop\n",
        );
        assert_eq!(run(&bad, &ports), 1);
        assert_eq!(run(&good, &["tap2:4".to_string()]), 2);
        assert_eq!(run(std::path::Path::new("/nonexistent/flows"), &ports), 2);
        let _ = std::fs::remove_file(good);
        let _ = std::fs::remove_file(bad);
    }
}
