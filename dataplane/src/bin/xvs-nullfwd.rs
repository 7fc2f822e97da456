//! `xvs-nullfwd`: the null AF_XDP forwarder used as the I/O ceiling in benchmarks. See
//! `dataplane::nullfwd`.

use clap::Parser;

fn main() {
    let args = dataplane::nullfwd::Args::parse();
    if let Err(e) = dataplane::nullfwd::run(&args) {
        eprintln!("xvs-nullfwd: {e}");
        std::process::exit(1);
    }
}
