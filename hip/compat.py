"""Backward compatibility of Avro schemas, per the Avro schema-resolution rules.

A new schema is backward compatible with an old one when a reader using the new schema can
read every datum written with the old one. ``problems(old, new)`` lists why not (empty when
compatible). Beyond the Avro rules, a decimal's precision may grow but its scale may not change,
and a logical type may not appear or disappear: both would change the meaning of stored bytes.
"""
from __future__ import annotations

from typing import Any

_PROMOTIONS = {
    "int": {"long", "float", "double"},
    "long": {"float", "double"},
    "float": {"double"},
    "string": {"bytes"},
    "bytes": {"string"},
}
_PRIMITIVES = {"null", "boolean", "int", "long", "float", "double", "bytes", "string"}


class _Names:
    """Named types of one schema by full name, so references can be resolved."""

    def __init__(self) -> None:
        self.types: dict[str, dict[str, Any]] = {}

    def collect(self, schema: Any, namespace: str | None) -> None:
        if isinstance(schema, list):
            for s in schema:
                self.collect(s, namespace)
        elif isinstance(schema, dict):
            t = schema.get("type")
            if t in ("record", "enum", "fixed", "error"):
                ns = schema.get("namespace", namespace)
                self.types[_fullname(schema["name"], ns)] = schema
                self.types.setdefault(schema["name"], schema)
                if t in ("record", "error"):
                    for f in schema["fields"]:
                        self.collect(f["type"], ns)
            elif t == "array":
                self.collect(schema["items"], namespace)
            elif t == "map":
                self.collect(schema["values"], namespace)
            elif isinstance(t, (dict, list)):
                self.collect(t, namespace)

    def resolve(self, schema: Any) -> Any:
        if isinstance(schema, str) and schema not in _PRIMITIVES:
            return self.types.get(schema, schema)
        if isinstance(schema, dict) and isinstance(schema.get("type"), str) and schema["type"] in _PRIMITIVES \
                and "logicalType" not in schema:
            return schema["type"]
        return schema


def _fullname(name: str, namespace: str | None) -> str:
    return name if "." in name or not namespace else f"{namespace}.{name}"


def _kind(schema: Any) -> str:
    if isinstance(schema, list):
        return "union"
    if isinstance(schema, str):
        return schema
    t = schema["type"]
    return t if isinstance(t, str) else _kind(t)


def _logical(schema: Any) -> tuple[Any, ...] | None:
    if isinstance(schema, dict) and "logicalType" in schema:
        lt = schema["logicalType"]
        if lt == "decimal":
            return (lt, schema.get("scale", 0))
        return (lt,)
    return None


def problems(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Why ``new`` cannot read data written with ``old``; empty when it can."""
    writer, reader = _Names(), _Names()
    writer.collect(old, None)
    reader.collect(new, None)
    out: list[str] = []
    _check(old, new, writer, reader, old.get("name", "") if isinstance(old, dict) else "", out, set())
    return out


def compatible(old: dict[str, Any], new: dict[str, Any]) -> bool:
    return not problems(old, new)


def _check(w: Any, r: Any, wn: _Names, rn: _Names, path: str, out: list[str],
           seen: set[tuple[int, int]]) -> None:
    w, r = wn.resolve(w), rn.resolve(r)
    marker = (id(w), id(r))
    if marker in seen:
        return
    seen.add(marker)
    wk, rk = _kind(w), _kind(r)

    if wk == "union":
        # Every branch the writer may have used must be readable.
        for branch in w:
            sub: list[str] = []
            _check(branch, r, wn, rn, path, sub, set(seen))
            out.extend(sub)
        return
    if rk == "union":
        for branch in r:
            sub = []
            _check(w, branch, wn, rn, path, sub, set(seen))
            if not sub:
                return
        out.append(f"{path}: writer type {_describe(w)} matches no branch of the reader's union")
        return

    lw, lr = _logical(w), _logical(r)
    if lw != lr:
        out.append(f"{path}: logical type changed from {lw} to {lr}")
        return
    if lw and lw[0] == "decimal" and isinstance(w, dict) and isinstance(r, dict) \
            and r.get("precision", 0) < w.get("precision", 0):
        out.append(f"{path}: decimal precision narrowed from {w.get('precision')} to {r.get('precision')}")

    if wk != rk:
        if rk in _PROMOTIONS.get(wk, set()):
            return
        out.append(f"{path}: type changed from {wk} to {rk}")
        return
    if wk in _PRIMITIVES:
        return
    if wk == "array":
        _check(w["items"], r["items"], wn, rn, f"{path}[]", out, seen)
    elif wk == "map":
        _check(w["values"], r["values"], wn, rn, f"{path}{{}}", out, seen)
    elif wk == "enum":
        if w["name"].split(".")[-1] != r["name"].split(".")[-1]:
            out.append(f"{path}: enum name changed from {w['name']} to {r['name']}")
        missing = [s for s in w["symbols"] if s not in r["symbols"]]
        if missing and "default" not in r:
            out.append(f"{path}: enum symbols removed without a default: {missing}")
    elif wk == "fixed":
        if w["size"] != r["size"]:
            out.append(f"{path}: fixed size changed from {w['size']} to {r['size']}")
    elif wk in ("record", "error"):
        if w["name"].split(".")[-1] != r["name"].split(".")[-1]:
            out.append(f"{path}: record name changed from {w['name']} to {r['name']}")
        wf = {f["name"]: f for f in w["fields"]}
        for f in r["fields"]:
            names = [f["name"], *f.get("aliases", [])]
            source = next((wf[n] for n in names if n in wf), None)
            if source is None:
                if "default" not in f:
                    out.append(f"{path}.{f['name']}: field added without a default")
                continue
            _check(source["type"], f["type"], wn, rn, f"{path}.{f['name']}", out, seen)


def _describe(schema: Any) -> str:
    return schema if isinstance(schema, str) else str(schema.get("type"))
