"""Pure core of the sink: fold, COPY encoding, upsert SQL, reconciliation, error classes."""
from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import psycopg2
import pytest

from hip.errors import FatalError, RecordError, TransientError
from sinks.core.batch import Change, fold, version
from sinks.core.copy import NULL, RowEncoder, encode_value, encoder_for, escape, to_json
from sinks.core.reconcile import canonical, checksum, compare, key_checksums, last_wins
from sinks.core.retry import Backoff
from sinks.core.sql import batch_sql, naive_upsert_sql, staging_name
from sinks.core.table import Column, Table, data_columns, mapped_columns, written_columns
from sinks.warehouse import translate_error

UTC = dt.timezone.utc
T0 = dt.datetime(2026, 3, 1, 8, 0, tzinfo=UTC)

TABLE = Table("std", "outpatient_visit", [
    Column("org_code", "text", False), Column("source_system", "text", False),
    Column("source_table", "text", False), Column("source_key", "text", False),
    Column("op", "text", False), Column("source_position", "text", False),
    Column("source_ts", "timestamptz", False), Column("ingest_ts", "timestamptz", False),
    Column("mapping_id", "text"), Column("visit_no", "text", False),
    Column("fee", "numeric(12,2)"), Column("visit_date", "date"), Column("diagnoses", "jsonb"),
    Column("deleted", "boolean", False), Column("warehouse_ts", "timestamptz", False),
], ["org_code", "visit_no"])


def rec(visit: str, pos: str, op: str = "u", ingest: dt.datetime = T0, **fields: Any) -> dict[str, Any]:
    return {"org_code": "H001", "source_system": "HIS", "source_table": "mz_gh", "source_key": f'["{visit}"]',
            "op": op, "source_position": pos, "source_ts": T0, "ingest_ts": ingest, "mapping_id": "m",
            "visit_no": visit, **fields}


def test_fold_keeps_newest_position_per_key_in_first_seen_order() -> None:
    changes = [Change(rec("a", "pg:02"), offset=0), Change(rec("b", "pg:01"), offset=1),
               Change(rec("a", "pg:01"), offset=2), Change(rec("a", "pg:03", op="d"), offset=3)]
    out = fold(changes, TABLE.primary_key)
    assert [c.offset for c in out.winners] == [3, 1]
    assert out.superseded == 2 and not out.rejected


def test_fold_tie_goes_to_later_ingest_then_later_offset() -> None:
    later = T0 + dt.timedelta(hours=1)
    changes = [Change(rec("a", "pg:05", ingest=later), offset=0), Change(rec("a", "pg:05"), offset=1)]
    assert fold(changes, TABLE.primary_key).winners[0].offset == 0
    same = [Change(rec("a", "pg:05"), offset=0), Change(rec("a", "pg:05"), offset=1)]
    assert fold(same, TABLE.primary_key).winners[0].offset == 1


def test_fold_fills_fields_the_newest_version_did_not_carry_from_the_one_it_replaces() -> None:
    first = Change(rec("a", "pg:01", fee=Decimal("5.00"), visit_date=dt.date(2026, 3, 1)), offset=0)
    toast = Change(rec("a", "pg:02", fee=None, visit_date=None), offset=1, keep=("fee", "visit_date"))
    toast_again = Change(rec("a", "pg:03", fee=None, visit_date=dt.date(2026, 3, 2)), offset=2, keep=("fee",))
    winner = fold([first, toast, toast_again], TABLE.primary_key).winners[0]
    assert winner.offset == 2 and winner.record["fee"] == Decimal("5.00") and winner.keep == ()
    assert winner.record["visit_date"] == dt.date(2026, 3, 2)
    alone = fold([Change(rec("b", "pg:04", fee=None), keep=("fee",))], TABLE.primary_key).winners[0]
    assert alone.keep == ("fee",)  # the warehouse's stored value is taken at write time


def test_keep_stored_sql_copies_named_rows_from_the_table() -> None:
    from sinks.core.sql import keep_stored_sql

    sql = keep_stored_sql(TABLE, "fee", 2)
    assert sql.startswith('UPDATE pg_temp."stage_std_outpatient_visit" AS s SET "fee" = t."fee" FROM "std"."outpatient_visit" AS t')
    assert sql.endswith('IN ((%s, %s), (%s, %s))')


def test_fold_rejects_missing_key_and_position() -> None:
    bad_key = rec("a", "pg:1")
    bad_key["visit_no"] = None
    bad_pos = rec("b", "")
    out = fold([Change(bad_key), Change(bad_pos), Change(rec("c", "pg:1"))], TABLE.primary_key)
    assert [e.reason for _, e in out.rejected] == ["missing_key", "missing_position"]
    assert len(out.winners) == 1


def test_version_orders_positions_as_strings() -> None:
    assert version(rec("a", "pg:00000000000000000099:1")) < version(rec("a", "pg:00000000000000000100:0"))


def test_copy_escaping_of_text_null_and_control_characters() -> None:
    assert escape("a\tb\nc\\d\re") == "a\\tb\\nc\\\\d\\re"
    assert encode_value(None) == NULL
    assert encode_value("\\N") == "\\\\N"  # the literal text, not NULL
    with pytest.raises(RecordError) as err:
        escape("x\x00y")
    assert err.value.reason == "nul_character"


def test_copy_encoding_of_typed_values() -> None:
    assert encode_value(True) == "t" and encode_value(False) == "f"
    assert encode_value(Decimal("12.50")) == "12.50"
    assert encode_value(Decimal("1E+3")) == "1E+3"
    assert encode_value(float("nan")) == "NaN" and encode_value(float("-inf")) == "-Infinity"
    assert encode_value(T0) == "2026-03-01T08:00:00+00:00"
    assert encode_value(dt.datetime(2026, 3, 1, 8, 0)) == "2026-03-01T08:00:00+00:00"
    assert encode_value(dt.date(2026, 3, 1)) == "2026-03-01"
    assert encode_value(b"\x01\xff") == "\\\\x01ff"


def test_jsonb_keeps_exact_decimals_and_escapes_for_copy() -> None:
    value = [{"code": "J18.9", "name": "肺炎\t\"重\"\\", "weight": Decimal("0.10"), "at": T0}]
    text = to_json(value)
    assert text == '[{"code":"J18.9","name":"肺炎\\t\\"重\\"\\\\","weight":0.10,"at":"2026-03-01T08:00:00+00:00"}]'
    line = RowEncoder([Column("diagnoses", "jsonb")]).line({"diagnoses": value})
    assert line == text.replace("\\", "\\\\")


def test_row_encoder_sets_deleted_from_op_and_names_bad_field() -> None:
    enc = RowEncoder(written_columns(TABLE))
    line = enc.line(rec("a", "pg:1", op="d", fee=Decimal("3.00")))
    parts = line.split("\t")
    assert parts[-1] == "t" and len(parts) == len(written_columns(TABLE))
    assert enc.line(rec("a", "pg:1")).split("\t")[-1] == "f"
    with pytest.raises(RecordError) as err:
        enc.line(rec("a", "pg:1", visit_date=object()))
    assert err.value.field == "visit_date"


def test_compiled_line_equals_the_column_encoders() -> None:
    # The generated line inlines the common cases; every value must come out as its column's encoder writes it.
    enc = RowEncoder(written_columns(TABLE))
    odd = [None, "", "a\tb\\c\nd\re", "肺炎", 7, True, 1.5, float("nan"), Decimal("1E+3"), Decimal("-0.50"),
           T0, dt.datetime(2026, 3, 1, 8, 0), dt.date(2026, 3, 1), [{"k": Decimal("0.10")}], {"a": [1, None]}]
    plan = [(c.name, encoder_for(c)) for c in written_columns(TABLE) if c.name != "deleted"]
    for value in odd:
        record = {name: value for name, _ in plan}
        try:
            expected = [e(value) for _, e in plan]
        except RecordError:
            with pytest.raises(RecordError):
                enc.line(record)
            continue
        assert enc.line(record).split("\t")[:-1] == expected, value
    with pytest.raises(RecordError) as err:
        enc.line(rec("a\x00", "pg:1"))
    assert err.value.field == "source_key"


def test_upsert_sql_guards_on_position_and_keeps_fields_on_delete() -> None:
    sql = batch_sql(TABLE)
    assert 'ON CONFLICT ("org_code", "visit_no") DO UPDATE' in sql.upsert
    assert ('WHERE (t."source_position" COLLATE "C", t."ingest_ts") < '
            '(EXCLUDED."source_position" COLLATE "C", EXCLUDED."ingest_ts")') in sql.upsert
    assert '"fee" = CASE WHEN EXCLUDED."deleted" THEN t."fee" ELSE EXCLUDED."fee" END' in sql.upsert
    assert '"op" = EXCLUDED."op"' in sql.upsert and '"warehouse_ts" = now()' in sql.upsert
    assert '"visit_no" =' not in sql.upsert and "warehouse_ts" not in sql.copy
    assert "ON COMMIT DELETE ROWS" in sql.create_staging
    assert sql.upsert.count("%s") == 0 and naive_upsert_sql(TABLE).count("%s") == len(sql.columns)


def test_staging_name_fits_identifier_limit() -> None:
    long = Table("std", "x" * 80, [], ["org_code"])
    assert len(staging_name(long)) <= 63
    assert staging_name(TABLE) == "stage_std_outpatient_visit"


def test_column_groups() -> None:
    assert [c.name for c in data_columns(TABLE)] == ["fee", "visit_date", "diagnoses"]
    assert [c.name for c in mapped_columns(TABLE)][:2] == ["org_code", "visit_no"]


def test_canonical_forms_agree_across_representations() -> None:
    assert canonical(Decimal("1.50")) == canonical(Decimal("1.5")) == canonical(1.5)
    assert canonical(Decimal("0.00")) == canonical(0)
    assert canonical(T0) == canonical(T0.astimezone(dt.timezone(dt.timedelta(hours=8))))
    assert canonical('{"b": 1.50, "a": [1]}', is_json=True) == canonical({"a": [1], "b": Decimal("1.5")}, is_json=True)
    assert canonical(None) != canonical("null")


def test_compare_reports_missing_extra_different_sorted() -> None:
    fields = ["fee"]
    src = key_checksums([rec("a", "1", fee=Decimal("1")), rec("b", "1", fee=Decimal("2")),
                         rec("c", "1", fee=None)], ["org_code", "visit_no"], fields)
    wh = key_checksums([rec("a", "1", fee=Decimal("1.00")), rec("b", "1", fee=Decimal("3")),
                        rec("d", "1")], ["org_code", "visit_no"], fields)
    diff = compare("H001", "outpatient_visit", src, wh)
    assert diff.missing == [("H001", "c")] and diff.extra == [("H001", "d")]
    assert diff.different == [("H001", "b")] and not diff.clean
    assert compare("H001", "x", src, src).clean
    assert checksum({"fee": 1}, fields) == checksum({"fee": Decimal("1.0")}, fields)


def test_last_wins_drops_deleted_keys() -> None:
    records = [rec("a", "2"), rec("a", "1", fee=1), rec("b", "1"), rec("b", "2", op="d")]
    live = last_wins(records, ["org_code", "visit_no"])
    assert [(r["visit_no"], r["source_position"]) for r in live] == [("a", "2")]


def test_backoff_is_bounded_and_jittered() -> None:
    b = Backoff(attempts=3, base=1.0, cap=4.0)
    assert all(0 <= b.delay(n) <= min(4.0, 2 ** (n - 1)) for n in range(1, 8) for _ in range(20))
    assert b.delay(1, retry_after=5.0) >= 5.0
    assert not b.exhausted(2) and b.exhausted(3)


class _PgError(psycopg2.Error):
    def __init__(self, code: str | None, message: str = "boom") -> None:
        super().__init__(message)
        self._code = code

    @property  # type: ignore[override]
    def pgcode(self) -> str | None:
        return self._code


class _ConnError(psycopg2.OperationalError):
    pass


@pytest.mark.parametrize("code,kind,reason", [
    ("40001", TransientError, None), ("40P01", TransientError, None), ("08006", TransientError, None),
    ("57P01", TransientError, None), ("23502", RecordError, "not_null_violation"),
    ("23514", RecordError, "check_violation"), ("22003", RecordError, "numeric_value_out_of_range"),
    ("22P02", RecordError, "invalid_text_representation"), ("28P01", FatalError, None),
    ("42703", FatalError, None), ("42P01", FatalError, None), ("XX000", FatalError, None),
])
def test_translate_error_by_sqlstate(code: str, kind: type, reason: str | None) -> None:
    err = translate_error(_PgError(code))
    assert isinstance(err, kind)
    if reason:
        assert isinstance(err, RecordError) and err.reason == reason


def test_translate_error_without_sqlstate_and_unknown() -> None:
    assert isinstance(translate_error(_ConnError("server closed the connection unexpectedly")), TransientError)
    assert isinstance(translate_error(_ConnError('FATAL:  password authentication failed for user "x"')),
                      FatalError)
    assert isinstance(translate_error(ValueError("?")), FatalError)
