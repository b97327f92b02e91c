"""The catalogue, the generated schemas and docs, and the value sets agree with each other."""
from __future__ import annotations

import csv
import io
import json
from typing import Any

import fastavro
import pytest

from hip import catalogue_docs, schemagen
from hip.catalogue import AVRO_DIR, load_catalogue, load_valueset_info, valueset_ids
from hip.records import HEADER_FIELDS, HEADER_NAMES
from hip.samples import sample_record

CAT = load_catalogue()
DATASETS = list(CAT)
IDS = [ds.name for ds in DATASETS]
ELEMENTS = {row["id"]: row["name"] for row in csv.DictReader(
    (AVRO_DIR / "ws363_elements.tsv").open(encoding="utf-8"), delimiter="\t")}
STATISTICS = {58, 60, 61, 62, 63, 64}

# Fields the standards name for a dataset (WS 445 subsets, 病案首页, statistics definitions).
STANDARD_FIELDS: dict[str, set[str]] = {
    "patient_info": {"name", "sex_code", "birth_date", "id_type_code", "id_no", "ethnicity_code",
                     "marital_status_code", "occupation_code", "phone", "abo_code", "rh_code"},
    "outpatient_registration": {"registration_time", "dept_code", "visit_type_code", "registration_fee"},
    "outpatient_visit": {"visit_time", "chief_complaint", "present_illness", "main_diag_code", "diagnoses"},
    "western_prescription": {"drug_name", "spec", "dosage_form_code", "dose", "dose_unit", "frequency",
                             "route_code", "total_dose", "valid_days"},
    "chinese_prescription": {"doses", "decoction_method", "tcm_disease_code", "tcm_syndrome_code"},
    "medical_fee": {"fee_class_code", "quantity", "unit_price", "amount", "charge_time", "visit_type_code"},
    "inpatient_front_sheet": {
        "medical_record_no", "admission_times", "payment_method_code", "admission_route_code",
        "admission_time", "admission_dept_code", "transfers", "discharge_time", "discharge_dept_code",
        "actual_days", "main_diag_code", "main_diag_admission_condition_code", "other_diagnoses",
        "operations", "discharge_method_code", "readmission_plan_flag", "fee_total", "fee_self_pay",
        "fee_general_medical_service", "fee_general_treatment", "fee_nursing", "fee_comprehensive_other",
        "fee_pathology", "fee_laboratory", "fee_imaging", "fee_clinical_diagnosis",
        "fee_non_surgical_treatment", "fee_clinical_physical_therapy", "fee_surgical_treatment",
        "fee_anesthesia", "fee_surgery", "fee_rehabilitation", "fee_tcm_treatment", "fee_western_medicine",
        "fee_antibiotics", "fee_chinese_patent_medicine", "fee_chinese_herbal_medicine", "fee_blood",
        "fee_albumin", "fee_globulin", "fee_coagulation_factor", "fee_cytokine", "fee_exam_material",
        "fee_treatment_material", "fee_surgery_material", "fee_other"},
    "tcm_front_sheet": {"main_tcm_disease_code", "main_tcm_syndrome_code", "tcm_diagnoses",
                        "treatment_category_code", "main_diag_code", "operations", "fee_total"},
    "inpatient_order": {"order_category_code", "order_item_type_code", "order_content", "order_time",
                        "stop_time", "execution_status"},
    "lab_report": {"specimen_type", "sampled_time", "item_name", "result_text", "quantitative_result",
                   "unit", "reference_range", "report_time"},
    "exam_report": {"objective_findings", "subjective_impression", "exam_time", "report_time"},
    "operation_record": {"op_code", "op_level_code", "anesthesia_method_code", "incision_class_code",
                         "start_time", "end_time", "surgeon_name", "blood_loss_ml"},
    "inpatient_visit": {"admission_time", "discharge_time", "admission_route_code", "discharge_method_code"},
    "bed_usage_stat": {"stat_date", "dept_code", "open_beds", "occupied_beds", "open_bed_days",
                       "occupied_bed_days", "discharges"},
    "admission_discharge_stat": {"stat_date", "admissions", "discharges", "deaths", "discharged_bed_days"},
    "fee_stat": {"stat_date", "fee_class_code", "visit_type_code", "amount"},
    "outpatient_workload_stat": {"stat_date", "total_visits", "outpatient_visits", "emergency_visits"},
    "inpatient_workload_stat": {"stat_date", "occupied_bed_days", "open_bed_days", "admissions", "discharges"},
    "upload_quality_stat": {"stat_date", "dataset", "rule", "findings", "records_received"},
    "drug_stock_in": {"batch_no", "expiry_date", "quantity", "supplier_name", "purchase_price"},
    "drug_stock_out": {"batch_no", "expiry_date", "quantity", "to_dept_code"},
    "material_stock_in": {"batch_no", "expiry_date", "quantity", "supplier_name", "is_high_value"},
    "material_stock_out": {"batch_no", "quantity", "to_dept_code"},
    "blood_stock": {"blood_product_code", "abo_code", "rh_code", "closing_qty", "unit"},
    "appointment": {"appointment_date", "dept_code", "status", "channel"},
    "transfusion_record": {"blood_product_code", "transfusion_amount", "abo_code", "rh_code"},
}


def own_fields(ds: Any) -> list[dict[str, Any]]:
    return [f for f in ds.fields if f["name"] not in HEADER_NAMES]


def test_numbers_are_the_notice_list() -> None:
    assert sorted(ds.number for ds in DATASETS) == list(range(1, len(DATASETS) + 1))
    assert {ds.number for ds in DATASETS if ds.is_statistic} == STATISTICS
    assert CAT.by_number(12).name == "inpatient_front_sheet"


@pytest.mark.parametrize("ds", DATASETS, ids=IDS)
def test_schema_shape(ds: Any) -> None:
    schema = ds.schema
    assert schema["name"] == ds.name
    assert schema["namespace"] == ("hip.stat" if ds.is_statistic else "hip.std")
    assert schema["fields"][:len(HEADER_FIELDS)] == HEADER_FIELDS
    names = [f["name"] for f in schema["fields"]]
    assert len(names) == len(set(names))
    for k in ds.business_key:
        t = ds.field(k)["type"]
        assert not isinstance(t, list), f"key field {k} must not be nullable"
    assert set(ds.partition_key) <= set(ds.business_key)
    assert set(ds.personal_fields) <= set(names)
    # No stub schemas: every dataset carries a real field list beyond its key.
    assert len(own_fields(ds)) >= len(ds.business_key) + (5 if ds.is_statistic else 10)


@pytest.mark.parametrize("ds", DATASETS, ids=IDS)
def test_fields_are_documented_and_typed(ds: Any) -> None:
    key = set(ds.business_key)
    for f in own_fields(ds):
        assert f.get("doc"), f["name"]
        if "element" in f:
            assert f["element"] in ELEMENTS, f"{f['name']}: {f['element']} is not a WS 363 element"
        t = f["type"]
        if isinstance(t, list):
            assert t[0] == "null" and f.get("default", "missing") is None, f["name"]
            t = t[1]
        elif f["name"] not in key:
            assert "checks" not in f or "should" not in f["checks"]
        if isinstance(t, dict) and t.get("logicalType") == "decimal" and t["scale"] == 2 \
                and not f["name"].endswith(("_rate", "_days")):
            assert 12 <= t["precision"] <= 18 and t["type"] == "bytes"
        if f["name"].endswith("_time"):
            assert t == {"type": "long", "logicalType": "timestamp-millis"}, f["name"]
        if f["name"].endswith("_date") and f["name"] != "referral_date":
            assert t == {"type": "int", "logicalType": "date"}, f["name"]


@pytest.mark.parametrize("ds", DATASETS, ids=IDS)
def test_standard_fields_present(ds: Any) -> None:
    names = {f["name"] for f in ds.fields}
    assert STANDARD_FIELDS.get(ds.name, set()) <= names
    for rule in ds.rules:
        for key, value in rule.items():
            if key in ("rule", "severity", "tolerance", "min", "max", "hours", "id"):
                continue
            for ref in value if isinstance(value, list) else [value]:
                assert ref in names, f"rule {rule} names unknown field {ref}"


def test_clinical_documents_carry_header_and_narrative() -> None:
    for ds in DATASETS:
        if not ds.ws500 or ds.business_key != ["document_no"]:
            continue
        names = {f["name"] for f in ds.fields}
        assert {"document_no", "record_time", "patient_id", "doctor_name"} <= names, ds.name
        narrative = [f for f in own_fields(ds) if "string" in json.dumps(f["type"])]
        assert len(narrative) >= 5, ds.name


def _coded(fields: list[dict[str, Any]], named: dict[str, Any]) -> list[str]:
    out = []
    for f in fields:
        if "valueset" in f:
            out.append(f["valueset"])
        t = f["type"][1] if isinstance(f["type"], list) else f["type"]
        if isinstance(t, dict) and t.get("type") == "array":
            items = named.get(t["items"], t["items"]) if isinstance(t["items"], str) else t["items"]
            if isinstance(items, dict):
                out += _coded(items["fields"], named)
    return out


@pytest.mark.parametrize("ds", DATASETS, ids=IDS)
def test_every_coded_field_has_a_value_set(ds: Any) -> None:
    available = set(valueset_ids())
    for vs in _coded(ds.fields, ds.named_types):
        assert vs in available, f"{ds.name}: value set {vs} missing"
    for f in own_fields(ds):
        if f["name"].endswith(("sex_code", "abo_code", "rh_code", "id_type_code", "payment_method_code",
                               "discharge_method_code", "admission_route_code", "op_level_code",
                               "anesthesia_method_code", "blood_product_code", "marital_status_code")):
            assert "valueset" in f, f"{ds.name}.{f['name']} is coded but names no value set"


def test_required_value_sets_exist_and_parse() -> None:
    needed = {"GB_T_2261.1", "GB_T_2261.2", "GB_T_2261.2_BASY", "GB_T_2261.4", "GB_3304", "CV02.01.101",
              "CV04.50.005", "CV04.50.020", "CV07.10.005", "CV09.00.403", "CV06.00.226", "CV09.00.404",
              "CV05.10.024", "CV06.00.103", "CV06.00.229", "CV04.50.021", "BASY_FEE"}
    assert needed <= set(valueset_ids())
    for vs_id in valueset_ids():
        vs = load_valueset_info(vs_id)
        assert vs.kind == "pattern" or vs.codes, vs_id
    assert len([c for c in load_valueset_info("GB_3304").codes if int(c) <= 56]) == 56
    fee = load_valueset_info("BASY_FEE").codes
    assert len([c for c in fee if "." not in c]) == 10 and len([c for c in fee if "." in c]) == 24


@pytest.mark.parametrize("ds", DATASETS, ids=IDS)
def test_schema_round_trips(ds: Any) -> None:
    parsed = fastavro.parse_schema(json.loads(json.dumps(ds.schema)))
    for full in (True, False):
        record = sample_record(ds, full=full)
        buf = io.BytesIO()
        fastavro.schemaless_writer(buf, parsed, record)
        buf.seek(0)
        assert fastavro.schemaless_reader(buf, parsed) == record


def test_generated_schemas_are_up_to_date() -> None:
    for name, schema in schemagen.build_all().items():
        path = schemagen.SCHEMA_DIR / f"{name}.avsc"
        assert path.read_text(encoding="utf-8") == schemagen.render(schema), \
            f"{path} is stale: run `hip datasets generate`"
    assert {p.stem for p in schemagen.SCHEMA_DIR.glob("*.avsc")} == set(IDS)


def test_docs_are_up_to_date() -> None:
    files = catalogue_docs.render(CAT)
    for name, text in files.items():
        path = catalogue_docs.DOCS_DIR / name
        assert path.exists() and path.read_text(encoding="utf-8") == text, \
            f"{path} is stale: run `hip datasets docs`"
    assert {p.name for p in catalogue_docs.DOCS_DIR.glob("*.md")} == set(files)
