"""Raw change event → standard records or dead letters. Pure: no Kafka, no Faust, no I/O.

``lookups`` is the normalizer's state, a mutable mapping with string keys and JSON-able values:
the captured dictionary rows (departments, staff, drug catalogue …, keyed by
:func:`streams.core.transforms.lookup_key`), and, for mappings whose business key is not the
source primary key, each row's business key (so a delete that carries only the primary key, as
PostgreSQL sends with REPLICA IDENTITY DEFAULT, still reaches the right standard record). This
module reads and writes it; the Faust adapter backs it with a table (or collects the writes and
applies them per event, as Faust requires).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, MutableMapping, Sequence

import orjson

from hip.errors import RecordError
from hip.records import record_key
from streams.core import envelope
from streams.core.mapping import CompiledMapping, MappingSet, TableRoute
from streams.core.source import UNAVAILABLE
from streams.core.transforms import lookup_key

Check = Callable[[str, dict[str, Any]], Sequence[Any]]


@dataclass
class StandardRecord:
    """A standard record ready to encode: dataset, Kafka key, record, conformance findings.

    ``unavailable`` names fields whose source column arrived as the TOAST placeholder: the record
    carries null there, and the sink must keep the stored value rather than overwrite it.
    """

    dataset: str
    key: bytes
    record: dict[str, Any]
    findings: list[Any] = field(default_factory=list)
    unavailable: tuple[str, ...] = ()


@dataclass
class DeadLetter:
    """A message that could not become a standard record, with everything needed to re-drive it."""

    key: bytes | None
    value: bytes | None
    reason: str
    message: str
    mapping_id: str | None
    topic: str
    partition: int
    offset: int
    dataset: str | None = None


Output = StandardRecord | DeadLetter


def _severity(finding: Any) -> str:
    if isinstance(finding, dict):
        return str(finding.get("severity", ""))
    return str(getattr(finding, "severity", ""))


def _finding_field(finding: Any) -> str | None:
    value = finding.get("field") if isinstance(finding, dict) else getattr(finding, "field", None)
    return None if value is None else str(value)


def _default_check() -> Check:
    from hip import conformance

    check: Check = conformance.check
    return check


def _decode_row(route: TableRoute, raw: dict[str, Any] | None) -> tuple[dict[str, Any], set[str]]:
    row: dict[str, Any] = {}
    unavailable: set[str] = set()
    if raw is None:
        return row, unavailable
    decoders = route.decoders
    passthrough = route.passthrough
    for name, value in raw.items():
        if value is None:
            row[name] = None
            continue
        if value == UNAVAILABLE:
            unavailable.add(name)
            row[name] = None
            continue
        if name in passthrough and (type(value) is str or type(value) is int or type(value) is bool):
            row[name] = value
            continue
        dec = decoders.get(name)
        if dec is None:
            continue  # a column added at the source after the mapping was written
        row[name] = dec(value)
    return row, unavailable


def _key_only(route: TableRoute, raw: dict[str, Any]) -> bool:
    """True when a before-image holds just the primary key (REPLICA IDENTITY DEFAULT)."""
    key = route.table.key
    return all(v is None for k, v in raw.items() if k not in key)


def _memory_key(ev: envelope.ChangeEvent, m: CompiledMapping, source_key: list[Any]) -> str:
    return lookup_key(ev.org, "#" + m.id, source_key)


def _build(m: CompiledMapping, ev: envelope.ChangeEvent, row: dict[str, Any], unavailable: set[str],
           key_only: bool, lookups: MutableMapping[str, Any], ingest_ms: int, source_key: list[Any]) -> StandardRecord:
    record: dict[str, Any] = {
        "org_code": ev.org, "source_system": ev.system, "source_table": ev.table,
        "source_key": orjson.dumps([str(v) for v in source_key]).decode(),  # as json.dumps, compact, UTF-8
        "op": ev.op, "source_position": ev.position, "source_ts": ev.source_ts_ms, "ingest_ts": ingest_ms,
        "mapping_id": m.id,
    }
    missing: list[str] = []
    lost: list[str] = []
    if not key_only and not unavailable:
        missing = m.fill(record, row, lookups)  # the common case, as generated code
    else:
        for plan in m.fields:
            if key_only and not plan.from_key:
                record[plan.name] = None
                continue
            if unavailable and plan.columns & unavailable:
                record[plan.name] = None
                lost.append(plan.name)
                continue
            value = plan.finish(plan.fn(row, lookups))
            if value is None and plan.required:
                missing.append(plan.name)
            record[plan.name] = value
    if key_only and m.remembers_key:
        remembered = lookups.get(_memory_key(ev, m, source_key))
        if remembered is not None:
            record.update(zip(m.business_key, remembered))
    bk = [record.get(f) for f in m.business_key]
    if any(v is None for v in bk):
        raise RecordError("missing_key", f"business key {list(m.business_key)} incomplete: {bk}")
    if missing and not key_only:
        raise RecordError("missing_required", f"required field(s) {missing} have no value", field=missing[0])
    return StandardRecord(dataset=m.dataset, key=record_key(ev.org, bk), record=record, unavailable=tuple(lost))


def normalize(raw_key: bytes | None, raw_value: bytes | None, topic: str, partition: int, offset: int,
              mappings: MappingSet, lookups: MutableMapping[str, Any], *, check: Check | None = None,
              now_ms: int | None = None) -> list[Output]:
    """Turn one raw message into standard records and dead letters (empty for a tombstone).

    Conformance findings of severity "error" send the record to the dead letters; all findings
    travel with the record for the quality path.
    """
    def dead(reason: str, message: str, mapping_id: str | None = None, dataset: str | None = None) -> DeadLetter:
        return DeadLetter(raw_key, raw_value, reason, message, mapping_id, topic, partition, offset, dataset)

    try:
        ev = envelope.decode(raw_key, raw_value, topic)
    except RecordError as exc:
        return [dead(exc.reason, str(exc))]
    if ev is None:
        return []
    route = mappings.route(ev.org, ev.table)
    if route is None:
        if (ev.org, ev.table) in mappings.ignored:
            return []
        if ev.org not in mappings.hospitals:
            return [dead("unknown_org", f"no hospital configured for organisation {ev.org}")]
        return [dead("unmapped_table", f"no mapping for table {ev.table} of {ev.org}")]
    raw = ev.before if ev.op == "d" else ev.after
    assert raw is not None  # envelope.decode guarantees the image of its op
    try:
        row, unavailable = _decode_row(route, raw)
    except RecordError as exc:
        return [dead(exc.reason, str(exc))]
    if route.dictionary_key is not None and ev.op != "d":
        # Deleted dictionary rows stay: older records still name that department or drug.
        values = [raw.get(c) for c in route.dictionary_key]
        entry_key = lookup_key(ev.org, route.table.name, values)
        if unavailable:
            old = lookups.get(entry_key) or {}
            raw = {k: (old.get(k) if v == UNAVAILABLE else v) for k, v in raw.items()}
        lookups[entry_key] = raw
    key_only = ev.op == "d" and _key_only(route, raw)
    ingest_ms = now_ms if now_ms is not None else int(time.time() * 1000)
    checker = check or _default_check()
    out: list[Output] = []
    unresolved = 0  # key-only deletes whose mapping cannot be told: the row was never seen
    for m in route.mappings:
        filter_unknown = key_only and not m.where_columns <= set(route.table.key)
        if not filter_unknown and not m.where(row):
            continue
        source_key = [row.get(c) for c in m.key_columns]
        if any(v is None for v in source_key):
            out.append(dead("missing_key", f"source key {list(m.key_columns)} incomplete: {source_key}", m.id, m.dataset))
            continue
        if key_only and m.remembers_key and filter_unknown and _memory_key(ev, m, source_key) not in lookups:
            unresolved += 1  # this mapping's filter never passed the row (an exam row for the lab
            continue         # dataset), or the row predates what this process remembers
        try:
            rec = _build(m, ev, row, unavailable, key_only, lookups, ingest_ms, source_key)
        except RecordError as exc:
            out.append(dead(exc.reason, str(exc), m.id, m.dataset))
            continue
        if m.remembers_key and not key_only:
            lookups[_memory_key(ev, m, source_key)] = [rec.record[f] for f in m.business_key]
        if key_only:
            out.append(rec)  # a key-only delete carries nothing else worth checking
            continue
        findings = list(checker(m.dataset, rec.record))
        rec.findings = findings
        errors = [f for f in findings if _severity(f) == "error"]
        if errors:
            detail = "; ".join(f"{_finding_field(f)}: {getattr(f, 'message', f)}" for f in errors[:5])
            out.append(dead("conformance", detail, m.id, m.dataset))
            continue
        out.append(rec)
    if unresolved and not out and unresolved == sum(1 for m in route.mappings if m.remembers_key):
        # No mapping knows the row: dropping the delete would leave the record live in the warehouse.
        pk = {c: raw.get(c) for c in route.table.key}
        out.append(dead("unknown_business_key",
                        f"a delete of {ev.table} carrying only its primary key {pk}, for a row whose business "
                        "key this normalizer does not know (not seen since its state was built); REPLICA "
                        "IDENTITY FULL on the table makes deletes carry every column, and 'hip sink "
                        "renormalize' of the hospital rebuilds the keys from the row's history"))
    return out


def normalize_batch(messages: Iterable[tuple[bytes | None, bytes | None, str, int, int]], mappings: MappingSet,
                    lookups: MutableMapping[str, Any], *, check: Check | None = None,
                    now_ms: int | None = None) -> list[Output]:
    """:func:`normalize` over (key, value, topic, partition, offset) tuples, outputs in input order."""
    checker = check or _default_check()
    ingest = now_ms if now_ms is not None else int(time.time() * 1000)
    out: list[Output] = []
    for k, v, t, p, o in messages:
        out.extend(normalize(k, v, t, p, o, mappings, lookups, check=checker, now_ms=ingest))
    return out
