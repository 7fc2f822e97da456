//! `xvs check-flows FILE [--port NAME=NUMBER ...]` (to be written).

/// Runs the verb; returns the exit code.
pub fn run(_file: &std::path::Path, _ports: &[String]) -> i32 {
    eprintln!("check-flows: not yet implemented");
    2
}
