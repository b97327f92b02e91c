"""A self-contained demo dataset for the sink's integration tests, crash test and benchmark.

It mirrors what the catalogue, DDL and codec produce (header + fields; decimals, dates,
instants, a jsonb array) in a throw-away schema, so the sink can be exercised on the real stack
without depending on any particular standard dataset.
"""
from __future__ import annotations

import datetime as dt
import io
import json
import random
import sys
import uuid
from decimal import Decimal
from typing import Any, Iterator

import fastavro

from hip.records import HEADER_FIELDS, record_key
from sinks.core.table import Column, Table

UTC = dt.timezone.utc

FIELDS: list[dict[str, Any]] = [
    {"name": "visit_no", "type": "string"},
    {"name": "patient_id", "type": "string"},
    {"name": "dept_name", "type": ["null", "string"], "default": None},
    {"name": "fee", "type": {"type": "bytes", "logicalType": "decimal", "precision": 12, "scale": 2}},
    {"name": "visit_date", "type": {"type": "int", "logicalType": "date"}},
    {"name": "diagnoses", "type": {"type": "array", "items": {
        "type": "record", "name": "Diagnosis",
        "fields": [{"name": "code", "type": "string"}, {"name": "name", "type": "string"}]}}},
]
PG_TYPES = {"org_code": "text", "source_system": "text", "source_table": "text", "source_key": "text",
            "op": "text", "source_position": "text", "source_ts": "timestamptz", "ingest_ts": "timestamptz",
            "mapping_id": "text", "visit_no": "text", "patient_id": "text", "dept_name": "text",
            "fee": "numeric(12,2)", "visit_date": "date", "diagnoses": "jsonb"}
NULLABLE = {"mapping_id", "dept_name"}


def demo_table(schema: str, name: str) -> Table:
    names = [f["name"] for f in HEADER_FIELDS] + [f["name"] for f in FIELDS]
    cols = [Column(n, PG_TYPES[n], n in NULLABLE) for n in names]
    cols += [Column("deleted", "boolean", False), Column("warehouse_ts", "timestamptz", False)]
    return Table(schema, name, cols, ["org_code", "visit_no"])


def demo_ddl(table: Table, *, check_fee: bool = True) -> str:
    """DDL like the warehouse generator's, plus a CHECK the bad-input test can violate."""
    cols = []
    for c in table.columns:
        default = " DEFAULT false" if c.name == "deleted" else (" DEFAULT now()" if c.name == "warehouse_ts" else "")
        cols.append(f'"{c.name}" {c.pg_type}{"" if c.nullable else " NOT NULL"}{default}')
    check = ', CONSTRAINT fee_not_negative CHECK (fee >= 0)' if check_fee else ""
    return (f'CREATE SCHEMA IF NOT EXISTS "{table.schema}"; '
            f'CREATE TABLE "{table.schema}"."{table.name}" ({", ".join(cols)}, '
            f'PRIMARY KEY ({", ".join(table.primary_key)}){check})')


def demo_schema(dataset: str) -> dict[str, Any]:
    return {"type": "record", "name": dataset, "namespace": "hip.std",
            "fields": json.loads(json.dumps(HEADER_FIELDS)) + FIELDS}


class DemoCodec:
    """Schemaless Avro of one demo dataset, with the same ``decode``/``encode`` shape as ``hip.codec``."""

    def __init__(self, dataset: str) -> None:
        self.dataset = dataset
        self.schema = fastavro.parse_schema(demo_schema(dataset))

    def encode(self, dataset: str, record: dict[str, Any]) -> bytes:
        buf = io.BytesIO()
        fastavro.schemaless_writer(buf, self.schema, record)
        return buf.getvalue()

    def decode(self, data: bytes) -> tuple[str, dict[str, Any]]:
        return self.dataset, fastavro.schemaless_reader(io.BytesIO(data), self.schema, self.schema)


def make_record(org: str, visit: int, seq: int, *, op: str = "u", fee: Decimal | None = None,
                rng: random.Random | None = None, ingest: dt.datetime | None = None) -> dict[str, Any]:
    """One demo record; ``seq`` is the change number that orders versions of a key."""
    rng = rng or random.Random(visit * 7919 + seq)
    base = dt.datetime(2026, 3, 1, tzinfo=UTC)
    when = base + dt.timedelta(seconds=seq)
    return {
        "org_code": org, "source_system": "HIS", "source_table": "mz_ghxx",
        "source_key": json.dumps([str(visit)]), "op": op,
        "source_position": f"pl:{seq:020d}:{0:010d}", "source_ts": when,
        "ingest_ts": ingest or when + dt.timedelta(milliseconds=250), "mapping_id": "his_demo.mz_ghxx",
        "visit_no": f"V{visit:09d}", "patient_id": f"P{rng.randrange(10**8):08d}",
        "dept_name": rng.choice(["内科", "外科", "儿科\t急诊", None, "back\\slash"]),
        "fee": fee if fee is not None else Decimal(rng.randrange(0, 10**7)) / 100,
        "visit_date": (when + dt.timedelta(hours=8)).date(),
        "diagnoses": [{"code": "J18.9", "name": "肺炎"}] * rng.randrange(0, 3),
    }


def workload(org: str, keys: int, changes: int, seed: int = 1, delete_every: int = 7) -> Iterator[dict[str, Any]]:
    """``changes`` records over ``keys`` keys; every ``delete_every``-th change is a delete."""
    rng = random.Random(seed)
    for seq in range(1, changes + 1):
        visit = rng.randrange(keys)
        op = "d" if delete_every and seq % delete_every == 0 else ("c" if seq <= keys else "u")
        yield make_record(org, visit, seq, op=op, rng=rng)


def kafka_key(record: dict[str, Any]) -> bytes:
    return record_key(record["org_code"], [record["visit_no"]])


def unique_name(prefix: str = "sinktest") -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


def run_demo_sink(argv: list[str]) -> None:
    """Entry for the crash test: ``python -m sinks.testing SCHEMA DATASET GROUP``."""
    import signal

    from hip.settings import load_settings
    from sinks.warehouse import Warehouse
    from sinks.worker import BatchWriter, SinkConfig, SinkWorker

    schema, dataset, group = argv[:3]
    settings = load_settings()
    table = demo_table(schema, dataset)
    codec = DemoCodec(dataset)
    import os

    batch = int(os.environ.get("HIP_SINK_BATCH", "500"))
    config = SinkConfig(bootstrap_servers=settings.bootstrap_servers, group_id=group, batch_max=batch,
                        batch_wait_s=0.2, dlq_topic=f"dlq.{dataset}")
    worker = SinkWorker(config, [f"std.{dataset}"], lambda producer: BatchWriter(
        Warehouse(settings.warehouse_dsn), codec, lambda _: table, producer, config.dlq_topic))
    signal.signal(signal.SIGTERM, lambda *_: worker.stop_event.set())
    from hip.proc import relax_gc

    relax_gc()  # as the sink command does (sinks/sink_cli.py)
    worker.run()


if __name__ == "__main__":
    run_demo_sink(sys.argv[1:])


class FakeMessage:
    """What ``BatchWriter.write`` reads of a consumed message, for tests that drive it directly."""

    def __init__(self, topic: str, offset: int, key: bytes | None, value: bytes | None,
                 headers: list[tuple[str, bytes]] | None = None) -> None:
        self._t, self._o, self._k, self._v, self._h = topic, offset, key, value, headers

    def topic(self) -> str: return self._t
    def partition(self) -> int: return 0
    def offset(self) -> int: return self._o
    def key(self) -> bytes | None: return self._k
    def value(self) -> bytes | None: return self._v
    def headers(self) -> list[tuple[str, bytes]] | None: return self._h
