#!/usr/bin/env bash
# Real traffic through xvs and its peers, on veths between three network namespaces:
#
#   generator ns: g0 ── tap2 : switch ns (device under test) : eth1 ── k0 : sink ns
#
# The generator is one xvs-gen process (dataplane/src/gen.rs: an AF_XDP socket bound for
# transmission only) pinned to CPU 0, sending 64-byte UDP frames (60 bytes + FCS) at full speed
# or at a fixed rate spread evenly over time: frame k leaves k/rate seconds after the start.
# (trafgen's rate limit lets each second's frames out at its full speed and then waits, so a
# "100 kpps" run offers about 125 ms of 800 kpps and nothing for the rest of the second.) The sink drops and counts them in XDP
# (scripts/bench/xdp_sink.c, compiled here with clang -target bpf; the count is the veth's
# rx_queue_0_xdp_drops). The device under test runs on CPU 1 and is one of:
#
#   xvs-poll       xvs run, mode = "poll", datapath pinned to CPU 1
#   xvs-intr       xvs run, mode = "interrupt", pinned to CPU 1
#   ovs-pmd        Open vSwitch 3.1, netdev bridge, type=afxdp ports, PMD on CPU 1
#   ovs-nonpmd     Open vSwitch 3.1, netdev bridge, type=afxdp-nonpmd ports, vswitchd on CPU 1
#   nullfwd-poll   xvs-nullfwd (bare AF_XDP copy forwarder), poll mode      (p2p only)
#   nullfwd-intr   xvs-nullfwd, interrupt mode                              (p2p only)
#   linux-bridge   the kernel's bridge (learning)                           (p2p, normal)
#   tc-mirred      tc ingress u32 + mirred redirect between the two veths   (p2p only)
#
# Scenarios (same flows for xvs and OVS):
#   p2p      in_port=1 actions=output:2 (and back)
#   normal   NORMAL with MAC learning (xvs standalone bridge; OVS actions=NORMAL)
#   snat     the reference deployment's SNAT pipeline: scripts/vpc/ahv01-brAtlas.flows with the
#            addresses moved into 198.18.0.0/15 (VLAN push, ct, nat, patch to a NORMAL br0)
#   geneve   Geneve encapsulation with an OVN-style option, over a NORMAL underlay (xvs only:
#            OVS's userspace tunnels need a routed LOCAL port, not a like-for-like setup)
#   jumbo    port to port with 9014-byte frames (MTU 9000 on every veth; xvs ports `mtu = 9000`,
#            AF_XDP multi-buffer). Open vSwitch is asked for mtu_request=9000 on its afxdp ports
#            and its rows record what it does; rates are reported in Gbit/s as well as kpps
#
# Measures:
#   (a) max_lossless: a full-speed run, then a bisection over the generator's rate
#   (b) fixed: 100 and 200 kpps on the interrupt-mode devices: loss, and the switch process's
#       CPU per forwarded packet from /proc/PID/stat (user, system) and /proc/PID/task/*/schedstat
#   (c) ping p50/p99 through the switch, idle and under 100 kpps (jumbo: its first fixed load)
#       (and over a direct veth pair as the baseline, with 9000-byte pings too for jumbo)
#
# Output: the table on stdout, a CSV (benches/results/throughput-DATE.csv or --out) and a PNG
# next to it. Everything created is removed at exit, also on failure. Needs root.
#
# Usage: scripts/bench-throughput.sh [--quick] [--scenarios p2p,normal,snat,geneve,jumbo]
#          [--duts xvs-intr,ovs-nonpmd,...] [--out FILE.csv] [--loss-tol PCT] [--profile debug]
#          [--sched fifo|other] [--perf DUT]
#
# --sched fifo (the default) runs the forwarding threads of the device under test as
# SCHED_FIFO 50 in interrupt mode and at nice -10 in poll mode: on a machine shared with other
# work, a switch thread that waits for a CPU behind a compiler loses frames for reasons that are
# not its own (the AF_XDP rings overflow while it is runnable but not running). Every device
# gets the same treatment (xvs's datapath threads, OVS's PMD thread or its whole non-PMD daemon,
# the null forwarder). --sched other measures as scheduled by default. --perf DUT records a 5 s profile of that device at 100 kpps
# (BENCH_PERF_RATE=PPS in the environment sets another rate, 0 full speed;
# BENCH_PERF_CALLGRAPH=dwarf records call chains by stack copies; BENCH_KEEP_PERF=1 keeps
# perf.data next to the CSV).
# XVS_COALESCE_US=N in the environment sets xvs's `coalesce_us` (interrupt mode; default 30),
# XVS_FRAMES=N the `frames` (UMEM chunks per queue) of its AF_XDP ports (default 16384 in poll
# mode, the port default in interrupt mode). BENCH_PINGS=N sets the pings per measurement
# (default 500, --quick 50).
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"
bench="$here/bench"

quick=0
scenarios="p2p,normal,snat,geneve,jumbo"
duts_all="xvs-poll,xvs-intr,ovs-pmd,ovs-nonpmd,nullfwd-poll,nullfwd-intr,linux-bridge,tc-mirred"
duts=""
out=""
loss_tol="0"
profile="release"
perf_dut=""
sched="fifo"
while (($#)); do
  case "$1" in
    --quick) quick=1 ;;
    --scenarios) scenarios="$2"; shift ;;
    --duts) duts="$2"; shift ;;
    --out) out="$2"; shift ;;
    --loss-tol) loss_tol="$2"; shift ;;
    --profile) profile="$2"; shift ;;
    --perf) perf_dut="$2"; shift ;;
    --sched) sched="$2"; shift ;;
    -h|--help) sed -n '2,40p' "$0"; exit 0 ;;
    *) echo "bench: unknown option $1" >&2; exit 2 ;;
  esac
  shift
done

if [[ $EUID -ne 0 ]]; then
  echo "bench: needs root (namespaces, XDP)" >&2
  exit 2
fi
if (($(nproc) < 2)); then
  echo "bench: needs two CPUs (generator on 0, switch on 1)" >&2
  exit 2
fi

# Run lengths. Every loop below is bounded by these counts, every generator run by a timeout.
# --quick measures the interrupt-mode devices and the kernel bridge only, unless --duts says.
if ((quick)); then
  [[ -n "$duts" ]] || duts="xvs-intr,ovs-nonpmd,nullfwd-intr,linux-bridge"
  step_s=1; search_steps=0; fixed_s=1; fixed_loads="100000"; pings=50; ping_load=0
  jumbo_loads="20000"
else
  [[ -n "$duts" ]] || duts="$duts_all"
  step_s=3; search_steps=5; fixed_s=5; fixed_loads="100000 200000"; pings=500; ping_load=1
  jumbo_loads="20000 50000"
fi
pings="${BENCH_PINGS:-$pings}"
[[ "$pings" =~ ^[1-9][0-9]{0,5}$ ]] || { echo "bench: BENCH_PINGS must be 1-999999" >&2; exit 2; }
# Jumbo frames: 9014 bytes on the veth (IP MTU 9000); the fixed loads are 1.4 and 3.6 Gbit/s.
jumbo_mtu=9000
jumbo_fill=$((jumbo_mtu - 20 - 8))
# The generator runs at nice -10 with --sched fifo, so that the offered rate depends less on
# what else the machine is doing.
gen_nice=()
[[ "$sched" == fifo ]] && gen_nice=(nice -n -10)

date_tag="$(date +%Y%m%d-%H%M%S)"
[[ -n "$out" ]] || out="$root/benches/results/throughput-$date_tag.csv"
mkdir -p "$(dirname "$out")"
png="${out%.csv}.png"
load_avg="$(cut -d' ' -f1-3 /proc/loadavg)"

tag="tput$$"
ns_g="$tag-gen"
ns_s="$tag-sw"
ns_k="$tag-sink"
work="$(mktemp -d /tmp/$tag.XXXX)"
dut_pid=""
ovs_dir=""
bg_pids=()

cleanup() {
  set +e
  declare -F stop_dut >/dev/null && stop_dut
  for p in "${bg_pids[@]}"; do kill "$p" 2>/dev/null; done
  for ns in "$ns_g" "$ns_s" "$ns_k"; do ip netns del "$ns" 2>/dev/null; done
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log() { printf '%s bench: %s\n' "$(date +%T)" "$*" >&2; }
has() { [[ ",$1," == *",$2,"* ]]; }

"$root/scripts/setup.sh" >&2
# The distribution's python has python3-matplotlib (setup.sh); a python earlier on PATH may not.
py=/usr/bin/python3
[[ -x "$py" ]] || py=python3

# ---------------------------------------------------------------------------------------------
# build
log "building xvs and xvs-nullfwd ($profile)"
if [[ "$profile" == release ]]; then
  (cd "$root" && cargo build -q --release -p xvs-dataplane --bins) >&2
else
  (cd "$root" && cargo build -q -p xvs-dataplane --bins) >&2
fi
# XVS_BIN=PATH runs another xvs binary (an A/B comparison of two builds in one sitting).
xvs="${XVS_BIN:-$root/target/$profile/xvs}"
nullfwd="$root/target/$profile/xvs-nullfwd"
genbin="$root/target/$profile/xvs-gen"
clang -O2 -g -target bpf -I"/usr/include/$(uname -m)-linux-gnu" \
  -c "$bench/xdp_sink.c" -o "$work/xdp_sink.o"

# ---------------------------------------------------------------------------------------------
# topology. MACs are the reference deployment's (VM01 and the external router) so the SNAT
# pipeline's static ARP bindings hold; the other scenarios do not care.
mac_g="50:6b:8d:45:5a:21"       # VM01
mac_k="00:50:56:b0:42:b2"       # external router
mac_rtr_in="e0:19:95:ad:56:01"  # logical router, overlay side
mac_rtr_ext="e0:19:95:ad:56:d0" # logical router, external side
for ns in "$ns_g" "$ns_s" "$ns_k"; do
  ip netns add "$ns"
  ip -n "$ns" link set lo up
  ip netns exec "$ns" sysctl -qw net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0
done
ip link add g0 netns "$ns_g" address "$mac_g" type veth peer name tap2 netns "$ns_s"
ip link add eth1 netns "$ns_s" type veth peer name k0 netns "$ns_k" address "$mac_k"
# The direct pair, for the latency baseline.
ip link add gd netns "$ns_g" type veth peer name kd netns "$ns_k"
for l in "$ns_g g0" "$ns_g gd" "$ns_s tap2" "$ns_s eth1" "$ns_k k0" "$ns_k kd"; do
  set -- $l
  ip -n "$1" link set "$2" up
done
# The SNAT scenario's external router sits on VLAN 2207. When the kernel has 802.1Q, a VLAN
# device answers the latency probe; without it the sink still counts the tagged frames in XDP
# and the probe is skipped for that scenario.
vlan_sink=0
if ip -n "$ns_k" link add link k0 name k0.2207 type vlan id 2207 2>/dev/null; then
  vlan_sink=1
  ip -n "$ns_k" link set k0.2207 up
  ip -n "$ns_k" addr add 198.19.7.1/24 dev k0.2207
  ip -n "$ns_k" neigh replace 198.19.7.27 lladdr "$mac_rtr_ext" dev k0.2207 nud permanent
fi
# p2p/normal: 198.18.0.1 -> 198.18.0.2. snat: VM 198.18.10.11 behind router 198.18.10.1, SNAT
# to 198.19.7.27 towards the external router 198.19.7.1 on VLAN 2207. geneve: underlay
# 198.19.1.1 (the switch) -> 198.19.1.2 (the sink). direct: 198.18.200.1 -> .2.
ip -n "$ns_g" addr add 198.18.0.1/24 dev g0
ip -n "$ns_g" addr add 198.18.10.11/24 dev g0
ip -n "$ns_g" route add 198.19.7.0/24 via 198.18.10.1 dev g0 src 198.18.10.11
ip -n "$ns_g" neigh replace 198.18.0.2 lladdr "$mac_k" dev g0 nud permanent
ip -n "$ns_g" neigh replace 198.18.10.1 lladdr "$mac_rtr_in" dev g0 nud permanent
ip -n "$ns_g" addr add 198.18.200.1/30 dev gd
ip -n "$ns_k" addr add 198.18.0.2/24 dev k0
ip -n "$ns_k" addr add 198.19.1.2/24 dev k0
ip -n "$ns_k" neigh replace 198.18.0.1 lladdr "$mac_g" dev k0 nud permanent
ip -n "$ns_k" addr add 198.18.200.2/30 dev kd
# Jumbo rows are compared with pings of their own size over the direct pair, so that what a
# 9000-byte ping costs the two stacks by themselves is not counted against the switch.
jumbo_runs=0
[[ ",$scenarios," == *,jumbo,* ]] && jumbo_runs=1
if ((jumbo_runs)); then
  ip -n "$ns_g" link set dev gd mtu "$jumbo_mtu"
  ip -n "$ns_k" link set dev kd mtu "$jumbo_mtu"
fi
ip -n "$ns_k" link set dev k0 xdp obj "$work/xdp_sink.o" sec xdp.frags
ip -n "$ns_k" link set dev kd xdp obj "$work/xdp_sink.o" sec xdp.frags

# The MTU of the generator-switch-sink path: 9000 for the jumbo scenario, 1500 otherwise. The
# switch's own ends are set too, for the peers that do not set them (xvs sets them from its
# config as well).
path_mtu() { # mtu
  ip -n "$ns_g" link set dev g0 mtu "$1"
  ip -n "$ns_k" link set dev k0 mtu "$1"
  ip -n "$ns_s" link set dev tap2 mtu "$1"
  ip -n "$ns_s" link set dev eth1 mtu "$1"
}

# Jumbo frames: the jumbo scenario and its baseline on the direct pair.
is_jumbo() { [[ "$1" == jumbo || "$1" == direct-jumbo ]]; }

# Generator arguments per scenario, one per line in a file: 14 + 20 + 8 + 18 = 60 bytes on the
# veth, 64 with the FCS; jumbo: 14 + 20 + 8 + 8972 = 9014 bytes, sent multi-buffer.
gen_cfg() { # scenario -> file
  local f="$work/gen-$1.args" dev=g0 dmac sip dip fill=18
  case "$1" in
    snat) dmac="$mac_rtr_in"; sip=198.18.10.11; dip=198.19.7.1 ;;
    direct | direct-jumbo) dev=gd; dmac="00:00:00:00:00:00"; sip=198.18.200.1; dip=198.18.200.2 ;;
    *) dmac="$mac_k"; sip=198.18.0.1; dip=198.18.0.2 ;;
  esac
  is_jumbo "$1" && fill=$jumbo_fill
  printf '%s\n' --dev "$dev" --eth-src "$mac_g" --eth-dst "$dmac" --ip-src "$sip" --ip-dst "$dip" \
    --sport 4000 --dport 9 --payload "$fill" >"$f"
  is_jumbo "$1" && printf '%s\n' --mtu "$jumbo_mtu" >>"$f"
  echo "$f"
}

# Bytes of one benchmark frame on the veth (no FCS), for Gbit/s.
frame_bytes() { # scenario
  if [[ "$1" == jumbo ]]; then echo $((14 + 20 + 8 + jumbo_fill)); else echo 60; fi
}

ping_dst() {
  case "$1" in
    snat) echo 198.19.7.1 ;;
    direct | direct-jumbo) echo 198.18.200.2 ;;
    *) echo 198.18.0.2 ;;
  esac
}

sink_count() {
  ip netns exec "$ns_k" ethtool -S "${1:-k0}" | awk '/rx_queue_0_xdp_drops:/ {print $2}'
}

# Sends N frames at RATE pps, or at full speed for N seconds when RATE is 0, from one core;
# prints "sent elapsed_s largest_backlog" as the generator counted them (the backlog: the most
# frames that were ever due beyond one 32-frame burst, i.e. how far from even the run was).
# Bounded by the generator's own deadline and by a timeout behind it.
send() { # cfg n rate
  local cfg="$1" n="$2" rate="$3" o limit count
  local -a args
  mapfile -t args <"$cfg"
  if ((rate > 0)); then
    limit=$((n / rate * 2 + 2)); count=$n
  else
    limit=$n; count=$((n * 100000000))
  fi
  o="$(timeout -s INT $((limit + 10)) ip netns exec "$ns_g" "${gen_nice[@]}" taskset -c 0 \
    "$genbin" "${args[@]}" --rate "$rate" --count "$count" --seconds "$limit" 2>&1)" || true
  # A descriptor the kernel refused is a frame counted as sent that never left: say so.
  awk '/^sent / { print $2, $4, $6; found = 1
                  if ($10 > 0) print "bench: generator: the kernel refused " $10 " frames" > "/dev/stderr"
                  exit }
       END { if (!found) print 0, 1, 0 }' <<<"$o"
  # No report: the generator failed (its socket, its arguments); say why rather than let a
  # run that sent nothing pass for one that lost nothing.
  grep -q '^sent ' <<<"$o" || echo "bench: generator failed: $(tail -n 3 <<<"$o" | tr '\n' ' ')" >&2
}

# Time the hypervisor took CPU 1 (the device's CPU) away, in ticks ("steal" in /proc/stat): a
# vCPU stolen for tens of milliseconds overflows any ring, whatever the switch does.
steal_cpu1() { awk '$1 == "cpu1" { print $9 }' /proc/stat; }

# CPU of the switch process: "user_ticks sys_ticks sched_ns" (all threads).
cpu_of() {
  local pid="$1" u s ns=0 t
  [[ -n "$pid" && -r /proc/$pid/stat ]] || { echo "0 0 0"; return; }
  read -r u s < <(sed 's/^.*) //' "/proc/$pid/stat" | awk '{print $12, $13}')
  for t in /proc/"$pid"/task/*/schedstat; do
    ns=$((ns + $(cut -d' ' -f1 "$t" 2>/dev/null || echo 0)))
  done
  echo "$u $s $ns"
}
hz="$(getconf CLK_TCK)"

# Arithmetic on decimals (awk: no dependency beyond the base system). calc EXPR [FORMAT]
calc() { awk "BEGIN { printf \"${2:-%.6f}\", $1 }"; }

csv_row() { # scenario dut measure offered dur sent delivered fwd_pps cu cs csched p50 p99 note
  local sc="$1" dut="$2" m="$3" off="$4" dur="$5" sent="$6" del="$7" fwd="$8" cu="$9" cs="${10}"
  local csched="${11}" p50="${12}" p99="${13}" note="${14}"
  local loss="" upu="" ups="" upt=""
  if [[ -n "$sent" && "$sent" != 0 ]]; then
    loss="$(calc "($sent > $del) ? 100 * ($sent - $del) / $sent : 0")"
  fi
  if [[ -n "$cu" && -n "$del" && "$del" != 0 ]]; then
    upu="$(calc "$cu * 1000000 / $del" %.4f)"
    ups="$(calc "$cs * 1000000 / $del" %.4f)"
    upt="$(calc "($cu + $cs) * 1000000 / $del" %.4f)"
  fi
  echo "$date_tag,\"$load_avg\",$sched,$sc,$dut,$m,$off,$dur,$sent,$del,$loss,$fwd,$cu,$cs,$csched,$upu,$ups,$upt,$p50,$p99,\"$note\",$(frame_bytes "$sc")" >>"$out"
}

# Frames dropped so far along the generator-switch-sink path: "veth_in fill ring veth_out".
# A veth whose peer runs XDP queues frames for the peer's NAPI in a ring of 256; a frame that
# finds it full is dropped and counted as the sending end's tx_dropped. So g0's count is frames
# lost before the device under test saw them, eth1's frames it sent that the sink's ring had no
# room for (the kernel bills the sink's receive work to the sender). Between them, xvs's own
# receive drops (fill ring empty, rx ring full; 0 for other devices).
path_drops() { # [dut]
  local g e f r
  g="$(ip netns exec "$ns_g" cat /sys/class/net/g0/statistics/tx_dropped 2>/dev/null || echo 0)"
  e="$(ip netns exec "$ns_s" cat /sys/class/net/eth1/statistics/tx_dropped 2>/dev/null || echo 0)"
  read -r f r < <(xvs_rx_drops "${1:-}")
  echo "$g $f $r $e"
}

# What a run's drop counts (as run_rate prints them) say, for the log and the CSV note.
drops_note() { # veth_in fill ring veth_out
  echo "drops: veth in $1, rx fill_ring_empty $2 rx_ring_full $3, veth out $4"
}

# One timed run at RATE: prints "sent delivered elapsed backlog" and the run's drops along the
# path (see path_drops: "veth_in fill ring veth_out").
run_rate() { # cfg rate secs [dut]
  local cfg="$1" rate="$2" secs="$3" dut="${4:-}" n before after sent el backlog
  local -a d0 d1
  if ((rate > 0)); then n=$((rate * secs)); else n=$secs; fi
  before="$(sink_count)"
  read -r -a d0 < <(path_drops "$dut")
  read -r sent el backlog < <(send "$cfg" "$n" "$rate")
  sleep 0.3
  after="$(sink_count)"
  read -r -a d1 < <(path_drops "$dut")
  echo "$sent $((after - before)) $el $backlog $((d1[0] - d0[0])) $((d1[1] - d0[1]))" \
    "$((d1[2] - d0[2])) $((d1[3] - d0[3]))"
}

lossless() { # sent delivered -> 0 if loss <= tolerance (a run that sent nothing is not)
  (($1 > 0)) && [[ "$(calc "100 * ($1 - $2) <= $loss_tol * $1" %d)" == 1 ]]
}

# ---------------------------------------------------------------------------------------------
# devices under test

xdp_off() {
  local i
  for i in tap2 eth1; do
    ip -n "$ns_s" link set dev "$i" xdp off 2>/dev/null || true
  done
}

# One AF_XDP port of an xvs configuration, in native mode, with $frames UMEM chunks when set;
# EXTRA is a further key line.
afxdp_port() { # name ofport [extra]
  printf '[[bridge.port]]\nname = "%s"\ntype = "afxdp"\nofport = %s\nxdp_mode = "native"\n%s\n%s\n' \
    "$1" "$2" "${frames:+frames = $frames}" "${3:-}"
}

# UMEM chunks per port: poll mode is configured for throughput, with 8,192 receive chunks (16 ms
# at 500 kpps). Here this VM's CPU is taken away from a polling thread for several
# milliseconds at a time now and then; with the default 2,048 receive chunks such a pause
# loses a few hundred frames at 350-550 kpps although the thread is a third idle (every such
# loss was the fill ring found empty). Interrupt mode keeps the default (prints nothing).
xvs_frames() { # mode
  if [[ -n "${XVS_FRAMES:-}" ]]; then echo "$XVS_FRAMES"
  elif [[ "$1" == poll ]]; then echo 16384
  fi
}

write_xvs_config() { # scenario mode -> file
  local sc="$1" mode="$2" f="$work/xvs-$1-$2.toml" frames
  frames="$(xvs_frames "$2")"
  cat >"$f" <<EOF
[datapath]
mode = "$mode"
threads = 1
cpus = [1]
${XVS_COALESCE_US:+coalesce_us = $XVS_COALESCE_US}
EOF
  case "$sc" in
    p2p | jumbo)
      local mtu=""
      [[ "$sc" == jumbo ]] && mtu="mtu = $jumbo_mtu"
      printf 'in_port=1 actions=output:2\nin_port=2 actions=output:1\n' >"$work/p2p.flows"
      cat >>"$f" <<EOF
[[bridge]]
name = "br0"
fail_mode = "secure"
flows = "p2p.flows"
$(afxdp_port tap2 1 "$mtu")
$(afxdp_port eth1 2 "$mtu")
EOF
      ;;
    normal)
      cat >>"$f" <<EOF
[[bridge]]
name = "br0"
fail_mode = "standalone"
$(afxdp_port tap2 1)
$(afxdp_port eth1 2)
EOF
      ;;
    snat)
      snat_flows >"$work/snat.flows"
      cat >>"$f" <<EOF
[[bridge]]
name = "br0"
fail_mode = "standalone"
$(afxdp_port eth1 10)
[[bridge.port]]
name = "patch-br0"
type = "patch"
ofport = 14
peer = "patch-brAtlas-t"

[[bridge]]
name = "brAtlas"
fail_mode = "secure"
flows = "snat.flows"
[[bridge.port]]
name = "patch-brAtlas-t"
type = "patch"
ofport = 1
peer = "patch-br0"
$(afxdp_port tap2 4)
EOF
      ;;
    geneve)
      cp "$bench/geneve.flows" "$work/geneve.flows"
      cat >>"$f" <<EOF
[[bridge]]
name = "br0"
fail_mode = "standalone"
$(afxdp_port eth1 10)

[[bridge]]
name = "brAtlas"
fail_mode = "secure"
flows = "geneve.flows"
tlv_map = [ { class = 0x0102, type = 0x80, len = 4, field = "tun_metadata0" } ]
$(afxdp_port tap2 1)
[[bridge.port]]
name = "ovn-sink-0"
type = "geneve"
ofport = 2
remote_ip = "198.19.1.2"
local_ip = "198.19.1.1"
key = "flow"
csum = true
EOF
      ;;
  esac
  echo "$f"
}

# The reference deployment's brAtlas flows with the addresses moved into the benchmark range
# (192.168.10.0/24 -> 198.18.10.0/24, 172.22.7.0/24 -> 198.19.7.0/24, also in hex loads) and
# without the lines that name its Geneve ports, which this topology does not have.
snat_flows() {
  sed -e 's/192\.168\.10\./198.18.10./g' -e 's/172\.22\.7\./198.19.7./g' \
    -e 's/0xc0a80a/0xc6120a/g' -e 's/0xac1607/0xc61307/g' \
    -e 's/output: /output:/' "$root/scripts/vpc/ahv01-brAtlas.flows" | grep -v 'ovn-'
}

start_xvs() { # scenario mode
  local cfg ctl="$work/xvs.ctl"
  cfg="$(write_xvs_config "$1" "$2")"
  rm -f "$ctl"
  ip netns exec "$ns_s" "$xvs" run --config "$cfg" --control "$ctl" \
    >"$work/dut.log" 2>&1 &
  dut_pid=$!
  local i
  for i in $(seq 100); do
    [[ -S "$ctl" ]] && return 0
    kill -0 "$dut_pid" 2>/dev/null || break
    sleep 0.1
  done
  log "xvs did not start: $(tail -5 "$work/dut.log")"
  return 1
}

start_nullfwd() { # mode
  local frames
  frames="$(xvs_frames "$1")"
  ip netns exec "$ns_s" taskset -c 1 "$nullfwd" --in tap2 --out eth1 --bidir --mode "$1" \
    --xdp-mode native ${frames:+--frames "$frames"} >"$work/dut.log" 2>&1 &
  dut_pid=$!
  sleep 1
  kill -0 "$dut_pid" 2>/dev/null || { log "xvs-nullfwd did not start: $(tail -5 "$work/dut.log")"; return 1; }
}

ovs() { OVS_RUNDIR="$ovs_dir" ip netns exec "$ns_s" "$@"; }

start_ovs() { # scenario type(afxdp|afxdp-nonpmd)
  local sc="$1" type="$2" D
  D="$(mktemp -d "$work/ovs.XXXX")"
  ovs_dir="$D"
  export OVS_RUNDIR=$D OVS_LOGDIR=$D OVS_DBDIR=$D OVS_SYSCONFDIR=$D
  ovsdb-tool create "$D/conf.db" /usr/share/openvswitch/vswitch.ovsschema
  ip netns exec "$ns_s" ovsdb-server --remote="punix:$D/db.sock" --pidfile="$D/ovsdb-server.pid" \
    --detach --no-chdir --log-file="$D/ovsdb-server.log" "$D/conf.db"
  local V=(ovs-vsctl --db="unix:$D/db.sock" --timeout=20)
  "${V[@]}" --no-wait init
  "${V[@]}" --no-wait set Open_vSwitch . other_config:pmd-cpu-mask=0x2
  # afxdp-nonpmd forwards in the main thread: the whole daemon goes to CPU 1. With PMD ports,
  # pmd-cpu-mask puts the PMD thread there and the others run where the scheduler likes.
  local pin=(taskset -c 1)
  [[ "$type" == afxdp ]] && pin=()
  ip netns exec "$ns_s" "${pin[@]}" ovs-vswitchd "unix:$D/db.sock" --pidfile="$D/ovs-vswitchd.pid" \
    --detach --no-chdir --log-file="$D/ovs-vswitchd.log"
  dut_pid="$(cat "$D/ovs-vswitchd.pid")"
  local afx="type=$type options:xdp-mode=native options:n_rxq=1"
  [[ "$sc" == jumbo ]] && afx="$afx mtu_request=$jumbo_mtu"
  case "$sc" in
    p2p | normal | jumbo)
      "${V[@]}" add-br br0 -- set bridge br0 datapath_type=netdev fail_mode=secure \
        -- add-port br0 tap2 -- set interface tap2 $afx ofport_request=1 \
        -- add-port br0 eth1 -- set interface eth1 $afx ofport_request=2
      ovs ovs-ofctl mod-port br0 br0 no-flood
      if [[ "$sc" != normal ]]; then
        printf 'in_port=1 actions=output:2\nin_port=2 actions=output:1\n' >"$work/p2p.flows"
        ovs ovs-ofctl add-flows br0 "$work/p2p.flows"
      else
        ovs ovs-ofctl add-flow br0 "actions=NORMAL"
      fi
      ;;
    snat)
      snat_flows >"$work/snat.flows"
      "${V[@]}" add-br br0 -- set bridge br0 datapath_type=netdev fail_mode=secure \
        -- add-port br0 eth1 -- set interface eth1 $afx ofport_request=10 \
        -- add-port br0 patch-br0 -- set interface patch-br0 type=patch options:peer=patch-brAtlas-t ofport_request=14 \
        -- add-br brAtlas -- set bridge brAtlas datapath_type=netdev fail_mode=secure \
        -- add-port brAtlas patch-brAtlas-t -- set interface patch-brAtlas-t type=patch options:peer=patch-br0 ofport_request=1 \
        -- add-port brAtlas tap2 -- set interface tap2 $afx ofport_request=4
      ovs ovs-ofctl mod-port br0 br0 no-flood
      ovs ovs-ofctl add-flow br0 "actions=NORMAL"
      ovs ovs-ofctl add-flows brAtlas "$work/snat.flows"
      ;;
    *) return 1 ;;
  esac
  unset OVS_RUNDIR OVS_LOGDIR OVS_DBDIR OVS_SYSCONFDIR
}

start_bridge() {
  ip -n "$ns_s" link add brb type bridge
  ip -n "$ns_s" link set tap2 master brb
  ip -n "$ns_s" link set eth1 master brb
  ip -n "$ns_s" link set brb up
}

start_mirred() {
  local a b
  for a in tap2 eth1; do
    b=$([[ $a == tap2 ]] && echo eth1 || echo tap2)
    ip netns exec "$ns_s" tc qdisc add dev "$a" ingress
    ip netns exec "$ns_s" tc filter add dev "$a" ingress u32 match u32 0 0 \
      action mirred egress redirect dev "$b"
  done
}

stop_dut() {
  local -
  set +e
  if [[ -n "$dut_pid" ]] && kill -0 "$dut_pid" 2>/dev/null; then
    kill -TERM "$dut_pid" 2>/dev/null
    local i
    for i in $(seq 50); do kill -0 "$dut_pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$dut_pid" 2>/dev/null
    wait "$dut_pid" 2>/dev/null
  fi
  dut_pid=""
  if [[ -n "$ovs_dir" ]]; then
    local p
    for p in "$ovs_dir"/ovs-vswitchd.pid "$ovs_dir"/ovsdb-server.pid; do
      [[ -f "$p" ]] && kill -TERM "$(cat "$p")" 2>/dev/null
    done
    sleep 0.5
    ovs_dir=""
  fi
  ip -n "$ns_s" link del brb 2>/dev/null
  ip netns exec "$ns_s" tc qdisc del dev tap2 ingress 2>/dev/null
  ip netns exec "$ns_s" tc qdisc del dev eth1 ingress 2>/dev/null
  xdp_off
  return 0
}

start_dut() { # scenario dut
  case "$2" in
    xvs-poll) start_xvs "$1" poll ;;
    xvs-intr) start_xvs "$1" interrupt ;;
    ovs-pmd) start_ovs "$1" afxdp ;;
    ovs-nonpmd) start_ovs "$1" afxdp-nonpmd ;;
    nullfwd-poll) start_nullfwd poll ;;
    nullfwd-intr) start_nullfwd interrupt ;;
    linux-bridge) start_bridge ;;
    tc-mirred) start_mirred ;;
  esac
}

applies() { # scenario dut
  case "$2" in
    nullfwd-*|tc-mirred) [[ "$1" == p2p ]] ;;
    linux-bridge) [[ "$1" == p2p || "$1" == normal || "$1" == jumbo ]] ;;
    ovs-*) [[ "$1" != geneve ]] ;;
    *) return 0 ;;
  esac
}

# Raises the device's forwarding threads (see --sched): SCHED_FIFO 50 in interrupt mode; in
# poll mode nice -10 (the generator's) instead, because a SCHED_FIFO thread that never sleeps is
# throttled by the kernel for 50 ms of every second (sched_rt_runtime_us), which overflows any
# ring, and at nice -20 it pushes every other task of the machine onto the generator's CPU.
rt_boost() { # dut
  [[ "$sched" == fifo && -n "$dut_pid" ]] || return 0
  local t pat
  case "$1" in
    xvs-*) pat='xvs-dp*' ;;  # the datapath threads; the control thread stays as it is
    ovs-pmd) pat='pmd*' ;;   # the PMD thread; handlers and revalidators stay as they are
    *) pat='*' ;;            # single-threaded forwarders, and OVS's non-PMD main thread
  esac
  # The daemons answer on their control socket before their forwarding threads exist.
  local try n=0
  for try in $(seq 50); do
    for t in /proc/"$dut_pid"/task/*; do
      # shellcheck disable=SC2053
      [[ "$(cat "$t/comm" 2>/dev/null)" == $pat ]] || continue
      if is_intr "$1"; then
        chrt -f -p 50 "${t##*/}" >/dev/null && n=$((n + 1))
      else
        renice -n -10 -p "${t##*/}" >/dev/null && n=$((n + 1))
      fi
    done
    ((n > 0)) && break
    sleep 0.1
  done
  ((n > 0)) || log "  no forwarding thread of $1 found to boost"
  return 0
}

is_intr() { [[ "$1" == xvs-intr || "$1" == ovs-nonpmd || "$1" == nullfwd-intr ]]; }

# Until the device forwards (ports up, flows in, MACs learned, next hop known): bounded.
warm_up() { # scenario cfg
  local sc="$1" cfg="$2" i sent del el
  if [[ "$sc" == geneve ]]; then
    # The switch learns its tunnel next hop from ARP crossing the underlay bridge.
    ip netns exec "$ns_k" ping -c 1 -W 1 198.19.1.1 >/dev/null 2>&1 || true
  fi
  for i in $(seq 10); do
    ip netns exec "$ns_g" ping -c 1 -W 1 "$(ping_dst "$sc")" >/dev/null 2>&1 || true
    read -r sent del el _ < <(run_rate "$cfg" "$([[ $sc == jumbo ]] && echo 10000 || echo 100000)" 1)
    # Forwarding at all is enough here: lossy devices are for the measures to show.
    if ((sent > 0 && del * 2 >= sent)); then return 0; fi
    [[ "$sc" == geneve ]] && ip netns exec "$ns_k" ping -c 1 -W 1 198.19.1.1 >/dev/null 2>&1
    sleep 0.5
  done
  return 1
}

measure_a() { # scenario dut cfg
  local sc="$1" dut="$2" cfg="$3" sent del el gen best=0 lo hi mid i note drops
  local -a d
  read -r sent del el _ d[0] d[1] d[2] d[3] < <(run_rate "$cfg" 0 "$step_s" "$dut")
  drops="$(drops_note "${d[@]}")"
  gen="$(calc "$sent / $el" %d)"
  csv_row "$sc" "$dut" full_rate "$gen" "$el" "$sent" "$del" "$(calc "$del / $el" %d)" "" "" "" "" "" "generator full speed; $drops"
  log "  $dut full speed: offered $((gen / 1000)) kpps, delivered $del of $sent ($drops)"
  if lossless "$sent" "$del"; then
    best=$gen; note="lossless at the generator's full rate"
  else
    lo=0; hi=$gen
    for ((i = 0; i < search_steps; i++)); do
      mid=$(((lo + hi) / 2))
      read -r sent del el _ d[0] d[1] d[2] d[3] < <(run_rate "$cfg" "$mid" "$step_s" "$dut")
      if lossless "$sent" "$del"; then lo=$mid; else hi=$mid; fi
      log "  $dut at $((mid / 1000)) kpps: delivered $del of $sent ($(drops_note "${d[@]}"))"
    done
    best=$lo
    note="bisection: lossless at $((lo / 1000)) kpps, loss at $((hi / 1000)) kpps"
    if ((search_steps == 0)); then best=""; note="lossy at full speed; no search (--quick)"; fi
  fi
  csv_row "$sc" "$dut" max_lossless "$best" "$step_s" "" "" "" "" "" "" "" "" "$note"
}

# xvs's own receive drops so far, summed over its ports: "fill_ring_empty rx_ring_full" (0 0
# for other devices). Per fixed run, the difference says where its losses happened.
xvs_rx_drops() { # dut
  case "$1" in
    xvs-*)
      "$xvs" --control "$work/xvs.ctl" port-stats 2>/dev/null | awk -F'[=, ]+' '
        /rx drops:/ { for (i = 1; i < NF; i++) { if ($i == "fill_ring_empty") f += $(i + 1); if ($i == "rx_ring_full") r += $(i + 1) } }
        END { print f + 0, r + 0 }'
      ;;
    *) echo "0 0" ;;
  esac
}

measure_b() { # scenario dut cfg
  local sc="$1" dut="$2" cfg="$3" load c0 c1 sent del el u0 s0 n0 u1 s1 n1 loads="$fixed_loads"
  [[ "$sc" == jumbo ]] && loads="$jumbo_loads"
  for load in $loads; do
    local st0 st1 backlog drops
    local -a d
    st0="$(steal_cpu1)"
    c0="$(cpu_of "$dut_pid")"
    read -r sent del el backlog d[0] d[1] d[2] d[3] < <(run_rate "$cfg" "$load" "$fixed_s" "$dut")
    c1="$(cpu_of "$dut_pid")"
    st1="$(steal_cpu1)"
    drops="$(drops_note "${d[@]}")"
    read -r u0 s0 n0 <<<"$c0"
    read -r u1 s1 n1 <<<"$c1"
    local cu cs csched
    cu="$(calc "($u1 - $u0) / $hz" %.2f)"
    cs="$(calc "($s1 - $s0) / $hz" %.2f)"
    csched="$(calc "($n1 - $n0) / 1000000000" %.4f)"
    local stolen
    stolen="$(calc "($st1 - $st0) * 1000 / $hz" %d)"
    csv_row "$sc" "$dut" fixed "$load" "$el" "$sent" "$del" "$(calc "$del / $el" %d)" "$cu" "$cs" "$csched" "" "" "pid $dut_pid; cpu1 stolen ${stolen} ms; $drops; generator backlog $backlog"
    log "  $dut at $((load / 1000)) kpps: delivered $del of $sent, cpu user ${cu}s sys ${cs}s, cpu1 stolen ${stolen} ms, $drops, generator backlog $backlog"
  done
}

# xvs's datapath counters summed over its threads: "frames busy_ns busy_polls" (busy: polls
# that found frames, and their time, including the transmit kicks they made).
xvs_busy() {
  "$xvs" --control "$work/xvs.ctl" pmd-stats-show 2>/dev/null | awk '
    $1 == "frames:" { f += $2 } $1 == "busy" && $2 == "ns:" { b += $3 }
    $1 == "polls:" { sub(/\)/, "", $4); p += $4 }
    END { print f + 0, b + 0, p + 0 }'
}

# A polling thread spends its whole CPU whatever the load, so the CPU per packet of (b) says
# nothing about it; its busy time per frame does: the inverse of the rate it can sustain, with
# the kernel's transmit and the sink's receive work it runs in its kicks. Measured at the fixed
# loads and at 400 kpps (600 for p2p), below every scenario's lossless rate here.
measure_poll_work() { # scenario dut cfg
  local sc="$1" dut="$2" cfg="$3" load loads="$fixed_loads 400000"
  [[ "$sc" == jumbo ]] && return 0
  [[ "$sc" == p2p || "$sc" == normal ]] && loads="$fixed_loads 600000"
  for load in $loads; do
    local f0 b0 p0 f1 b1 p1 sent del el backlog per fpp
    local -a d
    read -r f0 b0 p0 < <(xvs_busy)
    read -r sent del el backlog d[0] d[1] d[2] d[3] < <(run_rate "$cfg" "$load" "$fixed_s" "$dut")
    read -r f1 b1 p1 < <(xvs_busy)
    per="$(calc "($f1 > $f0) ? ($b1 - $b0) / ($f1 - $f0) : 0" %d)"
    fpp="$(calc "($p1 > $p0) ? ($f1 - $f0) / ($p1 - $p0) : 0" %.2f)"
    csv_row "$sc" "$dut" poll_work "$load" "$el" "$sent" "$del" "$(calc "$del / $el" %d)" "" "" "" "" "" "busy ns per frame $per; frames per busy poll $fpp; $(drops_note "${d[@]}")"
    log "  $dut at $((load / 1000)) kpps: delivered $del of $sent, busy $per ns per frame, $fpp frames per busy poll"
  done
}

measure_c() { # scenario dut [cfg]
  local sc="$1" dut="$2" cfg="${3:-}" dst p50 p99 n gen_pid="" size=56
  dst="$(ping_dst "$sc")"
  is_jumbo "$sc" && size=$jumbo_fill
  ip netns exec "$ns_g" ping -c "$pings" -s "$size" -i 0.005 -W 1 "$dst" >"$work/ping.txt" 2>&1 || true
  read -r p50 p99 n < <("$py" "$bench/report.py" pings "$work/ping.txt")
  csv_row "$sc" "$dut" ping_idle 0 "" "$pings" "$n" "" "" "" "" "$p50" "$p99" "idle"
  log "  $dut ping idle: p50 ${p50}us p99 ${p99}us ($n replies)"
  ((ping_load)) || return 0
  # The load is 100 kpps of 64-byte frames; jumbo's is its first fixed load (100 kpps of 9014
  # bytes is 7.2 Gbit/s, the saturation point of every AF_XDP device here).
  local secs=$((pings * 5 / 1000 + 3)) tg rate=100000
  is_jumbo "$sc" && rate="${jumbo_loads%% *}"
  local -a args
  tg="${cfg:-$(gen_cfg "$sc")}"
  mapfile -t args <"$tg"
  timeout -s INT $((secs + 5)) ip netns exec "$ns_g" "${gen_nice[@]}" taskset -c 0 \
    "$genbin" "${args[@]}" --rate "$rate" --count $((rate * secs)) --seconds "$secs" >/dev/null 2>&1 &
  gen_pid=$!
  bg_pids+=("$gen_pid")
  sleep 0.5
  ip netns exec "$ns_g" ping -c "$pings" -s "$size" -i 0.005 -W 1 "$dst" >"$work/ping.txt" 2>&1 || true
  kill "$gen_pid" 2>/dev/null
  wait "$gen_pid" 2>/dev/null || true
  read -r p50 p99 n < <("$py" "$bench/report.py" pings "$work/ping.txt")
  csv_row "$sc" "$dut" ping_load "$rate" "" "$pings" "$n" "" "" "" "" "$p50" "$p99" "under $((rate / 1000)) kpps"
  log "  $dut ping under $((rate / 1000)) kpps: p50 ${p50}us p99 ${p99}us ($n replies)"
}

perf_profile() { # scenario dut cfg
  local sc="$1" cfg="$3"
  shift
  command -v perf >/dev/null || return 0
  local rate="${BENCH_PERF_RATE:-100000}"
  [[ "$sc" == jumbo ]] && rate="${jumbo_loads%% *}"
  log "  perf record on $1 (pid $dut_pid), 5 s at $((rate / 1000)) kpps"
  # BENCH_PERF_CALLGRAPH=dwarf records call chains by stack copies: release builds keep no
  # frame pointers, so the default chains stop at the sampled function.
  perf record -F 999 --call-graph "${BENCH_PERF_CALLGRAPH:-fp}" -p "$dut_pid" -o "$work/perf.data" \
    -- sleep 5 >/dev/null 2>&1 &
  local pp=$!
  run_rate "$cfg" "$rate" 5 >/dev/null
  wait "$pp" || true
  perf report -i "$work/perf.data" --no-children -g none --percent-limit 1 --stdio 2>/dev/null \
    | grep -E '^ +[0-9.]+%' | head -30 >"${out%.csv}-perf-$sc-$1.txt" || true
  log "  perf top items in ${out%.csv}-perf-$sc-$1.txt"
  # BENCH_KEEP_PERF=1 keeps the recording for `perf report -i` (not committed: it is large).
  [[ "${BENCH_KEEP_PERF:-0}" == 1 ]] && cp "$work/perf.data" "${out%.csv}-perf-$sc-$1.data"
  return 0
}

# ---------------------------------------------------------------------------------------------
"$py" "$bench/report.py" columns >"$out"
log "load average $load_avg; scheduling of the device under test: $sched; results to $out"

# The latency baseline: the direct veth pair, no switch.
measure_c direct veth "$(gen_cfg direct)"
((jumbo_runs)) && measure_c direct-jumbo veth "$(gen_cfg direct-jumbo)"

# The device's own view of the run (drops by reason, per-port counters), kept next to the CSV.
dut_counters() { # scenario dut
  local f="${out%.csv}-counters-$1-$2.txt"
  case "$2" in
    xvs-*)
      {
        "$xvs" --control "$work/xvs.ctl" port-stats
        "$xvs" --control "$work/xvs.ctl" pmd-stats-show
        "$xvs" --control "$work/xvs.ctl" dump-conntrack 2>&1 | head -5
      } >"$f" 2>&1
      ;;
    ovs-*)
      {
        local b
        for b in br0 brAtlas; do ovs ovs-ofctl dump-ports "$b" 2>/dev/null; done
        ovs ovs-appctl dpif-netdev/pmd-stats-show
      } >"$f" 2>&1
      ;;
    nullfwd-*) return 0 ;;
    *) ip netns exec "$ns_s" ip -s link >"$f" 2>&1 ;;
  esac
}

# One device in one scenario. Runs in a condition (see the loop), so a failing command inside
# does not end the whole benchmark: the device's rows say what was measured.
bench_dut() { # scenario dut cfg
  local sc="$1" dut="$2" cfg="$3"
  if ! start_dut "$sc" "$dut"; then
    csv_row "$sc" "$dut" max_lossless "" "" "" "" "" "" "" "" "" "" "did not start"
    return 0
  fi
  rt_boost "$dut"
  if ! warm_up "$sc" "$cfg"; then
    log "  $dut does not forward $sc traffic; skipped. Its log ends with:"
    tail -5 "$work/dut.log" >&2 2>/dev/null
    local why="not forwarding after warm-up"
    # Open vSwitch says why in its log: the kernel's own message when it refused the XDP
    # program (for jumbo: the MTU), else its last error. The whole log is kept next to the CSV.
    if [[ -n "$ovs_dir" && -f "$ovs_dir/ovs-vswitchd.log" ]]; then
      local log_f="$ovs_dir/ovs-vswitchd.log" err
      err="$(grep -m1 'Kernel error message' "$log_f" || true)"
      [[ -n "$err" ]] || err="$(grep '|ERR|' "$log_f" | grep -v RLIMIT | tail -1 || true)"
      err="$(sed -e 's/^[^|]*|[^|]*|[^|]*|[^|]*|//' -e "s/\"/'/g" <<<"$err" | cut -c1-160)"
      [[ -n "$err" ]] && why="$why; ovs-vswitchd: $err"
      cp "$log_f" "${out%.csv}-ovs-$sc-$dut.log" 2>/dev/null
    fi
    csv_row "$sc" "$dut" max_lossless "" "" "" "" "" "" "" "" "" "" "$why"
    return 0
  fi
  measure_a "$sc" "$dut" "$cfg"
  if is_intr "$dut"; then
    measure_b "$sc" "$dut" "$cfg"
  elif [[ "$dut" == xvs-poll ]]; then
    measure_poll_work "$sc" "$dut" "$cfg"
  fi
  # No probe through the tunnel (the sink does not decapsulate), nor to a VLAN the sink
  # kernel cannot terminate.
  if [[ "$sc" != geneve && ("$sc" != snat || $vlan_sink == 1) ]]; then
    measure_c "$sc" "$dut" "$cfg"
  fi
  if [[ -n "$perf_dut" && "$perf_dut" == "$dut" ]]; then perf_profile "$sc" "$dut" "$cfg"; fi
  dut_counters "$sc" "$dut"
  return 0
}

IFS=, read -r -a sc_list <<<"$scenarios"
IFS=, read -r -a dut_list <<<"$duts"
for sc in "${sc_list[@]}"; do
  cfg="$(gen_cfg "$sc")"
  if [[ "$sc" == jumbo ]]; then path_mtu "$jumbo_mtu"; else path_mtu 1500; fi
  for dut in "${dut_list[@]}"; do
    applies "$sc" "$dut" || continue
    log "$sc / $dut"
    bench_dut "$sc" "$dut" "$cfg" || log "  $sc / $dut: a step failed"
    stop_dut
  done
done

"$py" "$bench/report.py" table "$out" "$png"
