#!/usr/bin/env bash
# xvs in one command: two hosts in their own network namespaces, wired through veth pairs to a
# switch namespace where `xvs run` switches between AF_XDP ports (br0, standalone, NORMAL).
# Pings A -> B, shows the switch's view (show, fdb-show, dump-flows, dump-dp-flows, port-stats,
# trace), stops the daemon and removes everything, also on failure. Exits non-zero if a check
# fails. Needs root.
#
# XVS_DEMO_PROFILE=debug builds and runs the debug binary instead (faster to build).
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"
profile="${XVS_DEMO_PROFILE:-release}"
tag="xvsdemo$$"
ns_a="$tag-a"
ns_b="$tag-b"
ns_s="$tag-sw"
work="$(mktemp -d)"
ctl="$work/xvs.ctl"
daemon_pid=""

cleanup() {
  set +e
  if [[ -n "$daemon_pid" ]] && kill -0 "$daemon_pid" 2>/dev/null; then
    kill -TERM "$daemon_pid"
    wait "$daemon_pid" 2>/dev/null
  fi
  for ns in "$ns_a" "$ns_b" "$ns_s"; do
    ip netns del "$ns" 2>/dev/null
  done
  rm -rf "$work"
}
trap cleanup EXIT

fail() {
  echo "demo: FAILED: $*" >&2
  exit 1
}

step() {
  printf '\n\033[1m== %s\033[0m\n' "$*"
}

if [[ $EUID -ne 0 ]]; then
  echo "demo: needs root (network namespaces and XDP)" >&2
  exit 2
fi

step "installing packages (scripts/setup.sh)"
"$here/setup.sh"

step "building xvs ($profile)"
if [[ "$profile" == release ]]; then
  (cd "$root" && cargo build --release -p xvs-dataplane --bin xvs)
else
  (cd "$root" && cargo build -p xvs-dataplane --bin xvs)
fi
xvs="$root/target/$profile/xvs"

step "creating namespaces $ns_a, $ns_b and $ns_s"
for ns in "$ns_a" "$ns_b" "$ns_s"; do
  ip netns add "$ns"
  ip -n "$ns" link set lo up
done
ip link add va netns "$ns_a" type veth peer name p0 netns "$ns_s"
ip link add vb netns "$ns_b" type veth peer name p1 netns "$ns_s"
ip -n "$ns_a" addr add 198.18.0.1/24 dev va
ip -n "$ns_b" addr add 198.18.0.2/24 dev vb
for l in "$ns_a va" "$ns_b vb" "$ns_s p0" "$ns_s p1"; do
  set -- $l
  ip -n "$1" link set "$2" up
done

cat >"$work/xvs.toml" <<EOF
[datapath]
mode = "interrupt"
threads = 1

[[bridge]]
name = "br0"
fail_mode = "standalone"

[[bridge.port]]
name = "p0"
type = "afxdp"
ofport = 1
xdp_mode = "generic"

[[bridge.port]]
name = "p1"
type = "afxdp"
ofport = 2
xdp_mode = "generic"
EOF
echo "configuration:"
cat "$work/xvs.toml"

step "starting xvs run in $ns_s"
ip netns exec "$ns_s" "$xvs" run --config "$work/xvs.toml" --control "$ctl" &
daemon_pid=$!
for _ in $(seq 100); do
  [[ -S "$ctl" ]] && break
  kill -0 "$daemon_pid" 2>/dev/null || fail "the daemon exited at start"
  sleep 0.1
done
[[ -S "$ctl" ]] || fail "no control socket after 10 s"
x() { "$xvs" --control "$ctl" "$@"; }

step "ping 198.18.0.1 -> 198.18.0.2"
ip netns exec "$ns_a" ping -c 3 -i 0.2 -W 2 198.18.0.2 || fail "ping through the switch"

mac_a="$(ip -n "$ns_a" -br link show va | awk '{print $3}')"
mac_b="$(ip -n "$ns_b" -br link show vb | awk '{print $3}')"

step "xvs show"
x show

step "xvs fdb-show br0"
fdb="$(x fdb-show br0)"
echo "$fdb"
grep -q "$mac_a" <<<"$fdb" || fail "fdb-show lacks host A's MAC $mac_a"
grep -q "$mac_b" <<<"$fdb" || fail "fdb-show lacks host B's MAC $mac_b"

step "xvs dump-flows br0"
flows="$(x dump-flows br0)"
echo "$flows"
grep -Eq 'n_packets=[1-9]' <<<"$flows" || fail "dump-flows shows no packets"

step "xvs dump-dp-flows"
x dump-dp-flows

step "xvs port-stats br0"
stats="$(x port-stats br0)"
echo "$stats"
grep -Eq 'rx pkts=[1-9]' <<<"$stats" || fail "port-stats shows nothing received"

step "xvs pmd-stats-show"
x pmd-stats-show

step "xvs trace br0 in_port=p0,icmp,dl_src=$mac_a,dl_dst=$mac_b,nw_src=198.18.0.1,nw_dst=198.18.0.2"
tr="$(x trace br0 "in_port=p0,icmp,dl_src=$mac_a,dl_dst=$mac_b,nw_src=198.18.0.1,nw_dst=198.18.0.2")"
echo "$tr"
grep -q "output to p1" <<<"$tr" || fail "trace does not send the frame to p1"

step "stopping the daemon"
kill -TERM "$daemon_pid"
wait "$daemon_pid" || fail "the daemon did not exit 0 on SIGTERM"
daemon_pid=""
[[ ! -e "$ctl" ]] || fail "the control socket was left behind"
if ip -n "$ns_s" link show p0 | grep -q xdp; then
  fail "an XDP program was left on p0"
fi
echo
echo "demo: all checks passed"
