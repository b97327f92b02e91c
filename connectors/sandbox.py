"""Throwaway hospital databases on the local stack, for integration tests and the scale run.

Creates a database, its tables, and capture users with exactly the privileges asked for
(``replication``: what log capture needs; ``select``: SELECT only; ``login``: nothing), plus their
credentials files in the secrets folder. Everything created is dropped again by ``drop``.
"""
from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

Kind = Literal["replication", "select", "login"]



def _admin(dialect: str) -> dict[str, str]:
    from connectors.simulator.database import admin_credentials

    user, password = admin_credentials(dialect)
    return {"host": "127.0.0.1", "user": user, "password": password}


def write_secret(secrets_dir: Path, name: str, user: str, password: str) -> Path:
    secrets_dir.mkdir(parents=True, exist_ok=True)
    path = secrets_dir / f"{name}.properties"
    path.write_text(f"user={user}\npassword={password}\n", encoding="utf-8")
    path.chmod(0o600)
    return path


@dataclass
class PgHospital:
    """A database in the hospital PostgreSQL with roles and a DBA-made publication."""

    port: int
    database: str
    secrets_dir: Path
    users: dict[str, Kind] = field(default_factory=dict)
    secret_files: list[Path] = field(default_factory=list)

    def admin(self, dbname: str | None = None) -> Any:
        import psycopg2

        conn = psycopg2.connect(port=self.port, dbname=dbname or self.database, **_admin("postgres"))
        conn.autocommit = True
        return conn

    def create(self, ddl: str, tables: list[str], publication: str | None = "hip_capture") -> None:
        conn = self.admin("postgres")
        with conn.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{self.database}"')
        conn.close()
        conn = self.admin()
        with conn.cursor() as cur:
            cur.execute(ddl)
            if publication:
                cur.execute(f'CREATE PUBLICATION "{publication}" FOR TABLE {", ".join(tables)}')
        conn.close()

    def add_user(self, name: str, kind: Kind, tables: list[str]) -> str:
        """Create a role of ``kind`` and its credentials file; returns the credentials name."""
        password = secrets.token_hex(12)
        conn = self.admin()
        with conn.cursor() as cur:
            attrs = "LOGIN REPLICATION" if kind == "replication" else "LOGIN"
            cur.execute(f'CREATE ROLE "{name}" {attrs} PASSWORD %s', (password,))
            if kind != "login":
                schemas = sorted({t.split(".")[0] for t in tables})
                for s in schemas:
                    cur.execute(f'GRANT USAGE ON SCHEMA {s} TO "{name}"')
                cur.execute(f'GRANT SELECT ON {", ".join(tables)} TO "{name}"')
            else:
                schemas = sorted({t.split(".")[0] for t in tables})
                for s in schemas:
                    cur.execute(f'GRANT USAGE ON SCHEMA {s} TO "{name}"')
        conn.close()
        self.users[name] = kind
        self.secret_files.append(write_secret(self.secrets_dir, name, name, password))
        return name

    def execute(self, sql: str, params: Any = None) -> None:
        conn = self.admin()
        with conn.cursor() as cur:
            cur.execute(sql, params)
        conn.close()

    def drop(self) -> None:
        conn = self.admin("postgres")
        with conn.cursor() as cur:
            cur.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s "
                        "AND pid <> pg_backend_pid()", (self.database,))
            cur.execute("SELECT slot_name FROM pg_replication_slots WHERE database = %s", (self.database,))
            for (slot,) in cur.fetchall():
                try:
                    cur.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
                except Exception:  # noqa: BLE001 - a slot still held by a stopping connector
                    pass
            cur.execute(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)')
            for name in self.users:
                cur.execute(f'DROP ROLE IF EXISTS "{name}"')
        conn.close()
        for p in self.secret_files:
            p.unlink(missing_ok=True)


@dataclass
class MariaDbHospital:
    """A database in the hospital MariaDB with its capture users."""

    port: int
    database: str
    secrets_dir: Path
    users: list[str] = field(default_factory=list)
    secret_files: list[Path] = field(default_factory=list)

    def admin(self) -> Any:
        import pymysql

        return pymysql.connect(port=self.port, autocommit=True, charset="utf8mb4", **_admin("mariadb"))

    def create(self, ddl_statements: list[str]) -> None:
        conn = self.admin()
        with conn.cursor() as cur:
            cur.execute(f"CREATE DATABASE `{self.database}` CHARACTER SET utf8mb4")
            cur.execute(f"USE `{self.database}`")
            for stmt in ddl_statements:
                cur.execute(stmt)
        conn.close()

    def add_user(self, name: str, kind: Kind) -> str:
        password = secrets.token_hex(12)
        conn = self.admin()
        with conn.cursor() as cur:
            cur.execute(f"CREATE USER '{name}'@'%%' IDENTIFIED BY %s", (password,))
            if kind != "login":
                cur.execute(f"GRANT SELECT ON `{self.database}`.* TO '{name}'@'%'")
            if kind == "replication":
                cur.execute(f"GRANT RELOAD, SHOW DATABASES, REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO '{name}'@'%'")
        conn.close()
        self.users.append(name)
        self.secret_files.append(write_secret(self.secrets_dir, name, name, password))
        return name

    def execute(self, sql: str, params: Any = None) -> None:
        conn = self.admin()
        with conn.cursor() as cur:
            cur.execute(f"USE `{self.database}`")
            cur.execute(sql, params)
        conn.close()

    def drop(self) -> None:
        conn = self.admin()
        with conn.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{self.database}`")
            for name in self.users:
                cur.execute(f"DROP USER IF EXISTS '{name}'@'%'")
        conn.close()
        for p in self.secret_files:
            p.unlink(missing_ok=True)
