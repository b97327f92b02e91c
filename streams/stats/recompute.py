"""Batch recomputation of the statistics over the warehouse's current state, and the comparison.

The SQL below restates each contribution rule of ``streams.stats.core`` independently over the
non-deleted rows of ``std.*``, with the same census window. Dataset 60 needs the conformance rules,
which live in Python: its recomputation reads the rows and applies ``hip.conformance`` to each.
"""
from __future__ import annotations

from typing import Any, Iterable, Sequence

from hip.catalogue import load_catalogue
from streams.stats import core
from streams.stats.core import ADMISSION, BED_USAGE, FEE, INPATIENT, OUTPATIENT, QUALITY, Cell, Measures, Window

LOCAL_DATE = "(({col}) AT TIME ZONE 'Asia/Shanghai')::date"
ORG_FILTER = "(%(orgs)s::text[] IS NULL OR org_code = ANY(%(orgs)s))"


def _dim(col: str) -> str:
    return f"coalesce(nullif({col}, ''), '-')"


_REG = f"""
WITH r AS (
  SELECT org_code, coalesce(registration_date, {LOCAL_DATE.format(col='registration_time')}) AS d,
         {_dim('dept_code')} AS dept,
         (cancelled IS TRUE OR coalesce(status = '退号', false)) AS c,
         visit_type_code AS v, coalesce(appointment_no, '') <> '' AS a, is_first_visit AS f
  FROM std.outpatient_registration WHERE NOT deleted AND {ORG_FILTER})
SELECT org_code, d::text, dept,
       count(*), count(*) FILTER (WHERE c), count(*) FILTER (WHERE NOT c),
       count(*) FILTER (WHERE NOT c AND v = '2'), count(*) FILTER (WHERE NOT c AND v IS DISTINCT FROM '2'),
       count(*) FILTER (WHERE NOT c AND a), count(*) FILTER (WHERE NOT c AND f IS TRUE),
       count(*) FILTER (WHERE NOT c AND f IS FALSE)
FROM r WHERE d IS NOT NULL GROUP BY 1, 2, 3"""

_FEE_BASE = f"""
WITH f AS (
  SELECT org_code, coalesce(charge_date, {LOCAL_DATE.format(col='charge_time')}) AS d,
         {_dim('ordering_dept_code')} AS dept, {_dim('visit_type_code')} AS v, {_dim('fee_class_code')} AS cls,
         is_refund IS TRUE AS refund,
         round(coalesce(amount, 0) * 100)::bigint AS a, round(coalesce(self_pay_amount, 0) * 100)::bigint AS s
  FROM std.medical_fee WHERE NOT deleted AND {ORG_FILTER}),
g AS (
  SELECT *, CASE WHEN refund THEN -abs(a) ELSE a END AS na, CASE WHEN refund THEN -abs(s) ELSE s END AS ns
  FROM f WHERE d IS NOT NULL)"""

_FEE = _FEE_BASE + """
SELECT org_code, d::text, dept, v, cls, sum(na), sum(CASE WHEN refund THEN -na ELSE 0 END), sum(ns), count(*)
FROM g GROUP BY 1, 2, 3, 4, 5"""

_FEE_OUT = _FEE_BASE + """
SELECT org_code, d::text, dept, sum(na), coalesce(sum(na) FILTER (WHERE substr(cls, 1, 2) IN ('06', '07')), 0)
FROM g WHERE v IN ('1', '2') GROUP BY 1, 2, 3"""

_FEE_IN = _FEE_BASE + """
SELECT org_code, d::text, dept, sum(na), coalesce(sum(na) FILTER (WHERE substr(cls, 1, 2) IN ('06', '07')), 0),
       coalesce(sum(na) FILTER (WHERE substr(cls, 1, 2) = '09'), 0)
FROM g WHERE v = '3' GROUP BY 1, 2, 3"""

_VISIT_BASE = f"""
WITH v AS (
  SELECT org_code, coalesce(admission_date, {LOCAL_DATE.format(col='admission_time')}) AS a,
         coalesce(discharge_date, {LOCAL_DATE.format(col='discharge_time')}) AS dd,
         {_dim('admission_dept_code')} AS adept,
         coalesce(nullif(discharge_dept_code, ''), nullif(current_dept_code, ''), nullif(admission_dept_code, ''), '-')
           AS sdept,
         admission_route_code AS r, discharge_method_code AS m
  FROM std.inpatient_visit WHERE NOT deleted AND {ORG_FILTER})"""

_ADMIT = _VISIT_BASE + """
SELECT org_code, a::text, adept, count(*), count(*) FILTER (WHERE r = '1'), count(*) FILTER (WHERE r = '2'),
       count(*) FILTER (WHERE r = '3')
FROM v WHERE a IS NOT NULL GROUP BY 1, 2, 3"""

_DISCHARGE = _VISIT_BASE + """
SELECT org_code, dd::text, sdept, count(*), sum(greatest(1, dd - a)), count(*) FILTER (WHERE dd = a),
       count(*) FILTER (WHERE m = '1'), count(*) FILTER (WHERE m = '2'), count(*) FILTER (WHERE m = '3'),
       count(*) FILTER (WHERE m = '4'), count(*) FILTER (WHERE m = '5'), count(*) FILTER (WHERE m = '9')
FROM v WHERE a IS NOT NULL AND dd IS NOT NULL GROUP BY 1, 2, 3"""

# One row per midnight a stay spans inside the window: days [max(admission, since), min(discharge, as_of)).
_CENSUS = _VISIT_BASE + """
SELECT org_code, day::date::text, sdept, count(*)
FROM v, generate_series(greatest(a, %(since)s::date)::timestamp,
                        (least(coalesce(dd, %(as_of)s::date), %(as_of)s::date) - 1)::timestamp,
                        interval '1 day') AS day
WHERE a IS NOT NULL GROUP BY 1, 2, 3"""

_BEDS = f"""
SELECT org_code, day::date::text, {_dim('dept_code')}, sum(coalesce(open_beds, 0)), sum(coalesce(approved_beds, 0))
FROM std.department, generate_series(%(since)s::date::timestamp, (%(as_of)s::date - 1)::timestamp,
                                     interval '1 day') AS day
WHERE NOT deleted AND {ORG_FILTER} AND is_active IS DISTINCT FROM false
  AND (coalesce(open_beds, 0) <> 0 OR coalesce(approved_beds, 0) <> 0)
GROUP BY 1, 2, 3"""

_OPS = f"""
SELECT org_code, coalesce(op_date, {LOCAL_DATE.format(col='start_time')})::text AS d, {_dim('dept_code')},
       count(*), count(*) FILTER (WHERE op_level_code = '4')
FROM std.operation_record
WHERE NOT deleted AND {ORG_FILTER} AND coalesce(visit_type_code, '') NOT IN ('1', '2')
  AND coalesce(op_date, {LOCAL_DATE.format(col='start_time')}) IS NOT NULL
GROUP BY 1, 2, 3"""

# (query, dimension count after org, [(stat dataset, {measure: result column index after the dims})])
_QUERIES: list[tuple[str, str, int, list[tuple[str, dict[str, int]]]]] = [
    ("outpatient_registration", _REG, 2, [(OUTPATIENT, {
        "registrations": 0, "cancelled_registrations": 1, "total_visits": 2, "emergency_visits": 3,
        "outpatient_visits": 4, "appointment_visits": 5, "first_visits": 6, "return_visits": 7})]),
    ("medical_fee", _FEE, 4, [(FEE, {"amount_fen": 0, "refund_amount_fen": 1, "self_pay_amount_fen": 2,
                                     "detail_count": 3})]),
    ("medical_fee", _FEE_OUT, 2, [(OUTPATIENT, {"outpatient_revenue_fen": 0, "drug_revenue_fen": 1})]),
    ("medical_fee", _FEE_IN, 2, [(INPATIENT, {"inpatient_revenue_fen": 0, "drug_revenue_fen": 1,
                                              "material_revenue_fen": 2})]),
    ("inpatient_visit", _ADMIT, 2, [
        (ADMISSION, {"admissions": 0, "emergency_admissions": 1, "outpatient_admissions": 2,
                     "referral_admissions": 3}),
        (INPATIENT, {"admissions": 0}), (BED_USAGE, {"admissions": 0})]),
    ("inpatient_visit", _DISCHARGE, 2, [
        (ADMISSION, {"discharges": 0, "discharged_bed_days": 1, "discharged_on_advice": 3,
                     "discharged_transferred": 4, "discharged_to_community": 5, "discharged_against_advice": 6,
                     "deaths": 7, "discharged_other": 8}),
        (INPATIENT, {"discharges": 0, "discharged_bed_days": 1, "deaths": 7, "occupied_bed_days": 2}),
        (BED_USAGE, {"discharges": 0, "discharged_bed_days": 1, "same_day_admit_discharge": 2,
                     "occupied_bed_days": 2})]),
    ("inpatient_visit", _CENSUS, 2, [
        (ADMISSION, {"patients_in_hospital": 0}),
        (INPATIENT, {"patients_in_hospital": 0, "occupied_bed_days": 0}),
        (BED_USAGE, {"occupied_beds": 0, "patients_at_end": 0, "occupied_bed_days": 0})]),
    ("department", _BEDS, 2, [
        (BED_USAGE, {"open_beds": 0, "open_bed_days": 0, "approved_beds": 1}),
        (INPATIENT, {"open_beds": 0, "open_bed_days": 0})]),
    ("operation_record", _OPS, 2, [(INPATIENT, {"operations": 0, "level4_operations": 1})]),
]


def _existing_tables(cur: Any, schema: str) -> set[str]:
    cur.execute("SELECT table_name FROM information_schema.tables WHERE table_schema = %s", (schema,))
    return {r[0] for r in cur.fetchall()}


def recompute(conn: Any, window: Window, orgs: Sequence[str] | None = None, *,
              quality: bool = True) -> dict[Cell, Measures]:
    """Every statistics cell from the warehouse's current state (non-deleted ``std`` rows)."""
    out: dict[Cell, Measures] = {}
    params = {"since": window.since, "as_of": window.as_of, "orgs": list(orgs) if orgs is not None else None}
    with conn.cursor() as cur:
        tables = _existing_tables(cur, "std")
        for source, sql, ndims, targets in _QUERIES:
            if source not in tables:
                continue
            cur.execute(sql, params)
            for row in cur.fetchall():
                org, dims, values = row[0], tuple(str(v) for v in row[1:1 + ndims]), row[1 + ndims:]
                core.add_all(out, (((stat, org, *dims), {m: int(values[i] or 0) for m, i in cols.items()})
                                   for stat, cols in targets))
    conn.rollback()
    if quality:
        core.add_all(out, quality_cells(conn, orgs, tables))
    return core.nonzero(out)


def quality_cells(conn: Any, orgs: Sequence[str] | None, tables: set[str]) -> Iterable[tuple[Cell, Measures]]:
    """Dataset 60 over the rows of every standard table, through the same conformance rules."""
    catalogue = load_catalogue()
    for ds in catalogue:
        if ds.is_statistic or ds.name not in tables:
            continue
        names = [f["name"] for f in ds.fields]
        with conn.cursor(name=f"stats_{ds.name}") as cur:
            cur.itersize = 5000
            cols = ", ".join(f'"{n}"' for n in names)
            cur.execute(f'SELECT {cols} FROM std."{ds.name}" WHERE NOT deleted AND '
                        f'(%(orgs)s::text[] IS NULL OR org_code = ANY(%(orgs)s))',
                        {"orgs": list(orgs) if orgs is not None else None})
            for row in cur:
                record = dict(zip(names, row))
                yield from core.quality_contributions(ds.name, str(record["org_code"]), record).items()
        conn.rollback()


def incremental(conn: Any, orgs: Sequence[str] | None = None) -> dict[Cell, Measures]:
    """The statistics the processor wrote, read back from ``stat.*`` (deleted rows are empty cells)."""
    out: dict[Cell, Measures] = {}
    with conn.cursor() as cur:
        tables = _existing_tables(cur, "stat")
        for dataset in core.STAT_DATASETS:
            if dataset not in tables:
                continue
            keys = core.CELL_FIELDS[dataset]
            measures = [m[:-4] if m.endswith("_fen") else m for m in core.MEASURES[dataset]]
            cols = ", ".join(f'"{c}"' for c in ("org_code", *keys, *measures))
            cur.execute(f'SELECT {cols} FROM stat."{dataset}" WHERE NOT deleted AND {ORG_FILTER}',
                        {"orgs": list(orgs) if orgs is not None else None})
            for row in cur.fetchall():
                cell = (dataset, row[0], *(str(v) for v in row[1:1 + len(keys)]))
                values = dict(zip(measures, row[1 + len(keys):]))
                m = core.measures_of_row(dataset, values)
                if m:
                    out[cell] = m
    conn.rollback()
    return out


def describe(diffs: Sequence[tuple[Cell, Measures, Measures]], limit: int = 50) -> list[str]:
    """Readable lines for differing cells: the cell, then each measure as incremental ≠ recomputed."""
    lines = []
    for cell, a, b in diffs[:limit]:
        parts = [f"{k}: {a.get(k, 0)} != {b.get(k, 0)}" for k in sorted(set(a) | set(b)) if a.get(k, 0) != b.get(k, 0)]
        lines.append(f"{'/'.join(cell)}  " + ", ".join(parts))
    if len(diffs) > limit:
        lines.append(f"... and {len(diffs) - limit} more cells")
    return lines


__all__ = ["recompute", "incremental", "describe", "quality_cells", "QUALITY"]
