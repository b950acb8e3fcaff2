#!/usr/bin/env bash
# deps.sh: install, with apt-get, the Debian packages tdlab builds, tests and runs with.
# Idempotent: checks each package first and is silent when all are present.
set -euo pipefail
PKGS=(build-essential pkg-config curl
      libmicrohttpd-dev libjansson-dev libsqlite3-dev libopenblas-dev liblapacke-dev
      libcmocka-dev zlib1g-dev liblbfgs-dev dataset-fashion-mnist
      sqlite3 chromium nodejs)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "deps: installing ${missing[*]}"
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
