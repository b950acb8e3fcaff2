#!/usr/bin/env bash
# deps.sh: install, with apt-get, the Debian packages tdlab builds, tests and runs with.
# Idempotent: checks each package first and is silent when all are present.
#   scripts/deps.sh            build + run + test (make deps)
#   scripts/deps.sh runtime    build + run only (the Docker image)
#   scripts/deps.sh bench      adds python3-torch (the PyTorch peer of `make bench`) and wrk
#   scripts/deps.sh fuzz       adds clang and its sanitizer runtimes for `make fuzz` / `make tsan`
#   scripts/deps.sh load       adds wrk for tests/load.sh
set -euo pipefail
RUNTIME=(build-essential pkg-config curl
         libmicrohttpd-dev libjansson-dev libsqlite3-dev libopenblas-dev liblapacke-dev
         zlib1g-dev liblbfgs-dev libgsl-dev libcurl4-openssl-dev nettle-dev dataset-fashion-mnist)
TEST=(libcmocka-dev sqlite3 python3 python3-venv python3-setuptools chromium nodejs npm
      slurm-wlm munge)
case "${1:-test}" in
  runtime) PKGS=("${RUNTIME[@]}") ;;
  test)    PKGS=("${RUNTIME[@]}" "${TEST[@]}") ;;
  bench)   PKGS=("${RUNTIME[@]}" python3-torch wrk) ;;
  fuzz)    PKGS=("${RUNTIME[@]}" libcmocka-dev clang libclang-rt-14-dev) ;;
  load)    PKGS=("${RUNTIME[@]}" wrk) ;;
  *) echo "usage: $0 [runtime|test|bench|fuzz|load]" >&2; exit 2 ;;
esac
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
# nodejs/npm may come from outside Debian on some machines: accept any working node + npm.
if command -v node >/dev/null && command -v npm >/dev/null; then
  tmp=(); for p in "${missing[@]}"; do [[ $p == nodejs || $p == npm ]] || tmp+=("$p"); done
  missing=("${tmp[@]+"${tmp[@]}"}")
  [ ${#missing[@]} -eq 0 ] && exit 0
fi
echo "deps: installing ${missing[*]}"
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
