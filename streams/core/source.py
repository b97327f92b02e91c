"""Source descriptions: the tables, columns and keys of a hospital system, read from its DDL.

A vendor profile's DDL (``connectors/simulator/sql/*.sql``) doubles as the platform's description of
that vendor's tables, so the simulator and the mappings cannot drift apart. The parser accepts the
plain subset those files use: one column per line, ``PRIMARY KEY (...)`` as its own line.

Column kinds decide how a Debezium JSON value (schemas disabled) is decoded:

========== ===================================== ==========================================
kind       source types                          JSON value → Python
========== ===================================== ==========================================
string     CHAR, VARCHAR, TEXT                   str
int        TINYINT…BIGINT, INTEGER               int
decimal    DECIMAL, NUMERIC                      str (decimal.handling.mode=string) → Decimal
bool       BOOLEAN                               bool
date       DATE                                  days since epoch → date
datetime   DATETIME, TIMESTAMP (no zone)         epoch ms/µs of the wall clock → naive datetime
timestamptz TIMESTAMPTZ, MariaDB TIMESTAMP       ISO-8601 string → aware datetime (UTC)
time       TIME                                  µs since midnight → time
double     FLOAT, DOUBLE, REAL                   float
========== ===================================== ==========================================
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any, Callable

from hip.errors import ConfigError, RecordError

UNAVAILABLE = "__debezium_unavailable_value"

_EPOCH_DATE = date(1970, 1, 1)
_EPOCH_NAIVE = datetime(1970, 1, 1)

_CREATE = re.compile(r"^\s*CREATE\s+TABLE\s+(?:IF\s+NOT\s+EXISTS\s+)?([A-Za-z0-9_.\"`]+)\s*\(\s*$",
                     re.IGNORECASE)
_PK = re.compile(r"^\s*PRIMARY\s+KEY\s*\(([^)]*)\)", re.IGNORECASE)
_COLUMN = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s+([A-Za-z ]+?)(?:\((\d+)(?:\s*,\s*(\d+))?\))?"
                     r"(?=\s|,|$)(.*)$")
_END = re.compile(r"^\s*\)")

_KINDS: dict[str, str] = {
    "char": "string", "varchar": "string", "character varying": "string", "character": "string",
    "text": "string", "mediumtext": "string", "longtext": "string",
    "tinyint": "int", "smallint": "int", "int": "int", "integer": "int", "bigint": "int",
    "mediumint": "int",
    "decimal": "decimal", "numeric": "decimal",
    "boolean": "bool", "bool": "bool",
    "date": "date",
    "datetime": "datetime", "timestamp": "datetime", "timestamp without time zone": "datetime",
    "timestamptz": "timestamptz", "timestamp with time zone": "timestamptz",
    "time": "time",
    "float": "double", "double": "double", "real": "double", "double precision": "double",
}


@dataclass(frozen=True)
class Column:
    """One source column: its kind and, for times, how many fractional digits it keeps."""

    name: str
    kind: str
    precision: int | None = None
    scale: int | None = None
    nullable: bool = True


@dataclass
class Table:
    """One source table with its primary key (in key order)."""

    name: str
    columns: dict[str, Column]
    key: tuple[str, ...]
    line: int


@dataclass
class SourceDescription:
    """Every table of one vendor profile, as described by its DDL."""

    path: str
    dialect: str
    tables: dict[str, Table] = field(default_factory=dict)


def _kind(type_name: str, dialect: str, precision: int | None) -> str:
    base = " ".join(type_name.lower().split())
    kind = _KINDS.get(base)
    if kind is None:
        raise KeyError(base)
    # MariaDB TIMESTAMP is stored in UTC and Debezium sends it as an ISO string with a zone.
    if dialect == "mariadb" and base == "timestamp":
        return "timestamptz"
    return kind


def parse_ddl(path: Path, dialect: str) -> SourceDescription:
    """Read a DDL file into a :class:`SourceDescription`; errors name the file and line."""
    desc = SourceDescription(path=str(path), dialect=dialect)
    current: Table | None = None
    for lineno, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        text = raw.split("--", 1)[0].rstrip()
        if not text.strip():
            continue
        if current is None:
            m = _CREATE.match(text)
            if m:
                name = m.group(1).replace('"', "").replace("`", "").rsplit(".", 1)[-1]
                current = Table(name=name, columns={}, key=(), line=lineno)
            continue
        if _END.match(text):
            if not current.key:
                raise ConfigError(f"table {current.name} has no primary key", file=str(path),
                                  line=current.line, field=current.name)
            desc.tables[current.name] = current
            current = None
            continue
        pk = _PK.match(text)
        if pk:
            current.key = tuple(c.strip().strip('"`') for c in pk.group(1).split(","))
            for col in current.key:
                if col not in current.columns:
                    raise ConfigError(f"primary key column {col} is not a column", file=str(path),
                                      line=lineno, field=f"{current.name}.{col}")
            continue
        m = _COLUMN.match(text)
        if not m:
            raise ConfigError(f"cannot read column definition {text.strip()!r}", file=str(path),
                              line=lineno)
        name, type_name, p, s, rest = m.groups()
        # "COMMENT" and constraint words must not become part of the type name.
        type_name = re.split(r"\s+(?:NOT|NULL|DEFAULT|COMMENT|PRIMARY|UNSIGNED)\b", type_name,
                             flags=re.IGNORECASE)[0]
        precision = int(p) if p else None
        try:
            kind = _kind(type_name, dialect, precision)
        except KeyError:
            raise ConfigError(f"unsupported column type {type_name!r}", file=str(path),
                              line=lineno, field=f"{current.name}.{name}") from None
        rest_upper = (rest or "").upper()
        if "PRIMARY KEY" in rest_upper:
            current.key = (name,)
        current.columns[name] = Column(name=name, kind=kind, precision=precision,
                                       scale=int(s) if s else None,
                                       nullable="NOT NULL" not in rest_upper)
    if current is not None:
        raise ConfigError(f"table {current.name} is not closed", file=str(path), line=current.line)
    return desc


# --- value decoders: Debezium JSON (schemas disabled) → Python -----------------------------------

Decoder = Callable[[Any], Any]


def _bad(column: str, value: Any, what: str) -> RecordError:
    return RecordError("bad_value", f"column {column}: cannot read {value!r} as {what}", field=column)


def decoder_for(column: Column, dialect: str) -> Decoder:
    """A function turning one JSON value of ``column`` into its Python value (None stays None).

    The TOAST placeholder is passed through unchanged: the mapping step reports it, it is never
    decoded into data.
    """
    name = column.name
    kind = column.kind

    if kind == "string":
        def dec_str(v: Any) -> Any:
            return v if v is None or isinstance(v, str) else str(v)
        return dec_str
    if kind == "int":
        def dec_int(v: Any) -> Any:
            if v is None or isinstance(v, int):
                return v
            if isinstance(v, str) and v != UNAVAILABLE:
                try:
                    return int(v)
                except ValueError:
                    raise _bad(name, v, "integer") from None
            return v if v == UNAVAILABLE else int(v)
        return dec_int
    if kind == "decimal":
        def dec_decimal(v: Any) -> Any:
            if v is None or v == UNAVAILABLE:
                return v
            if isinstance(v, (str, int, float)):
                try:
                    return Decimal(str(v))
                except ArithmeticError:
                    raise _bad(name, v, "decimal") from None
            # decimal.handling.mode=precise without schemas arrives as base64 bytes: a config bug.
            raise _bad(name, v, "decimal (set decimal.handling.mode=string)")
        return dec_decimal
    if kind == "bool":
        def dec_bool(v: Any) -> Any:
            if v is None or isinstance(v, bool):
                return v
            if isinstance(v, int):
                return v != 0
            if isinstance(v, str) and v.lower() in ("true", "false", "t", "f", "1", "0"):
                return v.lower() in ("true", "t", "1")
            raise _bad(name, v, "boolean")
        return dec_bool
    if kind == "date":
        def dec_date(v: Any) -> Any:
            if v is None or v == UNAVAILABLE:
                return v
            if isinstance(v, int):
                return _EPOCH_DATE + timedelta(days=v)
            if isinstance(v, str):
                try:
                    return date.fromisoformat(v[:10])
                except ValueError:
                    raise _bad(name, v, "date") from None
            raise _bad(name, v, "date")
        return dec_date
    if kind == "datetime":
        # The platform's connectors use time.precision.mode=connect (the poller and the snapshot
        # reader encode alike): a zone-less timestamp is epoch milliseconds of the wall clock read
        # as if it were UTC, whatever the column's fractional digits.
        def dec_datetime(v: Any) -> Any:
            if v is None or v == UNAVAILABLE:
                return v
            if isinstance(v, int):
                return _EPOCH_NAIVE + timedelta(milliseconds=v)
            if isinstance(v, str):
                try:
                    parsed = datetime.fromisoformat(v.replace("Z", "+00:00"))
                except ValueError:
                    raise _bad(name, v, "local date-time") from None
                return parsed.replace(tzinfo=None)
            raise _bad(name, v, "local date-time")
        return dec_datetime
    if kind == "timestamptz":
        def dec_tstz(v: Any) -> Any:
            if v is None or v == UNAVAILABLE:
                return v
            if isinstance(v, str):
                try:
                    parsed = datetime.fromisoformat(v.replace("Z", "+00:00"))
                except ValueError:
                    raise _bad(name, v, "timestamp with zone") from None
                if parsed.tzinfo is None:
                    parsed = parsed.replace(tzinfo=timezone.utc)
                return parsed
            if isinstance(v, int):
                return datetime(1970, 1, 1, tzinfo=timezone.utc) + timedelta(milliseconds=v)
            raise _bad(name, v, "timestamp with zone")
        return dec_tstz
    if kind == "time":
        def dec_time(v: Any) -> Any:
            if v is None or v == UNAVAILABLE:
                return v
            if isinstance(v, int):  # milliseconds of the day (connect precision)
                return (_EPOCH_NAIVE + timedelta(milliseconds=v)).time()
            if isinstance(v, str):
                try:
                    return time.fromisoformat(v)
                except ValueError:
                    raise _bad(name, v, "time") from None
            raise _bad(name, v, "time")
        return dec_time
    if kind == "double":
        def dec_double(v: Any) -> Any:
            if v is None or v == UNAVAILABLE:
                return v
            try:
                return float(v)
            except (TypeError, ValueError):
                raise _bad(name, v, "number") from None
        return dec_double
    raise ValueError(f"unknown column kind {kind}")
