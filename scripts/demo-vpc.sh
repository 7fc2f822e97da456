#!/usr/bin/env bash
# The reference deployment's VPC on xvs, end to end: three hypervisor namespaces (AHV01/02/03),
# each running `xvs run` with br0 (uplink, NORMAL) and brAtlas (the VPC, OVN-style flows from
# scripts/vpc/), one VM namespace per host, and a fabric (a fourth xvs, NORMAL with VLANs) that
# joins the uplinks and the external router 172.22.7.1 on VLAN 2207. See scripts/vpc/topology.sh.
#
# Checks, each printed PASS or FAIL (the script exits non-zero if any fails):
#   1. VM01 <-> VM02 (AHV01 <-> AHV02) over geneve: ping and a TCP exchange
#   2. VM03 (AHV03, no patch port) reaches the external router through the gateway AHV01
#   3. external traffic leaves AHV01 with source 172.22.7.27 on VLAN 2207 (captured on the uplink
#      and on the fabric side, read by tshark; the external host sees it from the router MAC), and
#      replies come back to the VM that sent
#   4. the floating IP 172.22.7.50 (VM02) answers the external host (ping and TCP)
#   5. AHV01's view: dump-conntrack (SNAT in zone 9 from reg12), fdb-show br0 (the router MAC on
#      the patch port 14, VLAN 2207), dump-dp-flows (ct(...nat...) and recirc), trace (brAtlas ->
#      patch -> br0), capture on the patch port
# Namespaces and daemons are removed on exit, also on failure. Needs root.
#
# XVS_DEMO_PROFILE=debug builds and runs the debug binary instead (faster to build).
# XVS_DEMO_SKIP_SETUP=1 skips scripts/setup.sh (packages already installed).
set -uo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"
vpc="$here/vpc"
profile="${XVS_DEMO_PROFILE:-release}"
p="vpc$$"
work="$(mktemp -d)"
hosts=(fab ahv01 ahv02 ahv03)
declare -A pids=()
failed=0

cleanup() {
  set +e
  for h in "${!pids[@]}"; do
    kill -TERM "${pids[$h]}" 2>/dev/null
  done
  for h in "${!pids[@]}"; do
    wait "${pids[$h]}" 2>/dev/null
  done
  "$vpc/topology.sh" down "$p"
  rm -rf "$work"
}
trap cleanup EXIT

die() {
  echo "demo-vpc: FAILED: $*" >&2
  exit 1
}

step() {
  printf '\n\033[1m== %s\033[0m\n' "$*"
}

# check NAME COMMAND...: runs the command, prints PASS or FAIL with its output on failure.
check() {
  local name="$1"
  shift
  local out
  if out="$("$@" 2>&1)"; then
    printf '\033[32mPASS\033[0m  %s\n' "$name"
  else
    printf '\033[31mFAIL\033[0m  %s\n' "$name"
    sed 's/^/      /' <<<"$out"
    failed=$((failed + 1))
  fi
}

in_ns() {
  local ns="$p-$1"
  shift
  ip netns exec "$ns" "$@"
}

if [[ $EUID -ne 0 ]]; then
  echo "demo-vpc: needs root (network namespaces and XDP)" >&2
  exit 2
fi

if [[ -z "${XVS_DEMO_SKIP_SETUP:-}" ]]; then
  step "installing packages (scripts/setup.sh)"
  "$root/scripts/setup.sh" || die "setup.sh"
fi

step "building xvs ($profile)"
if [[ "$profile" == release ]]; then
  (cd "$root" && cargo build --release -p xvs-dataplane --bin xvs) || die "build"
else
  (cd "$root" && cargo build -p xvs-dataplane --bin xvs) || die "build"
fi
xvs="$root/target/$profile/xvs"
x() {
  local h="$1"
  shift
  "$xvs" --control "$work/$h.ctl" "$@"
}

step "creating namespaces $p-{fab,ext,ahv01,ahv02,ahv03,vm01,vm02,vm03}"
"$vpc/topology.sh" up "$p" || die "topology"

step "starting xvs run in the fabric and the three hosts"
for h in "${hosts[@]}"; do
  cfg="$vpc/$h.toml"
  [[ "$h" == fab ]] && cfg="$vpc/fabric.toml"
  # `ip netns exec` replaces itself with xvs: the PID is the daemon's, for SIGTERM below.
  ip netns exec "$p-$h" "$xvs" run --config "$cfg" --control "$work/$h.ctl" >"$work/$h.log" 2>&1 &
  pids[$h]=$!
done
for h in "${hosts[@]}"; do
  for _ in $(seq 100); do
    [[ -S "$work/$h.ctl" ]] && break
    kill -0 "${pids[$h]}" 2>/dev/null || { cat "$work/$h.log"; die "xvs in $h exited at start"; }
    sleep 0.1
  done
  [[ -S "$work/$h.ctl" ]] || die "no control socket for $h after 10 s"
done
x ahv01 show

step "warming up (the first frame to a new tunnel peer is dropped while its ARP goes out)"
warm() {
  for _ in 1 2 3 4 5; do
    in_ns "$1" ping -c 1 -W 1 "$2" >/dev/null 2>&1 && return 0
  done
  return 1
}
warm vm01 192.168.10.12 && echo "VM01 -> VM02 ok"
warm vm03 172.22.7.1 && echo "VM03 -> 172.22.7.1 ok"
warm vm02 172.22.7.1 && echo "VM02 -> 172.22.7.1 ok"
x ahv01 tnl-neigh-show

# A bounded TCP exchange: the server echoes one line in upper case; the client checks it.
tcp_py='
import socket, sys
if sys.argv[1] == "serve":
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", int(sys.argv[2]))); s.listen(1); s.settimeout(10)
    c, peer = s.accept(); c.settimeout(5)
    data = b""
    while not data.endswith(b"\n"):
        d = c.recv(65536)
        if not d: break
        data += d
    c.sendall(data.upper()); c.close()
    print("peer", peer[0])
else:
    s = socket.create_connection((sys.argv[2], int(sys.argv[3])), timeout=5)
    msg = b"vpc over geneve " * 300 + b"\n"
    s.sendall(msg); s.settimeout(5)
    got = b""
    while len(got) < len(msg):
        d = s.recv(65536)
        if not d: break
        got += d
    sys.exit(0 if got == msg.upper() else "echo mismatch: %d of %d bytes" % (len(got), len(msg)))
'
# tcp_exchange SERVER_NS CLIENT_NS ADDRESS PORT [EXPECTED_PEER]
tcp_exchange() {
  local peer_file="$work/tcp-$4.peer"
  ip netns exec "$p-$1" timeout 12 python3 -c "$tcp_py" serve "$4" >"$peer_file" 2>&1 &
  local srv=$!
  sleep 0.5
  in_ns "$2" timeout 8 python3 -c "$tcp_py" client "$3" "$4" || { kill "$srv" 2>/dev/null; return 1; }
  wait "$srv" || return 1
  cat "$peer_file"
  [[ -z "${5:-}" ]] || grep -q "peer $5\$" "$peer_file"
}

step "1. VM01 (AHV01) <-> VM02 (AHV02) over geneve"
check "VM01 pings VM02 (192.168.10.12)" in_ns vm01 ping -c 3 -i 0.2 -W 2 192.168.10.12
check "VM02 pings VM01 (192.168.10.11)" in_ns vm02 ping -c 3 -i 0.2 -W 2 192.168.10.11
check "TCP VM01 -> VM02:5001 (4.8 kB echoed)" tcp_exchange vm02 vm01 192.168.10.12 5001 192.168.10.11

step "2. VM03 (AHV03, no patch port) reaches the external router through AHV01"
check "VM03 pings 172.22.7.1" in_ns vm03 ping -c 3 -i 0.2 -W 2 172.22.7.1
check "TCP VM03 -> 172.22.7.1:5002" tcp_exchange ext vm03 172.22.7.1 5002 172.22.7.27

step "3. SNAT 172.22.7.27 on VLAN 2207 on the wire; replies to the right VM"
# Kernel taps do not see AF_XDP traffic, so the wire is read by xvs: AHV01's uplink eth1 and
# the fabric's port up01 facing it. The external host is a kernel: tcpdump there.
x ahv01 capture eth1 -w "$work/uplink.pcap" --count 200 --duration 4 >/dev/null &
cap1=$!
x fab capture up01 -w "$work/fabric.pcap" --count 200 --duration 4 >/dev/null &
cap2=$!
in_ns ext timeout 4 tcpdump -e -n -l -i eth0 icmp >"$work/ext.txt" 2>/dev/null &
cap3=$!
sleep 0.7
in_ns vm01 ping -c 4 -i 0.2 -W 2 172.22.7.1 >"$work/ping1.txt" 2>&1 &
pa=$!
in_ns vm03 ping -c 4 -i 0.2 -W 2 172.22.7.1 >"$work/ping3.txt" 2>&1
pa_rc=0
wait "$pa" || pa_rc=1
wait "$cap1" "$cap2" "$cap3" 2>/dev/null
fields() {
  tshark -r "$1" -Y "icmp && vlan" -T fields -e vlan.id -e eth.src -e ip.src -e ip.dst -e icmp.type 2>/dev/null
}
echo "uplink eth1 (AHV01), 802.1Q id, source MAC, source, destination, ICMP type:"
fields "$work/uplink.pcap" | sort | uniq -c
wire_ok() {
  local f
  f="$(fields "$1")"
  # Echo requests leave tagged 2207 from the router MAC and the SNAT address only; replies
  # come back tagged 2207 to the SNAT address.
  grep -qP '^2207\te0:19:95:ad:56:d0\t172\.22\.7\.27\t172\.22\.7\.1\t8$' <<<"$f" &&
    grep -qP '^2207\t00:50:56:b0:42:b2\t172\.22\.7\.1\t172\.22\.7\.27\t0$' <<<"$f" &&
    ! grep -q '192\.168\.10\.' <<<"$f"
}
check "uplink eth1: VLAN 2207, source 172.22.7.27 (e0:19:95:ad:56:d0), no 192.168.10.x" wire_ok "$work/uplink.pcap"
check "fabric up01: VLAN 2207, source 172.22.7.27, no 192.168.10.x" wire_ok "$work/fabric.pcap"
check "external host (tcpdump -e): echo requests from e0:19:95:ad:56:d0 / 172.22.7.27" \
  grep -Eq 'e0:19:95:ad:56:d0 > 00:50:56:b0:42:b2.*172\.22\.7\.27 > 172\.22\.7\.1: ICMP echo request' "$work/ext.txt"
check "VM01 and VM03 pinging at once both get their replies" \
  bash -c "[[ $pa_rc == 0 ]] && grep -q ' 0% packet loss' '$work/ping1.txt' && grep -q ' 0% packet loss' '$work/ping3.txt'"

step "4. the floating IP 172.22.7.50 (VM02) from the external host"
check "172.22.7.1 pings 172.22.7.50" in_ns ext ping -c 3 -i 0.2 -W 2 172.22.7.50
check "TCP 172.22.7.1 -> 172.22.7.50:5003, VM02 sees the external source" \
  tcp_exchange vm02 ext 172.22.7.50 5003 172.22.7.1
check "VM02's own traffic leaves as 172.22.7.50" tcp_exchange ext vm02 172.22.7.1 5004 172.22.7.50

step "5. AHV01's view"
echo "xvs dump-conntrack"
ct="$(x ahv01 dump-conntrack)"
echo "$ct"
check "dump-conntrack: SNAT to 172.22.7.27 in zone 9 (reg12)" \
  grep -Eq 'orig=\(src=192\.168\.10\.1[13],dst=172\.22\.7\.1.*reply=\(src=172\.22\.7\.1,dst=172\.22\.7\.27.*zone=9' <<<"$ct"
check "dump-conntrack: floating IP DNAT in zone 8 (reg11)" \
  grep -Eq 'orig=\(src=172\.22\.7\.1,dst=172\.22\.7\.50.*reply=\(src=192\.168\.10\.12,dst=172\.22\.7\.1.*zone=8' <<<"$ct"
echo "xvs fdb-show br0 | grep 2207"
fdb="$(x ahv01 fdb-show br0)"
grep 2207 <<<"$fdb"
check "fdb-show br0: e0:19:95:ad:56:d0 on port 14, VLAN 2207" \
  grep -Eq '^ +14 +2207 +e0:19:95:ad:56:d0 ' <<<"$fdb"
echo "xvs dump-dp-flows (NAT paths)"
dp="$(x ahv01 dump-dp-flows)"
grep -E 'ct\(' <<<"$dp"
check "dump-dp-flows: pop_vlan,ct(zone=9,nat),recirc(...) for the return traffic" \
  grep -Eq 'vlan\(vid=2207.*actions:pop_vlan,ct\(zone=9,nat\),recirc\(0x[0-9a-f]+\)' <<<"$dp"
check "dump-dp-flows: ct(commit,zone=9,nat(src=172.22.7.27)),recirc(...) for 192.168.10.0/24" \
  grep -Eq 'ct_state\(-rpl\+trk\).*actions:ct\(commit,zone=9,nat\(src=172\.22\.7\.27\)\),recirc\(0x[0-9a-f]+\)' <<<"$dp"
flow="in_port=tap2,icmp,dl_src=50:6b:8d:45:5a:21,dl_dst=e0:19:95:ad:56:01,nw_src=192.168.10.11,nw_dst=172.22.7.1,nw_ttl=64,icmp_type=8"
echo "xvs trace brAtlas $flow --ct-next=trk,new --ct-next=trk,new"
tr="$(x ahv01 trace brAtlas "$flow" --ct-next=trk,new --ct-next=trk,new)"
grep -E 'bridge\(|recirc|patch-brAtlas-t|Datapath actions|output to' <<<"$tr"
trace_ok() {
  grep -q 'bridge("brAtlas")' <<<"$tr" && grep -q 'output:"patch-brAtlas-t"' <<<"$tr" &&
    grep -q 'bridge("br0")' <<<"$tr" && grep -q 'Datapath actions: push_vlan(vid=2207,pcp=0),eth1' <<<"$tr"
}
check "trace: brAtlas -> SNAT -> patch-brAtlas-t -> br0 NORMAL -> eth1 tagged 2207" trace_ok
echo "xvs capture patch-brAtlas-t (while VM03 pings 172.22.7.1)"
x ahv01 capture patch-brAtlas-t -w "$work/patch.pcap" --count 4 --duration 5 &
cap=$!
sleep 0.5
in_ns vm03 ping -c 2 -i 0.3 -W 2 172.22.7.1 >/dev/null
wait "$cap"
tshark -r "$work/patch.pcap" -T fields -e vlan.id -e eth.src -e eth.dst -e ip.src -e ip.dst 2>/dev/null
check "capture on the patch port: both ways, VLAN 2207, SNAT applied" bash -c "
  f=\$(tshark -r '$work/patch.pcap' -Y icmp -T fields -e vlan.id -e ip.src -e ip.dst 2>/dev/null)
  grep -qP '^2207\t172\.22\.7\.27\t172\.22\.7\.1$' <<<\"\$f\" && grep -qP '^2207\t172\.22\.7\.1\t172\.22\.7\.27$' <<<\"\$f\""

step "stopping the daemons"
for h in "${hosts[@]}"; do
  kill -TERM "${pids[$h]}"
  if ! wait "${pids[$h]}"; then
    echo "xvs in $h did not exit 0 on SIGTERM"
    failed=$((failed + 1))
  fi
  unset "pids[$h]"
done

echo
if ((failed > 0)); then
  echo "demo-vpc: $failed check(s) FAILED"
  exit 1
fi
echo "demo-vpc: all checks passed"
