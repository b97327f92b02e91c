# Shared by deploy/*.sh: paths, ports, process bookkeeping and messages.
# Every process the stack starts is recorded in $RUN/<name>.pid; `make down` stops exactly those.
set -Eeuo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VAR="${HIP_VAR:-$ROOT/var}"
DOWNLOADS="$VAR/downloads"
DATA="$VAR/data"
LOGS="$VAR/logs"
RUN="$VAR/run"
CONF="$VAR/conf"
SECRETS="$VAR/secrets"
PLUGINS="$VAR/connect-plugins"
VENV="$VAR/venv"
mkdir -p "$DOWNLOADS" "$DATA" "$LOGS" "$RUN" "$CONF" "$SECRETS" "$PLUGINS"

# Ports: deploy/ports.env, each line overridable by the environment.
while IFS='=' read -r key value; do
  [[ -z "$key" || "$key" == \#* ]] && continue
  if [[ -z "${!key:-}" ]]; then export "$key=$value"; else export "$key"; fi
done < "$ROOT/deploy/ports.env"

# Versions in use, in one place.
KAFKA_VERSION=4.3.1
DEBEZIUM_PG_VERSION=3.6.1.Final
# The MariaDB connector's 3.6.x plugin archive is not published on Maven Central; 3.5.0.Final is
# the newest that is. Connect loads each plugin in its own class loader, so the two coexist.
DEBEZIUM_MARIADB_VERSION=3.5.0.Final
# Apicurio 3.1+ is built for Java 21; Debian 12 ships Java 17, so 3.0.9 is the newest that runs here.
APICURIO_VERSION=3.0.9
PG_BIN=/usr/lib/postgresql/15/bin

# Local-only credentials of the simulated stack; real hospitals' secrets never live here.
export HIP_PG_ADMIN_PASSWORD="${HIP_PG_ADMIN_PASSWORD:-postgres}"
export HIP_MARIADB_ROOT_PASSWORD="${HIP_MARIADB_ROOT_PASSWORD:-root}"
export HIP_WAREHOUSE_PASSWORD="${HIP_WAREHOUSE_PASSWORD:-warehouse}"
export HIP_CAPTURE_PASSWORD="${HIP_CAPTURE_PASSWORD:-capture}"

say()  { printf '\033[1m[hip]\033[0m %s\n' "$*"; }
warn() { printf '\033[33m[hip] %s\033[0m\n' "$*" >&2; }
die()  { printf '\033[31m[hip] error: %s\033[0m\n' "$*" >&2; exit 1; }

pidfile() { echo "$RUN/$1.pid"; }

# Is the recorded process of component $1 alive?
running() {
  local f; f="$(pidfile "$1")"
  [[ -f "$f" ]] && kill -0 "$(cat "$f")" 2>/dev/null
}

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Refuse to start on a port something else holds, naming the variable that moves it.
require_free_port() {
  local port="$1" var="$2" who
  if port_in_use "$port"; then
    who="$(ss -ltnpH "sport = :$port" 2>/dev/null | sed -n 's/.*users:((\("[^"]*",pid=[0-9]*\).*/\1/p' | head -1)"
    die "port $port ($var) is already taken${who:+ by $who}. Stop that process, or choose another port: $var=<port> make up"
  fi
}

# wait_for NAME SECONDS CMD...: poll CMD until it succeeds; on timeout show the log tail and fail.
wait_for() {
  local name="$1" secs="$2"; shift 2
  local i
  for ((i = 0; i < secs * 2; i++)); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    if ! running "$name"; then
      warn "$name exited during start; last lines of $LOGS/$name.log:"; tail -n 25 "$LOGS/$name.log" >&2 || true
      return 1
    fi
    sleep 0.5
  done
  warn "$name did not become healthy within ${secs}s; last lines of $LOGS/$name.log:"
  tail -n 25 "$LOGS/$name.log" >&2 || true
  return 1
}

# render TEMPLATE OUT: substitute ${VAR} from the environment.
render() { envsubst < "$1" > "$2"; }
