"""Mappings load and validate; a bad mapping is refused with file, line and field."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from hip.errors import ConfigError, RecordError
from streams.core import envelope
from streams.core.mapping import MAPPINGS_DIR, load_mappings


def test_shipped_mappings_load() -> None:
    result = load_mappings()
    assert len(result.hospitals) >= 2
    datasets = {m.dataset for r in result.routes.values() for m in r.mappings}
    for name in ("patient_info", "outpatient_registration", "outpatient_visit", "western_prescription",
                 "chinese_prescription", "medical_fee", "outpatient_order", "inpatient_front_sheet",
                 "inpatient_order", "lab_report", "exam_report", "operation_record", "inpatient_visit",
                 "department", "staff", "drug_stock_in", "drug_stock_out", "appointment"):
        assert name in datasets


def _broken(tmp_path: Path, old: str, new: str) -> tuple[Path, int]:
    shutil.copytree(MAPPINGS_DIR, tmp_path / "m")
    path = tmp_path / "m" / "vendor_a.yaml"
    text = path.read_text(encoding="utf-8")
    assert old in text
    line = text[: text.index(old)].count("\n") + 1
    path.write_text(text.replace(old, new, 1), encoding="utf-8")
    return tmp_path / "m", line


@pytest.mark.parametrize("old,new,words", [
    ("      name: {trim: BRXM}", "      name: {trim: BRXMM}", "no column 'BRXMM'"),
    ("      name: {trim: BRXM}", "      nmae: {trim: BRXM}", "has no field 'nmae'"),
    ("      birth_date: {date: CSNY}", "      birth_date: JDSJ", "use timestamp: or date:"),
    ("      sex_code: {code: {from: BRXB, table: sex}}", "      sex_code: {code: {from: BRXB, table: gender}}",
     "unknown code table 'gender'"),
    ("      name: {trim: BRXM}", "      name: {upper: BRXM}", "unknown transform 'upper'"),
    ("      registration_fee: GHJE", "      registration_fee: {lookup: {table: MS_BRDA, key: BRID, field: BRXM}}",
     "not declared under dictionaries"),
])
def test_bad_mapping_names_file_line_and_field(tmp_path: Path, old: str, new: str, words: str) -> None:
    folder, line = _broken(tmp_path, old, new)
    with pytest.raises(ConfigError) as info:
        load_mappings(folder)
    err = info.value
    assert words in str(err)
    assert err.file == str(folder / "vendor_a.yaml")
    assert err.line == line
    assert err.field and err.field.startswith("vendor_a.")


def test_code_table_outside_the_value_set_is_refused(tmp_path: Path) -> None:
    folder, line = _broken(tmp_path, '  sex: {"1": "1", "2": "2", "0": "0", "9": "9"}',
                           '  sex: {"1": "M", "2": "2", "0": "0", "9": "9"}')
    with pytest.raises(ConfigError, match=r"not in value set GB_T_2261.1") as info:
        load_mappings(folder)
    assert info.value.line == line


def test_tombstone_is_skipped_and_garbage_is_a_record_error() -> None:
    assert envelope.decode(b'{"BRID": 1}', None, "raw.SIMA01.HIS.hosp_a.MS_BRDA") is None
    with pytest.raises(RecordError) as info:
        envelope.decode(None, b"{not json", "raw.SIMA01.HIS.hosp_a.MS_BRDA")
    assert info.value.reason == "bad_json"
    with pytest.raises(RecordError):
        envelope.decode(None, b"{}", "std.patient_info")


def test_positions_sort_snapshot_below_streaming() -> None:
    def ev(op: str, snapshot: str) -> envelope.ChangeEvent:
        value = ('{"op": "%s", "before": null, "after": {"x": 1}, "source": {"connector": "postgresql", '
                 '"lsn": 500, "snapshot": "%s", "ts_ms": 1}}' % (op, snapshot)).encode()
        decoded = envelope.decode(None, value, "raw.o1.HIS.his.t")
        assert decoded is not None
        return decoded
    assert ev("r", "true").position < ev("c", "false").position


def test_generated_field_code_matches_the_plans_one_by_one() -> None:
    """Every shipped mapping's generated ``fill`` sets what its plans compute, field by field."""
    import random

    result = load_mappings()
    rng = random.Random(7)
    checked = 0
    for route in result.routes.values():
        for m in route.mappings:
            samples = [{c: None for c in route.table.columns}]
            for _ in range(3):
                samples.append({c: rng.choice(["1", "01", " x ", "", 0, 3]) if col.kind in ("string", "int") else None
                                for c, col in route.table.columns.items()})
            for row in samples:
                expected: dict[str, object] = {}
                expected_missing: list[str] = []
                failed = None
                try:
                    for plan in m.fields:
                        expected[plan.name] = plan.finish(plan.fn(row, {}))
                        if expected[plan.name] is None and plan.required:
                            expected_missing.append(plan.name)
                except Exception as exc:  # noqa: BLE001 - the generated code must fail the same way
                    failed = type(exc)
                record: dict[str, object] = {}
                if failed is not None:
                    with pytest.raises(failed):
                        m.fill(record, row, {})
                    continue
                assert m.fill(record, row, {}) == expected_missing, m.id
                assert record == expected and list(record) == list(expected), m.id
                checked += 1
    assert checked > 50
