#!/usr/bin/env bash
# Sets up the machine (system packages) and runs the whole test suite: formatting, lints, docs,
# unit, property, differential (against a private Open vSwitch) and namespace integration tests.
# Needs root for the namespace and AF_XDP tests. Usage: scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "== cargo doc -D warnings"
# Broken and private intra-doc links are errors, so module docs keep pointing somewhere real.
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --locked

echo "== fuzz targets: format and compile"
# The fuzz crate is outside the workspace (cargo-fuzz builds it with flags of its own), so
# nothing above would notice a change that breaks a target.
(cd fuzz && cargo fmt -- --check && cargo check --bins --locked)

echo "== cargo test"
# Integration tests create their own namespaces and OVS sandboxes; run them one binary at a
# time but let each binary's tests run in parallel.
cargo test --workspace --locked --profile ci -- --test-threads=2

echo "== test.sh: all passed"
