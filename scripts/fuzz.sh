#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/fuzz_targets for a bounded time each. New inputs go to
# fuzz/corpus/TARGET (not committed); fuzz/seeds/TARGET holds the committed seed inputs.
# Usage: scripts/fuzz.sh [SECONDS_PER_TARGET]   (default 60)
# Uses the nightly toolchain when installed, else stable with RUSTC_BOOTSTRAP=1.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
secs="${1:-60}"
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz
if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
    fuzz=(cargo +nightly fuzz)
else
    export RUSTC_BOOTSTRAP=1
    fuzz=(cargo fuzz)
fi
for target in fuzz_targets/*.rs; do
    name="$(basename "$target" .rs)"
    mkdir -p "corpus/$name" "seeds/$name"
    echo "== fuzz $name for ${secs}s"
    "${fuzz[@]}" run "$name" "corpus/$name" "seeds/$name" -- -max_total_time="$secs" -print_final_stats=1
done
