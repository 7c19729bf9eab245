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
      # A reload resolves the name again: should that lookup fail (a container network misses one now
      # and then), nginx keeps its old configuration, so this tries again at the next check instead of
      # taking the new addresses as followed. (The master's own lookup can still miss after the test's.)
      if nginx -t -q && nginx -s reload; then
        last=$now
      else
        echo "watch-upstream: nginx refused the configuration; trying again in ${interval} s"
      fi
    fi
  done
) &
