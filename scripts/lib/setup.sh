# Shared setup for scripts/serve and scripts/test: a .venv with the project installed.
# Sourced, not run. Installs are skipped when pyproject.toml has not changed since the last one.

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"

_as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

_apt_install() {
    _as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive _as_root apt-get install -y -qq "$@" >/dev/null
}

ensure_venv() {  # ensure_venv [EXTRAS]
    local extras="${1:-}" python stamp
    python="${PYTHON:-$(command -v python3.11 || command -v python3)}"
    if [ ! -x "$ROOT/.venv/bin/python" ]; then
        if ! "$python" -m venv "$ROOT/.venv" 2>/dev/null; then
            rm -rf "$ROOT/.venv"
            _apt_install python3-venv
            "$python" -m venv "$ROOT/.venv"
        fi
    fi
    stamp="$ROOT/.venv/.installed-$(sha256sum "$ROOT/pyproject.toml" | cut -c1-16)"
    # A dev install also satisfies a plain one.
    if [ ! -f "$stamp-${extras:-base}" ] && { [ -n "$extras" ] || [ ! -f "$stamp-dev" ]; }; then
        echo "Installing Simwire into .venv ${extras:+(with $extras extras)}…" >&2
        "$ROOT/.venv/bin/python" -m pip install -q --upgrade pip >/dev/null
        "$ROOT/.venv/bin/python" -m pip install -q -e "$ROOT${extras:+[$extras]}"
        touch "$stamp-${extras:-base}"
    fi
}

ensure_postgres_binaries() {
    if ! ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 && ! command -v pg_ctl >/dev/null; then
        echo "Installing PostgreSQL server binaries…" >&2
        _apt_install postgresql
    fi
}

ensure_node_tools() {  # the local chain (anvil) and the contract compiler, from package.json
    [ -f "$ROOT/package.json" ] || return 0
    if ! command -v npm >/dev/null; then
        echo "Installing Node.js and npm…" >&2
        _apt_install nodejs npm
    fi
    if [ ! -x "$ROOT/node_modules/.bin/anvil" ] || [ "$ROOT/package-lock.json" -nt "$ROOT/node_modules/.package-lock.json" ]; then
        echo "Installing node tools (anvil, solc)…" >&2
        (cd "$ROOT" && npm ci --no-audit --no-fund --loglevel=error)
    fi
}
