#!/usr/bin/env bash
# Installs the real servers and tools the test suite talks to: an OpenSSH server (SSH freeze,
# drain hooks, rehearsals), Prometheus + promtool (metrics end to end, rule tests), shellcheck,
# busybox and dash (the guest script must run under every POSIX sh). Idempotent; quiet when
# everything is already there.
set -euo pipefail
need=()
command -v sshd >/dev/null 2>&1 || [ -x /usr/sbin/sshd ] || need+=(openssh-server)
command -v ssh-keygen >/dev/null 2>&1 || need+=(openssh-client)
command -v prometheus >/dev/null 2>&1 || need+=(prometheus)
command -v shellcheck >/dev/null 2>&1 || need+=(shellcheck)
command -v busybox >/dev/null 2>&1 || need+=(busybox)
command -v dash >/dev/null 2>&1 || need+=(dash)
command -v go >/dev/null 2>&1 || need+=(golang-go)
[ -d /usr/share/gocode/src/github.com/vmware/govmomi ] || need+=(golang-github-vmware-govmomi-dev)
if [ ${#need[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "setup-test-deps: installing ${need[*]}"
  $SUDO apt-get update -qq
  # The Debian prometheus package starts a system service on install; tests run their own.
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  if command -v systemctl >/dev/null 2>&1; then $SUDO systemctl stop prometheus 2>/dev/null || true; fi
fi
