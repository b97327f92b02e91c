"""Incremental statistics: pure contribution logic and the two ledgers that apply it exactly once.

A standard record *contributes* integer measures to statistics cells: ``(stat dataset, org, *key)``
→ ``{measure: int}``. Money is counted in fen (0.01 yuan) so that sums stay exact; ratios are
derived from the sums only when a row is emitted.

Two stages keep the totals exact under updates, deletes, replays and crashes:

1. ``plan`` (keyed by the source record): keeps the record's last version and its measures in each
   cell; a newer version (or a delete) yields the *change* of each cell's totals, ``new - old``,
   and an older or repeated version yields nothing. No before-image is needed: the ledger is the
   before-image.
2. Stage 2 (keyed by the cell) adds the changes into the cell totals (``add_measures``). A stage-1
   flush sends its changes once per stage-2 partition as ``Part``s numbered per source partition,
   and stage 2 applies each number once: this, and each stage's flush being written whole (see
   ``streams.stats.buffered``), is what makes every change count exactly once.

Days are local (Asia/Shanghai) ISO dates. The daily census (patients at 24:00, occupied and open
bed-days) covers the statistics window ``[since, as_of)``: an open stay counts every midnight from
its admission up to the start of ``as_of``; department bed counts are current values counted for
every day of the window. The SQL recomputation uses the same window.
"""
from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, Callable, Iterable, Mapping, NamedTuple, Sequence

import orjson

from hip.conformance import plan_for, to_days, to_ms
from hip.conformance import check as conformance_check

Cell = tuple[str, ...]
Measures = dict[str, int]
Contributions = dict[Cell, Measures]

DAY_MS = 86_400_000
LOCAL_OFFSET_MS = 8 * 3_600_000  # Asia/Shanghai, no daylight saving since 1991
LATE_MS = DAY_MS  # an upload more than a day after the source commit is late
_EPOCH = dt.date(1970, 1, 1)
UNKNOWN = "-"  # dimension value when the source leaves it empty, so the cell key stays non-null

BED_USAGE = "bed_usage_stat"
QUALITY = "upload_quality_stat"
ADMISSION = "admission_discharge_stat"
FEE = "fee_stat"
OUTPATIENT = "outpatient_workload_stat"
INPATIENT = "inpatient_workload_stat"
STAT_DATASETS = (BED_USAGE, QUALITY, ADMISSION, FEE, OUTPATIENT, INPATIENT)
# Business key of each statistics dataset after org_code, in cell order.
CELL_FIELDS: dict[str, tuple[str, ...]] = {
    BED_USAGE: ("stat_date", "dept_code"),
    QUALITY: ("stat_date", "dataset", "rule"),
    ADMISSION: ("stat_date", "dept_code"),
    FEE: ("stat_date", "dept_code", "visit_type_code", "fee_class_code"),
    OUTPATIENT: ("stat_date", "dept_code"),
    INPATIENT: ("stat_date", "dept_code"),
}
# Integer measures per statistics dataset; money measures end in _fen and map to a yuan column.
MEASURES: dict[str, tuple[str, ...]] = {
    BED_USAGE: ("approved_beds", "open_beds", "occupied_beds", "open_bed_days", "occupied_bed_days",
                "admissions", "discharges", "patients_at_end", "same_day_admit_discharge",
                "discharged_bed_days"),
    QUALITY: ("records_received", "records_rejected", "records_accepted", "findings", "affected_records",
              "required_values_expected", "required_values_missing", "delay_seconds_total", "late_records"),
    ADMISSION: ("admissions", "emergency_admissions", "outpatient_admissions", "referral_admissions",
                "discharges", "discharged_on_advice", "discharged_transferred", "discharged_to_community",
                "discharged_against_advice", "deaths", "discharged_other", "discharged_bed_days",
                "patients_in_hospital"),
    FEE: ("amount_fen", "refund_amount_fen", "self_pay_amount_fen", "detail_count"),
    OUTPATIENT: ("total_visits", "outpatient_visits", "emergency_visits", "registrations",
                 "cancelled_registrations", "appointment_visits", "first_visits", "return_visits",
                 "outpatient_revenue_fen", "drug_revenue_fen"),
    INPATIENT: ("admissions", "discharges", "deaths", "patients_in_hospital", "open_beds", "open_bed_days",
                "occupied_bed_days", "discharged_bed_days", "operations", "level4_operations",
                "inpatient_revenue_fen", "drug_revenue_fen", "material_revenue_fen"),
}
ROUTE_MEASURES = {"1": "emergency_admissions", "2": "outpatient_admissions", "3": "referral_admissions"}
DISCHARGE_MEASURES = {"1": "discharged_on_advice", "2": "discharged_transferred", "3": "discharged_to_community",
                      "4": "discharged_against_advice", "5": "deaths", "9": "discharged_other"}
DRUG_CLASSES = ("06", "07")  # 西药类, 中药类 (BASY_FEE)
MATERIAL_CLASSES = ("09",)  # 耗材类
SOURCE_DATASETS = ("outpatient_registration", "medical_fee", "inpatient_visit", "operation_record", "department")


@dataclass(frozen=True)
class Window:
    """The days the daily census covers: ``since`` inclusive to ``as_of`` exclusive."""

    since: dt.date
    as_of: dt.date

    @property
    def first(self) -> int:
        return (self.since - _EPOCH).days

    @property
    def end(self) -> int:
        return (self.as_of - _EPOCH).days


# ---------------------------------------------------------------- value helpers

_ISO_DAYS: dict[int, str] = {}


def iso_day(days: int) -> str:
    # A handful of distinct days recur millions of times: formatting each once keeps dates off the hot path.
    text = _ISO_DAYS.get(days)
    if text is None:
        text = (_EPOCH + dt.timedelta(days=days)).isoformat()
        if len(_ISO_DAYS) > 100_000:
            _ISO_DAYS.clear()
        _ISO_DAYS[days] = text
    return text


def local_day(record: Mapping[str, Any], date_field: str, ts_field: str | None) -> int | None:
    """Epoch day of ``date_field``, else the local date of ``ts_field``."""
    d = to_days(record.get(date_field))
    if d is None and ts_field is not None:
        ms = to_ms(record.get(ts_field))
        if ms is not None:
            d = (ms + LOCAL_OFFSET_MS) // DAY_MS
    return d


def fen(value: Any) -> int:
    """Exact amount in fen; values carry at most two decimals (Avro decimal scale 2)."""
    if value is None:
        return 0
    return int((Decimal(str(value)) * 100).to_integral_value(rounding=ROUND_HALF_UP))


def dim(value: Any) -> str:
    return UNKNOWN if value is None or value == "" else str(value)


def _add(out: Contributions, cell: Cell, measures: Mapping[str, int]) -> None:
    """Add ``measures`` into ``out[cell]``, dropping zeros so an empty cell means no contribution."""
    into = out.setdefault(cell, {})
    for k, v in measures.items():
        if v:
            into[k] = into.get(k, 0) + v
    if not into:
        del out[cell]


# ---------------------------------------------------------------- contributions per source dataset

def registration_contributions(org: str, r: Mapping[str, Any], window: Window) -> Contributions:
    """Dataset 63 from a registration: counted on its registration day, cancelled ones only as 退号."""
    day = local_day(r, "registration_date", "registration_time")
    if day is None:
        return {}
    cancelled = r.get("cancelled") is True or r.get("status") == "退号"
    m: Measures = {"registrations": 1}
    if cancelled:
        m["cancelled_registrations"] = 1
    else:
        visit = r.get("visit_type_code")
        m["total_visits"] = 1
        m["emergency_visits" if visit == "2" else "outpatient_visits"] = 1
        if r.get("appointment_no"):
            m["appointment_visits"] = 1
        if r.get("is_first_visit") is True:
            m["first_visits"] = 1
        elif r.get("is_first_visit") is False:
            m["return_visits"] = 1
    out: Contributions = {}
    _add(out, (OUTPATIENT, org, iso_day(day), dim(r.get("dept_code"))), m)
    return out


def fee_contributions(org: str, r: Mapping[str, Any], window: Window) -> Contributions:
    """Dataset 62 (and revenue of 63/64) from a fee line; a refund line counts negative whatever its sign."""
    day = local_day(r, "charge_date", "charge_time")
    if day is None:
        return {}
    refund = r.get("is_refund") is True
    amount, self_pay = fen(r.get("amount")), fen(r.get("self_pay_amount"))
    if refund:
        amount, self_pay = -abs(amount), -abs(self_pay)
    fee_class = dim(r.get("fee_class_code"))
    visit = dim(r.get("visit_type_code"))
    dept = dim(r.get("ordering_dept_code"))
    out: Contributions = {}
    _add(out, (FEE, org, iso_day(day), dept, visit, fee_class),
         {"amount_fen": amount, "refund_amount_fen": -amount if refund else 0,
          "self_pay_amount_fen": self_pay, "detail_count": 1})
    drug = amount if fee_class[:2] in DRUG_CLASSES else 0
    if visit in ("1", "2"):
        _add(out, (OUTPATIENT, org, iso_day(day), dept), {"outpatient_revenue_fen": amount, "drug_revenue_fen": drug})
    elif visit == "3":
        _add(out, (INPATIENT, org, iso_day(day), dept),
             {"inpatient_revenue_fen": amount, "drug_revenue_fen": drug,
              "material_revenue_fen": amount if fee_class[:2] in MATERIAL_CLASSES else 0})
    return out


def stay_dept(r: Mapping[str, Any]) -> str:
    """Department a stay is counted in for the census and discharges (transfers not split)."""
    for name in ("discharge_dept_code", "current_dept_code", "admission_dept_code"):
        if r.get(name):
            return str(r[name])
    return UNKNOWN


def visit_contributions(org: str, r: Mapping[str, Any], window: Window) -> Contributions:
    """Datasets 58, 61, 64 from an inpatient visit: admission, discharge, and one count per midnight."""
    admitted = local_day(r, "admission_date", "admission_time")
    if admitted is None:
        return {}
    discharged = local_day(r, "discharge_date", "discharge_time")
    out: Contributions = {}
    adm_dept = dim(r.get("admission_dept_code"))
    day = iso_day(admitted)
    adm: Measures = {"admissions": 1}
    route = ROUTE_MEASURES.get(str(r.get("admission_route_code")))
    _add(out, (ADMISSION, org, day, adm_dept), {**adm, **({route: 1} if route else {})})
    _add(out, (INPATIENT, org, day, adm_dept), adm)
    _add(out, (BED_USAGE, org, day, adm_dept), adm)
    dept = stay_dept(r)
    if discharged is not None:
        day = iso_day(discharged)
        bed_days = max(1, discharged - admitted)
        death = 1 if r.get("discharge_method_code") == "5" else 0
        method = DISCHARGE_MEASURES.get(str(r.get("discharge_method_code")))
        same_day = 1 if discharged == admitted else 0
        _add(out, (ADMISSION, org, day, dept),
             {"discharges": 1, "discharged_bed_days": bed_days, **({method: 1} if method else {})})
        _add(out, (INPATIENT, org, day, dept),
             {"discharges": 1, "deaths": death, "discharged_bed_days": bed_days, "occupied_bed_days": same_day})
        _add(out, (BED_USAGE, org, day, dept),
             {"discharges": 1, "discharged_bed_days": bed_days, "same_day_admit_discharge": same_day,
              "occupied_bed_days": same_day})
    end = window.end if discharged is None else min(discharged, window.end)
    for d in range(max(admitted, window.first), end):
        day = iso_day(d)
        _add(out, (ADMISSION, org, day, dept), {"patients_in_hospital": 1})
        _add(out, (INPATIENT, org, day, dept), {"patients_in_hospital": 1, "occupied_bed_days": 1})
        _add(out, (BED_USAGE, org, day, dept), {"occupied_beds": 1, "patients_at_end": 1, "occupied_bed_days": 1})
    return out


def operation_contributions(org: str, r: Mapping[str, Any], window: Window) -> Contributions:
    """Dataset 64 operations: inpatient operations (visit type 3 or unknown) on their local day."""
    if r.get("visit_type_code") in ("1", "2"):
        return {}
    day = local_day(r, "op_date", "start_time")
    if day is None:
        return {}
    out: Contributions = {}
    _add(out, (INPATIENT, org, iso_day(day), dim(r.get("dept_code"))),
         {"operations": 1, "level4_operations": 1 if r.get("op_level_code") == "4" else 0})
    return out


def department_contributions(org: str, r: Mapping[str, Any], window: Window) -> Contributions:
    """Datasets 58, 64 open beds: the department's current counts on every day of the window."""
    if r.get("is_active") is False:
        return {}
    open_beds = int(r.get("open_beds") or 0)
    approved = int(r.get("approved_beds") or 0)
    if not open_beds and not approved:
        return {}
    dept = dim(r.get("dept_code"))
    out: Contributions = {}
    for d in range(window.first, window.end):
        day = iso_day(d)
        _add(out, (BED_USAGE, org, day, dept),
             {"approved_beds": approved, "open_beds": open_beds, "open_bed_days": open_beds})
        _add(out, (INPATIENT, org, day, dept), {"open_beds": open_beds, "open_bed_days": open_beds})
    return out


Findings = Sequence[tuple[str, str]]  # (rule, severity)


def quality_contributions(dataset: str, org: str, r: Mapping[str, Any],
                          findings: Findings | None = None) -> Contributions:
    """Dataset 60: the record counted on its local arrival day, with its findings by rule.

    ``findings``: what the normalizer found (``hip.records.FINDINGS_HEADER``); without them the
    conformance rules run here. Both run with ``now`` = the record's arrival, so the result does not
    depend on when the statistics are computed.
    """
    ingest = to_ms(r.get("ingest_ts"))
    if ingest is None:
        return {}
    day = iso_day((ingest + LOCAL_OFFSET_MS) // DAY_MS)
    if findings is None:
        findings = [(f.rule, f.severity) for f in conformance_check(dataset, dict(r), now=ingest)]
    expected = plan_for(dataset).expected
    missing = 0
    for v in map(r.get, expected):
        if v is None or v == "":
            missing += 1
    source = to_ms(r.get("source_ts"))
    delay = max(0, ingest - source) if source is not None else 0
    # The measures without zeros, as _add would leave them (this runs for every record).
    m: Measures = {"records_received": 1}
    if any(severity == "error" for _, severity in findings):
        m["records_rejected"] = 1
    else:
        m["records_accepted"] = 1
    if findings:
        m["findings"] = len(findings)
        m["affected_records"] = 1
    if expected:
        m["required_values_expected"] = len(expected)
    if missing:
        m["required_values_missing"] = missing
    if delay >= 1000:
        m["delay_seconds_total"] = delay // 1000
    if delay > LATE_MS:
        m["late_records"] = 1
    out: Contributions = {(QUALITY, org, day, dataset, "*"): m}
    if findings:
        by_rule: dict[str, int] = {}
        for rule, _ in findings:
            by_rule[rule] = by_rule.get(rule, 0) + 1
        for rule, n in by_rule.items():
            out[(QUALITY, org, day, dataset, rule)] = {"findings": n, "affected_records": 1}
    return out


CONTRIBUTORS: dict[str, Callable[[str, Mapping[str, Any], Window], Contributions]] = {
    "outpatient_registration": registration_contributions,
    "medical_fee": fee_contributions,
    "inpatient_visit": visit_contributions,
    "operation_record": operation_contributions,
    "department": department_contributions,
}


# The fields the rollover keeps of a record whose contribution depends on the census window (dates
# and timestamps as epoch numbers): all its contributor reads, as it recomputes it from them alone.
WINDOW_FIELDS: dict[str, tuple[str, ...]] = {
    "inpatient_visit": ("admission_date", "admission_time", "discharge_date", "discharge_time",
                        "admission_dept_code", "current_dept_code", "discharge_dept_code",
                        "admission_route_code", "discharge_method_code"),
    "department": ("dept_code", "is_active", "open_beds", "approved_beds"),
}
# The fields each contributor above reads (a unit test checks them against the functions' code).
CONTRIBUTOR_FIELDS: dict[str, tuple[str, ...]] = {
    "outpatient_registration": ("registration_date", "registration_time", "cancelled", "status",
                                "visit_type_code", "appointment_no", "is_first_visit", "dept_code"),
    "medical_fee": ("charge_date", "charge_time", "is_refund", "amount", "self_pay_amount",
                    "fee_class_code", "visit_type_code", "ordering_dept_code"),
    "operation_record": ("visit_type_code", "op_date", "start_time", "dept_code", "op_level_code"),
    **WINDOW_FIELDS,
}
# What the worker reads of every record: its identity, version, arrival and source.
HEADER_FIELDS = ("op", "org_code", "source_system", "source_position", "ingest_ts", "source_ts")


def fields_read(dataset: str, business_key: Sequence[str], *, quality: bool) -> dict[str, bool]:
    """The fields the statistics read of a record of ``dataset``: name → whether its value is read
    (``True``) or only whether it is empty (``False``: dataset 60 counts the missing required and
    recommended values when the normalizer's findings come with the record)."""
    wanted = dict.fromkeys((*HEADER_FIELDS, *business_key, *CONTRIBUTOR_FIELDS.get(dataset, ())), True)
    if quality:
        for name in plan_for(dataset).expected:
            wanted.setdefault(name, False)
    return wanted


def contributions(dataset: str, record: Mapping[str, Any], window: Window, *, quality: bool = True,
                  findings: Findings | None = None) -> Contributions:
    """Everything one standard record version contributes; a delete contributes nothing."""
    if record.get("op") == "d":
        return {}
    org = str(record["org_code"])
    fn = CONTRIBUTORS.get(dataset)
    out: Contributions = fn(org, record, window) if fn is not None else {}
    if quality:  # dataset 60's cells: never one of the cells above
        out.update(quality_contributions(dataset, org, record, findings))
    return out


def source_ref(dataset: str, org: str, business_key: Sequence[Any]) -> str:
    """Identity of a source record across datasets: dataset + org + business key."""
    # orjson writes what json.dumps(ensure_ascii=False, separators=(",", ":")) wrote before, byte
    # for byte (a test compares): these are the ledger's keys, already stored.
    return orjson.dumps([dataset, org, *[None if v is None else str(v) for v in business_key]]).decode()


def source_prefix(dataset: str) -> str:
    """What every ``source_ref`` of ``dataset`` starts with: the ledger keeps a dataset's records in one range."""
    return orjson.dumps([dataset]).decode()[:-1] + ","


_CELL_IDS: dict[Cell, str] = {}
_CELLS: dict[str, Cell] = {}


def cell_id(cell: Cell) -> str:
    # Cells recur across records (one per day and department): JSON-encode each once.
    text = _CELL_IDS.get(cell)
    if text is None:
        text = json.dumps(list(cell), ensure_ascii=False, separators=(",", ":"))
        if len(_CELL_IDS) > 500_000:
            _CELL_IDS.clear()
            _CELLS.clear()
        _CELL_IDS[cell] = text
        _CELLS[text] = cell
    return text


def parse_cell(text: str) -> Cell:
    cell = _CELLS.get(text)
    if cell is None:
        cell = tuple(json.loads(text))
        if len(_CELLS) > 500_000:
            _CELL_IDS.clear()
            _CELLS.clear()
        _CELLS[text] = cell
        _CELL_IDS[cell] = text
    return cell


def is_quality_cell(text: str) -> bool:
    return text.startswith(_QUALITY_PREFIX)


_QUALITY_PREFIX = '["' + QUALITY + '",'


# ---------------------------------------------------------------- stage 1: per source record

class Entry(NamedTuple):
    """What stage 1 remembers of a source record: its version and what that version contributes.

    ``cells`` maps each cell id to the record's measures in it, so the next version (or a delete)
    sends only the difference. A record whose contribution depends on the census window (stays,
    department beds) also keeps the few fields that contribution reads (``fields``) and the window
    it was computed for (``window``, epoch days ``[first, end)``), so the day rollover can
    recompute it from the ledger alone. ``partition`` is the source partition the entry is updated
    from: the rollover of a partition visits only its own entries.
    """

    position: str
    cells: dict[str, Measures]
    fields: dict[str, Any] | None = None
    window: tuple[int, int] | None = None
    partition: int | None = None

    def to_json(self) -> list[Any]:
        return [self.position, self.cells, self.fields, list(self.window) if self.window else None, self.partition]

    @classmethod
    def from_json(cls, value: Sequence[Any]) -> Entry:
        w = value[3]
        return cls(str(value[0]), value[1], value[2], (int(w[0]), int(w[1])) if w else None, value[4])


class Plan(NamedTuple):
    entry: Entry | None  # None: the ledger keeps what it has (an older or repeated version)
    deltas: dict[str, Measures]  # cell id -> the change of its totals (no zeros)


VERSION_MARK = "\x1e"  # below every printable character


def version(record: Mapping[str, Any]) -> str:
    """The order of a record's versions, as the sink orders them: ``(source_position, ingest_ts)``.

    One string (the position, a mark, the arrival in ms, zero-padded) so a ledger entry keeps one
    position. A message the normalizer produced again after a restart carries the same source
    position and a later arrival: the warehouse keeps that copy, so the statistics must count it
    (dataset 60's delay and arrival day come from the arrival) rather than ignore it as a replay.
    """
    ingest = to_ms(record.get("ingest_ts")) or 0
    return f"{record['source_position']}{VERSION_MARK}{ingest:015d}"


def difference(new: Mapping[str, Measures], old: Mapping[str, Measures]) -> dict[str, Measures]:
    """``new - old`` per cell, without zeros (cells and measures absent from one side count as 0)."""
    out: dict[str, Measures] = {}
    for cell, m in new.items():
        before = old.get(cell)
        if before is None:
            out[cell] = m  # measures are never changed in place: shared, not copied
        elif before != m:
            d = {k: v - before.get(k, 0) for k, v in m.items() if v != before.get(k, 0)}
            d.update((k, -v) for k, v in before.items() if k not in m and v)
            if d:
                out[cell] = d
    for cell, before in old.items():
        if cell not in new:
            out[cell] = {k: -v for k, v in before.items() if v}
    return out


def plan(source: str, old: Entry | None, position: str, new: Contributions, *,
         keep: Sequence[str] = (), fields: dict[str, Any] | None = None, window: Window | None = None,
         partition: int | None = None) -> Plan:
    """The ledger entry and the totals' changes for a new version of ``source`` (``new`` empty for a
    delete). An older or repeated version changes nothing.

    ``keep``: cells whose measures the entry keeps as they were (the rollover leaves dataset 60's
    cells alone, as it cannot recompute them).
    """
    if old is not None and position <= old.position:
        return Plan(None, {})
    cells = {cell_id(c): m for c, m in new.items()}
    if old is not None:
        for c in keep:
            if c not in cells and c in old.cells:
                cells[c] = old.cells[c]
    entry = Entry(position, cells, fields,
                  (window.first, window.end) if fields is not None and window is not None else None, partition)
    return Plan(entry, difference(cells, old.cells if old is not None else {}))


def add_measures(totals: Mapping[str, int] | None, delta: Mapping[str, int]) -> Measures:
    """``totals + delta``, a new dict without zeros."""
    out = dict(totals) if totals else {}
    for k, v in delta.items():
        total = out.get(k, 0) + v
        if total:
            out[k] = total
        else:
            out.pop(k, None)
    return out


def merge_delta(into: dict[str, Measures], cell: str, delta: Mapping[str, int]) -> None:
    """Add one cell's change into a batch of changes (a cell whose changes cancel out stays, empty)."""
    before = into.get(cell)
    into[cell] = add_measures(before, delta) if before is not None else dict(delta)


# ---------------------------------------------------------------- day rollover



def window_fields(dataset: str, record: Mapping[str, Any]) -> dict[str, Any] | None:
    """What the rollover needs of a record to recompute its window-dependent contribution."""
    names = WINDOW_FIELDS.get(dataset)
    if names is None or record.get("op") == "d":
        return None
    out: dict[str, Any] = {}
    for name in names:
        v = record.get(name)
        if v is None:
            continue
        if name.endswith("_date"):
            v = to_days(v)
        elif name.endswith("_time"):
            v = to_ms(v)
        out[name] = v
    return out


def roll(source: str, dataset: str, org: str, entry: Entry, window: Window) -> Plan | None:
    """The entry and changes that move a record's window-dependent contribution to ``window``.

    Derived from the entry alone, so it is idempotent: an entry already rolled to ``window`` (or a
    later one), or whose contribution does not change, gives None. The entry keeps its position (a
    replay of its version stays a repeat). Cells of dataset 60 are kept as they are.
    """
    if entry.fields is None or entry.window is None or entry.window[1] >= window.end:
        return None
    new = CONTRIBUTORS[dataset](org, entry.fields, window)
    keep = [c for c in entry.cells if is_quality_cell(c)]
    p = plan(source, None, entry.position, new, fields=entry.fields, window=window, partition=entry.partition)
    assert p.entry is not None
    cells = {**p.entry.cells, **{c: entry.cells[c] for c in keep}}
    deltas = difference(cells, entry.cells)
    if not deltas:
        return None
    return Plan(p.entry._replace(cells=cells), deltas)


# ---------------------------------------------------------------- deltas messages (stage 1 -> stage 2)

class Part(NamedTuple):
    """One stage-1 flush's changes for the cells of one stage-2 partition, from one source partition.

    ``seq`` counts the parts source partition ``source`` sent to that stage-2 partition (1, 2, …):
    stage 2 applies each number once (``Applied``), so a part sent again (a stage-1 flush finished
    again after a crash) or delivered again changes nothing, in whatever order they arrive.
    """

    source: int
    seq: int
    ts: int  # the latest source commit time among the changes (ms), for the emitted rows
    deltas: list[tuple[str, Measures]]


def encode_parts(parts: Sequence[Part]) -> bytes:
    """A deltas message: ``[[source, seq, ts, [[cell, measures], ...]], ...]``."""
    return orjson.dumps([[p.source, p.seq, p.ts, p.deltas] for p in parts])


def decode_parts(value: bytes) -> list[Part]:
    return [Part(source, seq, ts, deltas) for source, seq, ts, deltas in orjson.loads(value)]


class Applied(NamedTuple):
    """The numbers stage 2 applied from one source partition: all up to ``low``, and ``above``.

    Kafka delivers a partition in order, but the consumer can read part of it again (a message it
    never delivered after a start: ``streams.faust_fixes``, fix 2), so a number may arrive before
    the ones below it; ``above`` holds those until the gap closes, and stays small.
    """

    low: int = 0
    above: tuple[int, ...] = ()

    def has(self, seq: int) -> bool:
        return seq <= self.low or seq in self.above

    def add(self, seq: int) -> Applied:
        low, above = self.low, sorted((*self.above, seq))
        while above and above[0] == low + 1:
            low = above.pop(0)
        return Applied(low, tuple(above))

    def to_json(self) -> list[Any]:
        return [self.low, list(self.above)]

    @classmethod
    def from_json(cls, value: Sequence[Any] | None) -> Applied:
        return cls(value[0], tuple(value[1])) if value else cls()


# ---------------------------------------------------------------- reference ledger

@dataclass
class Ledger:
    """Both stages in memory: the reference the Faust processor must agree with (and the bench)."""

    entries: dict[str, Entry] = field(default_factory=dict)
    cells: dict[str, Measures] = field(default_factory=dict)
    origins: dict[str, tuple[str, str]] = field(default_factory=dict)  # source -> (dataset, org), for rolling

    def apply(self, source: str, position: str, new: Contributions | None, *, dataset: str | None = None,
              record: Mapping[str, Any] | None = None, window: Window | None = None) -> dict[Cell, Measures]:
        """Apply a version (``None`` = delete); returns the change of each touched cell's totals.

        With ``dataset``, ``record`` and ``window`` the entry keeps what the day rollover needs.
        """
        fields = window_fields(dataset, record) if dataset is not None and record is not None else None
        if fields is not None and dataset is not None and record is not None:
            self.origins[source] = (dataset, str(record["org_code"]))
        p = plan(source, self.entries.get(source), position, new or {}, fields=fields, window=window)
        return self._run(source, p)

    def roll(self, window: Window) -> dict[Cell, Measures]:
        """Advance every window-dependent contribution to ``window`` (the midnight tick)."""
        delta: dict[Cell, Measures] = {}
        for source, (dataset, org) in self.origins.items():
            entry = self.entries.get(source)
            p = roll(source, dataset, org, entry, window) if entry is not None else None
            if p is not None:
                for cell, d in self._run(source, p).items():
                    _add(delta, cell, d)
        return delta

    def _run(self, source: str, p: Plan) -> dict[Cell, Measures]:
        if p.entry is not None:
            self.entries[source] = p.entry
        for cell, d in p.deltas.items():
            self.cells[cell] = add_measures(self.cells.get(cell), d)
        return {parse_cell(c): d for c, d in p.deltas.items()}

    def totals(self) -> dict[Cell, Measures]:
        return {parse_cell(c): dict(m) for c, m in self.cells.items() if m}


class Coalescer:
    """Changed cells over a batch or time window, each emitted once with its latest totals.

    A stay touching thirty day-cells, or a burst of fee lines on one department-day, then costs one
    output record per cell per flush instead of one per cell per event.
    """

    def __init__(self) -> None:
        self.dirty: dict[str, tuple[Measures, str, int]] = {}

    def __len__(self) -> int:
        return len(self.dirty)

    def mark(self, cell: str, totals: Measures, position: str, source_ts: int) -> None:
        # Re-inserting moves the cell to the end, so a flush emits cells in the order they last changed.
        self.dirty.pop(cell, None)
        self.dirty[cell] = (totals, position, source_ts)

    def take(self) -> dict[str, tuple[Measures, str, int]]:
        out, self.dirty = self.dirty, {}
        return out


# ---------------------------------------------------------------- emitting rows

def ratio(numerator: int, denominator: int, scale: int = 100, places: str = "0.01") -> Decimal | None:
    """``numerator / denominator × scale`` rounded half-up, from integer sums; None without a denominator."""
    if not denominator:
        return None
    return (Decimal(numerator) * scale / Decimal(denominator)).quantize(Decimal(places), rounding=ROUND_HALF_UP)


def _yuan(value: int) -> Decimal:
    return (Decimal(value) / 100).quantize(Decimal("0.01"))


def stat_fields(cell: Cell, totals: Mapping[str, int]) -> dict[str, Any]:
    """The statistics row of ``cell`` (without the header): key fields, measures, derived ratios."""
    dataset, _org, *key = cell
    row: dict[str, Any] = {}
    for name, value in zip(CELL_FIELDS[dataset], key):
        row[name] = dt.date.fromisoformat(value) if name == "stat_date" else value
    for m in MEASURES[dataset]:
        v = int(totals.get(m, 0))
        if m.endswith("_fen"):
            row[m[:-4]] = _yuan(v)
        else:
            row[m] = v
    if dataset in (BED_USAGE,):
        row["bed_usage_rate"] = ratio(row["occupied_bed_days"], row["open_bed_days"])
    if dataset == ADMISSION:
        row["average_stay_days"] = ratio(row["discharged_bed_days"], row["discharges"], 1)
    if dataset == QUALITY:
        exp = row["required_values_expected"]
        row["completeness_rate"] = ratio(exp - row["required_values_missing"], exp)
        row["average_delay_seconds"] = ratio(row["delay_seconds_total"], row["records_received"], 1)
    return row


def measures_of_row(dataset: str, row: Mapping[str, Any]) -> Measures:
    """Integer measures back from a statistics row (e.g. read from the warehouse)."""
    out: Measures = {}
    for m in MEASURES[dataset]:
        v = row.get(m[:-4] if m.endswith("_fen") else m)
        n = fen(v) if m.endswith("_fen") else int(v or 0)
        if n:
            out[m] = n
    return out


def nonzero(cells: Mapping[Cell, Mapping[str, int]]) -> dict[Cell, Measures]:
    out: dict[Cell, Measures] = {}
    for c, m in cells.items():
        kept = {k: int(v) for k, v in m.items() if v}
        if kept:
            out[c] = kept
    return out


def differences(incremental: Mapping[Cell, Mapping[str, int]], recomputed: Mapping[Cell, Mapping[str, int]]
                ) -> list[tuple[Cell, Measures, Measures]]:
    """Cells whose measures differ (absent = all zero), sorted."""
    a, b = nonzero(incremental), nonzero(recomputed)
    return [(c, a.get(c, {}), b.get(c, {})) for c in sorted(set(a) | set(b)) if a.get(c, {}) != b.get(c, {})]


def add_all(into: dict[Cell, Measures], more: Iterable[tuple[Cell, Mapping[str, int]]]) -> None:
    for cell, m in more:
        _add(into, cell, m)
