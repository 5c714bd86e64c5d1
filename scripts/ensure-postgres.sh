#!/usr/bin/env bash
# Installs the PostgreSQL server when its binaries are missing (a fresh CI machine may lack it).
set -euo pipefail
if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then exit 0; fi
if [ "$(id -u)" != "0" ]; then
  echo "PostgreSQL server binaries are missing; install the 'postgresql' package (needs root)." >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq postgresql >/dev/null
# The Debian package starts a cluster of its own; the tests start their own throwaway server.
(service postgresql stop || pg_ctlcluster --force 15 main stop || true) >/dev/null 2>&1
ls /usr/lib/postgresql/*/bin/initdb >/dev/null
