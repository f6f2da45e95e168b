#!/bin/sh
# "hello" 2.0: the release this example rehearses (stands in for your application's new version).
set -eu
case "${1:-}" in
  --version) echo "hello 2.0" ;;
  selftest)
    # what a release's own smoke test does: its data directory is there and writable
    dir=/var/lib/hello
    mkdir -p "$dir" && echo ok > "$dir/selftest" && test "$(cat "$dir/selftest")" = ok
    echo "hello 2.0: selftest passed" ;;
  *) echo "hello, world" ;;
esac
