#!/usr/bin/env bash
# Forget the demo's data on the running stack: connectors (and their offsets and slots), raw and
# standard topics, warehouse tables and the simulated hospitals. The next `make demo` starts afresh.
source "$(dirname "$0")/lib.sh"
cd "$ROOT"
HIP="$VENV/bin/hip"
for w in normalizer sink stats poller ingest; do
  f="$(pidfile "$w")"; if [[ -f "$f" ]]; then kill "$(cat "$f")" 2>/dev/null || true; rm -f "$f"; fi
done
"$VENV/bin/python" - <<'PY'
import time, requests
from confluent_kafka.admin import AdminClient
from hip.settings import load_settings
s = load_settings()
for name in requests.get(f"{s.connect_url}/connectors", timeout=10).json():
    if name.startswith("hip.SIM"):
        requests.put(f"{s.connect_url}/connectors/{name}/stop", timeout=30)
        time.sleep(3)
        requests.delete(f"{s.connect_url}/connectors/{name}/offsets", timeout=30)
        requests.delete(f"{s.connect_url}/connectors/{name}", timeout=30)
admin = AdminClient({"bootstrap.servers": s.bootstrap_servers})
doomed = [t for t in admin.list_topics(timeout=10).topics
          if t.startswith(("raw.SIM", "std.", "stat.", "dlq.", "dq.", "hip.poll", "hip.schema-history.SIM"))
          or t.startswith(("hip-stats", "hip-normalizer", "stats."))]
for f in (admin.delete_topics(doomed).values() if doomed else []):
    try:
        f.result()
    except Exception:
        pass
print(f"deleted {len(doomed)} topics")
PY
sleep 3
PGPASSWORD="$HIP_PG_ADMIN_PASSWORD" psql -h 127.0.0.1 -p "$HIP_HOSPITAL_PG_PORT" -U postgres -qAtc \
  "select pg_drop_replication_slot(slot_name) from pg_replication_slots where slot_name like 'hip_sim%' and not active" >/dev/null
PGPASSWORD="$HIP_WAREHOUSE_PASSWORD" psql -h 127.0.0.1 -p "$HIP_WAREHOUSE_PG_PORT" -U hip_warehouse warehouse -qAtc \
  "set client_min_messages = warning; drop schema if exists std cascade; drop schema if exists stat cascade; drop schema if exists dq cascade"
for spec in a:sim_a01 b:sim_b01 b:sim_b02; do "$HIP" simulate create --vendor "${spec%%:*}" --db "${spec##*:}" --replace; done
rm -rf "$VAR/ingest"
# The statistics tables on disk belong to the changelog topics deleted above.
rm -rf "$VAR/data/stats"
"$HIP" stack topics
say "demo data reset; run 'make demo'"
