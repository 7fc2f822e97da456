#!/usr/bin/env bash
# Installs every system package xvs needs to build, test and benchmark.
# Idempotent: packages already present are skipped by apt; safe to run with no stdin (CI).
set -euo pipefail

PACKAGES=(
  # build: xsk-rs compiles libxdp and libbpf from source
  clang llvm libelf-dev libpcap-dev zlib1g-dev m4 pkg-config make gcc
  # the fuzz targets' libFuzzer is C++
  g++
  # test hosts and oracles
  iproute2 iputils-ping ethtool openvswitch-switch tshark tcpdump netsniff-ng python3-scapy
  # benchmarks and profiling
  valgrind python3-matplotlib
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # tshark asks whether non-root users may capture; answer once, non-interactively.
  echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}" </dev/null
fi

# Debian starts the openvswitch-switch service on install; xvs's tests run private OVS instances
# instead and never depend on (or touch) a system one.
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet openvswitch-switch 2>/dev/null; then
  systemctl stop openvswitch-switch >/dev/null 2>&1 || true
fi

command -v cargo >/dev/null || { echo "setup: cargo not found (install Rust with rustup)" >&2; exit 1; }
rustup component list --installed 2>/dev/null | grep -q rustfmt || rustup component add rustfmt clippy >/dev/null 2>&1 || true
echo "setup: ok"
