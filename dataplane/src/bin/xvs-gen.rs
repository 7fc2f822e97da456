//! `xvs-gen`: the paced AF_XDP traffic generator used by the throughput benchmark. See
//! `dataplane::gen`.

use clap::Parser;

fn main() {
    let args = dataplane::gen::Args::parse();
    if let Err(e) = dataplane::gen::run(&args) {
        eprintln!("xvs-gen: {e}");
        std::process::exit(1);
    }
}
