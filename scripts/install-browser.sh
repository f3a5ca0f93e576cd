#!/usr/bin/env bash
# Installs what the search-page browser test (tests/integration/router/test_page_browser.py) and
# scripts/screenshot_page.py need; run by `make tools` (and so by `make test`), and by the
# test itself when something is missing. Idempotent and quiet: a no-op once both are there.
#
#   /usr/bin/chromium         Debian's `chromium` package (apt-get; as root, else via sudo)
#   playwright (Python)       into the project venv, at the pin in pyproject.toml's dev extra
#
# Playwright drives the system chromium through `executable_path`: its own browser
# download (`playwright install`) is never used. Environment: VENV (default .venv, relative
# to the repository root), CHROMIUM (default /usr/bin/chromium).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
VENV=${VENV:-.venv}
case $VENV in /*) ;; *) VENV=$ROOT/$VENV ;; esac
PY=$VENV/bin/python
CHROMIUM=${CHROMIUM:-/usr/bin/chromium}
APT_PACKAGES=(chromium fonts-dejavu-core fonts-liberation)

die() {
    echo "install-browser: $*" >&2
    if [[ -n ${LOG:-} && -s $LOG ]]; then
        echo "---- log ----" >&2
        tail -n 60 "$LOG" >&2
    fi
    exit 1
}

LOG=$(mktemp)
trap 'rm -f "$LOG"' EXIT

# ---- chromium (Debian package) ----
if [[ ! -x $CHROMIUM ]]; then
    if [[ $CHROMIUM != /usr/bin/chromium ]]; then
        die "CHROMIUM=$CHROMIUM does not exist (only /usr/bin/chromium is installed by this script)"
    fi
    command -v apt-get >/dev/null 2>&1 ||
        die "no $CHROMIUM and no apt-get: install Chromium with your system's package manager"
    if [[ $(id -u) -eq 0 ]]; then
        SUDO=()
    elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        SUDO=(sudo -n)
    else
        die "no $CHROMIUM; installing it needs root: run 'sudo apt-get install chromium' (or run this script as root)"
    fi
    echo "install-browser: installing Debian's chromium with apt-get" >&2
    export DEBIAN_FRONTEND=noninteractive
    "${SUDO[@]}" apt-get update -qq >"$LOG" 2>&1 || die "apt-get update failed"
    "${SUDO[@]}" apt-get install -y -qq --no-install-recommends "${APT_PACKAGES[@]}" >>"$LOG" 2>&1 ||
        die "apt-get install ${APT_PACKAGES[*]} failed"
    [[ -x $CHROMIUM ]] || die "apt-get installed chromium but $CHROMIUM is still missing"
fi
"$CHROMIUM" --version >"$LOG" 2>&1 || die "$CHROMIUM does not run"

# ---- playwright (Python) into the venv ----
[[ -x $PY ]] || die "no venv at $VENV: run 'make setup' first"
PIN=$(grep -o '"playwright==[^"]*"' "$ROOT/pyproject.toml" | tr -d '"' | head -n 1)
[[ -n $PIN ]] || die "no playwright pin in pyproject.toml"
WANT=${PIN#playwright==}
HAVE=$("$PY" -c 'import importlib.metadata as m; print(m.version("playwright"))' 2>/dev/null || true)
if [[ $HAVE != "$WANT" ]]; then
    "$PY" -m pip install -q "$PIN" >"$LOG" 2>&1 || die "pip install $PIN failed"
fi
