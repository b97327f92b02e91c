"""Reconciliation adapters: the warehouse side, the topic side and the hospital-source side.

Each side yields standard records for one org and dataset; ``sinks.core.reconcile`` reduces them
to key checksums of the mapped fields and compares. Sources:

- ``warehouse``: rows of the dataset's table for the org that are not deleted;
- ``topic``: the newest version per key of the org's records on the dataset's topic (checks the
  sink alone: exactly what the warehouse must hold);
- ``source``: the hospital's source tables mapped through the same mapping core as the
  normalizer (checks the whole pipeline), see ``source_records``.
"""
from __future__ import annotations

import uuid
from typing import Any, Iterator, Mapping

from confluent_kafka import Consumer, TopicPartition

from hip.errors import ConfigError

from sinks.core.reconcile import Difference, compare, key_checksums, last_wins
from sinks.core.table import DELETED, TableLike, mapped_columns
from sinks.replay import org_key_prefix, plan_replay
from sinks.warehouse import Warehouse
from sinks.worker import Decoder


def _fields(table: TableLike) -> tuple[list[str], list[str], frozenset[str]]:
    cols = mapped_columns(table)
    key = list(table.primary_key)
    fields = [c.name for c in cols if c.name not in key]
    json_fields = frozenset(c.name for c in cols if c.pg_type.lower() in ("jsonb", "json"))
    return key, fields, json_fields


def warehouse_records(warehouse: Warehouse, table: TableLike, org: str) -> Iterator[dict[str, Any]]:
    names = [c.name for c in mapped_columns(table)]
    yield from warehouse.rows(table, names, where=f"org_code = %s AND NOT {DELETED}", params=(org,))


def topic_records(bootstrap_servers: str, topic: str, org: str, decoder: Decoder,
                  key: list[str]) -> list[Mapping[str, Any]]:
    """Live rows the topic implies for one org: newest version per key, deletes dropped."""
    consumer = Consumer({"bootstrap.servers": bootstrap_servers, "enable.auto.commit": False,
                         "group.id": f"hip-sink-reconcile-{uuid.uuid4().hex[:12]}"})
    prefix = org_key_prefix(org)
    records: list[Mapping[str, Any]] = []
    try:
        plan = plan_replay(consumer, topic, None, None)
        todo = {p: r for p, r in plan.ranges.items() if r[1] > r[0]}
        if todo:
            consumer.assign([TopicPartition(topic, p, s) for p, (s, _) in todo.items()])
        while todo:
            for msg in consumer.consume(5000, 1.0):
                if msg.error() is not None or msg.partition() not in todo:
                    continue
                if msg.offset() + 1 >= todo[msg.partition()][1]:
                    todo.pop(msg.partition())
                if msg.offset() >= plan.ranges[msg.partition()][1]:
                    continue
                if not (msg.key() or b"").startswith(prefix) or msg.value() is None:
                    continue
                try:
                    _, record = decoder.decode(msg.value())
                except Exception:
                    continue  # undecodable records are dead letters, not warehouse rows
                records.append(record)
    finally:
        consumer.close()
    return last_wins(records, key)


def source_records(org: str, dataset: str) -> Iterator[Mapping[str, Any]]:
    """The org's source rows mapped to the standard dataset by the normalizer's mapping core."""
    try:
        from streams.core import mapping  # noqa: F401  (owned by the normalizer; wired when present)
    except ImportError as exc:
        raise ConfigError("the mapping core (streams/core/mapping.py) is not available yet; "
                          "use --against topic", field="against") from exc
    read = getattr(mapping, "source_records", None)
    if read is None:
        raise ConfigError("streams.core.mapping has no source_records(org, dataset) yet; "
                          "use --against topic", field="against")
    yield from read(org, dataset)


def reconcile(org: str, dataset: str, table: TableLike, source: Iterator[Mapping[str, Any]] | list[Mapping[str, Any]],
              warehouse: Warehouse) -> Difference:
    """Compare one org's dataset: source records (already the expected live rows) vs the warehouse."""
    key, fields, json_fields = _fields(table)
    src = key_checksums(source, key, fields, json_fields)
    wh = key_checksums(warehouse_records(warehouse, table, org), key, fields, json_fields)
    return compare(org, dataset, src, wh)
