#!/usr/bin/env bash
# Installs the server packages the tests start for themselves (Debian/Ubuntu), when they are missing.
# Each test fixture also fails with a message naming the package if it is still absent.
set -euo pipefail

need=()
command -v initdb >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v nats-server >/dev/null 2>&1 || [ -x /usr/sbin/nats-server ] || need+=(nats-server)
# Browser tests of the web console (tests/console) drive Debian's Chromium through Playwright.
[ -x /usr/bin/chromium ] || need+=(chromium)
# Erasure coding (data/): the pyeclib wheel bundles liberasurecode + ISA-L, so nothing is needed
# normally; Debian's libraries are the fallback when the ISA-L Cauchy backend does not load
# (e.g. pyeclib built from source).
PY="${PYTHON:-.venv/bin/python}"
if [ -x "$PY" ] && ! "$PY" -c 'import pyeclib.ec_iface as e; assert "isa_l_rs_cauchy" in e.VALID_EC_TYPES' >/dev/null 2>&1; then
  need+=(liberasurecode1 libisal2)
fi

if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "missing system packages: ${need[*]} — install them with your package manager" >&2
  exit 2
fi
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
echo "installing system packages: ${need[*]}"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
