"""Conformance rules: good records pass, each bad one is reported with the right rule id."""
from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import pytest

from hip.catalogue import load_catalogue
from hip.conformance import RULE_IDS, RULES, Finding, check, has_errors, id_number_problem
from hip.samples import BASE_TIME, sample_record

NOW = BASE_TIME + dt.timedelta(days=1)
DATASETS = [ds.name for ds in load_catalogue()]


def rules(name: str, record: dict[str, Any]) -> set[tuple[str, str | None, str]]:
    return {(f.rule, f.field, f.severity) for f in check(name, record, now=NOW)}


@pytest.mark.parametrize("name", DATASETS)
def test_good_records_pass(name: str) -> None:
    assert check(name, sample_record(name), now=NOW) == []
    minimal = check(name, sample_record(name, full=False), now=NOW)
    assert not has_errors(minimal)
    assert {f.rule for f in minimal} <= {"field.recommended"}


def test_rule_ids_are_unique_and_described() -> None:
    assert len(RULE_IDS) == len(RULES)
    assert all(r.description and r.severity in ("error", "warning") for r in RULES)


def test_resident_id_check_digit() -> None:
    assert id_number_problem("11010519491231002X") is None
    assert "check digit" in (id_number_problem("110105194912310021") or "")
    assert "date" in (id_number_problem("110105194913310021") or "")
    assert id_number_problem("12345") is not None


def case(dataset: str, /, **overrides: Any) -> set[tuple[str, str | None, str]]:
    return rules(dataset, sample_record(dataset, **overrides))


def test_required_and_header() -> None:
    assert ("field.required", "patient_id", "error") in case("patient_info", patient_id=None)
    assert ("field.required", "org_code", "error") in case("patient_info", org_code="")
    assert ("header.op", "op", "error") in case("patient_info", op="x")
    assert ("field.recommended", "name", "warning") in case("patient_info", name=None)


def test_type_and_value_sets() -> None:
    assert ("field.type", "age_years", "error") in case("outpatient_visit", age_years="12")
    assert ("field.type", "age_years", "error") in case("outpatient_visit", age_years=True)
    assert ("field.valueset", "sex_code", "error") in case("patient_info", sex_code="7")
    assert ("field.valueset", "ethnicity_code", "error") in case("patient_info", ethnicity_code="60")
    # A partial value set only warns.
    assert ("field.valueset", "route_code", "warning") in case("western_prescription", route_code="999")


def test_id_number() -> None:
    assert ("id.check_digit", "id_no", "warning") in case("patient_info", id_no="110105194912310021")
    # A passport number is not a resident ID.
    assert case("patient_info", id_type_code="03", id_no="E12345678") == set()


def test_code_shapes_including_nested_lists() -> None:
    assert ("code.icd10", "main_diag_code", "error") in case("inpatient_front_sheet", main_diag_code="心梗")
    rec = sample_record("inpatient_front_sheet")
    rec["operations"][0]["op_code"] = "ABC"
    rec["other_diagnoses"][0]["diag_code"] = "21.401"
    found = rules("inpatient_front_sheet", rec)
    assert ("code.icd9cm3", "operations[0].op_code", "error") in found
    assert ("code.icd10", "other_diagnoses[0].diag_code", "error") in found
    assert case("inpatient_front_sheet", main_diag_code="S72.001x002") == set()


def test_times() -> None:
    later = BASE_TIME + dt.timedelta(hours=3)
    assert ("time.future", "admission_time", "error") in case(
        "inpatient_visit", admission_time=NOW + dt.timedelta(hours=8))
    assert ("time.future", "charge_date", "error") in case("medical_fee", charge_date=NOW.date() + dt.timedelta(days=2))
    assert case("appointment", appointment_date=NOW.date() + dt.timedelta(days=7)) == set()
    assert ("time.order", "discharge_time", "error") in case(
        "inpatient_visit", admission_time=later, discharge_time=BASE_TIME)
    assert ("time.birth", "birth_date", "error") in case(
        "inpatient_front_sheet", birth_date=NOW.date())
    assert ("time.within", "death_time", "warning") in case(
        "death_within_24h_record", death_time=BASE_TIME + dt.timedelta(hours=30))
    assert ("time.stay_days", "actual_days", "warning") in case("inpatient_front_sheet", actual_days=5)
    # Epoch milliseconds are accepted as well as datetimes.
    ms = int(BASE_TIME.timestamp() * 1000)
    assert case("inpatient_visit", admission_time=ms, discharge_time=ms) == set()


def test_amounts_and_quantities() -> None:
    assert ("amount.range", "fee_total", "error") in case("inpatient_front_sheet", fee_total=Decimal("-1.00"))
    assert ("amount.range", "amount", "error") not in case(
        "medical_fee", amount=Decimal("-5.00"), quantity=Decimal("-1.0000"), unit_price=Decimal("5.00"))
    assert ("quantity.range", "quantity", "error") in case("drug_stock_in", quantity=Decimal("-3.0000"))
    assert ("quantity.range", "spo2", "error") in case("vital_signs_record", spo2=Decimal("101.0"))
    assert ("value.range", "temperature", "warning") in case("vital_signs_record", temperature=Decimal("50.0"))


def test_fee_rules() -> None:
    ok = sample_record("inpatient_front_sheet", fee_total=Decimal("300.00"), fee_nursing=Decimal("100.00"),
                       fee_western_medicine=Decimal("200.00"), fee_antibiotics=Decimal("50.00"))
    assert rules("inpatient_front_sheet", ok) == set()
    bad = dict(ok, fee_total=Decimal("350.00"))
    assert ("fee.sum", "fee_total", "warning") in rules("inpatient_front_sheet", bad)
    assert ("fee.part", "fee_antibiotics", "warning") in rules(
        "inpatient_front_sheet", dict(ok, fee_antibiotics=Decimal("250.00")))
    assert ("fee.line", "amount", "warning") in case(
        "medical_fee", quantity=Decimal("2.0000"), unit_price=Decimal("3.00"), amount=Decimal("7.00"))
    assert ("stock.balance", "closing_qty", "warning") in case("blood_stock", closing_qty=Decimal("9.0000"))
    assert ("value.sum", "intake_ml", "warning") in case("intake_output_record", intake_ml=99)


def test_delete_needs_only_the_key() -> None:
    rec = {k: v for k, v in sample_record("western_prescription", op="d").items()
           if k in ("org_code", "source_system", "source_table", "source_key", "op", "source_position",
                    "source_ts", "ingest_ts", "prescription_no", "item_no", "drug_code")}
    assert check("western_prescription", rec, now=NOW) == []


def test_findings_are_structured() -> None:
    f = check("patient_info", sample_record("patient_info", sex_code="7"), now=NOW)[0]
    assert isinstance(f, Finding) and f.rule in RULE_IDS and "sex_code" in f.message
