#!/usr/bin/env bash
# Installs the TimescaleDB that the tests run against (tests/timescaledb/: PGlite's
# TimescaleDB build and the socket server for it, from the npm registry, pinned by
# package-lock.json), and nothing when it is already there.  Tests never download.
# Needs node and npm: installed with apt-get when missing, like scripts/bootstrap.sh.
set -euo pipefail

cd "$(dirname "$0")/../tests/timescaledb"

say() { printf 'install-test-timescaledb: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

STAMP=node_modules/.installed
wanted="$(cat package.json package-lock.json | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$STAMP" 2>/dev/null)" = "$wanted" ]; then
    exit 0
fi

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    command -v apt-get >/dev/null || die "please install node (18 or newer) and npm"
    if [ "$(id -u)" -eq 0 ]; then
        as_root=()
    elif command -v sudo >/dev/null && { [ -t 0 ] || sudo -n true 2>/dev/null; }; then
        as_root=(sudo)
    else
        die "node and npm are missing; run: sudo apt-get install nodejs npm"
    fi
    say "installing nodejs and npm with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    "${as_root[@]}" apt-get update -qq
    "${as_root[@]}" apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null
fi

say "installing the TimescaleDB test server into tests/timescaledb/node_modules"
npm ci --no-audit --no-fund --loglevel=error >/dev/null
printf '%s\n' "$wanted" >"$STAMP"
