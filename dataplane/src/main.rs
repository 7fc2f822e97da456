//! The `xvs` binary: the switch daemon and its command-line verbs.

use clap::{Parser, Subcommand};
use dataplane::cli;
use std::path::PathBuf;

/// See [`dataplane::DaemonAllocator`] for why.
#[global_allocator]
static ALLOCATOR: dataplane::DaemonAllocator = dataplane::DaemonAllocator;

#[derive(Parser)]
#[command(name = "xvs", version, about = "A userspace virtual switch on AF_XDP")]
struct Cli {
    /// The daemon's control socket (several daemons can run with different sockets).
    #[arg(long, global = true, default_value = dataplane::control::DEFAULT_PATH)]
    control: PathBuf,
    #[command(subcommand)]
    verb: Verb,
}

#[derive(Subcommand)]
enum Verb {
    /// Parse a flow file and print its flows as `dump-flows` would; errors as FILE:LINE:COL.
    CheckFlows {
        file: PathBuf,
        /// Port names the file uses, as NAME=NUMBER (repeatable).
        #[arg(long = "port", value_name = "NAME=NUMBER")]
        ports: Vec<String>,
    },
    /// Run the switch in the foreground until SIGTERM or SIGINT.
    Run {
        #[arg(long)]
        config: PathBuf,
    },
    /// Run the configured bridges offline over pcap files.
    Replay {
        #[arg(long)]
        config: PathBuf,
        /// PORT=FILE.pcap (repeatable; ties in time keep this order).
        #[arg(long = "input", value_name = "PORT=FILE")]
        inputs: Vec<String>,
        #[arg(long)]
        output_dir: PathBuf,
    },
    /// Bridges and their ports.
    Show,
    /// Add the flows of FILE to BRIDGE.
    AddFlows { bridge: String, file: PathBuf },
    /// Make BRIDGE's flows exactly those of FILE, atomically.
    ReplaceFlows { bridge: String, file: PathBuf },
    /// Delete BRIDGE's flows (those at least as specific as MATCH, if given).
    DelFlows {
        bridge: String,
        r#match: Option<String>,
    },
    /// BRIDGE's flows with their counters.
    DumpFlows { bridge: String },
    /// BRIDGE's MAC learning table.
    FdbShow { bridge: String },
    /// The tunnel next-hop cache (IP, MAC, underlay bridge), learned from ARP and Geneve frames.
    TnlNeighShow,
    /// Tracked connections (of one zone with zone=N).
    DumpConntrack { zone: Option<String> },
    /// Remove tracked connections: all, a zone's (zone=N), or one (a ct_nw_src=...,... tuple).
    FlushConntrack { args: Vec<String> },
    /// The megaflows cached by every datapath thread.
    DumpDpFlows,
    /// Trace a frame through BRIDGE: FLOW in match syntax with in_port.
    Trace {
        bridge: String,
        flow: String,
        /// ct_state a ct(table=N) resumes with (repeatable, one per recirculation).
        #[arg(long = "ct-next")]
        ct_next: Vec<String>,
        /// Trace these bytes (hex) instead of a frame built from FLOW.
        #[arg(long)]
        frame: Option<String>,
    },
    /// Port counters (of BRIDGE's ports only, if given).
    PortStats { bridge: Option<String> },
    /// Capture frames received or sent on PORT into a pcap file.
    Capture {
        port: String,
        #[arg(short = 'w', value_name = "FILE.pcap")]
        write: PathBuf,
        #[arg(long)]
        count: Option<usize>,
        /// Seconds (default 10 without --count).
        #[arg(long)]
        duration: Option<f64>,
    },
    /// Datapath thread counters.
    PmdStatsShow,
}

fn main() {
    let cli = Cli::parse();
    let c = cli.control.as_path();
    let code = match cli.verb {
        Verb::CheckFlows { file, ports } => cli::check_flows::run(&file, &ports),
        Verb::Run { config } => dataplane::daemon::run(&dataplane::daemon::RunOptions {
            config,
            control: cli.control.clone(),
        }),
        Verb::Replay {
            config,
            inputs,
            output_dir,
        } => cli::replay::run(&config, &inputs, &output_dir),
        Verb::Show => cli::ctl::simple(c, "show", &[]),
        Verb::AddFlows { bridge, file } => cli::ctl::flows(c, "add-flows", &bridge, &file),
        Verb::ReplaceFlows { bridge, file } => cli::ctl::flows(c, "replace-flows", &bridge, &file),
        Verb::DelFlows { bridge, r#match } => {
            let mut a = vec![bridge];
            a.extend(r#match);
            cli::ctl::simple(c, "del-flows", &a)
        }
        Verb::DumpFlows { bridge } => cli::ctl::simple(c, "dump-flows", &[bridge]),
        Verb::FdbShow { bridge } => cli::ctl::simple(c, "fdb-show", &[bridge]),
        Verb::TnlNeighShow => cli::ctl::simple(c, "tnl-neigh-show", &[]),
        Verb::DumpConntrack { zone } => {
            cli::ctl::simple(c, "dump-conntrack", &zone.into_iter().collect::<Vec<_>>())
        }
        Verb::FlushConntrack { args } => cli::ctl::simple(c, "flush-conntrack", &args),
        Verb::DumpDpFlows => cli::ctl::simple(c, "dump-dp-flows", &[]),
        Verb::Trace {
            bridge,
            flow,
            ct_next,
            frame,
        } => {
            let mut a = vec![bridge, flow];
            for s in ct_next {
                a.push("--ct-next".into());
                a.push(s);
            }
            if let Some(f) = frame {
                a.push("--frame".into());
                a.push(f);
            }
            cli::ctl::simple(c, "trace", &a)
        }
        Verb::PortStats { bridge } => {
            cli::ctl::simple(c, "port-stats", &bridge.into_iter().collect::<Vec<_>>())
        }
        Verb::Capture {
            port,
            write,
            count,
            duration,
        } => cli::ctl::capture(c, &port, &write, count, duration),
        Verb::PmdStatsShow => cli::ctl::simple(c, "pmd-stats-show", &[]),
    };
    std::process::exit(code);
}
