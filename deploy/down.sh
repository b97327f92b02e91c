#!/usr/bin/env bash
# Stops every process the stack recorded in var/run/*.pid (workers first, databases last), or only
# the ones named as arguments (deploy/down.sh normalizer sink).
# Only recorded process ids are signalled; nothing is stopped by name.
source "$(dirname "$0")/lib.sh"

ORDER=(normalizer stats sink ingest poller exporter prometheus registry connect kafka mariadb pg-warehouse pg-hospital)

stop_one() {
  local name="$1" f pid sig=TERM
  f="$(pidfile "$name")"; [[ -f "$f" ]] || return 0
  pid="$(cat "$f")"
  if ! kill -0 "$pid" 2>/dev/null; then rm -f "$f"; return 0; fi
  # PostgreSQL's fast shutdown is SIGINT (SIGTERM waits for clients to leave).
  [[ "$name" == pg-* ]] && sig=INT
  say "stopping $name (pid $pid)"
  kill "-$sig" "$pid" 2>/dev/null || true
  for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
  if kill -0 "$pid" 2>/dev/null; then warn "$name did not stop in 30s; killing it"; kill -KILL "$pid" 2>/dev/null || true; fi
  rm -f "$f"
}

if (( $# )); then
  for name in "$@"; do stop_one "$name"; done
  exit 0
fi
for name in "${ORDER[@]}"; do stop_one "$name"; done
# Anything else recorded (e.g. extra workers) goes too.
for f in "$RUN"/*.pid; do [[ -e "$f" ]] && stop_one "$(basename "$f" .pid)"; done
say "stack stopped"
