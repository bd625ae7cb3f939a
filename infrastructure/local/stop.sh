#!/usr/bin/env bash
# Stops what start.sh started, by PID.
set -uo pipefail
state="${HYPERKIT_LOCAL_DIR:-$HOME/.cache/hyperkit-obs/local}"
for pidfile in "$state"/pids/*; do
  [ -f "$pidfile" ] || continue
  pid=$(cat "$pidfile")
  if kill "$pid" 2>/dev/null; then
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    echo "stopped $(basename "$pidfile") (pid $pid)"
  fi
  rm -f "$pidfile"
done
