"""The shape of a warehouse table as the sink needs it.

``sinks.ddl.table_for(dataset)`` returns objects with these attributes; the sink depends only on
the protocols below so that its core can be tested with plain dataclasses.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, Sequence

from hip.records import HEADER_NAMES

# Columns the warehouse adds after the dataset's fields; the sink fills ``deleted``, the database
# fills ``warehouse_ts``.
DELETED = "deleted"
WAREHOUSE_TS = "warehouse_ts"
POSITION = "source_position"
INGEST_TS = "ingest_ts"


class ColumnLike(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def pg_type(self) -> str: ...

    @property
    def nullable(self) -> bool: ...


class TableLike(Protocol):
    @property
    def schema(self) -> str: ...

    @property
    def name(self) -> str: ...

    @property
    def columns(self) -> Sequence[ColumnLike]: ...

    @property
    def primary_key(self) -> Sequence[str]: ...


@dataclass(frozen=True)
class Column:
    """A column description, for tests and tools that build tables by hand."""

    name: str
    pg_type: str
    nullable: bool = True
    comment: str = ""


@dataclass(frozen=True)
class Table:
    """A table description with the same attributes as ``sinks.ddl.Table``."""

    schema: str
    name: str
    columns: list[Column] = field(default_factory=list)
    primary_key: list[str] = field(default_factory=list)


def quote_ident(name: str) -> str:
    """Quote a PostgreSQL identifier (names come from the catalogue, but never trust spelling)."""
    return '"' + name.replace('"', '""') + '"'


def qualified(table: TableLike) -> str:
    return f"{quote_ident(table.schema)}.{quote_ident(table.name)}"


def written_columns(table: TableLike) -> list[ColumnLike]:
    """Columns the sink writes, in table order: everything except ``warehouse_ts``."""
    return [c for c in table.columns if c.name != WAREHOUSE_TS]


def data_columns(table: TableLike) -> list[ColumnLike]:
    """Dataset fields proper: not the header, not the key, not the warehouse bookkeeping."""
    skip = set(HEADER_NAMES) | set(table.primary_key) | {DELETED, WAREHOUSE_TS}
    return [c for c in table.columns if c.name not in skip]


def mapped_columns(table: TableLike) -> list[ColumnLike]:
    """Columns a mapping produces from a source row: key and dataset fields, no provenance."""
    key = set(table.primary_key)
    return [c for c in table.columns if c.name in key] + data_columns(table)
