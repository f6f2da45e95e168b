#!/usr/bin/env bash
# Creates .venv (installing Debian's python3-venv first when the interpreter lacks ensurepip),
# then installs forkscale into it with the extras given as $1 (e.g. "[test]").
set -euo pipefail
cd "$(dirname "$0")/.."
if ! python3 -c "import ensurepip, venv" >/dev/null 2>&1; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq python3-venv >/dev/null
fi
[ -x .venv/bin/pip ] || python3 -m venv .venv
.venv/bin/pip install -q --disable-pip-version-check -e ".${1:-}"
