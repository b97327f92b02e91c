"""Preflight: what a hospital's credentials allow, which capture mode fits, what the DBA must run.

The probes (adapters) only read: catalogue views, settings, grants, ``SELECT … LIMIT 0``. The
recommendation and the DBA statements are pure functions of the probe results.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from connectors.fleet import Fleet, Hospital, SystemSpec
from connectors.templates import slot_name
from connectors.topics import split_table

Status = Literal["ok", "missing", "warning"]
# What each mode needs; "select" and "poll" checks also serve log mode's snapshot.
LOG_NEEDS = ("wal_level", "replication", "replication_connection", "publication", "publication_tables",
             "replica_identity", "binlog", "binlog_format", "binlog_row_image", "gtid", "grant_replication",
             "grant_binlog_monitor", "select")
POLL_NEEDS = ("select", "poll_columns")


@dataclass(frozen=True)
class Check:
    name: str
    status: Status
    detail: str
    statement: str = ""  # what the hospital's DBA runs to fix it


@dataclass(frozen=True)
class Report:
    org: str
    system: str
    declared: str
    checks: list[Check]

    @property
    def recommended(self) -> str:
        return recommend(self.checks)

    @property
    def declared_works(self) -> bool:
        return self.declared == "push" or _satisfied(self.checks, LOG_NEEDS if self.declared == "log" else POLL_NEEDS)


def _satisfied(checks: list[Check], needs: tuple[str, ...]) -> bool:
    return all(c.status != "missing" for c in checks if c.name in needs) and \
        any(c.name in needs for c in checks)


def recommend(checks: list[Check]) -> str:
    """``log`` when everything log capture needs is there, else ``poll`` if SELECT works, else ``push``."""
    if not any(c.name == "connect" and c.status == "ok" for c in checks):
        return "push"
    if _satisfied(checks, LOG_NEEDS):
        return "log"
    if _satisfied(checks, POLL_NEEDS):
        return "poll"
    return "push"


def qi(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def mq(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def pg_checks(facts: dict[str, Any], spec: SystemSpec, user: str, slot: str) -> list[Check]:
    """Checks from facts gathered by ``probe_postgresql`` (pure, unit-tested)."""
    out: list[Check] = [Check("connect", "ok", f"PostgreSQL {facts.get('version', '?')}")]
    wal = facts["wal_level"]
    out.append(Check("wal_level", "ok" if wal == "logical" else "missing", f"wal_level={wal}",
                     "" if wal == "logical" else "ALTER SYSTEM SET wal_level = logical;  -- then restart PostgreSQL"))
    rep = facts["rolreplication"] or facts["rolsuper"]
    out.append(Check("replication", "ok" if rep else "missing",
                     f"role {user} {'has' if rep else 'lacks'} REPLICATION",
                     "" if rep else f"ALTER ROLE {qi(user)} WITH REPLICATION;"))
    conn_err = facts.get("replication_connection_error")
    out.append(Check("replication_connection", "missing" if conn_err else "ok",
                     conn_err or "replication connection accepted (pg_hba.conf)",
                     f"pg_hba.conf: host replication {user} <platform address>/32 scram-sha-256  -- then reload"
                     if conn_err and "pg_hba" in conn_err else ""))
    pub = spec.publication
    tables = spec.tables
    if not facts["publication_exists"]:
        out.append(Check("publication", "missing", f"publication {pub} does not exist",
                         f"CREATE PUBLICATION {qi(pub)} FOR TABLE "
                         + ", ".join(_pg_name(t) for t in tables) + ";"))
    else:
        out.append(Check("publication", "ok", f"publication {pub} exists"))
        absent = [t for t in tables if t not in facts["publication_tables"]]
        out.append(Check("publication_tables", "missing" if absent else "ok",
                         f"not in {pub}: {', '.join(absent)}" if absent else f"all {len(tables)} tables in {pub}",
                         f"ALTER PUBLICATION {qi(pub)} ADD TABLE {', '.join(_pg_name(t) for t in absent)};"
                         if absent else ""))
    no_key = [t for t in tables if not facts["tables"].get(t, {}).get("has_pk")
              and facts["tables"].get(t, {}).get("replident") not in ("f", "i")]
    broken = [t for t in no_key if t in facts["publication_tables"]]
    if broken:
        out.append(Check("replica_identity", "missing",
                         f"URGENT: {', '.join(broken)} have no primary key and are published: the hospital's own "
                         "UPDATE/DELETE on them fail now",
                         "; ".join(f"ALTER TABLE {_pg_name(t)} REPLICA IDENTITY FULL" for t in broken) + ";"))
    elif no_key:
        out.append(Check("replica_identity", "missing",
                         f"no primary key: {', '.join(no_key)}; set REPLICA IDENTITY FULL BEFORE publishing them",
                         "; ".join(f"ALTER TABLE {_pg_name(t)} REPLICA IDENTITY FULL" for t in no_key) + ";"))
    else:
        default_ident = [t for t in tables if facts["tables"].get(t, {}).get("replident") == "d"]
        out.append(Check("replica_identity", "ok",
                         f"every table has a key; {len(default_ident)} with REPLICA IDENTITY DEFAULT "
                         "(before-images carry the key only)"))
    out.extend(_select_checks(facts, spec, user, "postgresql"))
    if facts.get("free_slots", 1) < 1 and not facts.get("slot_exists"):
        out.append(Check("replication_slots", "warning", "max_replication_slots is exhausted",
                         "ALTER SYSTEM SET max_replication_slots = <current + 1>;  -- then restart"))
    elif facts.get("slot_exists"):
        out.append(Check("replication_slots", "ok", f"slot {slot} exists (retained WAL: "
                         f"{facts.get('slot_retained_bytes', '?')} bytes)"))
    return out


def _pg_name(qualified: str) -> str:
    s, t = split_table(qualified)
    return f"{qi(s)}.{qi(t)}"


def _select_checks(facts: dict[str, Any], spec: SystemSpec, user: str, db: str) -> list[Check]:
    tables = spec.tables
    name = _pg_name if db == "postgresql" else (lambda q: ".".join(mq(p) for p in split_table(q)))
    no_select = [t for t in tables if not facts["tables"].get(t, {}).get("select")]
    user_sql = qi(user) if db == "postgresql" else f"'{user}'@'%'"
    out = [Check("select", "missing" if no_select else "ok",
                 f"no SELECT on {', '.join(no_select)}" if no_select else f"SELECT on all {len(tables)} mapped tables",
                 "; ".join(f"GRANT SELECT ON {name(t)} TO {user_sql}" for t in no_select) + ";" if no_select else "")]
    if spec.poll:
        bad = []
        for t, p in spec.poll.items():
            cols = facts["tables"].get(t, {}).get("columns")
            if cols is None:
                continue
            missing = [c for c in [p.cursor, *p.key] if c not in cols]
            if missing:
                bad.append(f"{t}: {', '.join(missing)}")
        out.append(Check("poll_columns", "missing" if bad else "ok",
                         "missing columns " + "; ".join(bad) if bad else "cursor and key columns present"))
    return out


def mariadb_checks(facts: dict[str, Any], spec: SystemSpec, user: str) -> list[Check]:
    """Checks from facts gathered by ``probe_mariadb`` (pure, unit-tested)."""
    out: list[Check] = [Check("connect", "ok", f"MariaDB/MySQL {facts.get('version', '?')}")]
    log_bin = str(facts["log_bin"]) in ("1", "ON")
    out.append(Check("binlog", "ok" if log_bin else "missing", f"log_bin={facts['log_bin']}",
                     "" if log_bin else "my.cnf [mysqld]: log_bin = mysql-bin, server_id = <unique>  -- restart"))
    fmt = facts["binlog_format"]
    out.append(Check("binlog_format", "ok" if fmt == "ROW" else "missing", f"binlog_format={fmt}",
                     "" if fmt == "ROW" else "SET GLOBAL binlog_format = 'ROW';  -- and in my.cnf"))
    img = facts["binlog_row_image"]
    out.append(Check("binlog_row_image", "ok" if img == "FULL" else "missing", f"binlog_row_image={img}",
                     "" if img == "FULL" else "SET GLOBAL binlog_row_image = 'FULL';  -- and in my.cnf"))
    gtid = facts.get("gtid_pos") or ""
    out.append(Check("gtid", "ok" if gtid else "warning", f"gtid position {gtid or 'empty (no GTID events yet)'}"))
    grants = " ".join(facts["grants"]).upper()
    has_all = "ALL PRIVILEGES ON *.*" in grants
    rep = has_all or "REPLICATION SLAVE" in grants or "REPLICATION REPLICA" in grants
    out.append(Check("grant_replication", "ok" if rep else "missing", "REPLICATION SLAVE " + ("granted" if rep else "missing"),
                     "" if rep else f"GRANT REPLICATION SLAVE ON *.* TO '{user}'@'%';"))
    mon = has_all or any(p in grants for p in ("REPLICATION CLIENT", "BINLOG MONITOR", "SUPER"))
    out.append(Check("grant_binlog_monitor", "ok" if mon else "missing",
                     "REPLICATION CLIENT / BINLOG MONITOR " + ("granted" if mon else "missing"),
                     "" if mon else f"GRANT REPLICATION CLIENT ON *.* TO '{user}'@'%';  -- BINLOG MONITOR on 10.5+"))
    retention = facts.get("expire_seconds") or 0
    if retention and retention < 7 * 86400:
        out.append(Check("binlog_retention", "warning", f"binlogs kept {retention // 3600} h; a connector stopped "
                         "longer loses its position", "SET GLOBAL binlog_expire_logs_seconds = 604800;"))
    out.extend(_select_checks(facts, spec, user, "mariadb"))
    return out


def probe_postgresql(spec: SystemSpec, creds: dict[str, str], slot: str) -> dict[str, Any]:
    import psycopg2
    import psycopg2.extras

    kw = dict(host=spec.host, port=spec.resolved_port, dbname=spec.database, user=creds["user"],
              password=creds["password"], connect_timeout=10)
    conn = psycopg2.connect(**kw)
    conn.autocommit = True
    cur = conn.cursor()
    facts: dict[str, Any] = {}
    cur.execute("SELECT current_setting('server_version'), current_setting('wal_level'), "
                "r.rolreplication, r.rolsuper FROM pg_roles r WHERE r.rolname = current_user")
    facts["version"], facts["wal_level"], facts["rolreplication"], facts["rolsuper"] = cur.fetchone()
    cur.execute("SELECT count(*) FROM pg_publication WHERE pubname = %s", (spec.publication,))
    facts["publication_exists"] = cur.fetchone()[0] > 0
    cur.execute("SELECT schemaname || '.' || tablename FROM pg_publication_tables WHERE pubname = %s",
                (spec.publication,))
    facts["publication_tables"] = {r[0] for r in cur.fetchall()}
    cur.execute("SELECT current_setting('max_replication_slots')::int - (SELECT count(*) FROM pg_replication_slots)")
    facts["free_slots"] = cur.fetchone()[0]
    cur.execute("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn) FROM pg_replication_slots "
                "WHERE slot_name = %s", (slot,))
    row = cur.fetchone()
    facts["slot_exists"], facts["slot_retained_bytes"] = row is not None, (int(row[0]) if row and row[0] else 0)
    tables: dict[str, dict[str, Any]] = {}
    for t in spec.tables:
        s, n = split_table(t)
        cur.execute("""SELECT c.oid, c.relreplident,
                              EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary),
                              has_table_privilege(c.oid, 'SELECT')
                       FROM pg_class c JOIN pg_namespace ns ON ns.oid = c.relnamespace
                       WHERE ns.nspname = %s AND c.relname = %s""", (s, n))
        row = cur.fetchone()
        if row is None:
            tables[t] = {"exists": False, "select": False}
            continue
        cur.execute("SELECT attname FROM pg_attribute WHERE attrelid = %s AND attnum > 0 AND NOT attisdropped",
                    (row[0],))
        tables[t] = {"exists": True, "replident": row[1], "has_pk": row[2], "select": row[3],
                     "columns": {r[0] for r in cur.fetchall()}}
    facts["tables"] = tables
    conn.close()
    try:
        rconn = psycopg2.connect(**kw, connection_factory=psycopg2.extras.LogicalReplicationConnection)
        rconn.cursor().execute("IDENTIFY_SYSTEM")
        rconn.close()
    except psycopg2.Error as exc:
        facts["replication_connection_error"] = str(exc).strip().splitlines()[0]
    return facts


def probe_mariadb(spec: SystemSpec, creds: dict[str, str]) -> dict[str, Any]:
    import pymysql

    conn = pymysql.connect(host=spec.host, port=spec.resolved_port, user=creds["user"],
                           password=creds["password"], connect_timeout=10, autocommit=True)
    cur = conn.cursor()
    facts: dict[str, Any] = {}
    cur.execute("SELECT VERSION(), @@log_bin, @@binlog_format, @@binlog_row_image")
    facts["version"], facts["log_bin"], facts["binlog_format"], facts["binlog_row_image"] = cur.fetchone()
    for var, key in (("@@gtid_current_pos", "gtid_pos"), ("@@binlog_expire_logs_seconds", "expire_seconds")):
        try:
            cur.execute(f"SELECT {var}")
            facts[key] = cur.fetchone()[0]
        except pymysql.MySQLError:
            facts[key] = None
    cur.execute("SHOW GRANTS FOR CURRENT_USER()")
    facts["grants"] = [r[0] for r in cur.fetchall()]
    tables: dict[str, dict[str, Any]] = {}
    for t in spec.tables:
        s, n = split_table(t)
        try:
            cur.execute(f"SELECT * FROM {mq(s)}.{mq(n)} LIMIT 0")
            tables[t] = {"select": True, "columns": {d[0] for d in cur.description}}
        except pymysql.MySQLError as exc:
            tables[t] = {"select": False, "error": str(exc)}
    facts["tables"] = tables
    conn.close()
    return facts


def run_preflight(fleet: Fleet, h: Hospital, system: str, spec: SystemSpec, secrets_dir: Path) -> Report:
    """Connect with the system's own credentials and check everything its capture needs."""
    from connectors.poll_worker import read_credentials

    creds = read_credentials(secrets_dir, spec.credentials)
    try:
        if spec.db == "postgresql":
            slot = slot_name(fleet, h.org, system)
            checks = pg_checks(probe_postgresql(spec, creds, slot), spec, creds["user"], slot)
        elif spec.db in ("mariadb", "mysql"):
            checks = mariadb_checks(probe_mariadb(spec, creds), spec, creds["user"])
        else:
            checks = [Check("connect", "warning", f"no preflight probe for {spec.db} yet: check by hand")]
    except Exception as exc:  # noqa: BLE001 - a failed login is the finding, reported not raised
        checks = [Check("connect", "missing", f"{type(exc).__name__}: {str(exc).strip().splitlines()[0]}",
                        "check host, port, database name, user and password; firewall/pg_hba for the platform")]
    return Report(h.org, system, spec.capture, checks)


def format_report(r: Report) -> str:
    mark = {"ok": "✓", "missing": "✗", "warning": "!"}
    lines = [f"{r.org} {r.system}: declared {r.declared}, recommended {r.recommended}"
             + ("" if r.declared_works else f"  (declared mode {r.declared} does NOT work yet)")]
    for c in r.checks:
        lines.append(f"  {mark[c.status]} {c.name:<24} {c.detail}")
        if c.statement:
            lines.append(f"      DBA: {c.statement}")
    return "\n".join(lines)
