"""Every dataset of the catalogue through the sink: generated DDL, Avro types, upsert, delete.

Tables are created from ``sinks.ddl.table_for`` in a throw-away schema, so the shared ``std`` and
``stat`` tables are never touched.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import io
from decimal import Decimal
from typing import Any

import fastavro
import psycopg2
import pytest

from hip.catalogue import load_catalogue
from hip.records import record_key
from hip.settings import load_settings
from sinks.ddl import create_table_sql, table_for
from sinks.replay import make_producer
from sinks.testing import FakeMessage, unique_name
from sinks.warehouse import Warehouse
from sinks.worker import BatchWriter

pytestmark = pytest.mark.integration
SETTINGS = load_settings()
UTC = dt.timezone.utc


NAMED: dict[str, Any] = {}
PRIMITIVES = {"string", "int", "long", "boolean", "double", "float", "bytes"}


def sample(avro: Any, n: int) -> Any:
    """A valid value of an Avro type (non-null branch of unions), varying with ``n``."""
    if isinstance(avro, list):
        return sample(next(t for t in avro if t != "null"), n)
    if isinstance(avro, str) and avro not in PRIMITIVES:
        return sample(NAMED[avro.rsplit(".", 1)[-1]], n)
    if isinstance(avro, str):
        return {"string": f"v{n}\t\\\"引号\"", "int": n, "long": n * 1000, "boolean": n % 2 == 0,
                "double": n + 0.25, "float": n + 0.5, "bytes": bytes([n % 256, 0x5c])}[avro]
    if avro.get("type") in ("record", "enum") and "name" in avro:
        NAMED.setdefault(avro["name"].rsplit(".", 1)[-1], avro)
    logical = avro.get("logicalType")
    if logical == "decimal":
        scale = avro.get("scale", 0)
        return Decimal(n) + (Decimal(1).scaleb(-scale) if scale else 0)
    if logical == "date":
        return dt.date(2026, 3, 1) + dt.timedelta(days=n)
    if logical in ("timestamp-millis", "timestamp-micros"):
        return dt.datetime(2026, 3, 1, 8, tzinfo=UTC) + dt.timedelta(seconds=n)
    kind = avro.get("type")
    if kind == "enum":
        return avro["symbols"][n % len(avro["symbols"])]
    if kind == "array":
        return [sample(avro["items"], n), sample(avro["items"], n + 1)]
    if kind == "map":
        return {"k": sample(avro["values"], n)}
    if kind == "record":
        return {f["name"]: sample(f["type"], n) for f in avro["fields"]}
    return sample(kind, n)


class SchemaCodec:
    """Schemaless Avro with the catalogue's parsed schemas (the registry framing is the codec's job)."""

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset

    def encode(self, record: dict[str, Any]) -> bytes:
        buf = io.BytesIO()
        fastavro.schemaless_writer(buf, self.dataset.parsed, record)
        return buf.getvalue()

    def decode(self, data: bytes) -> tuple[str, dict[str, Any]]:
        return self.dataset.name, fastavro.schemaless_reader(io.BytesIO(data), self.dataset.parsed, None)


def test_every_catalogue_dataset_lands_updates_and_deletes() -> None:
    catalogue = load_catalogue()
    schema = unique_name("sinkcat")
    org = "TEST" + unique_name("")[1:7].upper()
    conn = psycopg2.connect(SETTINGS.warehouse_dsn, options="-c timezone=UTC")
    producer = make_producer(SETTINGS.bootstrap_servers)
    try:
        with conn.cursor() as cur:
            cur.execute(f'CREATE SCHEMA "{schema}"')
            for ds in catalogue:
                cur.execute(create_table_sql(dataclasses.replace(table_for(ds), schema=schema)))
        conn.commit()
        for ds in catalogue:
            table = dataclasses.replace(table_for(ds), schema=schema)
            codec = SchemaCodec(ds)
            writer = BatchWriter(Warehouse(SETTINGS.warehouse_dsn), codec, lambda _: table, producer,
                                 unique_name("dlq.unused"))
            msgs = []
            for offset, (key_n, seq, op) in enumerate([(1, 1, "c"), (2, 2, "c"), (1, 3, "u"), (2, 4, "d")]):
                record = {f["name"]: sample(f["type"], key_n * 10 + seq) for f in ds.fields}
                for k in ds.business_key:
                    record[k] = sample(ds.field(k)["type"], key_n)
                record.update(org_code=org, op=op, source_position=f"pl:{seq:020d}:{0:010d}",
                              mapping_id=None)
                msgs.append(FakeMessage(ds.topic, offset, record_key(org, [record[k] for k in ds.business_key]),
                                codec.encode(record)))
            outcome = writer.write(msgs)
            assert outcome.dead_letters == 0, ds.name
            with conn.cursor() as cur:
                cur.execute(f'SELECT source_position, deleted FROM "{schema}"."{ds.name}" ORDER BY 1')
                assert cur.fetchall() == [(f"pl:{3:020d}:{0:010d}", False), (f"pl:{4:020d}:{0:010d}", True)], ds.name
            conn.commit()
            assert writer.write(msgs).applied == 0, ds.name
            writer.warehouse.close()
    finally:
        conn.rollback()
        with conn.cursor() as cur:
            cur.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        conn.commit()
        conn.close()
