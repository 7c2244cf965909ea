# Shared setup for scripts/serve and scripts/test: a .venv with the project installed.
# Sourced, not run. Installs are skipped when pyproject.toml has not changed since the last one.

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"

_as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

_apt_install() {
    _as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive _as_root apt-get install -y -qq "$@" >/dev/null
}

# The Python versions Simwire runs on (pyproject.toml's requires-python says the same).
SUPPORTED_PYTHONS="3.11, 3.12 or 3.13"

python_version() {  # python_version PYTHON: prints e.g. 3.12, or nothing if it does not run
    "$1" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null || true
}

python_fits() {  # python_fits PYTHON: true for a supported version
    case "$(python_version "$1")" in 3.11 | 3.12 | 3.13) return 0 ;; *) return 1 ;; esac
}

pick_python() {  # prints the interpreter to build .venv with: $PYTHON, else the newest that fits
    local candidate found tried="" version
    if [ -n "${PYTHON:-}" ]; then
        version="$(python_version "$PYTHON")"
        version="${version:+Python $version}"
        if python_fits "$PYTHON"; then echo "$PYTHON"; return 0; fi
        echo "PYTHON=$PYTHON is ${version:-not a Python that runs}; Simwire needs Python" \
            "$SUPPORTED_PYTHONS." >&2
        return 1
    fi
    for candidate in python3.13 python3.12 python3.11 python3; do
        found="$(command -v "$candidate" 2>/dev/null)" || continue
        if python_fits "$found"; then echo "$found"; return 0; fi
        tried="$tried $found ($(python_version "$found"))"
    done
    echo "Simwire needs Python $SUPPORTED_PYTHONS, and none was found on PATH${tried:+ (found:$tried)}." \
        "Install one (Debian 12: apt-get install python3 python3-venv) or set PYTHON=/path/to/python3.X." >&2
    return 1
}

ensure_venv() {  # ensure_venv [EXTRAS]
    local extras="${1:-}" python stamp
    if [ -x "$ROOT/.venv/bin/python" ] && ! python_fits "$ROOT/.venv/bin/python"; then
        echo "Rebuilding .venv: it has Python $(python_version "$ROOT/.venv/bin/python"), Simwire" \
            "needs $SUPPORTED_PYTHONS." >&2
        rm -rf "$ROOT/.venv"
    fi
    if [ ! -x "$ROOT/.venv/bin/python" ]; then
        python="$(pick_python)" || exit 1
        echo "Creating .venv with $python (Python $(python_version "$python"))…" >&2
        if ! "$python" -m venv "$ROOT/.venv" 2>/dev/null; then
            rm -rf "$ROOT/.venv"
            _apt_install "python$(python_version "$python")-venv" || _apt_install python3-venv
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

check_other_pythons() {  # the unit tests on every other supported Python present, in .venv-3.X
    local main_version candidate found version venv stamp checked=""
    main_version="$(python_version "$ROOT/.venv/bin/python")"
    for candidate in python3.11 python3.12 python3.13; do
        found="$(command -v "$candidate" 2>/dev/null)" || continue
        version="$(python_version "$found")"
        { [ "$version" = "${candidate#python}" ] && [ "$version" != "$main_version" ]; } || continue
        venv="$ROOT/.venv-$version"
        stamp="$venv/.installed-$(sha256sum "$ROOT/pyproject.toml" | cut -c1-16)-dev"
        if [ ! -f "$stamp" ]; then
            echo "Installing Simwire into .venv-$version (Python $version check)…" >&2
            rm -rf "$venv"
            if ! "$found" -m venv "$venv" 2>/dev/null; then
                rm -rf "$venv"
                _apt_install "python$version-venv"
                "$found" -m venv "$venv"
            fi
            "$venv/bin/python" -m pip install -q --upgrade pip >/dev/null
            "$venv/bin/python" -m pip install -q -e "$ROOT[dev]"
            touch "$stamp"
        fi
        echo "Python $version: importing the app and running tests/unit…" >&2
        (cd "$ROOT" && "$venv/bin/python" -c "import app.api.app, app.cli, app.phone.cli" &&
            "$venv/bin/python" -m pytest -q -p no:cacheprovider tests/unit) || return 1
        checked="$checked $version"
    done
    if [ -z "$checked" ]; then
        echo "Only Python $main_version is installed here: no other supported version to check." >&2
    fi
}

ensure_postgres_binaries() {
    if ! ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 && ! command -v pg_ctl >/dev/null; then
        echo "Installing PostgreSQL server binaries…" >&2
        _apt_install postgresql
    fi
}

ensure_chromium() {  # the browser the dashboard's browser tests drive (Playwright, executable_path)
    if [ ! -x /usr/bin/chromium ]; then
        echo "Installing Chromium…" >&2
        _apt_install chromium
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

ensure_wrk() {  # the HTTP load generator the send benchmark drives the server with
    if ! command -v wrk >/dev/null; then
        echo "Installing wrk…" >&2
        _apt_install wrk
    fi
}
