#!/usr/bin/env bash
# Makes sure a Chromium is there for the browser test of the /docs page (tests/e2e/test_docs_browser.py).
# Debian/Ubuntu as root: installed with apt-get. Otherwise: say what to install.
set -euo pipefail
for name in chromium chromium-browser; do
  if command -v "$name" >/dev/null; then exit 0; fi
done
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "installing chromium with apt-get" >&2
  apt-get update -qq >/dev/null
  # Debian names the package chromium; Ubuntu chromium-browser. fonts-liberation: legible screenshots.
  for package in chromium chromium-browser; do
    if DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      "$package" fonts-liberation >/dev/null 2>&1; then
      exit 0
    fi
  done
  echo "error: apt-get could not install chromium (nor chromium-browser)" >&2
  exit 1
fi
cat >&2 <<'MSG'
error: chromium is not installed (the browser test of /docs needs it). Install it, then run the command again:
  Debian:         sudo apt-get install chromium
  Ubuntu:         sudo apt-get install chromium-browser
  Fedora/RHEL:    sudo dnf install chromium
  macOS:          brew install --cask chromium
MSG
exit 1
