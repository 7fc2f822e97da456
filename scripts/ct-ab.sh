#!/usr/bin/env bash
# Interleaved comparison of the connection tracker's hot paths between two revisions.
#
# Builds `ct_hotloop` (benches/examples/ct_hotloop.rs) from revision A and from revision B (or
# the working tree), then runs them alternately, A B A B ..., so that both see the same phases
# of a shared machine: on this project's VMs one build's speed moves by 2x within minutes, and
# only numbers taken side by side are comparable. Each run prints its best and median window
# and the mean (the run's time per frame, what criterion reports); the summary gives, per build,
# the lowest best window, the median of the best windows, the medians of the medians and of the
# means, and in how many rounds B's median beat A's.
#
# Usage: scripts/ct-ab.sh [--mode MODE] [--rounds N] [--secs S] [--conns N] [--threads N]
#                         [--instructions] REV_A [REV_B]
#
#   MODE       a ct_hotloop mode: batch (default), single, reply, plain-reply, miss, commit
#   --threads  threads on one table, each on its own connections (ct_hotloop from 25f9bd4 on)
#   --instructions  also counts instructions per frame of each build's `execute_batch` once,
#              under callgrind (needs valgrind; not for `single` or `commit`, which do not
#              batch)
#   REV_B      a revision, or omitted for the working tree as it is
#
# Each build has a temporary target directory of its own: cargo judges a workspace member fresh
# by its files' paths relative to the member and their times, so a worktree built into a shared
# directory made the working tree's build look up to date and both labels ran one binary. The
# revisions are checked out in temporary worktrees. Everything is removed at exit.
set -euo pipefail

mode=batch rounds=10 secs=1 conns=100000 threads=1 instructions=0
while [[ $# -gt 0 ]]; do
    case "$1" in
        --mode) mode=$2; shift 2 ;;
        --rounds) rounds=$2; shift 2 ;;
        --secs) secs=$2; shift 2 ;;
        --conns) conns=$2; shift 2 ;;
        --threads) threads=$2; shift 2 ;;
        --instructions) instructions=1; shift ;;
        -h|--help) awk 'NR > 1 && /^#/ { print; next } NR > 1 { exit }' "$0"; exit 0 ;;
        -*) echo "ct-ab: unknown option $1" >&2; exit 2 ;;
        *) break ;;
    esac
done
if [[ $# -lt 1 || $# -gt 2 ]]; then
    echo "usage: scripts/ct-ab.sh [options] REV_A [REV_B]  (--help for more)" >&2
    exit 2
fi
for n in "$rounds" "$conns" "$threads"; do
    [[ "$n" =~ ^[1-9][0-9]*$ ]] || { echo "ct-ab: not a positive count: $n" >&2; exit 2; }
done
[[ "$secs" =~ ^[0-9]+(\.[0-9]+)?$ ]] || { echo "ct-ab: not a duration: $secs" >&2; exit 2; }

repo=$(git -C "$(dirname "$0")/.." rev-parse --show-toplevel)
work=$(mktemp -d /tmp/ct-ab.XXXXXX)
worktrees=()
cleanup() {
    for w in "${worktrees[@]}"; do
        git -C "$repo" worktree remove --force "$w" 2>/dev/null || true
    done
    rm -rf "$work"
}
trap cleanup EXIT

# build LABEL REV|"" -> $work/LABEL (the ct_hotloop binary)
build() {
    local label=$1 rev=$2 src=$repo
    if [[ -n "$rev" ]]; then
        src=$work/src-$label
        git -C "$repo" worktree add --quiet --detach "$src" "$rev"
        worktrees+=("$src")
    fi
    echo "ct-ab: building $label (${rev:-working tree})" >&2
    (cd "$src" && CARGO_TARGET_DIR=$work/target-$label cargo build --quiet --release \
        -p xvs-benches --example ct_hotloop)
    cp "$work/target-$label/release/examples/ct_hotloop" "$work/$label"
    local usage
    usage=$("$work/$label" help 2>&1 || true)
    if [[ "$usage" != *"$mode"* ]]; then
        echo "ct-ab: $label's ct_hotloop has no mode $mode" >&2
        exit 1
    fi
    if [[ "$threads" -gt 1 && "$usage" != *THREADS* ]]; then
        echo "ct-ab: $label's ct_hotloop runs one thread only (--threads needs 25f9bd4 or later)" >&2
        exit 1
    fi
}

rev_a=$(git -C "$repo" rev-parse --verify "$1^{commit}")
rev_b=""
if [[ $# -eq 2 ]]; then
    rev_b=$(git -C "$repo" rev-parse --verify "$2^{commit}")
fi
build A "$rev_a"
build B "$rev_b"
if cmp -s "$work/A" "$work/B"; then
    echo "ct-ab: note: A and B are the same binary (the revisions differ in nothing it runs)" >&2
fi

out=$work/rounds.txt
for ((i = 1; i <= rounds; i++)); do
    for label in A B; do
        line=$("$work/$label" "$mode" "$secs" "$conns" "$threads")
        # "MODE: best X ns, median Y ns, worst W ns, mean M ns per packet ..." (builds before
        # the mean was printed give "-" for it)
        read -r best median mean < <(awk '{print $3, $6, ($11 == "mean" ? $12 : "-")}' <<<"$line")
        echo "$label $best $median $mean" >>"$out"
        printf 'round %d %s: best %s ns, median %s ns, mean %s ns\n' "$i" "$label" "$best" "$median" "$mean" >&2
    done
done

python3 - "$out" "${rev_a:0:10}" "${rev_b:0:10}" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
names = {"A": sys.argv[2], "B": sys.argv[3] or "working tree"}
med = {k: [float(r[2]) for r in rows if r[0] == k] for k in "AB"}
for k in "AB":
    best = [float(r[1]) for r in rows if r[0] == k]
    means = [float(r[3]) for r in rows if r[0] == k and r[3] != "-"]
    mean = f", median of means {statistics.median(means):.1f} ns" if means else ""
    print(f"{k} {names[k]:>12}: lowest best {min(best):.1f} ns, median best "
          f"{statistics.median(best):.1f} ns, median of medians {statistics.median(med[k]):.1f} ns"
          f"{mean}")
wins = sum(b < a for a, b in zip(med["A"], med["B"]))
print(f"B's median below A's in {wins} of {len(med['A'])} rounds")
PY

if [[ "$instructions" -eq 1 ]]; then
    if ! command -v valgrind >/dev/null || [[ "$mode" == single || "$mode" == commit ]]; then
        echo "ct-ab: --instructions needs valgrind and a batch mode; skipped" >&2
        exit 0
    fi
    for label in A B; do
        out=$(cd "$work" && valgrind --tool=callgrind --callgrind-out-file="$work/cg-$label" \
            --toggle-collect='*execute_batch*' "$work/$label" "$mode" 0.3 "$conns" 2>/dev/null)
        total=$(awk '/^summary:/ {print $2}' "$work/cg-$label")
        # A window is 64 batches of 32 frames, every one of them through `execute_batch`
        # (counting the calls of a function on the path instead breaks once it is inlined).
        windows=$(sed -nE 's/.*\(([0-9]+) windows\).*/\1/p' <<<"$out" | head -1)
        frames=$((windows * 64 * 32))
        echo "$label: $((total / frames)) instructions per frame ($frames frames)"
    done
fi
