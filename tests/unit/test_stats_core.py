"""The pure statistics core: contributions per dataset, and exactly-once application."""
from __future__ import annotations

import datetime as dt
import json
import random
from decimal import Decimal

from streams.stats import core
from streams.stats.core import (ADMISSION, BED_USAGE, FEE, INPATIENT, OUTPATIENT, QUALITY, Ledger, Window,
                                contributions, plan)

W = Window(dt.date(2024, 1, 25), dt.date(2024, 2, 3))
ORG = "H1"


def _day(s: str) -> dt.date:
    return dt.date.fromisoformat(s)


def visit(**kw: object) -> dict[str, object]:
    base: dict[str, object] = {"org_code": ORG, "op": "u", "inpatient_no": "Z1", "admission_times": 1,
                               "admission_date": _day("2024-01-30"), "admission_dept_code": "IM"}
    base.update(kw)
    return base


def test_registration_counts_and_cancellation() -> None:
    r = {"org_code": ORG, "op": "c", "registration_date": _day("2024-01-31"), "dept_code": "D1",
         "visit_type_code": "2", "is_first_visit": True, "appointment_no": "A1"}
    c = core.registration_contributions(ORG, r, W)
    assert c == {(OUTPATIENT, ORG, "2024-01-31", "D1"): {
        "registrations": 1, "total_visits": 1, "emergency_visits": 1, "first_visits": 1, "appointment_visits": 1}}
    c = core.registration_contributions(ORG, {**r, "cancelled": True}, W)
    assert c == {(OUTPATIENT, ORG, "2024-01-31", "D1"): {"registrations": 1, "cancelled_registrations": 1}}


def test_fee_refund_netted_whatever_its_sign() -> None:
    line = {"org_code": ORG, "charge_date": _day("2024-01-31"), "ordering_dept_code": "D1", "visit_type_code": "3",
            "fee_class_code": "06", "amount": Decimal("12.34"), "self_pay_amount": Decimal("2.00")}
    c = core.fee_contributions(ORG, line, W)
    assert c[(FEE, ORG, "2024-01-31", "D1", "3", "06")] == {
        "amount_fen": 1234, "self_pay_amount_fen": 200, "detail_count": 1}
    assert c[(INPATIENT, ORG, "2024-01-31", "D1")] == {"inpatient_revenue_fen": 1234, "drug_revenue_fen": 1234}
    for amount in (Decimal("12.34"), Decimal("-12.34")):
        c = core.fee_contributions(ORG, {**line, "is_refund": True, "amount": amount}, W)
        assert c[(FEE, ORG, "2024-01-31", "D1", "3", "06")]["amount_fen"] == -1234
        assert c[(FEE, ORG, "2024-01-31", "D1", "3", "06")]["refund_amount_fen"] == 1234


def test_stay_across_month_end_counts_each_midnight() -> None:
    c = core.visit_contributions(ORG, visit(discharge_date=_day("2024-02-02"), discharge_method_code="5"), W)
    census = sorted(cell[2] for cell, m in c.items() if cell[0] == ADMISSION and m.get("patients_in_hospital"))
    assert census == ["2024-01-30", "2024-01-31", "2024-02-01"]
    assert c[(ADMISSION, ORG, "2024-02-02", "IM")] == {"discharges": 1, "discharged_bed_days": 3, "deaths": 1}
    assert c[(INPATIENT, ORG, "2024-02-02", "IM")]["deaths"] == 1


def test_same_day_stay_counts_one_bed_day_and_open_stay_stops_at_as_of() -> None:
    c = core.visit_contributions(ORG, visit(discharge_date=_day("2024-01-30")), W)
    assert c[(BED_USAGE, ORG, "2024-01-30", "IM")] == {
        "admissions": 1, "discharges": 1, "discharged_bed_days": 1, "same_day_admit_discharge": 1,
        "occupied_bed_days": 1}
    open_stay = core.visit_contributions(ORG, visit(), W)
    days = sorted(cell[2] for cell, m in open_stay.items() if cell[0] == INPATIENT and m.get("patients_in_hospital"))
    assert days[0] == "2024-01-30" and days[-1] == "2024-02-02"  # as_of 02-03 is exclusive


def test_department_beds_cover_the_window() -> None:
    c = core.department_contributions(ORG, {"dept_code": "IM", "open_beds": 40, "approved_beds": 45}, W)
    bed_days = [m for cell, m in c.items() if cell[0] == BED_USAGE]
    assert len(bed_days) == (W.as_of - W.since).days
    assert bed_days[0] == {"approved_beds": 45, "open_beds": 40, "open_bed_days": 40}
    assert core.department_contributions(ORG, {"dept_code": "IM", "open_beds": 40, "is_active": False}, W) == {}


def test_operations_and_quality() -> None:
    op = {"org_code": ORG, "op": "c", "operation_no": "S1", "op_date": _day("2024-01-31"), "dept_code": "SU",
          "op_level_code": "4", "source_ts": 0, "ingest_ts": 1000, "source_system": "ANES", "source_table": "t",
          "source_key": "[1]", "source_position": "1"}
    assert core.operation_contributions(ORG, op, W) == {
        (INPATIENT, ORG, "2024-01-31", "SU"): {"operations": 1, "level4_operations": 1}}
    assert core.operation_contributions(ORG, {**op, "visit_type_code": "1"}, W) == {}
    q = core.quality_contributions("operation_record", ORG, op)
    star = q[(QUALITY, ORG, "1970-01-01", "operation_record", "*")]
    assert star["records_received"] == 1 and star["delay_seconds_total"] == 1
    assert star["required_values_expected"] >= star.get("required_values_missing", 0)


def test_plan_retracts_cells_left_and_ignores_older_and_repeated_versions() -> None:
    a = {("s", ORG, "x"): {"n": 1}}
    b = {("s", ORG, "y"): {"n": 2}, ("s", ORG, "x"): {"n": 1, "m": 4}}
    p1 = plan("r", None, "0002", a)
    assert p1.deltas == {'["s","H1","x"]': {"n": 1}}
    p2 = plan("r", p1.entry, "0003", b)
    assert p2.deltas == {'["s","H1","y"]': {"n": 2}, '["s","H1","x"]': {"m": 4}}
    p3 = plan("r", p2.entry, "0004", {})  # a delete takes back everything the record gave
    assert p3.deltas == {'["s","H1","y"]': {"n": -2}, '["s","H1","x"]': {"n": -1, "m": -4}}
    assert p3.entry is not None and p3.entry.cells == {}
    for position in ("0001", "0003"):  # older, repeated: the ledger keeps what it has
        assert plan("r", p2.entry, position, a) == core.Plan(None, {})


def test_a_record_produced_again_later_replaces_its_first_arrival() -> None:
    # The normalizer redelivers a batch after a restart: same source position, later arrival. The
    # warehouse keeps the later copy, so dataset 60 must count its delay, not the first one's.
    op = {"org_code": ORG, "op": "c", "operation_no": "S1", "op_date": _day("2024-01-31"), "dept_code": "SU",
          "source_ts": 0, "ingest_ts": 1000, "source_position": "pg:0001:1"}
    again = {**op, "ingest_ts": 11000}
    assert core.version(op) < core.version(again)
    assert core.version({**op, "source_position": "pg:0001:10"}) > core.version(again)  # a prefix sorts first, as in SQL
    first = plan("r", None, core.version(op), core.contributions("operation_record", op, W))
    second = plan("r", first.entry, core.version(again), core.contributions("operation_record", again, W))
    assert second.entry is not None
    star = [c for c in second.entry.cells if c.endswith('"operation_record","*"]')][0]
    assert second.entry.cells[star]["delay_seconds_total"] == 11
    assert second.deltas[star] == {"delay_seconds_total": 10}  # 11 s instead of the first copy's 1 s
    assert plan("r", second.entry, core.version(again), {}).entry is None  # the same copy once more changes nothing
    assert plan("r", second.entry, core.version(op), {}).entry is None


def test_changes_add_up_cancel_out_and_never_change_what_they_were_given() -> None:
    given = {"n": 3, "m": -1}
    assert core.add_measures(None, given) == given
    total = core.add_measures({"n": 2, "k": 5}, given)
    assert total == {"n": 5, "m": -1, "k": 5} and given == {"n": 3, "m": -1}
    assert core.add_measures(total, {"n": -5, "m": 1, "k": -5}) == {}
    batch: dict[str, core.Measures] = {}
    core.merge_delta(batch, "c", given)
    core.merge_delta(batch, "c", {"n": -3, "m": 1})
    assert batch == {"c": {}} and given == {"n": 3, "m": -1}
    assert core.difference({"a": {"n": 1}}, {"a": {"n": 1}, "b": {"n": 2}}) == {"b": {"n": -2}}


def test_ledger_random_history_equals_last_versions() -> None:
    rng = random.Random(7)
    ledger = Ledger()
    last: dict[str, tuple[str, dict[core.Cell, core.Measures]]] = {}
    for i in range(3000):
        source = f"r{rng.randrange(40)}"
        pos = f"{i:08d}"
        if rng.random() < 0.1 and source in last:
            pos = last[source][0]  # duplicate delivery
        new: dict[core.Cell, core.Measures] = {}
        if rng.random() > 0.15:
            for _ in range(rng.randrange(1, 4)):
                core._add(new, ("s", ORG, str(rng.randrange(6))), {"n": rng.randrange(1, 5), "m": rng.randrange(-3, 3)})
        if source in last and pos <= last[source][0]:
            ledger.apply(source, pos, last[source][1])  # a redelivery carries the same version
            continue
        ledger.apply(source, pos, new)
        last[source] = (pos, new)
    expected: dict[core.Cell, core.Measures] = {}
    for _, contrib in last.values():
        core.add_all(expected, contrib.items())
    assert core.differences(ledger.totals(), expected) == []


def test_full_contributions_of_a_delete_are_empty_and_rows_round_trip() -> None:
    assert contributions("inpatient_visit", visit(op="d"), W) == {}
    cell = (FEE, ORG, "2024-01-31", "D1", "1", "06")
    totals = {"amount_fen": -150, "refund_amount_fen": 150, "detail_count": 2}
    row = core.stat_fields(cell, totals)
    assert row["amount"] == Decimal("-1.50") and row["stat_date"] == dt.date(2024, 1, 31)
    assert core.measures_of_row(FEE, row) == totals
    bed = core.stat_fields((BED_USAGE, ORG, "2024-01-31", "IM"), {"occupied_bed_days": 2, "open_bed_days": 3})
    assert bed["bed_usage_rate"] == Decimal("66.67")


def _random_windowed(rng: random.Random, n: int) -> list[tuple[str, dict[str, object]]]:
    out: list[tuple[str, dict[str, object]]] = []
    base = _day("2024-01-24")
    for i in range(n):
        if rng.random() < 0.2:
            out.append(("department", {"org_code": ORG, "op": "u", "dept_code": rng.choice(["IM", "SU"]),
                                       "open_beds": rng.randrange(0, 40), "approved_beds": 40,
                                       "is_active": rng.choice([True, True, False])}))
            continue
        adm = base + dt.timedelta(days=rng.randrange(12))
        v = visit(inpatient_no=f"Z{rng.randrange(30)}", admission_date=adm,
                  admission_dept_code=rng.choice(["IM", "SU"]), op=rng.choice(["c", "u", "u", "d"]))
        if rng.random() < 0.5:
            v["discharge_date"] = adm + dt.timedelta(days=rng.randrange(6))
            v["discharge_method_code"] = rng.choice(["1", "5"])
        out.append(("inpatient_visit", v))
    return out


def _source(dataset: str, r: dict[str, object]) -> str:
    key = [r["dept_code"]] if dataset == "department" else [r["inpatient_no"], r["admission_times"]]
    return core.source_ref(dataset, ORG, key)


def _expected(last: dict[str, tuple[str, dict[str, object]]], window: Window) -> dict[core.Cell, core.Measures]:
    out: dict[core.Cell, core.Measures] = {}
    for dataset, r in last.values():
        core.add_all(out, contributions(dataset, r, window, quality=False).items())
    return out


def test_midnight_rollover_equals_a_recomputation_with_the_new_as_of() -> None:
    rng = random.Random(11)
    ledger = Ledger()
    last: dict[str, tuple[str, dict[str, object]]] = {}
    window = Window(_day("2024-01-20"), _day("2024-02-01"))
    for i, (dataset, r) in enumerate(_random_windowed(rng, 400)):
        source = _source(dataset, r)
        ledger.apply(source, f"{i:08d}", contributions(dataset, r, window, quality=False),
                     dataset=dataset, record=r, window=window)
        last[source] = (dataset, r)
    assert core.differences(ledger.totals(), _expected(last, window)) == []
    for days in (1, 2, 5):  # one midnight, then a worker that was down over two and three midnights
        window = Window(window.since + dt.timedelta(days=days), window.as_of + dt.timedelta(days=days))
        ledger.roll(window)
        assert core.differences(ledger.totals(), _expected(last, window)) == []
        before = ledger.totals()
        assert ledger.roll(window) == {}  # a repeated tick (restart, redelivery) changes nothing
        assert ledger.totals() == before
    # a version arriving after the rollover replaces the rolled contribution
    dataset, r = next(v for v in last.values() if v[0] == "inpatient_visit" and v[1]["op"] != "d")
    r2 = {**r, "discharge_date": window.as_of - dt.timedelta(days=1), "op": "u"}
    source = _source(dataset, r2)
    ledger.apply(source, "99999999", contributions(dataset, r2, window, quality=False), dataset=dataset,
                 record=r2, window=window)
    last[source] = (dataset, r2)
    assert core.differences(ledger.totals(), _expected(last, window)) == []
    # a redelivery of a version older than the rollover stays ignored
    assert ledger.apply(source, "00000000", {}, dataset=dataset, record=r2, window=window) == {}


def test_rollover_keeps_quality_cells_and_replays_after_a_crash() -> None:
    window = Window(_day("2024-01-25"), _day("2024-02-01"))
    r = visit(source_ts=0, ingest_ts=1000, source_position="p1", source_system="HIS", source_table="t",
              source_key="[]")
    new = contributions("inpatient_visit", r, window)
    p = plan("s", None, "p1", new, fields=core.window_fields("inpatient_visit", r), window=window, partition=2)
    assert p.entry is not None and p.entry.partition == 2
    assert core.Entry.from_json(p.entry.to_json()) == p.entry
    nxt = Window(window.since + dt.timedelta(days=1), window.as_of + dt.timedelta(days=1))
    rolled = core.roll("s", "inpatient_visit", ORG, p.entry, nxt)
    assert rolled is not None and rolled.entry is not None and rolled.deltas
    assert not any(core.is_quality_cell(c) for c in rolled.deltas)
    quality = {c: m for c, m in p.entry.cells.items() if core.is_quality_cell(c)}
    assert quality and quality == {c: m for c, m in rolled.entry.cells.items() if core.is_quality_cell(c)}
    assert rolled.entry.position == "p1"  # a replay of that version stays a repeat
    assert rolled.entry.window == (nxt.first, nxt.end)
    assert core.roll("s", "inpatient_visit", ORG, rolled.entry, nxt) is None  # the tick replayed after a crash
    assert core.roll("s", "inpatient_visit", ORG, rolled.entry, window) is None  # an older tick


def test_deltas_messages_carry_numbered_parts() -> None:
    parts = [core.Part(3, 17, 1000, [('["x"]', {"n": 1}), ('["y"]', {"n": -2, "m": 5})]),
             core.Part(5, 1, 0, [('["x"]', {"n": 4})])]
    assert core.decode_parts(core.encode_parts(parts)) == [
        p._replace(deltas=[list(d) for d in p.deltas]) for p in parts]  # JSON has no tuples


def test_source_refs_keep_the_bytes_the_ledger_was_keyed_by() -> None:
    """The ledger's keys were written by json.dumps(ensure_ascii=False, compact): they must not change."""
    for key in [["R1", 3], ["门诊", None], ['引"号\\', "\x00\x1f\x7f\u2028", "😀"], [12.5, "/"]]:
        expected = json.dumps(["4", ORG, *[None if v is None else str(v) for v in key]],
                              ensure_ascii=False, separators=(",", ":"))
        assert core.source_ref("4", ORG, key) == expected


def test_applied_numbers_survive_repeats_and_reordering() -> None:
    applied = core.Applied()
    for seq in (1, 2, 5, 3):  # 4 read after 5: the consumer read part of the partition again
        assert not applied.has(seq)
        applied = applied.add(seq)
    assert applied == core.Applied(3, (5,))
    assert all(applied.has(s) for s in (1, 2, 3, 5)) and not applied.has(4)
    applied = applied.add(4)
    assert applied == core.Applied(5, ()) and applied.has(5) and not applied.has(6)
    assert core.Applied.from_json(applied.add(7).to_json()) == core.Applied(5, (7,))
    assert core.Applied.from_json(None) == core.Applied()
