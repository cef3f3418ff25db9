#!/usr/bin/env bash
# Installs what `make run` and `make test` need, and nothing when it is all there:
#   - PostgreSQL server programs and redis-server (Debian/Ubuntu packages), when missing;
#   - .venv with the project and its dev tools, reinstalled when pyproject.toml changed.
# Our own servers are started by devkit/localstack/ on free ports: the system services
# these packages may start are never used (and need not run).
set -euo pipefail

cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
VENV=.venv
STAMP="$VENV/.installed"

say() { printf 'bootstrap: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

have_pg_server() {
    compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || command -v initdb >/dev/null
}

have_redis() {
    command -v redis-server >/dev/null || [ -x /usr/bin/redis-server ]
}

missing=()
have_pg_server || missing+=(postgresql)
have_redis || missing+=(redis-server)
if ! command -v "$PYTHON" >/dev/null; then
    missing+=(python3 python3-venv)
elif ! "$PYTHON" -c 'import ensurepip, venv' 2>/dev/null; then
    missing+=(python3-venv)
fi

if [ "${#missing[@]}" -gt 0 ]; then
    if ! command -v apt-get >/dev/null; then
        die "please install: ${missing[*]} (PostgreSQL server, Redis server, Python 3.11+ venv)"
    fi
    if [ "$(id -u)" -eq 0 ]; then
        as_root=()
    elif command -v sudo >/dev/null && { [ -t 0 ] || sudo -n true 2>/dev/null; }; then
        as_root=(sudo)
    else
        die "missing system packages: ${missing[*]}; run: sudo apt-get install ${missing[*]}"
    fi
    say "installing ${missing[*]} with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    "${as_root[@]}" apt-get update -qq
    "${as_root[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    have_pg_server || die "postgresql installed but initdb not found under /usr/lib/postgresql"
    have_redis || die "redis-server installed but not found"
fi

"$PYTHON" - <<'EOF' || die "Python 3.11 or newer is needed (found $("$PYTHON" --version 2>&1)); set PYTHON=/path/to/python3.11"
import sys
sys.exit(0 if sys.version_info >= (3, 11) else 1)
EOF

if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import sys' 2>/dev/null; then
    say "creating $VENV"
    rm -rf "$VENV"
    "$PYTHON" -m venv "$VENV"
fi

wanted="$(sha256sum pyproject.toml | cut -d' ' -f1)"
if [ ! -x "$VENV/bin/engine" ] || [ "$(cat "$STAMP" 2>/dev/null)" != "$wanted" ]; then
    say "installing the project and its dev tools into $VENV"
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e '.[dev]'
    printf '%s\n' "$wanted" >"$STAMP"
fi
