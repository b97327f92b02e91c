"""Conformance rules: check one standard record against its dataset.

``check(dataset, record)`` returns structured findings. A record with an ``error`` finding is
rejected (dead-letter topic); ``warning`` findings are only counted (dataset 60, 医疗机构上传数据质控).
Checks are compiled once per dataset from its Avro schema (field types, ``valueset``, ``checks``
tags) and its cross-field ``rules``, so a call costs a short loop over precomputed closures.

Values may arrive in Avro-Python form (``datetime``, ``date``, ``Decimal``) or as their raw Avro
encodings (epoch milliseconds, epoch days, numbers).
"""
from __future__ import annotations

import datetime as dt
import re
import time
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from functools import cached_property
from typing import Any, Callable, Iterable, Literal, NamedTuple

from hip.catalogue import Dataset, ValueSet, load_catalogue, load_valueset_info
from hip.records import OPS

Severity = Literal["error", "warning"]


@dataclass(frozen=True)
class Finding:
    """One problem found in a record."""

    rule: str
    field: str | None
    severity: Severity
    message: str


@dataclass(frozen=True)
class Rule:
    """A conformance rule: id, default severity, description (for docs and dataset 60)."""

    id: str
    severity: Severity
    description: str


RULES: tuple[Rule, ...] = (
    Rule("field.required", "error", "A field the schema declares non-null (business key, header) is missing or empty."),
    Rule("field.recommended", "warning", "A field the standard requires is missing; the record is kept (the hospital may lack it)."),
    Rule("field.type", "error", "A value does not have the field's Avro type (text in a number, a number in a date...)."),
    Rule("field.valueset", "error", "A coded value is not in the field's value set (warning when the value set is marked partial or unverified)."),
    Rule("header.op", "error", "The operation is not one of c, u, d, r."),
    Rule("id.check_digit", "warning", "A resident ID number (证件类别 01) fails GB 11643: 18 characters, a valid birth date, and the ISO 7064 MOD 11-2 check digit."),
    Rule("code.icd10", "error", "A diagnosis code does not have the shape of an ICD-10 (国家临床版 2.0) code."),
    Rule("code.icd9cm3", "error", "An operation code does not have the shape of an ICD-9-CM-3 (国家临床版 3.0) code."),
    Rule("time.future", "error", "An event lies in the future (beyond 10 minutes of clock skew; dates beyond today, local time). Fields for planned events are exempt."),
    Rule("time.order", "error", "Two times are out of order (e.g. discharge before admission, report before sampling)."),
    Rule("time.birth", "error", "The birth date is after the event it precedes (visit, admission), or more than 150 years before it."),
    Rule("time.within", "warning", "An event the dataset bounds in time lies outside the bound (e.g. death more than 24 hours after admission in 24小时内入院死亡记录)."),
    Rule("time.stay_days", "warning", "实际住院天数 differs from the discharge date minus the admission date (same-day stays count 1)."),
    Rule("amount.range", "error", "A money amount is negative where it may not be (refund lines and net statistics may), or implausibly large (warning above 100,000,000)."),
    Rule("quantity.range", "error", "A quantity, count or percentage is negative where it may not be, or a percentage exceeds 100."),
    Rule("value.range", "warning", "A measurement is outside its plausible range (e.g. body temperature outside 30-45 ℃)."),
    Rule("fee.sum", "warning", "Fee items do not add up to their total within the dataset's tolerance (e.g. the 24 病案首页 fee items and 总费用)."),
    Rule("value.sum", "warning", "Parts do not add up to their total (e.g. 出入量 items and the 入量/出量 totals)."),
    Rule("fee.part", "warning", "A 其中 sub-amount exceeds the amount it is part of (e.g. 抗菌药物费用 above 西药费)."),
    Rule("fee.line", "warning", "A line amount differs from quantity × unit price beyond the tolerance."),
    Rule("stock.balance", "warning", "Opening stock plus receipts minus issues differs from closing stock."),
)
RULE_IDS: dict[str, Rule] = {r.id: r for r in RULES}

CLOCK_SKEW_MS = 10 * 60 * 1000
DAY_MS = 86_400_000
LOCAL_OFFSET_MS = 8 * 3_600_000  # Asia/Shanghai has had no daylight saving since 1991
MAX_AMOUNT = Decimal("100000000")
_EPOCH_DATE = dt.date(1970, 1, 1)
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
_ONE_MS = dt.timedelta(milliseconds=1)
_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_ID_CHECK = "10X98765432"
_ID_SHAPE = re.compile(r"[0-9]{17}[0-9X]")

Check = Callable[[dict[str, Any], int, list[Finding]], None]


# ---------------------------------------------------------------- value helpers


def to_ms(value: Any) -> int | None:
    """Epoch milliseconds of a timestamp value (datetime or int); None when not a timestamp."""
    if value.__class__ is dt.datetime and value.tzinfo is not None:
        return (value - _EPOCH) // _ONE_MS
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.timezone.utc)
        return int(value.timestamp() * 1000)
    return None


def to_days(value: Any) -> int | None:
    """Epoch days of a date value (date or int); None when not a date."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, dt.datetime):
        return (value.date() - _EPOCH_DATE).days
    if isinstance(value, dt.date):
        return (value - _EPOCH_DATE).days
    return None


def to_decimal(value: Any) -> Decimal | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, Decimal):
        return value
    if isinstance(value, (int, float)):
        return Decimal(str(value))
    if isinstance(value, str):
        try:
            return Decimal(value)
        except InvalidOperation:
            return None
    return None


def id_number_problem(value: str) -> str | None:
    """Why a resident ID number fails GB 11643, or None when it passes."""
    v = value.strip().upper()
    if not _ID_SHAPE.fullmatch(v):
        return "must be 17 digits and a check character (digit or X)"
    try:
        dt.date(int(v[6:10]), int(v[10:12]), int(v[12:14]))
    except ValueError:
        return f"embedded birth date {v[6:14]} is not a date"
    expected = _ID_CHECK[sum(int(c) * w for c, w in zip(v[:17], _ID_WEIGHTS)) % 11]
    if v[17] != expected:
        return f"check digit is {v[17]}, expected {expected}"
    return None


def _finding(out: list[Finding], rule: str, field: str | None, message: str,
             severity: Severity | None = None) -> None:
    out.append(Finding(rule, field, severity or RULE_IDS[rule].severity, message))


# ---------------------------------------------------------------- field kinds


@dataclass(frozen=True)
class _FieldKind:
    name: str
    nullable: bool
    kind: str  # string, int, long, boolean, double, date, ts, decimal, enum, array, record
    items: Any = None  # record fields of array items
    symbols: tuple[str, ...] = ()


def _kind_of(field: dict[str, Any], named: dict[str, dict[str, Any]] | None = None) -> _FieldKind:
    t = field["type"]
    nullable = isinstance(t, list) and "null" in t
    if isinstance(t, list):
        t = next(x for x in t if x != "null")
    if isinstance(t, str):
        return _FieldKind(field["name"], nullable, t)
    logical = t.get("logicalType")
    if logical == "timestamp-millis":
        return _FieldKind(field["name"], nullable, "ts")
    if logical == "date":
        return _FieldKind(field["name"], nullable, "date")
    if logical == "decimal":
        return _FieldKind(field["name"], nullable, "decimal")
    if t["type"] == "enum":
        return _FieldKind(field["name"], nullable, "enum", symbols=tuple(t["symbols"]))
    if t["type"] == "array":
        items = t["items"]
        if isinstance(items, str) and named:
            items = named.get(items, items)
        return _FieldKind(field["name"], nullable, "array",
                          items=items.get("fields") if isinstance(items, dict) else None)
    return _FieldKind(field["name"], nullable, t["type"])


_TYPE_OK: dict[str, Callable[[Any], bool]] = {
    "string": lambda v: isinstance(v, str),
    "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "long": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "double": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "ts": lambda v: to_ms(v) is not None,
    "date": lambda v: to_days(v) is not None,
    "decimal": lambda v: to_decimal(v) is not None and not isinstance(v, str),
    "enum": lambda v: isinstance(v, str),
    "array": lambda v: isinstance(v, (list, tuple)),
}


# ---------------------------------------------------------------- compilation


_FAST_TYPES: dict[str, frozenset[type]] = {
    "string": frozenset({str}), "int": frozenset({int}), "long": frozenset({int}),  # exact types: bool fails
    "boolean": frozenset({bool}), "double": frozenset({float, int}),
    "ts": frozenset({dt.datetime, int}), "date": frozenset({dt.date, int}),
    "decimal": frozenset({Decimal, int, float}), "enum": frozenset({str}), "array": frozenset({list, tuple}),
}
TypeSpec = tuple[str, frozenset[type], Callable[[Any], bool], str]


def _type_finding(out: list[Finding], where: str, expected: str, v: Any) -> None:
    _finding(out, "field.type", where, f"{where}: expected {expected}, got {type(v).__name__} {v!r:.40}")


FieldCheck = tuple[str, Check]  # (what it checks: valueset, idno, future, range, array; the check)
FieldGroup = tuple[dict[str, Any], _FieldKind, list[FieldCheck]]


def _value_checks(fields: list[dict[str, Any]], path: Callable[[str], str],
                  named: dict[str, dict[str, Any]], types: list[TypeSpec] | None = None,
                  future: list[str] | None = None, groups: list[FieldGroup] | None = None) -> list[Check]:
    """Per-field checks (type, value set, code shape, time, range) for one record level.

    At the top level, type checks and timestamp-future checks are returned as data in ``types``
    and ``future`` so that ``check`` runs them in one tight loop. ``groups`` receives each
    field's remaining checks, tagged, for the generated fast path.
    """
    checks: list[Check] = []
    for field in fields:
        kind = _kind_of(field, named)
        name = kind.name
        where = path(name)
        type_ok = _TYPE_OK.get(kind.kind)

        if type_ok is not None and types is not None:
            types.append((name, _FAST_TYPES[kind.kind], type_ok, kind.kind))
        elif type_ok is not None:
            def type_check(rec: dict[str, Any], now: int, out: list[Finding], name: str = name,
                           where: str = where, ok: Callable[[Any], bool] = type_ok,
                           expected: str = kind.kind) -> None:
                v = rec.get(name)
                if v is not None and not ok(v):
                    _type_finding(out, where, expected, v)
            checks.append(type_check)

        tagged = _field_checks(field, kind, where, named, future)
        if groups is not None:
            groups.append((field, kind, tagged))
        checks.extend(c for _, c in tagged)
    return checks


def _field_checks(field: dict[str, Any], kind: _FieldKind, where: str, named: dict[str, dict[str, Any]],
                  future: list[str] | None) -> list[FieldCheck]:
    """The checks of one field that follow its type check, in the order their findings appear."""
    name = kind.name
    tags: dict[str, str] = field.get("checks", {})
    checks: list[FieldCheck] = []
    vs_id = field.get("valueset")
    if vs_id:
        checks.append(("valueset", _valueset_check(name, where, load_valueset_info(vs_id))))

    if "idno" in tags:
        checks.append(("idno", _idno_check(name, where, tags["idno"] or None)))

    if kind.kind in ("ts", "date") and "future" not in tags:
        if future is not None and kind.kind == "ts":
            future.append(name)
        else:
            checks.append(("future", _future_check(name, where, kind.kind)))

    if kind.kind == "decimal" or kind.kind in ("int", "long", "double"):
        checks.append(("range", _range_check(name, where, field, tags)))

    if kind.kind == "array" and kind.items:
        checks.append(("array", _array_check(name, kind.items, named)))
    return checks


def _valueset_check(name: str, where: str, vs: ValueSet) -> Check:
    if vs.kind == "pattern":
        pattern = re.compile(vs.pattern or "")
        rule = {"ICD-10": "code.icd10", "ICD-9-CM-3": "code.icd9cm3"}.get(vs.id, "field.valueset")
        severity: Severity = "error" if vs.strict else "warning"

        def shape(rec: dict[str, Any], now: int, out: list[Finding]) -> None:
            v = rec.get(name)
            if isinstance(v, str) and v and not pattern.fullmatch(v):
                _finding(out, rule, where, f"{where}: {v!r} is not a {vs.id} code", severity)
        return shape

    codes = frozenset(vs.codes)
    severity = "error" if vs.strict else "warning"

    def member(rec: dict[str, Any], now: int, out: list[Finding]) -> None:
        v = rec.get(name)
        if isinstance(v, str) and v and v not in codes:
            _finding(out, "field.valueset", where, f"{where}: {v!r} is not in value set {vs.id}", severity)
    return member


def _idno_check(name: str, where: str, type_field: str | None) -> Check:
    def idno(rec: dict[str, Any], now: int, out: list[Finding]) -> None:
        v = rec.get(name)
        if not isinstance(v, str) or not v:
            return
        id_type = rec.get(type_field) if type_field else None
        # Without a type, an 18-character number is taken for a resident ID; other documents are free text.
        if id_type == "01" or (id_type is None and len(v.strip()) == 18):
            problem = id_number_problem(v)
            if problem:
                _finding(out, "id.check_digit", where, f"{where}: resident ID number {problem}")
    return idno


def _future_check(name: str, where: str, kind: str) -> Check:
    if kind == "ts":
        def future_ts(rec: dict[str, Any], now: int, out: list[Finding]) -> None:
            v = to_ms(rec.get(name))
            if v is not None and v > now + CLOCK_SKEW_MS:
                _finding(out, "time.future", where,
                         f"{where}: {_iso_ms(v)} is in the future (now {_iso_ms(now)}); check the source time zone")
        return future_ts

    def future_date(rec: dict[str, Any], now: int, out: list[Finding]) -> None:
        v = to_days(rec.get(name))
        if v is not None and v > (now + LOCAL_OFFSET_MS) // DAY_MS:
            _finding(out, "time.future", where, f"{where}: {_EPOCH_DATE + dt.timedelta(days=v)} is after today")
    return future_date


def _range_check(name: str, where: str, field: dict[str, Any], tags: dict[str, str]) -> Check:
    signed = "signed" in tags
    pct = "pct" in tags
    t = field["type"][1] if isinstance(field["type"], list) else field["type"]
    is_money = isinstance(t, dict) and t.get("logicalType") == "decimal" and t.get("scale") == 2 \
        and t.get("precision", 0) >= 12
    rule = "amount.range" if is_money else "quantity.range"

    def rng(rec: dict[str, Any], now: int, out: list[Finding]) -> None:
        v = rec.get(name)
        if v is None or v.__class__ is bool:
            return
        if v.__class__ is int and v >= 0 and not pct:
            return
        d = to_decimal(v)
        if d is None:
            return
        if d < 0 and not signed:
            _finding(out, rule, where, f"{where}: {d} is negative")
        elif pct and d > 100:
            _finding(out, rule, where, f"{where}: {d}% exceeds 100")
        elif is_money and abs(d) > MAX_AMOUNT:
            _finding(out, rule, where, f"{where}: {d} is implausibly large", "warning")
    return rng


def _array_check(name: str, item_fields: list[dict[str, Any]], named: dict[str, dict[str, Any]]) -> Check:
    per_item: dict[int, list[Check]] = {}

    def item_checks(i: int) -> list[Check]:
        # Paths name the item index, so checks are compiled per index on first use (lists are short).
        if i not in per_item:
            per_item[i] = _value_checks(item_fields, lambda f: f"{name}[{i}].{f}", named)
        return per_item[i]

    def arr(rec: dict[str, Any], now: int, out: list[Finding]) -> None:
        items = rec.get(name)
        if not isinstance(items, (list, tuple)):
            return
        for i, item in enumerate(items):
            if isinstance(item, dict):
                for c in item_checks(i):
                    c(item, now, out)
    return arr


def _iso_ms(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _instant(rec: dict[str, Any], name: str, kinds: dict[str, str]) -> int | None:
    """Milliseconds of a ts field, or of the start of a date field (for mixed comparisons)."""
    v = rec.get(name)
    if v is None:
        return None
    if kinds.get(name) == "date":
        d = to_days(v)
        return None if d is None else d * DAY_MS
    return to_ms(v)


def _cross_checks(ds: Dataset, kinds: dict[str, str]) -> list[Check]:
    """One check per rule of ``ds.rules``, in the same order."""
    checks: list[Check] = []
    for spec in ds.rules:
        kind = spec["rule"]
        severity: Severity | None = spec.get("severity")
        if kind == "order":
            checks.append(_order_check(spec["before"], spec["after"], kinds, severity))
        elif kind == "birth":
            checks.append(_birth_check(spec["birth"], spec["event"], kinds, severity))
        elif kind == "sum":
            checks.append(_sum_check(spec["total"], spec["parts"], Decimal(str(spec["tolerance"])), severity,
                                     spec.get("id", "fee.sum")))
        elif kind == "part":
            checks.append(_part_check(spec["whole"], spec["parts"], severity))
        elif kind == "line":
            checks.append(_line_check(spec["amount"], spec["quantity"], spec["price"],
                                      Decimal(str(spec["tolerance"])), severity))
        elif kind == "stay_days":
            checks.append(_stay_check(spec["admission"], spec["discharge"], spec["days"], severity))
        elif kind == "within_hours":
            checks.append(_within_check(spec["start"], spec["end"], int(spec["hours"]), kinds, severity))
        elif kind == "range":
            checks.append(_value_range_check(spec["field"], spec["min"], spec["max"], severity))
        elif kind == "balance":
            checks.append(_balance_check(spec, severity))
        else:
            raise ValueError(f"dataset {ds.name}: unknown rule kind {kind!r}")
    return checks


def _order_check(before: str, after: str, kinds: dict[str, str], severity: Severity | None) -> Check:
    def order(rec: dict[str, Any], now: int, out: list[Finding]) -> None:
        a, b = _instant(rec, before, kinds), _instant(rec, after, kinds)
        if a is not None and b is not None and b < a:
            _finding(out, "time.order", after, f"{after} is before {before}", severity)
    return order


def _birth_check(birth: str, event: str, kinds: dict[str, str], severity: Severity | None) -> Check:
    def born(rec: dict[str, Any], now: int, out: list[Finding]) -> None:
        b = to_days(rec.get(birth))
        e = _instant(rec, event, kinds)
        if b is None or e is None:
            return
        event_day = (e + LOCAL_OFFSET_MS) // DAY_MS if kinds.get(event) == "ts" else e // DAY_MS
        if b > event_day:
            _finding(out, "time.birth", birth, f"{birth} is after {event}", severity)
        elif event_day - b > 150 * 366:
            _finding(out, "time.birth", birth, f"{birth} is more than 150 years before {event}", "warning")
    return born


def _sum(rec: dict[str, Any], parts: Iterable[str]) -> tuple[Decimal, int]:
    total, present = Decimal(0), 0
    for p in parts:
        d = to_decimal(rec.get(p))
        if d is not None:
            total += d
            present += 1
    return total, present


def _sum_check(total: str, parts: list[str], tolerance: Decimal, severity: Severity | None,
               rule_id: str = "fee.sum") -> Check:
    def summed(rec: dict[str, Any], now: int, out: list[Finding]) -> None:
        t = to_decimal(rec.get(total))
        if t is None:
            return
        s, present = _sum(rec, parts)
        if present and abs(s - t) > tolerance:
            _finding(out, rule_id, total, f"{total} is {t} but its {len(parts)} items add up to {s}", severity)
    return summed


def _part_check(whole: str, parts: list[str], severity: Severity | None) -> Check:
    def part(rec: dict[str, Any], now: int, out: list[Finding]) -> None:
        w = to_decimal(rec.get(whole))
        if w is None:
            return
        s, present = _sum(rec, parts)
        if present and s > w + Decimal("0.01"):
            _finding(out, "fee.part", parts[0], f"{', '.join(parts)} ({s}) exceed {whole} ({w})", severity)
    return part


def _line_check(amount: str, quantity: str, price: str, tolerance: Decimal,
                severity: Severity | None) -> Check:
    def line(rec: dict[str, Any], now: int, out: list[Finding]) -> None:
        a, q, p = (to_decimal(rec.get(x)) for x in (amount, quantity, price))
        if a is None or q is None or p is None:
            return
        if abs(q * p - a) > tolerance + abs(a) * Decimal("0.001"):
            _finding(out, "fee.line", amount, f"{amount} {a} differs from {quantity} × {price} = {q * p}", severity)
    return line


def _stay_check(admission: str, discharge: str, days: str, severity: Severity | None) -> Check:
    def stay(rec: dict[str, Any], now: int, out: list[Finding]) -> None:
        a, d, n = to_ms(rec.get(admission)), to_ms(rec.get(discharge)), rec.get(days)
        if a is None or d is None or not isinstance(n, int) or d < a:
            return
        expected = max(1, (d + LOCAL_OFFSET_MS) // DAY_MS - (a + LOCAL_OFFSET_MS) // DAY_MS)
        if n != expected:
            _finding(out, "time.stay_days", days, f"{days} is {n}, dates give {expected}", severity)
    return stay


def _within_check(start: str, end: str, hours: int, kinds: dict[str, str], severity: Severity | None) -> Check:
    def within(rec: dict[str, Any], now: int, out: list[Finding]) -> None:
        a, b = _instant(rec, start, kinds), _instant(rec, end, kinds)
        if a is not None and b is not None and b - a > hours * 3_600_000:
            _finding(out, "time.within", end, f"{end} is more than {hours} h after {start}", severity)
    return within


def _value_range_check(name: str, low: float, high: float, severity: Severity | None) -> Check:
    lo, hi = Decimal(str(low)), Decimal(str(high))

    def value_range(rec: dict[str, Any], now: int, out: list[Finding]) -> None:
        d = to_decimal(rec.get(name))
        if d is not None and not lo <= d <= hi:
            _finding(out, "value.range", name, f"{name} {d} is outside {lo}..{hi}", severity)
    return value_range


def _balance_check(spec: dict[str, Any], severity: Severity | None) -> Check:
    opening, closing = spec["opening"], spec["closing"]
    plus, minus = spec["plus"], spec["minus"]
    tolerance = Decimal(str(spec["tolerance"]))

    def balance(rec: dict[str, Any], now: int, out: list[Finding]) -> None:
        o, c = to_decimal(rec.get(opening)), to_decimal(rec.get(closing))
        if o is None or c is None:
            return
        expected = o + _sum(rec, plus)[0] - _sum(rec, minus)[0]
        if abs(expected - c) > tolerance:
            _finding(out, "stock.balance", closing, f"{closing} is {c}, movements give {expected}", severity)
    return balance


# ---------------------------------------------------------------- fast paths
#
# Almost every record conforms, so the fast path only screens: for each check it evaluates a cheap
# condition that holds whenever the check could report something (or raise), and only then runs the
# check itself. Findings therefore always come from the checks above, with the same text and order.


def _screened_order(before: str, after: str, kinds: dict[str, str], slow: Check) -> Check:
    same = kinds.get(before) == kinds.get(after)
    exact = dt.date if same and kinds.get(before) == "date" else dt.datetime if same and kinds.get(before) == "ts" \
        else None

    def order(rec: dict[str, Any], now: int, out: list[Finding]) -> None:
        b = rec.get(after)
        if b is None:
            return
        a = rec.get(before)
        if a is None:
            return
        cls = a.__class__
        if cls is b.__class__ and exact is not None and (
                cls is exact and (cls is dt.date or (a.tzinfo is _UTC and b.tzinfo is _UTC)) or cls is int):
            # Milliseconds are floored, so b < a is implied by the check's condition.
            if b < a:
                slow(rec, now, out)
            return
        slow(rec, now, out)
    return order


def _decimals(rec: dict[str, Any], names: Iterable[str]) -> tuple[Decimal, int] | None:
    """``_sum`` when every present value is a Decimal (same additions, same order); else None."""
    total, present = Decimal(0), 0
    for p in names:
        d = rec.get(p)
        if d is None:
            continue
        if d.__class__ is not Decimal:
            return None
        total += d
        present += 1
    return total, present


def _screened_sum(total: str, parts: list[str], tolerance: Decimal, slow: Check) -> Check:
    def summed(rec: dict[str, Any], now: int, out: list[Finding]) -> None:
        t = rec.get(total)
        if t is None:
            return
        s = _decimals(rec, parts) if t.__class__ is Decimal else None
        if s is None or (s[1] and abs(s[0] - t) > tolerance):
            slow(rec, now, out)
    return summed


def _screened_part(whole: str, parts: list[str], slow: Check) -> Check:
    cent = Decimal("0.01")

    def part(rec: dict[str, Any], now: int, out: list[Finding]) -> None:
        w = rec.get(whole)
        if w is None:
            return
        s = _decimals(rec, parts) if w.__class__ is Decimal else None
        if s is None or (s[1] and s[0] > w + cent):
            slow(rec, now, out)
    return part


def _screened_line(amount: str, quantity: str, price: str, tolerance: Decimal, slow: Check) -> Check:
    rel = Decimal("0.001")

    def line(rec: dict[str, Any], now: int, out: list[Finding]) -> None:
        a, q, p = rec.get(amount), rec.get(quantity), rec.get(price)
        if (a.__class__ is Decimal or a is None) and (q.__class__ is Decimal or q is None) \
                and (p.__class__ is Decimal or p is None):
            if a is None or q is None or p is None or abs(q * p - a) <= tolerance + abs(a) * rel:
                return
        slow(rec, now, out)
    return line


def _screened_range(name: str, low: float, high: float, slow: Check) -> Check:
    lo, hi = Decimal(str(low)), Decimal(str(high))

    def value_range(rec: dict[str, Any], now: int, out: list[Finding]) -> None:
        v = rec.get(name)
        if v is None or (v.__class__ is Decimal and lo <= v <= hi):
            return
        slow(rec, now, out)
    return value_range


def _screened_cross(spec: dict[str, Any], kinds: dict[str, str], slow: Check) -> Check:
    kind = spec["rule"]
    if kind == "order":
        return _screened_order(spec["before"], spec["after"], kinds, slow)
    if kind == "sum":
        return _screened_sum(spec["total"], spec["parts"], Decimal(str(spec["tolerance"])), slow)
    if kind == "part":
        return _screened_part(spec["whole"], spec["parts"], slow)
    if kind == "line":
        return _screened_line(spec["amount"], spec["quantity"], spec["price"], Decimal(str(spec["tolerance"])),
                              slow)
    if kind == "range":
        return _screened_range(spec["field"], spec["min"], spec["max"], slow)
    return slow


_UTC = dt.timezone.utc
_GOOD_IDS: set[str] = set()
_GOOD_IDS_MAX = 65_536


def _idno_ok(v: str, id_type: Any) -> bool:
    """True when the ID number check of a non-empty string cannot report anything.

    Valid numbers are remembered: the same patients recur across many records.
    """
    if id_type is None:
        if len(v.strip()) != 18:
            return True
    elif id_type.__class__ is str:
        if id_type != "01":
            return True
    else:
        return False
    if v in _GOOD_IDS:
        return True
    if id_number_problem(v) is None:
        if len(_GOOD_IDS) >= _GOOD_IDS_MAX:
            _GOOD_IDS.clear()
        _GOOD_IDS.add(v)
        return True
    return False


class _Clock(NamedTuple):
    """``now`` in the forms the generated checks compare against, computed once per batch."""

    now_ms: int
    limit: int  # latest timestamp (ms) that is not in the future
    first_future: dt.datetime | None  # earliest aware datetime whose ms exceed ``limit``
    today: int  # local date, epoch days
    today_date: dt.date | None


def _make_clock(now_ms: int) -> _Clock:
    limit = now_ms + CLOCK_SKEW_MS
    today = (now_ms + LOCAL_OFFSET_MS) // DAY_MS
    try:
        first_future: dt.datetime | None = _EPOCH + dt.timedelta(milliseconds=limit + 1)
        today_date: dt.date | None = _EPOCH_DATE + dt.timedelta(days=today)
    except (OverflowError, ValueError):  # a clock outside datetime's range: the general path handles it
        first_future = today_date = None
    return _Clock(now_ms, limit, first_future, today, today_date)


_last_clock: _Clock = _make_clock(0)
_last_now: tuple[Any, _Clock] = (None, _last_clock)


def _clock(now: dt.datetime | int | None) -> _Clock:
    global _last_clock, _last_now
    if now is None:
        now_ms = int(time.time() * 1000)
    else:
        last = _last_now
        if last[0] is now:
            return last[1]
        to = to_ms(now)
        assert to is not None
        now_ms = to
    clock = _last_clock
    if clock.now_ms != now_ms:
        clock = _last_clock = _make_clock(now_ms)
    if now is not None:
        _last_now = (now, clock)
    return clock


# ---------------------------------------------------------------- generated checks
#
# One function per dataset, built from the fixed templates below. Field names enter the source
# only after matching _IDENT; every other value (value sets, patterns, checks) is passed in the
# function's namespace, never as text.

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_FAST_CLASS = {"string": "v.__class__ is str", "enum": "v.__class__ is str", "int": "v.__class__ is int",
               "long": "v.__class__ is int", "double": "(v.__class__ is float or v.__class__ is int)",
               "decimal": "v.__class__ is Decimal", "boolean": "v.__class__ is bool"}
Run = Callable[[dict[str, Any], _Clock, list[Finding]], None]


class _Source:
    def __init__(self) -> None:
        self.lines: list[str] = []
        self.defs: list[str] = []  # helper functions, placed before the main one
        self.env: dict[str, Any] = {"Decimal": Decimal, "datetime": dt.datetime, "date": dt.date, "_UTC": _UTC,
                                    "_MAX_AMOUNT": MAX_AMOUNT, "_idno_ok": _idno_ok,
                                    "_D0": Decimal(0), "_D100": Decimal(100)}

    def const(self, value: Any) -> str:
        name = f"_k{len(self.env)}"
        self.env[name] = value
        return name

    def add(self, depth: int, line: str) -> None:
        self.lines.append("    " * depth + line)


def _guard(src: _Source, tag: str, field: dict[str, Any], kind: _FieldKind, item: bool) -> str | None:
    """A condition on ``v`` (of the field's fast class) that holds whenever check ``tag`` may report."""
    tags: dict[str, str] = field.get("checks", {})
    if tag == "valueset" and kind.kind in ("string", "enum"):
        vs = load_valueset_info(field["valueset"])
        if vs.kind == "pattern":
            return f"v and not {src.const(re.compile(vs.pattern or '').fullmatch)}(v)"
        return f"v not in {src.const(frozenset(vs.codes))} and v"
    if tag == "idno" and kind.kind in ("string", "enum"):
        type_field = tags["idno"] or None
        if type_field is None:
            return "v and not _idno_ok(v, None)"
        if not _IDENT.fullmatch(type_field):
            return None
        return f"v and not _idno_ok(v, {'item' if item else 'rec'}.get({type_field!r}))"
    if tag == "range" and kind.kind in ("int", "long", "double", "decimal"):
        t = field["type"][1] if isinstance(field["type"], list) else field["type"]
        is_money = isinstance(t, dict) and t.get("logicalType") == "decimal" and t.get("scale") == 2 \
            and t.get("precision", 0) >= 12
        # Decimal constants compare faster with a Decimal, with the same result and signals.
        dec = kind.kind == "decimal"
        cond = ["not v >= 0" if kind.kind == "double" else "v < _D0" if dec else "v < 0"]
        if "pct" in tags:
            cond.append("v > _D100" if dec else "v > 100")
        if is_money:
            cond.append("v > _MAX_AMOUNT")
        return " or ".join(cond)
    return None


def _emit_field(src: _Source, field: dict[str, Any], kind: _FieldKind, tagged: list[FieldCheck],
                future: frozenset[str], named: dict[str, dict[str, Any]]) -> bool:
    """Source screening one top-level field; False when no template fits (the caller then falls back)."""
    name, k = kind.name, kind.kind
    if not _IDENT.fullmatch(name):
        return False
    calls = [f"{src.const(c)}(rec, now_ms, out)" for _, c in tagged]
    src.add(1, f"v = g({name!r})")
    tags = [t for t, _ in tagged]
    if k == "ts" and not tags:
        if name in future:
            src.add(1, "if v.__class__ is datetime:")
            src.add(2, "if v.tzinfo is not _UTC or v >= first_future:")
            src.add(3, "bad = True")
            src.add(1, "elif v.__class__ is int:")
            src.add(2, "if v > limit:")
            src.add(3, "bad = True")
            src.add(1, "elif v is not None:")
            src.add(2, "bad = True")
        else:
            src.add(1, "if v.__class__ is not datetime and v.__class__ is not int and v is not None:")
            src.add(2, "bad = True")
        return True
    if k == "date" and tags in ([], ["future"]):
        if not tags:
            src.add(1, "if v.__class__ is not date and v.__class__ is not int and v is not None:")
            src.add(2, "bad = True")
            return True
        src.add(1, "if v.__class__ is date:")
        src.add(2, "if v > today_date:")
        src.add(3, calls[0])
        src.add(1, "elif v.__class__ is int:")
        src.add(2, "if v > today:")
        src.add(3, calls[0])
        src.add(1, "elif v is not None:")
        src.add(2, "if v.__class__ is not datetime:")
        src.add(3, "bad = True")
        src.add(2, calls[0])
        return True
    if k == "array" and tags in ([], ["array"]):
        if not tags:
            src.add(1, "if v.__class__ is not list and v.__class__ is not tuple and v is not None:")
            src.add(2, "bad = True")
            return True
        items_ok = _items_function(src, kind, named)
        src.add(1, "if v.__class__ is list:")
        if items_ok is None:
            src.add(2, calls[0])
        else:
            src.add(2, f"if not {items_ok}(v, clk):")
            src.add(3, calls[0])
        src.add(1, "elif v is not None:")
        src.add(2, "if v.__class__ is not tuple:")
        src.add(3, "bad = True")
        src.add(2, calls[0])
        return True
    fast = _FAST_CLASS.get(k)
    guards = [_guard(src, t, field, kind, False) for t in tags]
    if fast is None or None in guards or k in ("ts", "date", "array"):
        # Rare shapes: run every check whenever a value is present.
        src.add(1, "if v is not None:")
        if k in _FAST_TYPES:
            src.add(2, "bad = True")
        for c in calls:
            src.add(2, c)
        if not calls and k not in _FAST_TYPES:
            src.add(2, "pass")
        return True
    if not calls:
        src.add(1, f"if not {fast} and v is not None:")
        src.add(2, "bad = True")
        return True
    src.add(1, f"if {fast}:")
    for guard, c in zip(guards, calls):
        src.add(2, f"if {guard}:")
        src.add(3, c)
    src.add(1, "elif v is not None:")
    src.add(2, f"if v.__class__ not in {src.const(_FAST_TYPES[k])}:")
    src.add(3, "bad = True")
    for c in calls:
        src.add(2, c)
    return True


def _items_function(src: _Source, kind: _FieldKind, named: dict[str, dict[str, Any]]) -> str | None:
    """Name of a generated ``(items, clock) -> bool``: True when no item check can report anything."""
    fn = f"_items{len(src.env)}"
    body: list[str] = []
    sub = _Source()
    sub.env = src.env  # shared namespace, separate lines
    for field in kind.items:
        fk = _kind_of(field, named)
        name, k = fk.name, fk.kind
        if not _IDENT.fullmatch(name):
            return None
        tags = [t for t, _ in _field_checks(field, fk, name, named, None)]
        has_type = k in _TYPE_OK
        if not tags and not has_type:
            continue
        sub.lines = []
        sub.add(2, f"v = g({name!r})")
        sub.add(2, "if v is not None:")
        if k == "ts" and tags in ([], ["future"]):
            sub.add(3, "if v.__class__ is datetime:")
            if tags:
                sub.add(4, "if v.tzinfo is not _UTC or v >= first_future:")
                sub.add(5, "return False")
                sub.add(3, "elif v.__class__ is not int or v > limit:")
            else:
                sub.add(4, "pass")
                sub.add(3, "elif v.__class__ is not int:")
            sub.add(4, "return False")
        elif k == "date" and tags in ([], ["future"]):
            sub.add(3, "if v.__class__ is date:")
            if tags:
                sub.add(4, "if v > today_date:")
                sub.add(5, "return False")
                sub.add(3, "elif v.__class__ is not int or v > today:")
            else:
                sub.add(4, "pass")
                sub.add(3, "elif v.__class__ is not int:")
            sub.add(4, "return False")
        else:
            fast = _FAST_CLASS.get(k)
            guards = [_guard(sub, t, field, fk, True) for t in tags]
            if fast is None or None in guards:
                sub.add(3, "return False")
            else:
                sub.add(3, f"if not {fast}:")
                sub.add(4, "return False")
                for guard in guards:
                    sub.add(3, f"if {guard}:")
                    sub.add(4, "return False")
        body.extend(sub.lines)
    src.defs += [
        f"def {fn}(items, clk):",
        "    now_ms, limit, first_future, today, today_date = clk",
        "    for item in items:",
        "        if item.__class__ is not dict:",
        "            return False",
        "        g = item.get",
        *body,
        "    return True",
        "",
    ]
    src.env[fn] = None  # reserves the name
    return fn


def _generate(ds: Dataset, required: tuple[str, ...], recommended: tuple[str, ...], groups: list[FieldGroup],
              cross: list[Check], types: dict[str, TypeSpec], future: frozenset[str]) -> Run | None:
    if not all(_IDENT.fullmatch(n) for n in (*required, *recommended)):
        return None
    src = _Source()
    # Findings are frozen, so the constant ones are built once and shared.
    src.env.update(_bad_op=_bad_op, _OPS=OPS,
                   _type_pass=_type_pass, _TYPES=types, _FUTURE=future)
    head = ["def _run(rec, clk, out):",
            "    g = rec.get",
            "    now_ms, limit, first_future, today, today_date = clk"]
    src.lines = []
    for name in required:
        src.add(1, f"v = g({name!r})")
        src.add(1, "if v is None or v == '':")
        src.add(2, f"out.append({src.const(_required_finding(name))})")
    src.add(1, "op = g('op')")
    src.add(1, "if op is not None and op not in _OPS:")
    src.add(2, "_bad_op(out, op)")
    src.add(1, "if op == 'd':")
    src.add(2, "return")
    for name in recommended:
        src.add(1, f"v = g({name!r})")
        src.add(1, "if v is None or v == '':")
        src.add(2, f"out.append({src.const(_recommended_finding(name))})")
    src.add(1, "mark = len(out)")
    src.add(1, "bad = False")
    body = src.lines
    for field, kind, tagged in groups:
        src.lines = []
        if not _emit_field(src, field, kind, tagged, future, ds.named_types):
            return None
        body.extend(src.lines)
    src.lines = body
    for c in cross:
        src.add(1, f"{src.const(c)}(rec, now_ms, out)")
    # Type and future-timestamp findings come first and in the record's key order, as in _type_pass.
    src.add(1, "if bad:")
    src.add(2, "out[mark:mark] = _type_pass(_TYPES, _FUTURE, rec, now_ms)")
    text = "\n".join([*src.defs, *head, *src.lines, ""])
    src.env["__source__"] = text
    code = compile(text, f"<conformance {ds.name}>", "exec")
    exec(code, src.env)  # noqa: S102 - source built from the fixed templates above
    run: Run = src.env["_run"]
    return run


def _required_finding(name: str) -> Finding:
    return Finding("field.required", name, RULE_IDS["field.required"].severity, f"{name} is required")


def _recommended_finding(name: str) -> Finding:
    return Finding("field.recommended", name, RULE_IDS["field.recommended"].severity, f"{name} is missing")


def _required(out: list[Finding], name: str) -> None:
    out.append(_required_finding(name))


def _recommended(out: list[Finding], name: str) -> None:
    out.append(_recommended_finding(name))


def _bad_op(out: list[Finding], op: Any) -> None:
    _finding(out, "header.op", "op", f"op {op!r} is not one of {', '.join(OPS)}")


def _type_pass(types: dict[str, TypeSpec], future: frozenset[str], record: dict[str, Any],
               now_ms: int) -> list[Finding]:
    """Type and future-timestamp findings, in the record's key order."""
    out: list[Finding] = []
    limit = now_ms + CLOCK_SKEW_MS
    # One pass over the record: real records are sparse, and most fields are strings.
    for name, v in record.items():
        if v is None:
            continue
        spec = types.get(name)
        if spec is None:
            continue
        if v.__class__ not in spec[1] and not spec[2](v):
            _type_finding(out, name, spec[3], v)
        elif name in future:
            ms = to_ms(v)
            if ms is not None and ms > limit:
                _finding(out, "time.future", name,
                         f"{name}: {_iso_ms(ms)} is in the future (now {_iso_ms(now_ms)}); check the source time zone")
    return out


@dataclass(frozen=True)
class _Plan:
    required: tuple[str, ...]
    recommended: tuple[str, ...]
    types: dict[str, TypeSpec]
    future_ts: frozenset[str]
    checks: tuple[Check, ...]
    run: Run | None = None  # the generated fast path; None when some name did not fit the templates

    @cached_property
    def expected(self) -> tuple[str, ...]:
        """The required fields, then the recommended ones (dataset 60 counts those left empty)."""
        return (*self.required, *self.recommended)


def _compile(ds: Dataset) -> _Plan:
    fields = ds.fields
    required = tuple(f["name"] for f in fields if not _kind_of(f).nullable)
    recommended = tuple(f["name"] for f in fields if "should" in f.get("checks", {}))
    kinds = {f["name"]: _kind_of(f).kind for f in fields}
    types: list[TypeSpec] = []
    future: list[str] = []
    groups: list[FieldGroup] = []
    checks = _value_checks([f for f in fields if f["name"] != "op"], lambda n: n, ds.named_types,
                           types, future, groups)
    cross = _cross_checks(ds, kinds)
    checks.extend(cross)
    type_map, future_ts = {t[0]: t for t in types}, frozenset(future)
    screened = [_screened_cross(spec, kinds, c) for spec, c in zip(ds.rules, cross)]
    run = _generate(ds, required, recommended, groups, screened, type_map, future_ts)
    return _Plan(required, recommended, type_map, future_ts, tuple(checks), run)


_PLANS: dict[str, _Plan] = {}


def plan_for(dataset_name: str) -> _Plan:
    plan = _PLANS.get(dataset_name)
    if plan is None:
        plan = _PLANS[dataset_name] = _compile(load_catalogue()[dataset_name])
    return plan


def _check_general(plan: _Plan, record: dict[str, Any], now_ms: int, out: list[Finding]) -> None:
    """The checks one by one, without the generated screening."""
    for name in plan.required:
        v = record.get(name)
        if v is None or v == "":
            _required(out, name)
    op = record.get("op")
    if op is not None and op not in OPS:
        _bad_op(out, op)
    # A delete carries the key; its other fields may be empty on purpose.
    if op == "d":
        return
    for name in plan.recommended:
        v = record.get(name)
        if v is None or v == "":
            _recommended(out, name)
    out.extend(_type_pass(plan.types, plan.future_ts, record, now_ms))
    for c in plan.checks:
        c(record, now_ms, out)


def check(dataset_name: str, record: dict[str, Any], *, now: dt.datetime | int | None = None) -> list[Finding]:
    """All findings for ``record`` of ``dataset_name``; empty when the record conforms."""
    plan = _PLANS.get(dataset_name)
    if plan is None:
        plan = plan_for(dataset_name)
    clock = _clock(now)
    out: list[Finding] = []
    if plan.run is not None and clock.first_future is not None and clock.today_date is not None:
        plan.run(record, clock, out)
    else:
        _check_general(plan, record, clock.now_ms, out)
    return out


def check_batch(dataset_name: str, records: Iterable[dict[str, Any]], *,
                now: dt.datetime | int | None = None) -> list[list[Finding]]:
    """``check`` of each record, with one reading of the clock for the whole batch."""
    plan = _PLANS.get(dataset_name)
    if plan is None:
        plan = plan_for(dataset_name)
    clock = _clock(now)
    run = plan.run if clock.first_future is not None and clock.today_date is not None else None
    results: list[list[Finding]] = []
    for record in records:
        out: list[Finding] = []
        if run is not None:
            run(record, clock, out)
        else:
            _check_general(plan, record, clock.now_ms, out)
        results.append(out)
    return results


def has_errors(findings: Iterable[Finding]) -> bool:
    return any(f.severity == "error" for f in findings)


__all__ = ["Finding", "Rule", "RULES", "RULE_IDS", "check", "check_batch", "has_errors", "id_number_problem", "plan_for"]
