#!/usr/bin/env bash
# make demo: the platform's main job on the local stack.
#   simulated hospitals → capture (binlog, logical replication, polling) → normalizer → warehouse,
#   with statistics, a live view while the hospitals work, and a report at the end.
# The stack is left running. Tunables: DEMO_CHANGES (per hospital), DEMO_RATE (changes/s per hospital),
# DEMO_DIRTY (share of spoiled rows).
source "$(dirname "$0")/lib.sh"
cd "$ROOT"
HIP="$VENV/bin/hip"
CHANGES="${DEMO_CHANGES:-6000}"
RATE="${DEMO_RATE:-40}"
DIRTY="${DEMO_DIRTY:-0.01}"

step() { printf '\n\033[1;36m== %s\033[0m\n' "$*"; }

step "1/7 warehouse tables from the 72 dataset schemas"
"$HIP" warehouse migrate

step "2/7 simulated hospitals (kept between runs; a second demo adds more activity)"
"$HIP" simulate create --vendor a --db sim_a01 --if-missing
"$HIP" simulate create --vendor b --db sim_b01 --if-missing
"$HIP" simulate create --vendor b --db sim_b02 --if-missing
"$HIP" simulate grant
"$HIP" mappings check

step "3/7 connectors through the Connect REST API"
"$HIP" fleet plan || true
"$HIP" fleet apply
"$HIP" fleet status || true

step "4/7 pipeline workers: poller, normalizer, warehouse sink, statistics"
bash deploy/up.sh poller
# The normalizer subscribes to the raw topics that exist when it starts (a new one restarts it):
# let the connectors' snapshots create theirs first.
"$HIP" demo wait-topics --prefix raw.SIM --settle 8 --timeout 180
bash deploy/up.sh normalizer stats sink

step "5/7 hospitals at work: $CHANGES changes each at $RATE/s, ${DIRTY} of rows spoiled on purpose"
pids=()
seed=$RANDOM
for spec in a:sim_a01 b:sim_b01 b:sim_b02; do
  "$HIP" simulate run --vendor "${spec%%:*}" --db "${spec##*:}" --changes "$CHANGES" --rate "$RATE" \
      --dirty "$DIRTY" --seed "$((seed++))" >"$LOGS/demo-workload-${spec##*:}.log" 2>&1 &
  pids+=("$!")
done
"$HIP" demo watch $(printf -- '--while-pid %s ' "${pids[@]}") --drain 240
for p in "${pids[@]}"; do wait "$p" || die "a workload failed; see $LOGS/demo-workload-*.log"; done
cat "$LOGS"/demo-workload-*.log | grep -v '%|' | tail -n 3 || true

step "6/7 what reached the warehouse"
"$HIP" demo report

step "7/7 completeness: source against warehouse, statistics against a batch recomputation"
rc=0
"$HIP" sink reconcile --against source || rc=1
# Only the demo's hospitals: other producers (tests, pushed data) may share the stack.
# Statistics are eventually consistent (worker → stat topics → sink): give the last cells a moment.
stats_ok=0
for attempt in 1 2 3 4 5 6; do
  if "$HIP" stats compare --org SIMA01 --org SIMB01 --org SIMB02 >"$LOGS/demo-stats-compare.log" 2>&1; then
    stats_ok=1; break
  fi
  sleep 10
done
cat "$LOGS/demo-stats-compare.log"
((stats_ok)) || rc=1

cat <<MSG

The stack is still running.
  Prometheus            http://127.0.0.1:$HIP_PROMETHEUS_PORT  (try: hip_records_out_total, hip_consumer_lag_messages)
  the fleet at a glance $HIP status
  a SQL prompt          PGPASSWORD=$HIP_WAREHOUSE_PASSWORD psql -h 127.0.0.1 -p $HIP_WAREHOUSE_PG_PORT -U hip_warehouse warehouse
  logs                  $LOGS
  more activity         make demo        stop everything   make down
MSG
exit $rc
