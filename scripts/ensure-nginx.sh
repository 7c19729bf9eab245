#!/usr/bin/env bash
# Makes sure an nginx binary is there for the local stack and the end-to-end tests.
# Debian/Ubuntu as root: installed with apt-get (the `nginx` package: in main on both, where nginx-light is
# gone from Debian 13 and only in Ubuntu's universe). Otherwise: say what to install.
set -euo pipefail
nginx_bin=${NGINX_BIN:-$(command -v nginx || true)}
[ -z "$nginx_bin" ] && [ -x /usr/sbin/nginx ] && nginx_bin=/usr/sbin/nginx
if [ -n "$nginx_bin" ] && [ -x "$nginx_bin" ]; then exit 0; fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "installing nginx with apt-get" >&2
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nginx >/dev/null
  # Debian starts the packaged service on install where it can; the project runs its own instances, so
  # the packaged one is stopped, and under systemd disabled too (else it would serve port 80 after a reboot).
  if [ -d /run/systemd/system ] && command -v systemctl >/dev/null; then
    systemctl disable --now nginx >/dev/null 2>&1 || true
  elif [ -f /run/nginx.pid ]; then
    nginx -s stop 2>/dev/null || true
  fi
  exit 0
fi
cat >&2 <<'MSG'
error: nginx is not installed. Install it, then run the command again:
  Debian/Ubuntu:  sudo apt-get install nginx   (or run `sudo make nginx`)
  Fedora/RHEL:    sudo dnf install nginx
  macOS:          brew install nginx
(or point NGINX_BIN at an nginx binary)
MSG
exit 1
