#!/bin/sh
# Follows the API replicas in the container engine's DNS: nginx resolves `server api:8000` when it
# loads its configuration, so when the set of addresses behind the name changes (scale up or down, a
# replica replaced) this reloads nginx gracefully: no config edit, and upstream keepalive, balancing
# and retries keep working (a `resolver` with a variable proxy_pass would lose keepalive, and the
# upstream `resolve` parameter needs nginx 1.27.3+). Runs from /docker-entrypoint.d before nginx starts.
set -eu
host=${API_UPSTREAM_HOST:-api}
interval=${UPSTREAM_WATCH_INTERVAL:-2}

addresses() { getent ahostsv4 "$host" 2>/dev/null | awk '{print $1}' | sort -u | tr '\n' ' '; }

(
  last=$(addresses)
  while sleep "$interval"; do
    now=$(addresses)
    if [ -n "$now" ] && [ "$now" != "$last" ]; then
      echo "watch-upstream: $host is now [$now] (was [$last]); reloading nginx"
      nginx -s reload || true
      last=$now
    fi
  done
) &
