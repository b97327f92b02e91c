#!/usr/bin/env bash
# Starts the local stack, component by component, each only if not already running, and waits until
# each is healthy. Usage: deploy/up.sh [component ...]  (default: all, in dependency order)
source "$(dirname "$0")/lib.sh"
export ROOT VAR DATA LOGS RUN CONF SECRETS PLUGINS

ALL=(pg-hospital pg-warehouse mariadb kafka connect registry prometheus exporter)
# The pipeline's workers; started by `make demo` (deploy/up.sh normalizer sink stats), not by `make up`.
WORKERS=(normalizer sink stats poller ingest)
wanted=("$@"); ((${#wanted[@]})) || wanted=("${ALL[@]}")
started=()

on_error() {
  warn "make up stopped before the stack was complete."
  for c in "${ALL[@]}"; do
    if running "$c"; then warn "  $c: running (pid $(cat "$(pidfile "$c")"))"; else warn "  $c: NOT running"; fi
  done
  warn "Logs are in $LOGS. Fix the cause above and run 'make up' again (running parts are kept), or 'make down'."
}
trap on_error ERR

JAVA_OPTS_COMMON=(-XX:+UseG1GC -XX:+ExitOnOutOfMemoryError -Djava.awt.headless=true
                  "-Dlog4j2.configurationFile=$ROOT/deploy/log4j2.properties")

# spawn NAME CMD...: start CMD in the background, detached, and record its pid.
spawn() {
  local name="$1"; shift
  setsid "$@" >>"$LOGS/$name.log" 2>&1 < /dev/null &
  echo $! > "$(pidfile "$name")"
  started+=("$name")
}

secret_file() {  # secret_file NAME user password: a properties file read by Connect's FileConfigProvider
  umask 077; printf 'user=%s\npassword=%s\n' "$2" "$3" > "$SECRETS/$1.properties"
}

# PostgreSQL runs as the postgres user, so every folder above its data and logs must let it pass
# (a clone in a private folder, e.g. one made by mktemp -d, would not); only o+x is added.
ensure_traversable() {
  local d="$1"
  while [[ "$d" != "/" ]]; do
    runuser -u postgres -- test -x "$d" 2>/dev/null || chmod o+x "$d"
    d="$(dirname "$d")"
  done
}

pg_start() {  # pg_start NAME PORT CONF
  local name="$1" port="$2" conf="$3" dir="$DATA/$1"
  if running "$name"; then say "$name already running"; return 0; fi
  if [[ -f "$dir/postmaster.pid" ]]; then
    local old; old="$(head -1 "$dir/postmaster.pid")"
    if kill -0 "$old" 2>/dev/null; then
      echo "$old" > "$(pidfile "$name")"; say "$name was left running (pid $old); adopting it"; return 0
    fi
    warn "$name: removing the stale postmaster.pid of a process that is gone"; rm -f "$dir/postmaster.pid"
  fi
  require_free_port "$port" "HIP_${name^^}_PORT"
  id postgres >/dev/null 2>&1 || die "the 'postgres' system user is missing: reinstall postgresql-15"
  ensure_traversable "$DATA"; ensure_traversable "$LOGS"
  if [[ ! -f "$dir/PG_VERSION" ]]; then
    say "$name: initialising a new cluster in $dir"
    rm -rf "$dir"; mkdir -p "$dir"; chown postgres:postgres "$dir"; chmod 700 "$dir"
    local pw; pw="$(mktemp)"; echo "$HIP_PG_ADMIN_PASSWORD" > "$pw"; chown postgres "$pw"
    runuser -u postgres -- "$PG_BIN/initdb" -D "$dir" -U postgres --pwfile="$pw" -E UTF8 --locale=C.UTF-8 \
        --auth-local=trust --auth-host=scram-sha-256 >"$LOGS/$name-initdb.log" 2>&1 \
      || { rm -f "$pw"; die "initdb failed for $name (log: $LOGS/$name-initdb.log)"; }
    rm -f "$pw"
    cat "$conf" >> "$dir/postgresql.conf"
    echo "host replication all 127.0.0.1/32 scram-sha-256" >> "$dir/pg_hba.conf"
  fi
  touch "$LOGS/$name.log"; chown postgres "$LOGS/$name.log"
  # The socket goes to the data dir so that nothing else's /var/run/postgresql matters.
  runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$dir" -l "$LOGS/$name.log" -w -t 60 \
      -o "-p $port -k $dir" start >/dev/null || die "$name failed to start (log: $LOGS/$name.log)"
  head -1 "$dir/postmaster.pid" > "$(pidfile "$name")"
  started+=("$name")
}

psql_admin() {  # psql_admin PORT DB SQL
  PGPASSWORD="$HIP_PG_ADMIN_PASSWORD" psql -h 127.0.0.1 -p "$1" -U postgres -d "$2" -v ON_ERROR_STOP=1 -qAtc "$3"
}

start_pg_hospital() {
  pg_start pg-hospital "$HIP_HOSPITAL_PG_PORT" "$ROOT/deploy/postgres/hospital.conf"
  wait_for pg-hospital 30 psql_admin "$HIP_HOSPITAL_PG_PORT" postgres "select 1"
  # The capture role a hospital DBA would grant: login + replication, no superuser; SELECT is
  # granted per hospital database when a hospital is created.
  psql_admin "$HIP_HOSPITAL_PG_PORT" postgres "do \$\$ begin
      if not exists (select from pg_roles where rolname = 'hip_capture') then
        create role hip_capture login replication password '$HIP_CAPTURE_PASSWORD';
      end if; end \$\$;"
}

start_pg_warehouse() {
  pg_start pg-warehouse "$HIP_WAREHOUSE_PG_PORT" "$ROOT/deploy/postgres/warehouse.conf"
  wait_for pg-warehouse 30 psql_admin "$HIP_WAREHOUSE_PG_PORT" postgres "select 1"
  local role db
  for role in hip_warehouse hip_registry; do
    psql_admin "$HIP_WAREHOUSE_PG_PORT" postgres "do \$\$ begin
        if not exists (select from pg_roles where rolname = '$role') then
          create role $role login password '$HIP_WAREHOUSE_PASSWORD';
        end if; end \$\$;"
  done
  for db in warehouse:hip_warehouse registry:hip_registry; do
    [[ "$(psql_admin "$HIP_WAREHOUSE_PG_PORT" postgres "select 1 from pg_database where datname='${db%%:*}'")" == 1 ]] \
      || psql_admin "$HIP_WAREHOUSE_PG_PORT" postgres "create database ${db%%:*} owner ${db##*:}"
  done
}

mariadb_admin() { mariadb --protocol=TCP -h 127.0.0.1 -P "$HIP_HOSPITAL_MARIADB_PORT" -uroot -p"$HIP_MARIADB_ROOT_PASSWORD" -N -e "$1"; }

start_mariadb() {
  local name=mariadb dir="$DATA/mariadb"
  if running "$name"; then say "$name already running"; return 0; fi
  if [[ -f "$DATA/mariadb.pid-file" ]] && kill -0 "$(cat "$DATA/mariadb.pid-file")" 2>/dev/null; then
    cp "$DATA/mariadb.pid-file" "$(pidfile "$name")"; say "$name was left running; adopting it"; return 0
  fi
  require_free_port "$HIP_HOSPITAL_MARIADB_PORT" HIP_HOSPITAL_MARIADB_PORT
  render "$ROOT/deploy/mariadb/my.cnf" "$CONF/my.cnf"
  local fresh=0
  if [[ ! -d "$dir/mysql" ]]; then
    say "$name: initialising a new data directory in $dir"
    rm -rf "$dir"; mkdir -p "$dir"
    mariadb-install-db --defaults-file="$CONF/my.cnf" --auth-root-authentication-method=normal \
        >"$LOGS/$name-install.log" 2>&1 || die "mariadb-install-db failed (log: $LOGS/$name-install.log)"
    fresh=1
  fi
  spawn "$name" mariadbd --defaults-file="$CONF/my.cnf"
  if ((fresh)); then
    wait_for "$name" 60 mariadb --socket="$RUN/mariadb.sock" -uroot -e "select 1"
    mariadb --socket="$RUN/mariadb.sock" -uroot -e "
      ALTER USER 'root'@'localhost' IDENTIFIED BY '$HIP_MARIADB_ROOT_PASSWORD';
      CREATE USER IF NOT EXISTS 'root'@'127.0.0.1';
      ALTER USER 'root'@'127.0.0.1' IDENTIFIED BY '$HIP_MARIADB_ROOT_PASSWORD';
      DELETE FROM mysql.global_priv WHERE User = '';
      GRANT ALL ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION;
      -- What a hospital DBA grants the platform for binlog capture; nothing more.
      CREATE USER IF NOT EXISTS 'hip_capture'@'127.0.0.1' IDENTIFIED BY '$HIP_CAPTURE_PASSWORD';
      GRANT SELECT, RELOAD, SHOW DATABASES, REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO 'hip_capture'@'127.0.0.1';
      FLUSH PRIVILEGES;"
  fi
  wait_for "$name" 60 mariadb_admin "select 1"
}

KLIB="$DOWNLOADS/kafka-lib"

start_kafka() {
  local name=kafka
  if running "$name"; then say "$name already running"; "$VENV/bin/hip" stack topics >/dev/null; return 0; fi
  require_free_port "$HIP_KAFKA_PORT" HIP_KAFKA_PORT
  require_free_port "$HIP_KAFKA_CONTROLLER_PORT" HIP_KAFKA_CONTROLLER_PORT
  render "$ROOT/deploy/kafka/server.properties" "$CONF/server.properties"
  if [[ ! -f "$DATA/kafka/meta.properties" ]]; then
    local id; id="$(java -cp "$KLIB/*" "${JAVA_OPTS_COMMON[@]}" kafka.tools.StorageTool random-uuid 2>/dev/null | tail -1)"
    say "kafka: formatting storage (cluster $id)"
    java -cp "$KLIB/*" "${JAVA_OPTS_COMMON[@]}" kafka.tools.StorageTool format --standalone \
        -t "$id" -c "$CONF/server.properties" --ignore-formatted >"$LOGS/kafka-format.log" 2>&1 \
      || die "formatting Kafka storage failed (log: $LOGS/kafka-format.log)"
  fi
  spawn "$name" java -Xms256m -Xmx1g "${JAVA_OPTS_COMMON[@]}" "-Dkafka.logs.dir=$LOGS" \
      -cp "$KLIB/*" kafka.Kafka "$CONF/server.properties"
  wait_for "$name" 90 "$VENV/bin/hip" stack health kafka
  "$VENV/bin/hip" stack topics >/dev/null
}

start_connect() {
  local name=connect
  if running "$name"; then say "$name already running"; return 0; fi
  require_free_port "$HIP_CONNECT_PORT" HIP_CONNECT_PORT
  render "$ROOT/deploy/connect/connect-distributed.properties" "$CONF/connect-distributed.properties"
  spawn "$name" java -Xms256m -Xmx1g "${JAVA_OPTS_COMMON[@]}" \
      -cp "$KLIB/*" org.apache.kafka.connect.cli.ConnectDistributed "$CONF/connect-distributed.properties"
  wait_for "$name" 180 "$VENV/bin/hip" stack health connect
}

start_registry() {
  local name=registry dir="$VAR/apicurio-$APICURIO_VERSION"
  if running "$name"; then say "$name already running"; return 0; fi
  require_free_port "$HIP_REGISTRY_PORT" HIP_REGISTRY_PORT
  mkdir -p "$CONF/registry/config"
  render "$ROOT/deploy/registry/application.properties" "$CONF/registry/config/application.properties"
  chmod 600 "$CONF/registry/config/application.properties"
  # Quarkus reads ./config/application.properties, so the registry starts in its conf folder.
  spawn "$name" bash -c "cd '$CONF/registry' && exec java -Xms128m -Xmx512m -XX:+ExitOnOutOfMemoryError \
      -jar '$dir/apicurio-registry-app-$APICURIO_VERSION-runner.jar'"
  wait_for "$name" 120 "$VENV/bin/hip" stack health registry
}

start_prometheus() {
  local name=prometheus
  if running "$name"; then say "$name already running"; return 0; fi
  require_free_port "$HIP_PROMETHEUS_PORT" HIP_PROMETHEUS_PORT
  local cfg="$CONF/prometheus.yml"
  render "$ROOT/deploy/prometheus/prometheus.yml" "$cfg"
  promtool check config "$cfg" >"$LOGS/promtool.log" 2>&1 || { cat "$LOGS/promtool.log" >&2; die "invalid Prometheus configuration: $cfg"; }
  mkdir -p "$DATA/prometheus"
  spawn "$name" prometheus --config.file="$cfg" --storage.tsdb.path="$DATA/prometheus" \
      --web.listen-address="127.0.0.1:$HIP_PROMETHEUS_PORT" --web.enable-lifecycle \
      --storage.tsdb.retention.time=7d
  wait_for "$name" 60 curl -sf "http://127.0.0.1:$HIP_PROMETHEUS_PORT/-/ready"
}

start_exporter() {
  local name=exporter
  if running "$name"; then say "$name already running"; return 0; fi
  require_free_port "$HIP_EXPORTER_METRICS_PORT" HIP_EXPORTER_METRICS_PORT
  spawn "$name" "$VENV/bin/hip" exporter run
  wait_for "$name" 60 curl -sf "http://127.0.0.1:$HIP_EXPORTER_METRICS_PORT/metrics"
}

# Credentials files of the local stack, read by Connect's FileConfigProvider and by the workers.
secret_file hospital-pg hip_capture "$HIP_CAPTURE_PASSWORD"
secret_file hospital-pg-admin postgres "$HIP_PG_ADMIN_PASSWORD"
secret_file hospital-mariadb hip_capture "$HIP_CAPTURE_PASSWORD"
secret_file hospital-mariadb-admin root "$HIP_MARIADB_ROOT_PASSWORD"
secret_file warehouse hip_warehouse "$HIP_WAREHOUSE_PASSWORD"

# start_worker NAME PORT CMD...: a long-running worker of this package, healthy when its metrics answer.
start_worker() {
  local name="$1" port="$2"; shift 2
  if running "$name"; then say "$name already running"; return 0; fi
  local var="HIP_${name^^}_METRICS_PORT"; [[ "$name" == ingest ]] && var=HIP_INGEST_PORT
  require_free_port "$port" "$var"
  spawn "$name" "$@"
  wait_for "$name" 90 curl -sf "http://127.0.0.1:$port/${WORKER_PATH:-metrics}"
}

for c in "${wanted[@]}"; do
  case "$c" in
    pg-hospital) start_pg_hospital ;;
    pg-warehouse) start_pg_warehouse ;;
    mariadb) start_mariadb ;;
    kafka) start_kafka ;;
    connect) start_connect ;;
    registry) start_registry ;;
    prometheus) start_prometheus ;;
    exporter) start_exporter ;;
    normalizer) start_worker normalizer "$HIP_NORMALIZER_METRICS_PORT" "$VENV/bin/hip" normalizer run ;;
    sink) start_worker sink "$HIP_SINK_METRICS_PORT" "$VENV/bin/hip" sink run ;;
    stats) start_worker stats "$HIP_STATS_METRICS_PORT" "$VENV/bin/hip" stats run ;;
    poller) start_worker poller "$HIP_POLLER_METRICS_PORT" "$VENV/bin/hip" fleet poll --metrics-port "$HIP_POLLER_METRICS_PORT" ;;
    ingest) WORKER_PATH=openapi.json start_worker ingest "$HIP_INGEST_PORT" "$VENV/bin/hip" fleet ingest ;;
    *) die "unknown component '$c' (known: ${ALL[*]} ${WORKERS[*]})" ;;
  esac
done
trap - ERR
say "stack is up${started:+ (started: ${started[*]})}; 'make status' shows it, 'make down' stops it"
