"""Admin connections to the simulated hospitals' database servers, and schema creation.

Ports come from ``hip.settings``. The admin accounts are the ones the local stack scripts create
(PostgreSQL superuser ``postgres``, MariaDB ``root``); their passwords are read from the
credentials files ``make up`` writes, the one place they are set.
"""
from __future__ import annotations

import re
from typing import Any

from connectors.simulator.profiles import Profile
from hip.errors import ConfigError, TransientError
from hip.settings import load_settings

_DB_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")


def admin_credentials(dialect: str) -> tuple[str, str]:
    """The hospital servers' admin login, from the credentials files `make up` writes."""
    settings = load_settings()
    name = "hospital-pg-admin" if dialect == "postgres" else "hospital-mariadb-admin"
    return settings.secret(name, "user"), settings.secret(name)


def check_db_name(name: str) -> str:
    if not _DB_NAME.match(name):
        raise ConfigError(f"database name must be lower-case letters, digits and _: {name!r}", field="--db")
    return name


def connect(profile: Profile, database: str | None) -> Any:
    """An admin DB-API connection to the hospital server of ``profile`` (autocommit off)."""
    settings = load_settings()
    user, password = admin_credentials(profile.dialect)
    try:
        if profile.dialect == "postgres":
            import psycopg2

            return psycopg2.connect(host="127.0.0.1", port=settings.hospital_pg_port, user=user,
                                    password=password, dbname=database or "postgres", connect_timeout=10)
        import pymysql

        return pymysql.connect(host="127.0.0.1", port=settings.hospital_mariadb_port, user=user,
                               password=password, database=database, charset="utf8mb4",
                               connect_timeout=10, autocommit=False)
    except Exception as exc:  # driver errors differ; both mean the server is not reachable
        raise TransientError(f"cannot connect to the {profile.dialect} hospital server: {exc}") from exc


def statements(ddl: str) -> list[str]:
    """Split a DDL file into statements (the files hold no procedural code)."""
    body = "\n".join(line.split("--", 1)[0] for line in ddl.splitlines())
    return [s.strip() for s in body.split(";") if s.strip()]


def hospital_exists(profile: Profile, database: str) -> bool:
    admin = connect(profile, None)
    try:
        with admin.cursor() as cur:
            if profile.dialect == "postgres":
                cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,))
            else:
                cur.execute("SELECT 1 FROM information_schema.schemata WHERE schema_name = %s", (database,))
            return cur.fetchone() is not None
    finally:
        admin.close()


def create_hospital(profile: Profile, database: str, *, replace: bool = False) -> None:
    """Create the hospital database (dropping it first with ``replace``) and apply the DDL."""
    check_db_name(database)
    if not replace and hospital_exists(profile, database):
        raise ConfigError(f"database {database} already exists; --replace drops and recreates it, "
                          "--if-missing leaves it as it is", field="--db")
    admin = connect(profile, None)
    try:
        if profile.dialect == "postgres":
            admin.autocommit = True
            with admin.cursor() as cur:
                if replace:
                    cur.execute(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
                cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,))
                if cur.fetchone() is None:
                    cur.execute(f"CREATE DATABASE {database} ENCODING 'UTF8' TEMPLATE template0")
        else:
            with admin.cursor() as cur:
                if replace:
                    cur.execute(f"DROP DATABASE IF EXISTS {database}")
                cur.execute(f"CREATE DATABASE IF NOT EXISTS {database} CHARACTER SET utf8mb4 "
                            "COLLATE utf8mb4_general_ci")
            admin.commit()
    finally:
        admin.close()
    conn = connect(profile, database)
    try:
        with conn.cursor() as cur:
            for stmt in statements(profile.ddl.read_text(encoding="utf-8")):
                cur.execute(stmt)
        conn.commit()
    finally:
        conn.close()
