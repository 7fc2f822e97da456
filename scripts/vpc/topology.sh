#!/usr/bin/env bash
# The VPC demo's network: three hypervisor namespaces, three VM namespaces, a fabric and an
# external host. Daemons are not started here: scripts/demo-vpc.sh and tests/tests/vpc.rs start
# `xvs run` in each hypervisor namespace with scripts/vpc/ahv0N.toml, and in the fabric namespace
# with scripts/vpc/fabric.toml (the fabric is a fourth xvs: a NORMAL bridge with VLANs, which
# needs nothing from the kernel beyond veth pairs).
#
#   topology.sh up PREFIX     create PREFIX-{fab,ext,ahv01,ahv02,ahv03,vm01,vm02,vm03}
#   topology.sh down PREFIX   delete them (and whatever still runs inside); never fails
#
#   vmNN eth0 (50:6b:8d:45:5a:2N, 192.168.10.1N/24, gw .1) -- tap2 (fe:6b:8d:45:5a:2N) ahvNN
#   ahvNN eth1 -- upNN in fab (trunk): the underlay untagged (172.22.1.6N are the switches' own
#                addresses, no kernel holds them) and VLAN 2207 tagged
#   ext eth0 (00:50:56:b0:42:b2, 172.22.7.1/24, the external router) -- upext in fab (access
#                port of VLAN 2207)
#
# VM and external interfaces send with checksum offload off: AF_XDP in generic mode hands the
# switch frames as the kernel queued them, and a partial checksum would leave the host wrong.
set -euo pipefail

cmd="${1:-}"
p="${2:-}"
if [[ -z "$cmd" || -z "$p" ]]; then
  echo "usage: $0 up|down PREFIX" >&2
  exit 2
fi
names=(fab ext ahv01 ahv02 ahv03 vm01 vm02 vm03)

down() {
  local ns pid
  for n in "${names[@]}"; do
    ns="$p-$n"
    ip netns list 2>/dev/null | grep -qw "^$ns" || continue
    for pid in $(ip netns pids "$ns" 2>/dev/null); do
      kill -KILL "$pid" 2>/dev/null || true
    done
    ip netns del "$ns" 2>/dev/null || true
  done
}

in_ns() {
  local ns="$p-$1"
  shift
  ip netns exec "$ns" "$@"
}

up() {
  set -e
  for n in "${names[@]}"; do
    ip netns add "$p-$n"
    in_ns "$n" ip link set lo up
    in_ns "$n" sysctl -qw net.ipv6.conf.all.disable_ipv6=1
    in_ns "$n" sysctl -qw net.ipv6.conf.default.disable_ipv6=1
  done

  for i in 1 2 3; do
    local h="ahv0$i" vm="vm0$i"
    ip link add eth1 netns "$p-$h" type veth peer name "up0$i" netns "$p-fab"
    in_ns fab ip link set "up0$i" up
    in_ns "$h" ip link set eth1 up

    ip link add eth0 netns "$p-$vm" type veth peer name tap2 netns "$p-$h"
    in_ns "$h" ip link set tap2 address "fe:6b:8d:45:5a:2$i"
    in_ns "$h" ip link set tap2 up
    in_ns "$vm" ip link set eth0 address "50:6b:8d:45:5a:2$i" mtu 1400
    in_ns "$vm" ethtool -K eth0 tx off tso off gso off >/dev/null 2>&1 || true
    in_ns "$vm" ip addr add "192.168.10.1$i/24" dev eth0
    in_ns "$vm" ip link set eth0 up
    in_ns "$vm" ip route add default via 192.168.10.1
  done

  ip link add eth0 netns "$p-ext" type veth peer name upext netns "$p-fab"
  in_ns fab ip link set upext up
  in_ns ext ip link set eth0 address 00:50:56:b0:42:b2
  in_ns ext ethtool -K eth0 tx off tso off gso off >/dev/null 2>&1 || true
  in_ns ext ip addr add 172.22.7.1/24 dev eth0
  in_ns ext ip link set eth0 up
}

case "$cmd" in
  up)
    # A half-built topology is removed before the error is reported (a subshell, so that
    # errexit holds inside the function).
    if ! (up); then
      down
      echo "topology: could not create the namespaces of $p" >&2
      exit 1
    fi
    ;;
  down) down ;;
  *)
    echo "usage: $0 up|down PREFIX" >&2
    exit 2
    ;;
esac
