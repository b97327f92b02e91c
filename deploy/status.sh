#!/usr/bin/env bash
# One line per recorded process: running or not, pid, resident memory, log file.
source "$(dirname "$0")/lib.sh"
printf '%-14s %-8s %-8s %10s  %s\n' COMPONENT STATE PID RSS_MiB LOG
for f in "$RUN"/*.pid; do
  [[ -e "$f" ]] || { say "nothing recorded in $RUN: the stack is not up ('make up')"; exit 0; }
  name="$(basename "$f" .pid)"; pid="$(cat "$f")"
  if kill -0 "$pid" 2>/dev/null; then
    rss="$(awk '/VmRSS/ {printf "%.0f", $2/1024}' "/proc/$pid/status" 2>/dev/null)"
    printf '%-14s %-8s %-8s %10s  %s\n' "$name" running "$pid" "${rss:-?}" "$LOGS/$name.log"
  else
    printf '%-14s %-8s %-8s %10s  %s\n' "$name" STOPPED "$pid" - "$LOGS/$name.log"
  fi
done
