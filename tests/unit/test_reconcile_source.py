"""Source-side reconciliation: snapshot encoding and the proof that a snapshot maps like the stream.

The central test replays a simulated hospital workload twice through the mapping core: once as the
change events Debezium would emit (the normalizer's path, newest record per key, deletes removed)
and once as a SELECT of the final table state encoded by ``streams.core.snapshot``. Both must give
the same key checksums for every dataset, and the same number of rejected rows.
"""
from __future__ import annotations

import json
from collections import Counter
from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal
from typing import Any, Callable

import pytest

from connectors.simulator.profiles import PROFILES
from connectors.simulator.workload import Workload, seed_transactions
from sinks.core.reconcile import (
    PROVENANCE, Difference, KeyChecksums, compare, compared_fields, key_checksums, last_wins)
from sinks.core.table import Column as WColumn
from sinks.core.table import Table as WTable
from streams.core import envelope
from streams.core.mapping import MappingSet, load_mappings
from streams.core.normalize import DeadLetter, StandardRecord, normalize
from streams.core.snapshot import encoder_for, read_event, snapshot_order, snapshot_outputs
from streams.core.source import Column, decoder_for
from tests.unit.cdc_events import EventStream

ORGS = {"a": ("SIMA01", "sim_a01"), "b": ("SIMB01", "sim_b01")}
NOW_MS = 1_767_225_600_000


def no_check(_dataset: str, _record: dict[str, Any]) -> list[Any]:
    return []


@pytest.fixture(scope="module")
def mappings() -> MappingSet:
    return load_mappings()


@pytest.fixture(scope="module")
def tables() -> Callable[[str], Any]:
    from sinks.sink_cli import catalogue_tables

    return catalogue_tables()


# --- encoders are the decoders' inverses ------------------------------------------------------

@pytest.mark.parametrize("column, dialect, value", [
    (Column("s", "string"), "mariadb", "张三"),
    (Column("i", "int"), "postgres", 42),
    (Column("d", "decimal", 10, 2), "mariadb", Decimal("12.50")),
    (Column("d", "decimal", 10, 2), "postgres", Decimal("-0.01")),
    (Column("b", "bool"), "postgres", True),
    (Column("b", "bool"), "mariadb", 0),
    (Column("day", "date"), "mariadb", date(2099, 1, 1)),
    (Column("day", "date"), "postgres", date(1899, 12, 31)),
    (Column("t", "datetime"), "mariadb", datetime(2024, 3, 1, 8, 15, 30)),
    (Column("t", "datetime"), "mariadb", datetime(1899, 12, 31, 8, 0)),
    (Column("t", "datetime", 3), "mariadb", datetime(2024, 3, 1, 8, 15, 30, 123000)),
    (Column("t", "datetime", 6), "mariadb", datetime(2024, 3, 1, 8, 15, 30, 123000)),
    (Column("t", "datetime"), "postgres", datetime(2024, 3, 1, 8, 15, 30, 123000)),
    (Column("z", "timestamptz"), "postgres", datetime(2024, 3, 1, 0, 15, tzinfo=timezone.utc)),
    (Column("z", "timestamptz"), "postgres", datetime(2024, 3, 1, 8, 15, tzinfo=timezone(timedelta(hours=8)))),
    (Column("tm", "time"), "postgres", time(23, 59, 58, 999000)),
    (Column("x", "double"), "postgres", 36.6),
])
def test_encoding_then_decoding_gives_the_value_back(column: Column, dialect: str, value: Any) -> None:
    encoded = encoder_for(column, dialect)(value)
    json.dumps(encoded)  # a JSON value, as Debezium's converter writes it
    decoded = decoder_for(column, dialect)(encoded)
    if column.kind == "bool":
        assert decoded is bool(value)
    else:
        assert decoded == value


def test_encodings_match_debeziums() -> None:
    # time.precision.mode=connect: milliseconds for both databases, whatever the column precision.
    assert encoder_for(Column("t", "datetime"), "mariadb")(datetime(1970, 1, 2)) == 86_400_000
    assert encoder_for(Column("t", "datetime"), "postgres")(datetime(1970, 1, 2)) == 86_400_000
    assert encoder_for(Column("d", "date"), "mariadb")(date(1970, 1, 11)) == 10
    assert encoder_for(Column("d", "decimal", 10, 2), "mariadb")(Decimal("1E+2")) == "100"
    assert encoder_for(Column("z", "timestamptz"), "mariadb")(datetime(2024, 3, 1, 0, 0)) == "2024-03-01T00:00:00Z"
    # PyMySQL hands TIME over as a duration and the zero date as a string.
    assert encoder_for(Column("tm", "time"), "mariadb")(timedelta(hours=1)) == 3_600_000
    assert encoder_for(Column("d", "date"), "mariadb")("0000-00-00") is None
    assert encoder_for(Column("s", "string"), "mariadb")(None) is None


def test_read_event_is_a_snapshot_envelope() -> None:
    value = read_event({"KSDM": "0101"}, read_ms=NOW_MS, seq=3, db="sim_a01", schema="sim_a01", table="GY_KSDM")
    ev = envelope.decode(None, value, "raw.SIMA01.HIS.sim_a01.GY_KSDM")
    assert ev is not None and ev.op == "r" and ev.after == {"KSDM": "0101"} and ev.source_ts_ms == NOW_MS


def test_dictionary_tables_are_read_first_and_unmapped_tables_skipped(mappings: MappingSet) -> None:
    order = snapshot_order("SIMA01", ["MS_GHMX", "GY_DMZD", "NO_SUCH", "GY_KSDM", "GY_YGDM"], mappings)
    assert order == ["GY_KSDM", "GY_YGDM", "MS_GHMX"]


def test_lookups_come_from_dictionary_rows_whatever_order_tables_are_given(mappings: MappingSet) -> None:
    rows = {
        "MS_GHMX": [{"SBXH": 7, "BRID": 1, "GHSJ": datetime(2024, 3, 1, 8, 0), "GHLB": "01", "KSDM": "0101",
                     "YSDM": "0001", "GHJE": Decimal("5.00"), "ZLJE": Decimal("10.00"), "BRXZ": "1000", "YYXH": None,
                     "THBZ": 0, "JZZT": "0", "XGSJ": datetime(2024, 3, 1, 8, 0), "UNKNOWN_COLUMN": "x"}],
        "GY_KSDM": [{"KSDM": "0101", "KSMC": "内科门诊", "KSLB": "1", "SJKS": None, "PYDM": None, "CWS": 0,
                     "ZFBZ": 0, "CJSJ": None, "XGSJ": None}],
    }
    outs = list(snapshot_outputs("SIMA01", "HIS", "sim_a01", ["MS_GHMX", "GY_KSDM"], lambda t: rows[t], mappings,
                                 {}, dialect="mariadb", read_ms=NOW_MS, check=no_check))
    reg = [o for _, o in outs if isinstance(o, StandardRecord) and o.dataset == "outpatient_registration"]
    assert len(reg) == 1
    assert reg[0].record["dept_name"] == "内科门诊"
    assert reg[0].record["op"] == "r" and reg[0].record["source_table"] == "MS_GHMX"


# --- the proof: snapshot of the final state == newest streamed record per key ----------------

@pytest.mark.parametrize("vendor", sorted(ORGS))
def test_snapshot_maps_like_the_change_stream(vendor: str, mappings: MappingSet,
                                              tables: Callable[[str], Any]) -> None:
    org, db = ORGS[vendor]
    profile = PROFILES[vendor]
    stream = EventStream(profile, org, db)
    workload = Workload(profile, seed=11, dirty=0.03, start=datetime(2024, 3, 4, 7, 30))
    transactions = seed_transactions(profile) + list(workload.take(3000))

    streamed: dict[str, list[dict[str, Any]]] = {}
    stream_lookups: dict[str, Any] = {}
    stream_rejected: Counter[str] = Counter()
    deletes = 0
    for i, (key, value, topic, info) in enumerate(stream.events(transactions)):
        deletes += info["kind"] == "delete"
        for out in normalize(key, value, topic, 0, i, mappings, stream_lookups, check=no_check, now_ms=NOW_MS):
            if isinstance(out, StandardRecord):
                streamed.setdefault(out.dataset, []).append(out.record)
            else:
                stream_rejected[out.dataset or "-"] += 1
    assert deletes > 0, "the workload must delete rows for this test to mean anything"

    by_table: dict[str, list[dict[str, Any]]] = {}
    for (table, _), row in stream.state.items():
        by_table.setdefault(table, []).append(row)
    schema = profile.schema or db
    snap: dict[str, KeyChecksums] = {}
    snap_rejected: Counter[str] = Counter()
    for _, out in snapshot_outputs(org, "HIS", schema, sorted(by_table), lambda t: by_table[t], mappings, {},
                                   dialect=profile.dialect, read_ms=NOW_MS, check=no_check):
        if isinstance(out, DeadLetter):
            snap_rejected[out.dataset or "-"] += 1
            continue
        if out.dataset not in snap:
            snap[out.dataset] = KeyChecksums(*compared_fields(tables(out.dataset)))
        snap[out.dataset].add(out.record)

    assert set(streamed) == set(snap)
    for dataset, records in streamed.items():
        key, fields, json_fields = compared_fields(tables(dataset))
        live = key_checksums(last_wins(records, key), key, fields, json_fields)
        diff = compare(org, dataset, snap[dataset].sums, live, duplicates=snap[dataset].duplicates)
        assert diff.clean, (dataset, diff.missing[:3], diff.extra[:3], diff.different[:3], diff.duplicates[:3])
        assert diff.source_rows > 0
    assert sum(snap_rejected.values()) > 0, "spoiled rows must reach the snapshot as dead letters"


# --- the comparison ---------------------------------------------------------------------------

TABLE = WTable("std", "visit", [
    WColumn("org_code", "text", False), WColumn("source_system", "text", False),
    WColumn("source_table", "text", False), WColumn("source_key", "text", False), WColumn("op", "text", False),
    WColumn("source_position", "text", False), WColumn("source_ts", "timestamptz", False),
    WColumn("ingest_ts", "timestamptz", False), WColumn("mapping_id", "text"), WColumn("visit_no", "text", False),
    WColumn("fee", "numeric(12,2)"), WColumn("deleted", "boolean", False),
    WColumn("warehouse_ts", "timestamptz", False)], ["org_code", "visit_no"])


def test_compared_fields_keep_provenance_and_leave_out_capture_moments() -> None:
    key, fields, _ = compared_fields(TABLE)
    assert key == ["org_code", "visit_no"]
    assert "fee" in fields and set(PROVENANCE) <= set(fields)
    assert not {"op", "source_position", "source_ts", "ingest_ts", "warehouse_ts", "deleted"} & set(fields)


def test_capture_moments_do_not_make_a_difference_but_values_do() -> None:
    key, fields, jf = compared_fields(TABLE)
    base = {"org_code": "H1", "visit_no": "1", "fee": Decimal("1.50"), "source_system": "HIS", "source_table": "t",
            "source_key": '["1"]', "mapping_id": "m", "op": "r", "source_position": "pl:1", "source_ts": 1}
    stored = dict(base, fee=Decimal("1.5"), op="u", source_position="my:9", source_ts=datetime.now(timezone.utc))
    src = KeyChecksums(key, fields, jf)
    src.add(base)
    assert compare("H1", "visit", src.sums, key_checksums([stored], key, fields, jf)).clean
    changed = dict(stored, source_key='["2"]')
    assert compare("H1", "visit", src.sums, key_checksums([changed], key, fields, jf)).different == [("H1", "1")]


def test_rejected_rows_are_counted_not_missing_and_duplicates_are_differences() -> None:
    key, fields, jf = compared_fields(TABLE)
    src = KeyChecksums(key, fields, jf)
    src.add({"org_code": "H1", "visit_no": "1"})
    src.rejected = 4
    diff = compare("H1", "visit", src.sums, dict(src.sums), rejected=src.rejected, duplicates=src.duplicates)
    assert diff.clean and diff.rejected == 4 and diff.missing == []
    src.add({"org_code": "H1", "visit_no": "1", "fee": 2})
    dup = compare("H1", "visit", src.sums, dict(src.sums), duplicates=src.duplicates)
    assert dup.duplicates == [("H1", "1")] and not dup.clean


def test_missing_extra_different_are_sorted_keys() -> None:
    diff = compare("H1", "visit", {("H1", "2"): "a", ("H1", "1"): "b", ("H1", "3"): "c"},
                   {("H1", "3"): "x", ("H1", "4"): "d", ("H1", "1"): "b"})
    assert (diff.missing, diff.extra, diff.different) == ([("H1", "2")], [("H1", "4")], [("H1", "3")])
    assert isinstance(diff, Difference) and not diff.clean
