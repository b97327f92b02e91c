"""The generated fast path of ``hip.conformance`` against a plain interpreter of the same rules.

``reference`` walks the schema and the dataset's rules for every record, with no precomputation,
no screening and no generated code, following the documented semantics of each rule. Randomly
perturbed sample records (missing fields, bad codes, bad ID numbers, reversed and future dates,
negative and huge amounts, wrong types, deletes, other value forms) must yield identical findings,
in the same order, from ``check``, ``check_batch`` and the reference.
"""
from __future__ import annotations

import datetime as dt
import random
from decimal import Decimal
from typing import Any

import pytest

from hip.catalogue import Dataset, load_catalogue, load_valueset_info
from hip.conformance import (CLOCK_SKEW_MS, DAY_MS, LOCAL_OFFSET_MS, MAX_AMOUNT, RULE_IDS, Finding, check,
                             check_batch, id_number_problem, to_days, to_decimal, to_ms)
from hip.records import OPS
from hip.samples import BASE_TIME, sample_record

NOW = BASE_TIME + dt.timedelta(days=1)
CATALOGUE = load_catalogue()
DATASETS = [ds.name for ds in CATALOGUE]
_PATTERN_RULES = {"ICD-10": "code.icd10", "ICD-9-CM-3": "code.icd9cm3"}


# ---------------------------------------------------------------- reference interpreter


def _f(out: list[Finding], rule: str, field: str | None, message: str, severity: Any = None) -> None:
    out.append(Finding(rule, field, severity or RULE_IDS[rule].severity, message))


def _field_type(field: dict[str, Any], named: dict[str, dict[str, Any]]) -> tuple[bool, str, Any]:
    """(nullable, kind, type) of an Avro field."""
    t = field["type"]
    nullable = isinstance(t, list) and "null" in t
    if isinstance(t, list):
        t = next(x for x in t if x != "null")
    if isinstance(t, str):
        return nullable, t, t
    logical = t.get("logicalType")
    kind = {"timestamp-millis": "ts", "date": "date", "decimal": "decimal"}.get(logical or "", t["type"])
    return nullable, kind, t


def _type_ok(kind: str, v: Any) -> bool | None:
    if kind == "string" or kind == "enum":
        return isinstance(v, str)
    if kind in ("int", "long"):
        return isinstance(v, int) and not isinstance(v, bool)
    if kind == "boolean":
        return isinstance(v, bool)
    if kind == "double":
        return isinstance(v, (int, float)) and not isinstance(v, bool)
    if kind == "ts":
        return to_ms(v) is not None
    if kind == "date":
        return to_days(v) is not None
    if kind == "decimal":
        return to_decimal(v) is not None and not isinstance(v, str)
    if kind == "array":
        return isinstance(v, (list, tuple))
    return None


def _iso(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _type_finding(out: list[Finding], where: str, kind: str, v: Any) -> None:
    _f(out, "field.type", where, f"{where}: expected {kind}, got {type(v).__name__} {v!r:.40}")


def _future_ts(out: list[Finding], where: str, v: Any, now: int) -> None:
    ms = to_ms(v)
    if ms is not None and ms > now + CLOCK_SKEW_MS:
        _f(out, "time.future", where, f"{where}: {_iso(ms)} is in the future (now {_iso(now)}); check the source time zone")


def _field_rest(out: list[Finding], rec: dict[str, Any], field: dict[str, Any], where: str, top: bool,
                named: dict[str, dict[str, Any]], now: int) -> None:
    """Value set, ID number, future (dates; timestamps in lists), range and list checks of a field."""
    name = field["name"]
    _, kind, t = _field_type(field, named)
    tags = field.get("checks", {})
    v = rec.get(name)
    vs_id = field.get("valueset")
    if vs_id and isinstance(v, str) and v:
        vs = load_valueset_info(vs_id)
        severity = "error" if vs.strict else "warning"
        if vs.kind == "pattern":
            if v not in vs:
                _f(out, _PATTERN_RULES.get(vs.id, "field.valueset"), where, f"{where}: {v!r} is not a {vs.id} code",
                   severity)
        elif v not in vs.codes:
            _f(out, "field.valueset", where, f"{where}: {v!r} is not in value set {vs.id}", severity)
    if "idno" in tags and isinstance(v, str) and v:
        id_type = rec.get(tags["idno"]) if tags["idno"] else None
        if id_type == "01" or (id_type is None and len(v.strip()) == 18):
            problem = id_number_problem(v)
            if problem:
                _f(out, "id.check_digit", where, f"{where}: resident ID number {problem}")
    if kind in ("ts", "date") and "future" not in tags:
        if kind == "ts" and not top:
            _future_ts(out, where, v, now)
        elif kind == "date":
            days = to_days(v)
            if days is not None and days > (now + LOCAL_OFFSET_MS) // DAY_MS:
                _f(out, "time.future", where, f"{where}: {dt.date(1970, 1, 1) + dt.timedelta(days=days)} is after today")
    if kind in ("decimal", "int", "long", "double") and v is not None and v.__class__ is not bool:
        money = isinstance(t, dict) and t.get("logicalType") == "decimal" and t.get("scale") == 2 \
            and t.get("precision", 0) >= 12
        rule = "amount.range" if money else "quantity.range"
        d = to_decimal(v)
        if d is not None:
            if d < 0 and "signed" not in tags:
                _f(out, rule, where, f"{where}: {d} is negative")
            elif "pct" in tags and d > 100:
                _f(out, rule, where, f"{where}: {d}% exceeds 100")
            elif money and abs(d) > MAX_AMOUNT:
                _f(out, rule, where, f"{where}: {d} is implausibly large", "warning")
    if kind == "array" and isinstance(v, (list, tuple)):
        items = named.get(t["items"], t["items"]) if isinstance(t["items"], str) else t["items"]
        if isinstance(items, dict) and "fields" in items:
            for i, item in enumerate(v):
                if not isinstance(item, dict):
                    continue
                for sub in items["fields"]:
                    path = f"{name}[{i}].{sub['name']}"
                    sv = item.get(sub["name"])
                    sub_kind = _field_type(sub, named)[1]
                    if sv is not None and _type_ok(sub_kind, sv) is False:
                        _type_finding(out, path, sub_kind, sv)
                    _field_rest(out, item, sub, path, False, named, now)


def _instant(rec: dict[str, Any], name: str, kinds: dict[str, str]) -> int | None:
    v = rec.get(name)
    if v is None:
        return None
    if kinds.get(name) == "date":
        d = to_days(v)
        return None if d is None else d * DAY_MS
    return to_ms(v)


def _total(rec: dict[str, Any], names: list[str]) -> tuple[Decimal, int]:
    total, present = Decimal(0), 0
    for p in names:
        d = to_decimal(rec.get(p))
        if d is not None:
            total += d
            present += 1
    return total, present


def _rule(out: list[Finding], rec: dict[str, Any], spec: dict[str, Any], kinds: dict[str, str]) -> None:
    kind, sev = spec["rule"], spec.get("severity")
    if kind == "order":
        a, b = _instant(rec, spec["before"], kinds), _instant(rec, spec["after"], kinds)
        if a is not None and b is not None and b < a:
            _f(out, "time.order", spec["after"], f"{spec['after']} is before {spec['before']}", sev)
    elif kind == "birth":
        b, e = to_days(rec.get(spec["birth"])), _instant(rec, spec["event"], kinds)
        if b is not None and e is not None:
            day = (e + LOCAL_OFFSET_MS) // DAY_MS if kinds.get(spec["event"]) == "ts" else e // DAY_MS
            if b > day:
                _f(out, "time.birth", spec["birth"], f"{spec['birth']} is after {spec['event']}", sev)
            elif day - b > 150 * 366:
                _f(out, "time.birth", spec["birth"], f"{spec['birth']} is more than 150 years before {spec['event']}",
                   "warning")
    elif kind == "sum":
        t = to_decimal(rec.get(spec["total"]))
        if t is not None:
            s, present = _total(rec, spec["parts"])
            if present and abs(s - t) > Decimal(str(spec["tolerance"])):
                _f(out, spec.get("id", "fee.sum"), spec["total"],
                   f"{spec['total']} is {t} but its {len(spec['parts'])} items add up to {s}", sev)
    elif kind == "part":
        w = to_decimal(rec.get(spec["whole"]))
        if w is not None:
            s, present = _total(rec, spec["parts"])
            if present and s > w + Decimal("0.01"):
                _f(out, "fee.part", spec["parts"][0], f"{', '.join(spec['parts'])} ({s}) exceed {spec['whole']} ({w})",
                   sev)
    elif kind == "line":
        a, q, p = (to_decimal(rec.get(spec[x])) for x in ("amount", "quantity", "price"))
        if a is not None and q is not None and p is not None \
                and abs(q * p - a) > Decimal(str(spec["tolerance"])) + abs(a) * Decimal("0.001"):
            _f(out, "fee.line", spec["amount"],
               f"{spec['amount']} {a} differs from {spec['quantity']} × {spec['price']} = {q * p}", sev)
    elif kind == "stay_days":
        a, d, n = to_ms(rec.get(spec["admission"])), to_ms(rec.get(spec["discharge"])), rec.get(spec["days"])
        if a is not None and d is not None and isinstance(n, int) and d >= a:
            expected = max(1, (d + LOCAL_OFFSET_MS) // DAY_MS - (a + LOCAL_OFFSET_MS) // DAY_MS)
            if n != expected:
                _f(out, "time.stay_days", spec["days"], f"{spec['days']} is {n}, dates give {expected}", sev)
    elif kind == "within_hours":
        a, b = _instant(rec, spec["start"], kinds), _instant(rec, spec["end"], kinds)
        if a is not None and b is not None and b - a > int(spec["hours"]) * 3_600_000:
            _f(out, "time.within", spec["end"], f"{spec['end']} is more than {int(spec['hours'])} h after {spec['start']}",
               sev)
    elif kind == "range":
        lo, hi = Decimal(str(spec["min"])), Decimal(str(spec["max"]))
        d = to_decimal(rec.get(spec["field"]))
        if d is not None and not lo <= d <= hi:
            _f(out, "value.range", spec["field"], f"{spec['field']} {d} is outside {lo}..{hi}", sev)
    elif kind == "balance":
        o, c = to_decimal(rec.get(spec["opening"])), to_decimal(rec.get(spec["closing"]))
        if o is not None and c is not None:
            expected = o + _total(rec, spec["plus"])[0] - _total(rec, spec["minus"])[0]
            if abs(expected - c) > Decimal(str(spec["tolerance"])):
                _f(out, "stock.balance", spec["closing"], f"{spec['closing']} is {c}, movements give {expected}", sev)


def reference(ds: Dataset, rec: dict[str, Any], now: int) -> list[Finding]:
    out: list[Finding] = []
    named = ds.named_types
    fields = {f["name"]: f for f in ds.fields}
    for f in ds.fields:
        v = rec.get(f["name"])
        if not _field_type(f, named)[0] and (v is None or v == ""):
            _f(out, "field.required", f["name"], f"{f['name']} is required")
    op = rec.get("op")
    if op is not None and op not in OPS:
        _f(out, "header.op", "op", f"op {op!r} is not one of {', '.join(OPS)}")
    if op == "d":
        return out
    for f in ds.fields:
        v = rec.get(f["name"])
        if "should" in f.get("checks", {}) and (v is None or v == ""):
            _f(out, "field.recommended", f["name"], f"{f['name']} is missing")
    # Types and timestamps in the future, in the record's key order.
    for name, v in rec.items():
        f = fields.get(name)
        if f is None or name == "op" or v is None:
            continue
        kind = _field_type(f, named)[1]
        ok = _type_ok(kind, v)
        if ok is False:
            _type_finding(out, name, kind, v)
        elif ok and kind == "ts" and "future" not in f.get("checks", {}):
            _future_ts(out, name, v, now)
    for f in ds.fields:
        if f["name"] != "op":
            _field_rest(out, rec, f, f["name"], True, named, now)
    kinds = {f["name"]: _field_type(f, named)[1] for f in ds.fields}
    for spec in ds.rules:
        _rule(out, rec, spec, kinds)
    return out


# ---------------------------------------------------------------- perturbations

_UTC8 = dt.timezone(dt.timedelta(hours=8))


def _bad_value(rng: random.Random, field: dict[str, Any], v: Any, named: dict[str, dict[str, Any]]) -> Any:
    kind = _field_type(field, named)[1]
    choice = rng.random()
    if choice < 0.12:
        return None
    if choice < 0.18:
        return ""
    if kind == "string":
        if field.get("valueset") or "idno" in field.get("checks", {}):
            return rng.choice(["999", "ZZ", "心梗", "A00", "I21.401", "36.0600", "01", "03", "1", "X",
                               "110105194912310021", "110105194913310021", "11010519491231002X",
                               "11010519491231002x", " 11010519491231002X ", "12345", "E12345678",
                               "440524188001010014", "110105194912310020"])
        return rng.choice([v, 12, 1.5, b"x", True, "x" * 60])
    if kind in ("int", "long"):
        return rng.choice([-1, 0, 5, 10**6, -(10**6), True, "12", 2.5, Decimal("3"), 101])
    if kind == "double":
        return rng.choice([-0.5, 0.0, -0.0, 1e9, 100.5, 7, -3, float("inf"), True, "1.0"])
    if kind == "decimal":
        return rng.choice([Decimal("-1.00"), Decimal("0.00"), Decimal("100.01"), Decimal("150000000.00"),
                           Decimal("-150000000.00"), Decimal("99.9999"), Decimal("-0"), 5, -5, 2.5, -2.5,
                           "12.30", "-1", True, Decimal("1E+3"), Decimal("12.3456789")])
    if kind == "ts":
        base = NOW + dt.timedelta(minutes=rng.choice([-10**6, -3000, -1, 9, 10, 11, 600, 60 * 24 * 400]))
        ms = int(base.timestamp() * 1000)
        return rng.choice([base, base.astimezone(_UTC8), base.replace(tzinfo=None), ms, ms + 1, str(ms),
                           base.date(), True, base + dt.timedelta(microseconds=rng.choice([1, 999, 500]))])
    if kind == "date":
        d = NOW.date() + dt.timedelta(days=rng.choice([-60000, -55000, -1, 0, 1, 2, 400]))
        return rng.choice([d, (d - dt.date(1970, 1, 1)).days, dt.datetime.combine(d, dt.time(), dt.timezone.utc),
                           str(d), True])
    if kind == "boolean":
        return rng.choice([False, 0, 1, "true"])
    if kind == "enum":
        return rng.choice(["c", "u", "d", "r", "x", 1])
    if kind == "array":
        if isinstance(v, list) and v and isinstance(v[0], dict):
            item = dict(v[0])
            t = _field_type(field, named)[2]
            items = named.get(t["items"], t["items"]) if isinstance(t["items"], str) else t["items"]
            for sub in items["fields"]:
                if rng.random() < 0.3:
                    item[sub["name"]] = _bad_value(rng, sub, item.get(sub["name"]), named)
            return rng.choice([[item], [v[0], item], (item,), [item, "junk"], "junk", []])
        return rng.choice([["a", 1], ("a",), "a"])
    return v


def perturb(rng: random.Random, ds: Dataset, full: bool) -> dict[str, Any]:
    rec = sample_record(ds, full=full)
    fields = [f for f in ds.fields]
    for _ in range(rng.choice([0, 1, 1, 2, 3, 5, 8])):
        f = rng.choice(fields)
        rec[f["name"]] = _bad_value(rng, f, rec.get(f["name"]), ds.named_types)
    if rng.random() < 0.3 and ds.rules:
        spec = rng.choice(ds.rules)
        for key in ("before", "after", "start", "end", "admission", "discharge", "birth", "event"):
            if key in spec and rng.random() < 0.6:
                rec[spec[key]] = _bad_value(rng, ds.field(spec[key]), rec.get(spec[key]), ds.named_types)
        for key in ("total", "whole", "amount", "quantity", "price", "field", "days", "closing", "opening"):
            if key in spec and rng.random() < 0.6:
                rec[spec[key]] = rng.choice([Decimal("7.00"), Decimal("-3.00"), Decimal("1000.0000"), 3, 9.5,
                                             Decimal("NaN"), None])
        for key in ("parts", "plus", "minus"):
            for p in spec.get(key, []):
                if rng.random() < 0.3:
                    rec[p] = rng.choice([Decimal("1.00"), Decimal("250.00"), 2, 1.5, None, "x"])
    if rng.random() < 0.1:
        rec["op"] = rng.choice(["d", "x", None, "u"])
    if rng.random() < 0.1:
        rec["unknown_extra"] = 1
    if rng.random() < 0.2:
        items = list(rec.items())
        rng.shuffle(items)
        rec = dict(items)
    return rec


def _outcome(fn: Any) -> Any:
    try:
        return fn()
    except Exception as exc:  # both sides must fail alike on values the checks cannot order (NaN)
        return ("raised", type(exc))


@pytest.mark.parametrize("seed", range(4))
def test_perturbed_records_match_reference(seed: int) -> None:
    rng = random.Random(seed)
    now_ms = to_ms(NOW)
    assert now_ms is not None
    cases = 0
    for ds in CATALOGUE:
        batch = []
        for _ in range(25):
            rec = perturb(rng, ds, full=rng.random() < 0.7)
            expected = _outcome(lambda: reference(ds, rec, now_ms))
            got = _outcome(lambda: check(ds.name, rec, now=NOW))
            assert got == expected, (ds.name, rec)
            if not isinstance(expected, tuple):
                batch.append((rec, expected))
            cases += 1
        assert check_batch(ds.name, [r for r, _ in batch], now=now_ms) == [e for _, e in batch]
    assert cases >= 1500


@pytest.mark.parametrize("name", DATASETS)
def test_samples_match_reference(name: str) -> None:
    ds = CATALOGUE[name]
    now_ms = to_ms(NOW)
    assert now_ms is not None
    for full in (True, False):
        for op in ("c", "d"):
            rec = sample_record(name, full=full, op=op)
            assert check(name, rec, now=NOW) == reference(ds, rec, now_ms)


def test_clock_forms_agree() -> None:
    rec = sample_record("inpatient_visit", admission_time=NOW + dt.timedelta(hours=1))
    by_dt = check("inpatient_visit", rec, now=NOW)
    assert by_dt == check("inpatient_visit", rec, now=to_ms(NOW))
    assert by_dt == check("inpatient_visit", rec, now=NOW.astimezone(_UTC8))
    assert "time.future" in [f.rule for f in by_dt]
    # A clock beyond what datetime can hold takes the general path and still answers.
    assert check("inpatient_visit", sample_record("inpatient_visit"), now=2**62) == []
