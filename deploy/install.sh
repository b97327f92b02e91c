#!/usr/bin/env bash
# Installs what the local stack needs, skipping what is already there:
# Debian packages, Kafka/Connect jars, Debezium plugins, the registry, and the Python venv.
source "$(dirname "$0")/lib.sh"

apt_packages=(postgresql-15 postgresql-client-15 mariadb-server mariadb-client prometheus
              openjdk-17-jre-headless maven gettext-base curl iproute2 procps)
missing=()
for p in "${apt_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
  [[ $EUID -eq 0 ]] || die "missing Debian packages: ${missing[*]}; run as root or install them: apt-get install ${missing[*]}"
  say "installing Debian packages: ${missing[*]}"
  # Debian's maintainer scripts would start system-wide servers; the stack runs its own.
  # policy-rc.d tells them not to, for this install only (an existing one is left alone).
  own_policy=0
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; own_policy=1
  fi
  apt-get update -qq >"$LOGS/apt.log" 2>&1 || true
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >>"$LOGS/apt.log" 2>&1 \
    || { ((own_policy)) && rm -f /usr/sbin/policy-rc.d; tail -20 "$LOGS/apt.log" >&2; die "apt-get install failed (log: $LOGS/apt.log)"; }
  ((own_policy)) && rm -f /usr/sbin/policy-rc.d
fi

java_major="$(java -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -1)"
[[ -n "$java_major" ]] || die "java not found: install openjdk-17-jre-headless"
(( java_major >= 17 )) || die "Kafka 4.3 needs Java 17 or newer, found Java $java_major"

MVN=(mvn -q -B -Dmaven.repo.local="$DOWNLOADS/m2")

# Kafka broker + Connect runtime + log4j2 binding, resolved into one folder.
KLIB="$DOWNLOADS/kafka-lib"
if [[ ! -f "$KLIB/.complete" ]]; then
  say "resolving Kafka $KAFKA_VERSION jars from Maven Central"
  rm -rf "$KLIB.part"
  "${MVN[@]}" -f "$ROOT/deploy/maven/pom.xml" dependency:copy-dependencies \
      -DoutputDirectory="$KLIB.part" -DincludeScope=runtime >"$LOGS/mvn-kafka.log" 2>&1 \
    || { tail -20 "$LOGS/mvn-kafka.log" >&2; die "could not resolve Kafka jars (log: $LOGS/mvn-kafka.log); rerun make up"; }
  rm -rf "$KLIB"; mv "$KLIB.part" "$KLIB"; touch "$KLIB/.complete"
fi

# fetch_archive GAV FILE: download a Maven artifact and check it unpacks; a broken one is removed.
fetch_archive() {
  local gav="$1" file="$2"
  if [[ -f "$file" ]] && ! tar tzf "$file" >/dev/null 2>&1; then
    warn "$file is incomplete or corrupt (an interrupted download?); fetching it again"
    rm -f "$file"
  fi
  if [[ ! -f "$file" ]]; then
    say "downloading $gav"
    "${MVN[@]}" dependency:copy -Dartifact="$gav" -DoutputDirectory="$DOWNLOADS/archives" >"$LOGS/mvn-fetch.log" 2>&1 \
      || { tail -20 "$LOGS/mvn-fetch.log" >&2; die "could not download $gav (log: $LOGS/mvn-fetch.log)"; }
    tar tzf "$file" >/dev/null || { rm -f "$file"; die "$gav downloaded corrupt; rerun make up"; }
  fi
}

# unpack FILE DEST: unpack once; a half-unpacked folder (no marker) is redone.
unpack() {
  local file="$1" dest="$2"
  [[ -f "$dest/.complete" ]] && return 0
  rm -rf "$dest"; mkdir -p "$dest"
  tar xzf "$file" -C "$dest"
  touch "$dest/.complete"
}

A="$DOWNLOADS/archives"
fetch_archive "io.debezium:debezium-connector-postgres:$DEBEZIUM_PG_VERSION:tar.gz:plugin" \
              "$A/debezium-connector-postgres-$DEBEZIUM_PG_VERSION-plugin.tar.gz"
fetch_archive "io.debezium:debezium-connector-mariadb:$DEBEZIUM_MARIADB_VERSION:tar.gz:plugin" \
              "$A/debezium-connector-mariadb-$DEBEZIUM_MARIADB_VERSION-plugin.tar.gz"
unpack "$A/debezium-connector-postgres-$DEBEZIUM_PG_VERSION-plugin.tar.gz" "$PLUGINS/postgres-$DEBEZIUM_PG_VERSION"
unpack "$A/debezium-connector-mariadb-$DEBEZIUM_MARIADB_VERSION-plugin.tar.gz" "$PLUGINS/mariadb-$DEBEZIUM_MARIADB_VERSION"
# A plugin of another version left from an earlier install would be loaded twice.
for d in "$PLUGINS"/*; do
  case "$(basename "$d")" in
    "postgres-$DEBEZIUM_PG_VERSION"|"mariadb-$DEBEZIUM_MARIADB_VERSION") ;;
    *) rm -rf "$d" ;;
  esac
done

fetch_archive "io.apicurio:apicurio-registry-app:$APICURIO_VERSION:tar.gz:all" \
              "$A/apicurio-registry-app-$APICURIO_VERSION-all.tar.gz"
unpack "$A/apicurio-registry-app-$APICURIO_VERSION-all.tar.gz" "$VAR/apicurio-$APICURIO_VERSION"

# The Python package, editable, in its own virtual environment.
if [[ ! -x "$VENV/bin/python" ]]; then
  say "creating the Python virtual environment in $VENV"
  python3 -m venv "$VENV"
fi
stamp="$VENV/.installed-$(sha1sum "$ROOT/setup.cfg" | cut -c1-12)"
if [[ ! -f "$stamp" ]]; then
  say "installing the Python package and its pinned dependencies"
  "$VENV/bin/pip" install -q --upgrade pip >"$LOGS/pip.log" 2>&1
  "$VENV/bin/pip" install -q -e "$ROOT[test]" >>"$LOGS/pip.log" 2>&1 \
    || { tail -20 "$LOGS/pip.log" >&2; die "pip install failed (log: $LOGS/pip.log)"; }
  rm -f "$VENV"/.installed-*; touch "$stamp"
fi
say "install complete"
