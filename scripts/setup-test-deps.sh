#!/usr/bin/env bash
# Installs the real servers and tools the test suite talks to: an OpenSSH server (SSH freeze,
# drain hooks, rehearsals), Prometheus + promtool (metrics end to end, rule tests), shellcheck,
# busybox and dash (the guest script must run under every POSIX sh), bubblewrap (the twin runs
# guest programs in a sandbox per VM), PostgreSQL's server
# binaries (the PostgreSQL ledger; tests run their own private cluster, never Debian's).
# Idempotent; quiet when everything is already there.
set -euo pipefail
need=()
command -v sshd >/dev/null 2>&1 || [ -x /usr/sbin/sshd ] || need+=(openssh-server)
command -v ssh-keygen >/dev/null 2>&1 || need+=(openssh-client)
command -v prometheus >/dev/null 2>&1 || need+=(prometheus)
command -v shellcheck >/dev/null 2>&1 || need+=(shellcheck)
command -v busybox >/dev/null 2>&1 || need+=(busybox)
command -v dash >/dev/null 2>&1 || need+=(dash)
command -v bwrap >/dev/null 2>&1 || need+=(bubblewrap)
command -v go >/dev/null 2>&1 || need+=(golang-go)
[ -d /usr/share/gocode/src/github.com/vmware/govmomi ] || need+=(golang-github-vmware-govmomi-dev)
# initdb/pg_ctl/postgres: on PATH, or Debian's versioned /usr/lib/postgresql/<v>/bin.
have_pg() {
  command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1 && return 0
  compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null
}
have_pg || need+=(postgresql)
if [ ${#need[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "setup-test-deps: installing ${need[*]}"
  $SUDO apt-get update -qq
  if [[ " ${need[*]} " == *" postgresql "* ]]; then
    # No system cluster (15/main on :5432): the tests initdb their own, so don't make one.
    $SUDO mkdir -p /etc/postgresql-common/createcluster.d
    echo "create_main_cluster = false" | $SUDO tee /etc/postgresql-common/createcluster.d/forkscale-test.conf >/dev/null
  fi
  # The Debian prometheus package starts a system service on install; tests run their own.
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  if command -v systemctl >/dev/null 2>&1; then $SUDO systemctl stop prometheus 2>/dev/null || true; fi
  if command -v systemctl >/dev/null 2>&1; then $SUDO systemctl stop postgresql 2>/dev/null || true; fi
fi
# PostgreSQL refuses to run as root: as root, the test cluster runs as this unprivileged system user.
if [ "$(id -u)" -eq 0 ] && ! id -u forkscale-test >/dev/null 2>&1; then
  useradd --system --user-group --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin forkscale-test
fi
