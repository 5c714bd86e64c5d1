#!/usr/bin/env bash
# Installs n8n (pinned) with npm into a cache outside the source tree, for the n8n integration tests.
#
#   scripts/install-n8n.sh            # install once, reuse afterwards (prints the n8n binary path last)
#   N8N_CACHE_DIR=/some/dir scripts/install-n8n.sh
#
# n8n 2.8.4 is the newest release whose engines accept Node 20. Its n8n-nodes-base depends on an
# `xlsx` tarball hosted outside the npm registry, which makes a plain install hang; the `overrides`
# entry below swaps in the registry copy of the same version. The first install takes about five
# minutes and 2.3 GB (sqlite3 compiles from source); later runs see the stamp file and return at once.
set -euo pipefail

N8N_VERSION="${N8N_VERSION:-2.8.4}"
CACHE_DIR="${N8N_CACHE_DIR:-${HOME:-/root}/.cache/comfy-router/n8n-${N8N_VERSION}}"
STAMP="${CACHE_DIR}/.installed-n8n-${N8N_VERSION}"
BIN="${CACHE_DIR}/node_modules/.bin/n8n"

log() { printf '[install-n8n] %s\n' "$*" >&2; }

if [ -f "${STAMP}" ] && [ -x "${BIN}" ]; then
  log "n8n ${N8N_VERSION} already installed in ${CACHE_DIR}"
  echo "${BIN}"
  exit 0
fi

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  log "node and npm are required (Node 20 or newer); install Node.js first"
  exit 1
fi
NODE_MAJOR="$(node -p 'process.versions.node.split(".")[0]')"
if [ "${NODE_MAJOR}" -lt 20 ]; then
  log "n8n ${N8N_VERSION} needs Node 20 or newer; found $(node --version)"
  exit 1
fi

mkdir -p "${CACHE_DIR}"
# One installer at a time (two `make test` runs started together share the cache).
exec 9>"${CACHE_DIR}/.install.lock"
if command -v flock >/dev/null 2>&1; then
  log "waiting for the install lock ${CACHE_DIR}/.install.lock"
  flock 9
fi
if [ -f "${STAMP}" ] && [ -x "${BIN}" ]; then
  log "n8n ${N8N_VERSION} was installed by another run in ${CACHE_DIR}"
  echo "${BIN}"
  exit 0
fi

cat >"${CACHE_DIR}/package.json" <<JSON
{
  "name": "comfy-router-n8n-cache",
  "private": true,
  "description": "n8n for comfy-router's integration tests (installed by scripts/install-n8n.sh)",
  "dependencies": {
    "n8n": "${N8N_VERSION}"
  },
  "overrides": {
    "xlsx": "npm:@e965/xlsx@0.20.2"
  }
}
JSON

log "installing n8n ${N8N_VERSION} into ${CACHE_DIR} (the first time takes about 5 minutes and 2.3 GB)"
START="$(date +%s)"
(
  cd "${CACHE_DIR}"
  npm install --no-audit --no-fund --no-update-notifier --loglevel=http 2>&1 \
    | while IFS= read -r line; do
        case "${line}" in
          "npm http "*)
            fetched=$(( ${fetched:-0} + 1 ))
            if [ $(( fetched % 250 )) -eq 0 ]; then
              log "${fetched} package requests done, $(( $(date +%s) - START ))s"
            fi ;;
          *) printf '%s\n' "${line}" >&2 ;;
        esac
      done
  exit "${PIPESTATUS[0]}"
)
if [ ! -x "${BIN}" ]; then
  log "npm finished but ${BIN} is missing"
  exit 1
fi
"${BIN}" --version >/dev/null 2>&1 || { log "${BIN} --version failed"; exit 1; }
date -u +%Y-%m-%dT%H:%M:%SZ >"${STAMP}"
log "installed n8n $("${BIN}" --version 2>/dev/null | tail -n1) in $(( $(date +%s) - START ))s, $(du -sh "${CACHE_DIR}" | cut -f1)"
echo "${BIN}"
