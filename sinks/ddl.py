"""Warehouse DDL generated from the dataset schemas (PostgreSQL).

One table per dataset: ``std.<name>`` (``stat.<name>`` for the statistics datasets), primary key
``org_code`` + business key, the header columns, the dataset's fields, then ``deleted`` and
``warehouse_ts``. Chinese names become table and column comments.

``ddl_statements`` is pure and idempotent (``IF NOT EXISTS`` throughout). ``migrate`` compares the
live catalogue with it, adds what is new, widens what may be widened, and refuses anything
destructive (a dropped column, a narrowed type, a changed key) with an error naming table and column.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Iterable

from hip.catalogue import Catalogue, Dataset, load_catalogue
from hip.errors import ConfigError, FatalError

SCHEMAS = ("std", "stat", "dq")
# Dates that describe a thing, not the day an event happened: no dashboard filters by them.
_NOT_EVENT_DAYS = frozenset({"birth_date", "production_date", "expiry_date", "invoice_date", "nearest_expiry",
                             "established_date", "work_start_date", "hire_date", "leave_date", "qc_date",
                             "last_menstrual_date", "expected_delivery_date"})
_MIGRATION_LOCK = 7_240_311  # pg advisory lock key: one migration at a time


@dataclass(frozen=True)
class Column:
    name: str
    pg_type: str
    nullable: bool
    comment: str
    default: str | None = None


@dataclass(frozen=True)
class Index:
    name: str
    columns: tuple[str, ...]


@dataclass(frozen=True)
class Table:
    schema: str
    name: str
    comment: str
    columns: list[Column]
    primary_key: list[str]
    indexes: list[Index] = field(default_factory=list)

    @property
    def qualified(self) -> str:
        return f"{_id(self.schema)}.{_id(self.name)}"

    def column(self, name: str) -> Column:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(f"{self.qualified} has no column {name!r}")


def pg_type(avro_type: Any) -> str:
    """PostgreSQL type of an Avro type (nullable unions unwrapped)."""
    if isinstance(avro_type, list):
        branches = [t for t in avro_type if t != "null"]
        if len(branches) != 1:
            return "jsonb"
        avro_type = branches[0]
    if isinstance(avro_type, str):
        return {"string": "text", "int": "integer", "long": "bigint", "boolean": "boolean",
                "double": "double precision", "float": "real", "bytes": "bytea"}.get(avro_type, "jsonb")
    logical = avro_type.get("logicalType")
    if logical == "decimal":
        return f"numeric({avro_type['precision']},{avro_type.get('scale', 0)})"
    if logical == "date":
        return "date"
    if logical in ("timestamp-millis", "timestamp-micros"):
        return "timestamptz"
    if avro_type.get("type") == "enum":
        return "text"
    if avro_type.get("type") in ("array", "record", "map"):
        return "jsonb"
    return pg_type(avro_type.get("type"))


def _comment(doc: str) -> str:
    return doc or ""


def table_for(dataset: Dataset) -> Table:
    """The warehouse table of one dataset."""
    columns: list[Column] = []
    key = ["org_code", *dataset.business_key]
    for f in dataset.fields:
        nullable = isinstance(f["type"], list) and "null" in f["type"] and f["name"] not in key
        columns.append(Column(f["name"], pg_type(f["type"]), nullable, _comment(f.get("doc", ""))))
    columns.append(Column("deleted", "boolean", False, "删除标志: the source row was deleted (soft delete)", "false"))
    columns.append(Column("warehouse_ts", "timestamptz", False, "入库时间: when the warehouse last wrote this row", "now()"))
    names = {c.name for c in columns}
    indexes = [Index(f"{dataset.name}_source_ts_idx", ("org_code", "source_ts"))]
    for c in columns:
        # Statistics and dashboards filter by organisation and local day, and group by department.
        if c.pg_type == "date" and c.name.endswith("_date") and c.name not in _NOT_EVENT_DAYS \
                and c.name not in dataset.business_key:
            indexes.append(Index(f"{dataset.name}_{c.name}_idx", ("org_code", c.name)))
    if "dept_code" in names and "dept_code" not in dataset.business_key:
        indexes.append(Index(f"{dataset.name}_dept_code_idx", ("org_code", "dept_code")))
    if "patient_id" in names and "patient_id" not in dataset.business_key:
        indexes.append(Index(f"{dataset.name}_patient_id_idx", ("org_code", "patient_id")))
    if dataset.is_statistic and dataset.business_key and dataset.business_key[0] == "stat_date":
        indexes.append(Index(f"{dataset.name}_stat_date_idx", ("stat_date", "org_code")))
    comment = f"{dataset.number} {dataset.name_zh}"
    return Table(dataset.warehouse_schema, dataset.name, comment, columns, key, indexes)


def _id(name: str) -> str:
    """Quoted identifier: field names such as ``rule`` or ``position`` are keywords."""
    return '"' + name.replace('"', '""') + '"'


def _cols(names: Iterable[str]) -> str:
    return ", ".join(_id(n) for n in names)


def _q(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _column_sql(c: Column) -> str:
    sql = f"{_id(c.name)} {c.pg_type}"
    if c.default is not None:
        sql += f" default {c.default}"
    if not c.nullable:
        sql += " not null"
    return sql


def create_table_sql(t: Table) -> str:
    cols = ",\n  ".join(_column_sql(c) for c in t.columns)
    return (f"create table if not exists {t.qualified} (\n  {cols},\n"
            f"  constraint {_id(t.name + '_pkey')} primary key ({_cols(t.primary_key)})\n)")


def comment_sql(t: Table) -> list[str]:
    out = [f"comment on table {t.qualified} is {_q(t.comment)}"]
    out += [f"comment on column {t.qualified}.{_id(c.name)} is {_q(c.comment)}" for c in t.columns]
    return out


def index_sql(t: Table) -> list[str]:
    return [f"create index if not exists {_id(i.name)} on {t.qualified} ({_cols(i.columns)})"
            for i in t.indexes]


def tables(catalogue: Catalogue | None = None) -> list[Table]:
    return [table_for(ds) for ds in (catalogue or load_catalogue())]


def ddl_statements(catalogue: Catalogue | None = None) -> list[str]:
    """Every statement that creates the warehouse from nothing; safe to run again."""
    out = [f"create schema if not exists {s}" for s in SCHEMAS]
    for t in tables(catalogue):
        out.append(create_table_sql(t))
        out.extend(index_sql(t))
        out.extend(comment_sql(t))
    return out


# ---------------------------------------------------------------- migration


_NUMERIC = re.compile(r"numeric\((\d+),(\d+)\)")


def widening(old: str, new: str) -> bool | None:
    """True when ``old`` → ``new`` widens the type, False when it narrows or changes it, None when equal."""
    if old == new:
        return None
    order = ["smallint", "integer", "bigint"]
    if old in order and new in order:
        return order.index(new) > order.index(old)
    mo, mn = _NUMERIC.fullmatch(old), _NUMERIC.fullmatch(new)
    if old in order and mn:
        digits = {"smallint": 5, "integer": 10, "bigint": 19}[old]
        return int(mn[1]) - int(mn[2]) >= digits
    if mo and mn:
        p0, s0, p1, s1 = int(mo[1]), int(mo[2]), int(mn[1]), int(mn[2])
        return s1 >= s0 and p1 - s1 >= p0 - s0
    if old == "real" and new == "double precision":
        return True
    return False


@dataclass
class Plan:
    """What ``migrate`` will do, and what it refuses."""

    statements: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)


def _live_columns(cur: Any, schema: str, table: str) -> dict[str, tuple[str, bool]]:
    cur.execute(
        """select a.attname, format_type(a.atttypid, a.atttypmod), not a.attnotnull
             from pg_attribute a join pg_class c on c.oid = a.attrelid
             join pg_namespace n on n.oid = c.relnamespace
            where n.nspname = %s and c.relname = %s and a.attnum > 0 and not a.attisdropped""",
        (schema, table))
    out: dict[str, tuple[str, bool]] = {}
    for name, type_, nullable in cur.fetchall():
        out[name] = (_normal_type(type_), nullable)
    return out


def _normal_type(pg: str) -> str:
    pg = pg.replace("timestamp with time zone", "timestamptz").replace(", ", ",")
    return pg


def _live_key(cur: Any, schema: str, table: str) -> list[str]:
    cur.execute(
        """select a.attname from pg_index i
             join pg_class c on c.oid = i.indrelid join pg_namespace n on n.oid = c.relnamespace
             join lateral unnest(i.indkey) with ordinality k(attnum, ord) on true
             join pg_attribute a on a.attrelid = c.oid and a.attnum = k.attnum
            where n.nspname = %s and c.relname = %s and i.indisprimary order by k.ord""",
        (schema, table))
    return [r[0] for r in cur.fetchall()]


def plan_migration(cur: Any, catalogue: Catalogue | None = None) -> Plan:
    """Compare the live warehouse with the schemas; pure apart from catalogue reads."""
    plan = Plan()
    plan.statements += [f"create schema if not exists {s}" for s in SCHEMAS]
    for t in tables(catalogue):
        live = _live_columns(cur, t.schema, t.name)
        if not live:
            plan.statements.append(create_table_sql(t))
        else:
            wanted = {c.name: c for c in t.columns}
            for name in live:
                if name not in wanted:
                    plan.refused.append(f"{t.schema}.{t.name}.{name}: column exists in the warehouse but not in the "
                                        f"schema (dropping it would lose data)")
            key = _live_key(cur, t.schema, t.name)
            if key and key != t.primary_key:
                plan.refused.append(f"{t.schema}.{t.name}: primary key is ({', '.join(key)}), the schema wants "
                                    f"({', '.join(t.primary_key)})")
            for c in t.columns:
                if c.name not in live:
                    if not c.nullable and c.default is None:
                        plan.refused.append(f"{t.schema}.{t.name}.{c.name}: new column is not null without a default")
                        continue
                    plan.statements.append(f"alter table {t.qualified} add column if not exists {_column_sql(c)}")
                    continue
                live_type, live_nullable = live[c.name]
                change = widening(live_type, c.pg_type)
                if change is False:
                    plan.refused.append(f"{t.schema}.{t.name}.{c.name}: type {live_type} cannot become {c.pg_type} "
                                        f"without losing data")
                elif change:
                    plan.statements.append(f"alter table {t.qualified} alter column {_id(c.name)} type {c.pg_type}")
                if live_nullable and not c.nullable:
                    plan.refused.append(f"{t.schema}.{t.name}.{c.name}: nullable column would become not null")
                elif not live_nullable and c.nullable:
                    plan.statements.append(f"alter table {t.qualified} alter column {_id(c.name)} drop not null")
        plan.statements.extend(index_sql(t))
        plan.statements.extend(comment_sql(t))
    return plan


def migrate(conn: Any, catalogue: Catalogue | None = None) -> Plan:
    """Bring the warehouse to the schemas in one transaction; refuse destructive changes.

    Raises ``FatalError`` naming every refused table and column; nothing is applied then.
    """
    with conn.cursor() as cur:
        cur.execute("select pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
        plan = plan_migration(cur, catalogue)
        if plan.refused:
            conn.rollback()
            raise FatalError("warehouse migration refused (destructive change):\n  " + "\n  ".join(plan.refused))
        for statement in plan.statements:
            cur.execute(statement)
    conn.commit()
    return plan


def check_catalogue(catalogue: Catalogue) -> None:
    """Refuse a catalogue whose tables cannot exist (e.g. a key field not in the schema)."""
    for t in tables(catalogue):
        names = [c.name for c in t.columns]
        for k in t.primary_key:
            if k not in names:
                raise ConfigError(f"primary key column {k!r} missing", field=t.qualified)
        if len(set(names)) != len(names):
            raise ConfigError("duplicate column names", field=t.qualified)


def apply_statements(conn: Any, statements: Iterable[str]) -> None:
    with conn.cursor() as cur:
        for s in statements:
            cur.execute(s)
    conn.commit()
