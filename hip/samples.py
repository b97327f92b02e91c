"""Sample records of every dataset that conform to the schemas and the conformance rules.

Used by tests (round trips, conformance, mappings) and demos. ``sample_record(name)`` fills every
field; ``full=False`` fills only the fields the schema requires.
"""
from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from hip.catalogue import Dataset, load_catalogue, load_valueset_info

BASE_TIME = dt.datetime(2024, 5, 1, 2, 0, tzinfo=dt.timezone.utc)
SAMPLE_ID_NO = "11010519491231002X"
_PATTERN_SAMPLES = {"ICD-10": "I21.401", "ICD-9-CM-3": "36.0600", "TCM_DISEASE": "BNG010",
                    "TCM_SYNDROME": "ZBMS00", "CV08.50.002": "01"}


def _value(field: dict[str, Any], name: str, named: dict[str, dict[str, Any]]) -> Any:
    t = field["type"]
    if isinstance(t, list):
        t = next(x for x in t if x != "null")
    vs_id = field.get("valueset")
    if vs_id:
        vs = load_valueset_info(vs_id)
        if vs.kind == "pattern":
            return _PATTERN_SAMPLES[vs_id]
        # Resident ID (01) where the field is an ID type: the sample ID number then passes GB 11643.
        return "01" if "01" in vs.codes and vs_id == "CV02.01.101" else next(iter(vs.codes))
    if "idno" in field.get("checks", {}):
        return SAMPLE_ID_NO
    if isinstance(t, str):
        return {"string": f"{name}-1", "int": 1, "long": 1, "boolean": True, "double": 1.0}[t]
    logical = t.get("logicalType")
    if logical == "timestamp-millis":
        return BASE_TIME
    if logical == "date":
        return dt.date(1980, 1, 1) if "birth" in field.get("checks", {}) else BASE_TIME.date()
    if logical == "decimal":
        return Decimal(1).scaleb(0).quantize(Decimal(1).scaleb(-t["scale"])) if t["scale"] != 2 \
            else Decimal("0.00")
    if t["type"] == "enum":
        return t["symbols"][0]
    if t["type"] == "array":
        items = named.get(t["items"], t["items"]) if isinstance(t["items"], str) else t["items"]
        if isinstance(items, dict) and items.get("type") == "record":
            return [{f["name"]: _value(f, f["name"], named) for f in items["fields"]}]
        return ["a"]
    raise ValueError(f"no sample for {name}: {t}")


def sample_record(dataset: str | Dataset, /, *, full: bool = True, org_code: str = "12220000123456789X",
                  **overrides: Any) -> dict[str, Any]:
    """A conforming record of ``dataset``; keyword arguments replace fields."""
    ds = dataset if isinstance(dataset, Dataset) else load_catalogue()[dataset]
    record: dict[str, Any] = {}
    for f in ds.fields:
        nullable = isinstance(f["type"], list) and "null" in f["type"]
        record[f["name"]] = None if nullable and not full else _value(f, f["name"], ds.named_types)
    record.update(org_code=org_code, source_system="HIS", source_table="t", source_key='["1"]', op="c",
                  source_position="pg:00000000000000000001:1", source_ts=BASE_TIME, ingest_ts=BASE_TIME,
                  mapping_id=None)
    if full:
        for rule in ds.rules:
            if rule["rule"] == "sum":
                parts = [record[p] for p in rule["parts"] if record.get(p) is not None]
                if parts:
                    record[rule["total"]] = sum(parts[1:], parts[0])
            if rule["rule"] == "range":
                mid = (Decimal(str(rule["min"])) + Decimal(str(rule["max"]))) / 2
                t = ds.field(rule["field"])["type"][1]
                record[rule["field"]] = mid.quantize(Decimal(1).scaleb(-t["scale"])) \
                    if isinstance(t, dict) else int(mid)
    record.update(overrides)
    return record
