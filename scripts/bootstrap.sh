#!/usr/bin/env bash
# Creates .venv and installs both services (editable) with the development tools.
# Re-runs pip only when a pyproject.toml changed. On Debian/Ubuntu, `python3 -m venv` needs the
# python3-venv package: installed here when missing and we are root, otherwise we say what to run.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}

"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null || {
  echo "error: Python 3.11 or newer is needed as '$PYTHON' (set PYTHON=/path/to/python3.11)" >&2; exit 1; }

# A .venv whose python does not run (made for a Python since removed, or half made by hand before
# python3-venv was installed) is made again; one that only lacks pip (`uv venv` makes them so) gets it.
if [ -e .venv ]; then
  if ! .venv/bin/python -c '' >/dev/null 2>&1; then
    echo "recreating .venv (its python does not run)" >&2
    rm -rf .venv
  elif ! .venv/bin/python -m pip --version >/dev/null 2>&1 \
    && ! .venv/bin/python -m ensurepip --default-pip >/dev/null 2>&1; then
    echo "error: .venv has no pip and ensurepip cannot add it: remove .venv (rm -rf .venv) and run again" >&2
    exit 1
  fi
fi
if [ ! -x .venv/bin/python ]; then
  if ! "$PYTHON" -m venv .venv 2>/dev/null; then
    rm -rf .venv
    venv_pkg="python3-venv"
    ver=$("$PYTHON" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      echo "installing ${venv_pkg} (python${ver}-venv) with apt-get" >&2
      apt-get update -qq >/dev/null
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "python${ver}-venv" >/dev/null 2>&1 \
        || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$venv_pkg" >/dev/null
      "$PYTHON" -m venv .venv
    else
      echo "error: '$PYTHON -m venv' failed; install the venv module first: sudo apt-get install python${ver}-venv" >&2
      exit 1
    fi
  fi
fi

# The services' dependencies at the versions their images install (services/*/requirements.lock, without
# the hashes: pip checks hashes only when every requirement has one, and editable installs have none);
# the development tools at the newest their ranges in pyproject.toml allow.
stamp=.venv/.installed
if [ ! -f "$stamp" ] || [ -n "$(find pyproject.toml services/*/pyproject.toml services/*/requirements.lock -newer "$stamp" 2>/dev/null)" ]; then
  echo "installing Python packages into .venv" >&2
  sed -e '/--hash=/d' -e 's/ *\\$//' -e '/^ *#/d' services/api/requirements.lock services/etl/requirements.lock \
    > .venv/constraints.txt
  .venv/bin/python -m pip install -q --upgrade pip >/dev/null
  .venv/bin/python -m pip install -q -c .venv/constraints.txt -e services/api -e services/etl -e '.[dev]'
  touch "$stamp"
fi
