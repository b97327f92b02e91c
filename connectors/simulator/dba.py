"""What a hospital's DBA does for the platform, done for the simulated hospitals.

A real hospital grants these itself (``hip fleet preflight`` prints the statements); here the
simulated hospitals get exactly the same grants, never more: a login with replication and SELECT on
the captured tables plus a publication on PostgreSQL; SELECT, RELOAD, SHOW DATABASES, REPLICATION
SLAVE and REPLICATION CLIENT on MariaDB. The password is random and goes only to
``var/secrets/<credentials>.properties``, read by Connect's file config provider.
"""
from __future__ import annotations

import re
import secrets

from connectors.fleet import SystemSpec
from connectors.simulator.database import connect
from connectors.simulator.profiles import Profile
from hip.errors import ConfigError
from hip.settings import load_settings


def capture_user(spec: SystemSpec) -> str:
    """Database user name for a system's credentials name (identifier-safe)."""
    return "cap_" + re.sub(r"[^a-z0-9_]", "_", spec.credentials.lower())


def _write_secret(name: str, user: str, password: str) -> None:
    path = load_settings().secret_file(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"user={user}\npassword={password}\n", encoding="utf-8")
    path.chmod(0o600)


def grant_capture(profile: Profile, spec: SystemSpec) -> str:
    """Create (or reset) the capture user of one hospital system; returns the user name."""
    user = capture_user(spec)
    # Keep an existing password: running connectors resolved it already.
    settings = load_settings()
    try:
        password = settings.secret(spec.credentials)
    except ConfigError:
        password = secrets.token_hex(16)
    conn = connect(profile, spec.database)
    try:
        with conn.cursor() as cur:
            if profile.dialect == "postgres":
                _grant_postgres(cur, user, password, spec)
            else:
                _grant_mariadb(cur, user, password, spec)
        conn.commit()
    finally:
        conn.close()
    _write_secret(spec.credentials, user, password)
    return user


def _grant_postgres(cur: object, user: str, password: str, spec: SystemSpec) -> None:
    ex = cur.execute  # type: ignore[attr-defined]
    # A hospital that allows only polling grants SELECT and nothing else.
    attrs = "login replication" if spec.capture == "log" else "login noreplication"
    ex("select 1 from pg_roles where rolname = %s", (user,))
    if cur.fetchone():  # type: ignore[attr-defined]
        ex(f'alter role "{user}" {attrs} password %s', (password,))
    else:
        ex(f'create role "{user}" {attrs} password %s', (password,))
    schemas = sorted({t.split(".")[0] for t in spec.tables})
    for schema in schemas:
        ex(f'grant usage on schema "{schema}" to "{user}"')
    tables = ", ".join(spec.tables)
    ex(f'grant select on {tables} to "{user}"')
    if spec.capture != "log":
        return
    ex("select 1 from pg_publication where pubname = %s", (spec.publication,))
    if cur.fetchone():  # type: ignore[attr-defined]
        ex(f'alter publication "{spec.publication}" set table {tables}')
    else:
        ex(f'create publication "{spec.publication}" for table {tables}')


def _grant_mariadb(cur: object, user: str, password: str, spec: SystemSpec) -> None:
    ex = cur.execute  # type: ignore[attr-defined]
    host = "127.0.0.1"
    ex(f"create user if not exists '{user}'@'{host}' identified by %s", (password,))
    ex(f"alter user '{user}'@'{host}' identified by %s", (password,))
    ex(f"grant select on `{spec.database}`.* to '{user}'@'{host}'")
    if spec.capture == "log":
        ex(f"grant reload, show databases, replication slave, replication client on *.* to '{user}'@'{host}'")


def grant_fleet(fleet_path: str | None = None) -> list[str]:
    """Grant capture to every enabled simulated hospital system of the local fleet."""
    from connectors.fleet import LOCAL_FILE, load_fleet
    from connectors.simulator.profiles import PROFILES

    fleet = load_fleet(fleet_path or LOCAL_FILE)
    done = []
    for hospital, system, spec in fleet.systems(enabled_only=True):
        profile = PROFILES[spec.vendor_profile.removeprefix("vendor_")]
        user = grant_capture(profile, spec)
        done.append(f"{hospital.org}/{system}: {user} ({spec.capture})")
    return done
