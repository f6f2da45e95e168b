#!/bin/sh
# Install (or upgrade to) a release of "hello" under /opt/hello, keeping the previous one for a rollback.
#   install.sh RELEASE-FILE
set -eu
release=$1
mkdir -p /opt/hello/bin
if [ -f /opt/hello/bin/hello ]; then
  cp -p /opt/hello/bin/hello /opt/hello/bin/hello.previous
  echo "previous release: $(/opt/hello/bin/hello --version)"
fi
cp "$release" /opt/hello/bin/hello.new
chmod 0755 /opt/hello/bin/hello.new
mv -f /opt/hello/bin/hello.new /opt/hello/bin/hello
/opt/hello/bin/hello --version > /opt/hello/VERSION
echo "installed: $(cat /opt/hello/VERSION)"
