"""The PostgreSQL adapter of the sink: the one place where driver errors are classified.

``translate_error`` maps every psycopg2 error onto the platform taxonomy; ``Warehouse.write``
applies one folded batch to one table (COPY into staging, one upsert) inside the caller's
transaction, and isolates bad rows by bisecting the batch under savepoints so the rest lands.
"""
from __future__ import annotations

import io
import logging
from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence

import psycopg2
import psycopg2.errorcodes
import psycopg2.extensions

from hip.errors import FatalError, PlatformError, RecordError, TransientError

from sinks.core.batch import Change
from sinks.core.copy import RowEncoder
from sinks.core.sql import BatchSql, batch_sql, keep_stored_sql
from sinks.core.table import TableLike, qualified, written_columns

log = logging.getLogger(__name__)

# SQLSTATEs worth a retry: the same statement may succeed a moment later.
_TRANSIENT_CODES = {
    "40001",  # serialization_failure
    "40P01",  # deadlock_detected
    "55P03",  # lock_not_available
    "57014",  # query_canceled (statement timeout)
    "57P01", "57P02", "57P03",  # admin/crash shutdown, cannot connect now
    "53000", "53100", "53200", "53300",  # insufficient resources, disk full, out of memory, too many connections
    "58000", "58030",  # system error, io error
}
_TRANSIENT_CLASSES = {"08"}  # connection exceptions
# Classes caused by the values of one row: the row goes to the dead-letter topic.
_RECORD_CLASSES = {"22", "23"}
# Connection failures without SQLSTATE that retrying cannot fix.
_FATAL_CONNECT_PHRASES = ("authentication failed", "password", "does not exist", "no pg_hba.conf entry",
                          "permission denied", "role")


def _pk(change: Change) -> tuple[Any, ...]:
    return change.pk


def translate_error(exc: BaseException) -> PlatformError:
    """Classify a warehouse error: transient, record or fatal. Unknown errors are fatal."""
    if isinstance(exc, PlatformError):
        return exc
    if isinstance(exc, psycopg2.Error):
        code = exc.pgcode or ""
        message = (exc.pgerror or str(exc)).strip()
        if code in _TRANSIENT_CODES or code[:2] in _TRANSIENT_CLASSES:
            return TransientError(f"warehouse: {message}")
        if code[:2] in _RECORD_CLASSES:
            name = psycopg2.errorcodes.lookup(code) or f"sqlstate_{code}"
            return RecordError(name.lower(), message)
        if code[:2] == "28":
            return FatalError(f"warehouse authentication failed: {message}")
        if code[:2] == "42" or code == "3D000" or code == "3F000":
            return FatalError(f"warehouse schema mismatch ({code}): {message}; "
                              "run `hip warehouse migrate` or check the dataset schema")
        if not code and isinstance(exc, (psycopg2.OperationalError, psycopg2.InterfaceError)):
            lowered = message.lower()
            if any(p in lowered for p in _FATAL_CONNECT_PHRASES):
                return FatalError(f"warehouse connection refused for good: {message}")
            return TransientError(f"warehouse connection: {message}")
        return FatalError(f"warehouse error {code or type(exc).__name__}: {message}")
    return FatalError(f"unexpected {type(exc).__name__}: {exc}")


@dataclass
class WriteResult:
    """Rows submitted and the changes rejected with their reasons."""

    submitted: int = 0
    applied: int = 0
    rejected: list[tuple[Change, RecordError]] = field(default_factory=list)


class _Prepared:
    def __init__(self, table: TableLike) -> None:
        self.table = table
        self.sql: BatchSql = batch_sql(table)
        self.encoder = RowEncoder(written_columns(table))


class Warehouse:
    """One connection to the warehouse, with the staging tables of the tables it wrote to."""

    def __init__(self, dsn: str, *, application_name: str = "hip-sink",
                 statement_timeout_ms: int = 300_000) -> None:
        self.dsn = dsn
        self.application_name = application_name
        self.statement_timeout_ms = statement_timeout_ms
        self._conn: psycopg2.extensions.connection | None = None
        self._prepared: dict[tuple[str, str], _Prepared] = {}
        self._staged: set[tuple[str, str]] = set()
        # Staging tables holding rows of the open transaction (emptied at commit or rollback).
        self._dirty: set[tuple[str, str]] = set()

    # -- connection -------------------------------------------------------------------------
    @property
    def conn(self) -> psycopg2.extensions.connection:
        if self._conn is None or self._conn.closed:
            self._staged.clear()
            try:
                self._conn = psycopg2.connect(
                    self.dsn, application_name=self.application_name, connect_timeout=10,
                    options=f"-c timezone=UTC -c statement_timeout={self.statement_timeout_ms}")
            except psycopg2.Error as exc:
                raise translate_error(exc) from exc
            self._conn.set_client_encoding("UTF8")
        return self._conn

    def close(self) -> None:
        if self._conn is not None and not self._conn.closed:
            self._conn.close()
        self._conn = None

    def commit(self) -> None:
        self._dirty.clear()
        try:
            self.conn.commit()
        except psycopg2.Error as exc:
            raise translate_error(exc) from exc

    def rollback(self) -> None:
        """Abandon the open transaction; a broken connection is dropped and reopened later."""
        self._dirty.clear()
        # A staging table created in this transaction is gone with it (CREATE is transactional);
        # the next write creates it again (IF NOT EXISTS keeps the ones that survived).
        self._staged.clear()
        if self._conn is None or self._conn.closed:
            return
        try:
            self._conn.rollback()
        except psycopg2.Error:
            self.close()

    # -- schema -----------------------------------------------------------------------------
    def check_table(self, table: TableLike) -> None:
        """Fail with a clear message when the warehouse table does not match its description."""
        try:
            with self.conn.cursor() as cur:
                cur.execute("SELECT column_name FROM information_schema.columns "
                            "WHERE table_schema = %s AND table_name = %s", (table.schema, table.name))
                present = {r[0] for r in cur.fetchall()}
        except psycopg2.Error as exc:
            raise translate_error(exc) from exc
        if not present:
            raise FatalError(f"warehouse table {table.schema}.{table.name} does not exist; "
                             "run `hip warehouse migrate`")
        missing = [c.name for c in table.columns if c.name not in present]
        if missing:
            raise FatalError(f"warehouse table {table.schema}.{table.name} lacks columns {missing}; "
                             "run `hip warehouse migrate`")

    def _prepare(self, table: TableLike) -> _Prepared:
        ident = (table.schema, table.name)
        prepared = self._prepared.get(ident)
        if prepared is None:
            self.check_table(table)
            prepared = self._prepared[ident] = _Prepared(table)
        return prepared

    # -- writing ----------------------------------------------------------------------------
    def write(self, table: TableLike, changes: Sequence[Change]) -> WriteResult:
        """Apply folded changes (one per key) to ``table`` in the open transaction.

        Rows that fail on their own values are returned as rejected; everything else is applied.
        Transient and fatal errors are raised as ``TransientError`` / ``FatalError`` and leave the
        transaction to be rolled back by the caller.
        """
        prepared = self._prepare(table)
        result = WriteResult(submitted=len(changes))
        lines: list[tuple[Change, str]] = []
        # Primary-key order: the order rows are staged is the order the upsert locks them (see sinks.core.sql).
        for change in sorted(changes, key=_pk):
            try:
                lines.append((change, prepared.encoder.line(change.record)))
            except RecordError as exc:
                result.rejected.append((change, exc))
        if not lines:
            return result
        try:
            cur = self.conn.cursor()
            ident = (table.schema, table.name)
            if ident not in self._staged:
                cur.execute(prepared.sql.create_staging)
                self._staged.add(ident)
            if ident in self._dirty:
                cur.execute(prepared.sql.truncate_staging)
            result.applied = self._attempt(cur, prepared, lines, result.rejected, truncate=False)
            self._dirty.add(ident)
        except psycopg2.Error as exc:
            raise translate_error(exc) from exc
        return result

    def _attempt(self, cur: Any, prepared: _Prepared, lines: list[tuple[Change, str]],
                 rejected: list[tuple[Change, RecordError]], *, truncate: bool) -> int:
        """COPY + upsert under a savepoint; on a record error, bisect to isolate the bad rows."""
        cur.execute("SAVEPOINT sink_rows")
        try:
            data = ("\n".join(line for _, line in lines) + "\n").encode("utf-8")
            cur.copy_expert(prepared.sql.copy, io.BytesIO(data), size=1 << 20)
            self._keep_stored(cur, prepared, lines)
            cur.execute(prepared.sql.upsert)
            applied = cur.rowcount
            if truncate:
                cur.execute(prepared.sql.truncate_staging)
            cur.execute("RELEASE SAVEPOINT sink_rows")
            return int(applied)
        except psycopg2.Error as exc:
            err = translate_error(exc)
            if not isinstance(err, RecordError):
                raise
            cur.execute("ROLLBACK TO SAVEPOINT sink_rows")
            cur.execute("RELEASE SAVEPOINT sink_rows")
        if len(lines) == 1:
            rejected.append((lines[0][0], err))
            return 0
        mid = len(lines) // 2
        return (self._attempt(cur, prepared, lines[:mid], rejected, truncate=True)
                + self._attempt(cur, prepared, lines[mid:], rejected, truncate=True))

    @staticmethod
    def _keep_stored(cur: Any, prepared: _Prepared, lines: list[tuple[Change, str]]) -> None:
        """Staged rows whose source did not send a field take the stored value of that field."""
        keys: dict[str, list[tuple[Any, ...]]] = {}
        for change, _ in lines:
            for name in change.keep:
                keys.setdefault(name, []).append(change.pk)
        if not keys:
            return
        written = set(prepared.sql.columns) - set(prepared.table.primary_key)
        for name, pks in keys.items():
            if name not in written:
                continue
            cur.execute(keep_stored_sql(prepared.table, name, len(pks)), [v for pk in pks for v in pk])

    # -- reading ----------------------------------------------------------------------------
    def rows(self, table: TableLike, columns: Sequence[str], *, where: str = "",
             params: Sequence[Any] = (), chunk: int = 5000) -> Iterator[dict[str, Any]]:
        """Stream rows of ``table`` through a server-side cursor (for reconciliation and tests)."""
        from sinks.core.table import quote_ident
        cols = ", ".join(quote_ident(c) for c in columns)
        sql = f"SELECT {cols} FROM {qualified(table)}" + (f" WHERE {where}" if where else "")
        try:
            with self.conn.cursor(name="hip_sink_rows") as cur:
                cur.itersize = chunk
                cur.execute(sql, params)
                for row in cur:
                    yield dict(zip(columns, row))
            self.conn.rollback()
        except psycopg2.Error as exc:
            raise translate_error(exc) from exc
