#!/usr/bin/env bash
# Installs the Debian 12 packages pgjobq needs to build, test, benchmark and
# run the demo, skipping those already installed. Needs root (or sudo) only
# when something is missing.
set -euo pipefail

packages=(
  g++ cmake make ninja-build pkg-config
  libpq-dev libhiredis-dev nlohmann-json3-dev libcli11-dev
  libgtest-dev libbenchmark-dev
  postgresql-15 redis-server pgbouncer
  clang-14 libclang-rt-14-dev clang-format util-linux procps nftables
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed"; then
    missing+=("$p")
  fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "installing: ${missing[*]}" >&2
sudo=()
if [ "$(id -u)" != 0 ]; then sudo=(sudo); fi
export DEBIAN_FRONTEND=noninteractive
# The package lists may be empty on a fresh machine: update once and retry.
if ! "${sudo[@]}" apt-get install -y --no-install-recommends "${missing[@]}"; then
  "${sudo[@]}" apt-get update
  "${sudo[@]}" apt-get install -y --no-install-recommends "${missing[@]}"
fi
