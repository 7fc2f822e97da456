#!/usr/bin/env bash
# Runs cargo-fuzz targets (fuzz/fuzz_targets) one after another, each for a bounded time or
# number of executions, and prints each target's final stats. New inputs go to
# fuzz/corpus/TARGET (not committed); fuzz/seeds/TARGET holds the committed seed inputs; a
# crashing input lands in fuzz/artifacts/TARGET and makes the script exit non-zero.
#
# Usage: scripts/fuzz.sh [SECONDS] [--runs N] [--release] [--sanitizer S] [TARGET...]
#   SECONDS         time per target (default 60 when --runs is not given)
#   --runs N        stop each target after N executions instead (e.g. 10000000); with SECONDS
#                   too, whichever comes first
#   --release       build without debug assertions and overflow checks (faster, checks less)
#   --sanitizer S   address, memory, thread, leak or none (default none: the fuzzed crates have
#                   no unsafe code on these paths, so AddressSanitizer finds nothing the bounds
#                   checks miss, and it costs several times the execution rate)
#   TARGET...       targets to run (default: all)
# Examples: scripts/fuzz.sh 600
#           scripts/fuzz.sh --runs 10000000 conntrack_seq pipeline_exec
#
# Inputs are capped per target (MAX_LEN below): the sequence targets also cap the frames one
# input may hold, so a longer input only costs time. Builds with the default toolchain and
# RUSTC_BOOTSTRAP=1 (cargo-fuzz needs nightly flags), into fuzz/target/SANITIZER[-release].
set -euo pipefail
self="$(realpath "$0")"
cd "$(dirname "$self")/../fuzz"

declare -A MAX_LEN=(
    [frame_extract]=1600    # one frame: 8 control bytes and up to an MTU's worth
    [flow_parser]=1024      # a few flow lines; printing round trips every accepted flow
    [pipeline_exec]=384     # up to 16 described frames
    [conntrack_seq]=384     # up to 24 described frames
    [config_parser]=1536    # the largest seed configuration is 1479 bytes
    [control_request]=256   # one request
    [pcap_reader]=2048      # a global header and a few records
)

secs=""
runs=""
build=()
sanitizer=none
targets=()
while [ $# -gt 0 ]; do
    case "$1" in
    --runs)
        runs="$2"
        shift 2
        ;;
    --release)
        build+=(-O)
        shift
        ;;
    --sanitizer)
        sanitizer="$2"
        shift 2
        ;;
    -h | --help)
        sed -n '2,/^set -euo/p' "$self" | sed '$d; s/^# \{0,1\}//'
        exit 0
        ;;
    [0-9]*)
        secs="$1"
        shift
        ;;
    *)
        targets+=("$1")
        shift
        ;;
    esac
done
if [ -z "$secs" ] && [ -z "$runs" ]; then
    secs=60
fi
if [ ${#targets[@]} -eq 0 ]; then
    for t in fuzz_targets/*.rs; do
        targets+=("$(basename "$t" .rs)")
    done
fi
for t in "${targets[@]}"; do
    if [ ! -f "fuzz_targets/$t.rs" ]; then
        echo "no fuzz target $t" >&2
        exit 2
    fi
done

command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz
export RUSTC_BOOTSTRAP=1
fuzz=(cargo fuzz)
# Different sanitizers and assertion settings need different builds: keep them apart so
# switching does not rebuild everything.
tdir="target/${sanitizer}${build[*]:+-release}"
flags=(-s "$sanitizer" --target-dir "$tdir" "${build[@]}")

summary=()
status=0
for name in "${targets[@]}"; do
    mkdir -p "corpus/$name" "seeds/$name"
    args=(-max_len="${MAX_LEN[$name]:-4096}" -print_final_stats=1)
    [ -n "$secs" ] && args+=(-max_total_time="$secs")
    [ -n "$runs" ] && args+=(-runs="$runs")
    echo "== fuzz $name (${secs:+${secs}s }${runs:+$runs runs }max_len ${MAX_LEN[$name]:-4096})"
    log="$(mktemp)"
    # The fuzzer's own status, read before anything else runs: under pipefail a `|| true`
    # after the pipeline would replace PIPESTATUS with its own, hiding a crash.
    set +e
    "${fuzz[@]}" run "${flags[@]}" "$name" "corpus/$name" "seeds/$name" -- "${args[@]}" 2>&1 |
        tee "$log" | grep -E '^#[0-9]+[[:space:]]+(INITED|DONE)|panicked|ERROR|^stat::(number_of_executed_units|average_exec_per_sec)'
    rc=${PIPESTATUS[0]}
    set -e
    execs="$(awk '/^stat::number_of_executed_units/ {print $2}' "$log")"
    rate="$(awk '/^stat::average_exec_per_sec/ {print $2}' "$log")"
    rm -f "$log"
    if [ "$rc" -ne 0 ]; then
        status=1
        summary+=("$name: FAILED (exit $rc) after ${execs:-?} executions; see fuzz/artifacts/$name")
    else
        summary+=("$name: ${execs:-?} executions, ${rate:-?} exec/s")
    fi
done
echo "== summary"
printf '%s\n' "${summary[@]}"
exit "$status"
