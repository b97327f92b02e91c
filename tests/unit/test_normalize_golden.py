"""Golden tests: sample change events of each vendor in, standard records and dead letters out.

Inputs ``tests/golden/<vendor>/events.json`` hold realistic Debezium messages (c/u/d/r, null
before, tombstones, decimals, local times → UTC, a column added at the source, a TOAST placeholder,
a key-only delete, dirty rows, broken messages). ``expected.json`` is the snapshot of what
:func:`normalize` makes of them. Rebuild both after an intended change with
``HIP_UPDATE_GOLDEN=1 pytest tests/unit/test_normalize_golden.py`` and review the diff.
"""
from __future__ import annotations

import json
import os
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from connectors.simulator.profiles import PROFILES
from connectors.simulator.workload import Workload, seed_transactions
from hip.conformance import check
from streams.core.mapping import load_mappings
from streams.core.normalize import DeadLetter, normalize
from tests.unit.cdc_events import EventStream

GOLDEN = Path(__file__).resolve().parent.parent / "golden"
ORGS = {"vendor_a": ("a", "SIMA01", "hosp_a"), "vendor_b": ("b", "SIMB01", "hosp_b")}
NOW_MS = 1_709_280_000_000
UPDATE = os.environ.get("HIP_UPDATE_GOLDEN") == "1"


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return {"decimal": str(value)}
    if isinstance(value, (date, datetime)):
        return {"date": value.isoformat()}
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def build_events(vendor: str) -> list[dict[str, Any]]:
    """Realistic messages: a short seeded hospital day plus hand-made edge cases."""
    code, org, db = ORGS[vendor]
    profile = PROFILES[code]
    stream = EventStream(profile, org, db)
    seeds = seed_transactions(profile)
    # Only the dictionaries the records look up, to keep the file readable.
    wanted = {"GY_KSDM", "GY_YGDM", "YK_YPML", "base_dept", "base_staff", "base_drug"}
    for tx in seeds:
        tx.ops = [op for op in tx.ops if op.table in wanted]
    events: list[dict[str, Any]] = []

    def add(note: str, key: bytes | None, value: bytes | None, topic: str) -> None:
        events.append({"note": note, "topic": topic, "key": None if key is None else key.decode(),
                       "value": None if value is None else value.decode()})

    for k, v, t, info in stream.events(seeds):
        add(f"snapshot-era dictionary row {info['table']}", k, v, t)
    # Dictionary rows as a snapshot would read them (op r).
    for e in events:
        value = json.loads(e["value"])
        value["op"] = "r"
        value["source"]["snapshot"] = "true"
        e["value"] = json.dumps(value, ensure_ascii=False)
    workload = Workload(profile, seed=11, start=datetime(2024, 3, 1, 23, 40), dirty=0.08)
    for k, v, t, info in stream.events(workload.take(140)):
        add(f"{info['kind']} {info['table']}" + (f" (dirty: {info['dirty']})" if info["dirty"] else ""), k, v, t)

    # Edge cases on a registration row.
    reg_table = "MS_GHMX" if code == "a" else "outpt_register"
    sample = next(json.loads(e["value"]) for e in events
                  if e["value"] and e["topic"].endswith("." + reg_table) and json.loads(e["value"])["op"] == "c")
    topic = stream.topic(reg_table)
    key_col = "SBXH" if code == "a" else "reg_id"
    key = json.dumps({key_col: sample["after"][key_col]}).encode()
    changed = dict(sample, op="u", before=None)
    changed["after"] = dict(sample["after"], HIS_NEW_COLUMN="x")
    add("schema change: a column added at the source, update without before-image", key,
        json.dumps(changed, ensure_ascii=False).encode(), topic)
    dropped = dict(sample, op="u")
    dropped["after"] = {k: v for k, v in sample["after"].items() if k not in ("YSDM", "doctor_id")}
    add("schema change: a column dropped at the source", key, json.dumps(dropped, ensure_ascii=False).encode(), topic)
    deleted = dict(sample, op="d", after=None, before=sample["after"])
    if code == "b":
        # PostgreSQL with REPLICA IDENTITY DEFAULT: the before-image holds only the key.
        deleted["before"] = {c: (v if c == key_col else None) for c, v in sample["after"].items()}
    add("delete of a registration entered by mistake", key, json.dumps(deleted, ensure_ascii=False).encode(), topic)
    add("tombstone", key, None, topic)
    add("not JSON", key, b"\x00garbage", topic)
    add("unknown organisation", key, json.dumps(sample, ensure_ascii=False).encode(),
        topic.replace(org, "99999999X99999999"))
    if code == "b":
        visit = next(json.loads(e["value"]) for e in events
                     if e["value"] and e["topic"].endswith(".outpt_visit") and json.loads(e["value"])["op"] == "c")
        toast = dict(visit, op="u", before=None)
        toast["after"] = dict(visit["after"], present_illness="__debezium_unavailable_value", end_time=None)
        add("TOAST placeholder in an unchanged text column (REPLICA IDENTITY DEFAULT)",
            json.dumps({"visit_id": visit["after"]["visit_id"]}).encode(), json.dumps(toast, ensure_ascii=False).encode(),
            stream.topic("outpt_visit"))
        lab = next(json.loads(e["value"]) for e in events
                   if e["value"] and e["topic"].endswith(".medic_result") and json.loads(e["value"])["op"] == "c")
        gone = dict(lab, op="d", after=None, before={c: (lab["after"][c] if c == "result_id" else None) for c in lab["after"]})
        add("key-only delete of a lab result row: the business key comes from the remembered key, the exam dataset is untouched",
            json.dumps({"result_id": lab["after"]["result_id"]}).encode(), json.dumps(gone, ensure_ascii=False).encode(),
            stream.topic("medic_result"))
    return events


def run(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    mappings = load_mappings()
    lookups: dict[str, Any] = {}
    results = []
    for i, e in enumerate(events):
        key = None if e["key"] is None else e["key"].encode()
        value = None if e["value"] is None else e["value"].encode("utf-8", "surrogateescape")
        outs = normalize(key, value, e["topic"], 0, i, mappings, lookups, check=check, now_ms=NOW_MS)
        rendered = []
        for o in outs:
            if isinstance(o, DeadLetter):
                rendered.append({"dead_letter": o.reason, "message": o.message, "mapping_id": o.mapping_id,
                                 "offset": o.offset})
            else:
                rendered.append({"dataset": o.dataset, "key": o.key.decode(), "record": _plain(o.record),
                                 "findings": [f"{f.severity} {f.rule} {f.field}" for f in o.findings],
                                 **({"unavailable": list(o.unavailable)} if o.unavailable else {})})
        results.append({"note": e["note"], "out": rendered})
    return results


@pytest.mark.parametrize("vendor", sorted(ORGS))
def test_golden(vendor: str) -> None:
    folder = GOLDEN / vendor
    events_file, expected_file = folder / "events.json", folder / "expected.json"
    if UPDATE:
        folder.mkdir(parents=True, exist_ok=True)
        events_file.write_text(json.dumps(build_events(vendor), ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    events = json.loads(events_file.read_text(encoding="utf-8"))
    got = run(events)
    if UPDATE:
        expected_file.write_text(json.dumps(got, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    expected = json.loads(expected_file.read_text(encoding="utf-8"))
    assert len(got) == len(expected)
    for g, x in zip(got, expected):
        assert g == x, g["note"]


@pytest.mark.parametrize("vendor", sorted(ORGS))
def test_golden_covers_the_edges(vendor: str) -> None:
    events = json.loads((GOLDEN / vendor / "events.json").read_text(encoding="utf-8"))
    ops = {json.loads(e["value"])["op"] for e in events if e["value"] and e["value"].startswith("{")}
    assert ops == {"c", "u", "d", "r"}
    assert any(e["value"] is None for e in events)
    assert any("dirty" in e["note"] for e in events)
    outputs = [o for r in run(events) for o in r["out"]]
    assert any(o.get("dead_letter") == "unknown_code" for o in outputs)
    assert any(o.get("dead_letter") == "bad_json" for o in outputs)
    assert any(o.get("dead_letter") == "unknown_org" for o in outputs)
    assert any(o.get("record", {}).get("op") == "d" for o in outputs)


@pytest.mark.parametrize("vendor", sorted(ORGS))
def test_clean_hospital_days_never_dead_letter(vendor: str) -> None:
    """Without spoiled rows, every change of a few simulated days maps to records that conform.

    Guards the mappings against local codes they forget to translate (operations' incision class
    I/II/III once went to the dead letters as "not in value set").
    """
    code, org, db = ORGS[vendor]
    profile = PROFILES[code]
    stream = EventStream(profile, org, db)
    mappings = load_mappings()
    lookups: dict[str, Any] = {}
    txs = list(seed_transactions(profile)) + list(Workload(profile, seed=5, start=datetime(2024, 3, 1, 7, 30)).take(6000))
    datasets: set[str] = set()
    dead: list[str] = []
    for i, (k, v, t, info) in enumerate(stream.events(txs)):
        for o in normalize(k, v, t, 0, i, mappings, lookups, check=check):
            if isinstance(o, DeadLetter):
                dead.append(f"{info['table']}: {o.reason}: {o.message}")
            else:
                datasets.add(o.dataset)
    assert dead == []
    assert {"operation_record", "inpatient_visit", "medical_fee", "lab_report"} <= datasets


def test_a_key_only_delete_of_a_row_never_seen_is_a_dead_letter_not_dropped() -> None:
    """After a restart the remembered business keys are gone: the delete must stay visible."""
    events = json.loads((GOLDEN / "vendor_b" / "events.json").read_text(encoding="utf-8"))
    e = next(e for e in events if e["note"].startswith("key-only delete of a lab result row"))
    outs = normalize(e["key"].encode(), e["value"].encode(), e["topic"], 0, 1, load_mappings(), {}, check=check,
                     now_ms=NOW_MS)
    assert len(outs) == 1 and isinstance(outs[0], DeadLetter)
    assert outs[0].reason == "unknown_business_key" and "result_id" in outs[0].message
