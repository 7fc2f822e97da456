//! The `xvs` binary: the switch daemon and its command-line verbs.

use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser)]
#[command(name = "xvs", version, about = "A userspace virtual switch on AF_XDP")]
struct Cli {
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
}

fn main() {
    let cli = Cli::parse();
    let code = match cli.verb {
        Verb::CheckFlows { file, ports } => dataplane::cli::check_flows::run(&file, &ports),
    };
    std::process::exit(code);
}
