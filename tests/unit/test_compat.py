"""Backward compatibility of Avro schemas, and the committed snapshot in avro/released/."""
from __future__ import annotations

import copy
from typing import Any

from hip.catalogue import load_catalogue
from hip.compat import compatible, problems
from hip.datasets_cli import compat_problems

BASE: dict[str, Any] = {
    "type": "record", "name": "r", "namespace": "hip.std",
    "fields": [
        {"name": "id", "type": "string"},
        {"name": "n", "type": "int"},
        {"name": "amount", "type": ["null", {"type": "bytes", "logicalType": "decimal", "precision": 14, "scale": 2}],
         "default": None},
        {"name": "op", "type": {"type": "enum", "name": "Op", "symbols": ["c", "u", "d"]}},
        {"name": "items", "type": {"type": "array", "items": {"type": "record", "name": "Item", "fields": [
            {"name": "code", "type": "string"}]}}},
    ],
}


def changed(**edits: Any) -> dict[str, Any]:
    new = copy.deepcopy(BASE)
    for name, field in edits.items():
        if field is None:
            new["fields"] = [f for f in new["fields"] if f["name"] != name]
        elif any(f["name"] == name for f in new["fields"]):
            new["fields"] = [field if f["name"] == name else f for f in new["fields"]]
        else:
            new["fields"].append(field)
    return new


def test_compatible_changes() -> None:
    assert compatible(BASE, BASE)
    assert compatible(BASE, changed(extra={"name": "extra", "type": ["null", "string"], "default": None}))
    assert compatible(BASE, changed(n={"name": "n", "type": "long"}))
    assert compatible(BASE, changed(n={"name": "n", "type": ["null", "int"], "default": None}))
    assert compatible(BASE, changed(amount=None))  # a reader may ignore a writer's field
    assert compatible(BASE, changed(op={"name": "op", "type": {"type": "enum", "name": "Op",
                                                               "symbols": ["c", "u", "d", "r"]}}))
    wider = changed(amount={"name": "amount", "type": ["null", {"type": "bytes", "logicalType": "decimal",
                                                                "precision": 18, "scale": 2}], "default": None})
    assert compatible(BASE, wider)


def test_incompatible_changes() -> None:
    assert any("without a default" in p for p in problems(BASE, changed(extra={"name": "extra", "type": "string"})))
    assert problems(BASE, changed(n={"name": "n", "type": "string"}))
    assert problems(BASE, changed(id={"name": "id", "type": "int"}))
    assert problems(BASE, changed(n={"name": "n", "type": "int"} | {"type": "boolean"}))
    assert problems(BASE, changed(op={"name": "op", "type": {"type": "enum", "name": "Op", "symbols": ["c", "u"]}}))
    assert problems(BASE, changed(amount={"name": "amount", "type": ["null", {
        "type": "bytes", "logicalType": "decimal", "precision": 14, "scale": 3}], "default": None}))
    assert problems(changed(n={"name": "n", "type": ["null", "int"], "default": None}), BASE)  # null unreadable
    nested = copy.deepcopy(BASE)
    nested["fields"][4]["type"]["items"]["fields"].append({"name": "seq", "type": "int"})
    assert any("items[].seq" in p for p in problems(BASE, nested))


def test_current_schemas_compatible_with_released_snapshot() -> None:
    assert compat_problems() == []


def test_dropping_a_field_from_a_dataset_is_caught_by_the_warehouse_not_avro() -> None:
    # Avro lets a reader drop a field; the DDL migration refuses the dropped column instead.
    ds = load_catalogue()["patient_info"]
    new = copy.deepcopy(ds.schema)
    new["fields"] = [f for f in new["fields"] if f["name"] != "phone"]
    assert compatible(ds.schema, new)
    new["fields"].append({"name": "must_have", "type": "string"})
    assert problems(ds.schema, new) == ["patient_info.must_have: field added without a default"]
