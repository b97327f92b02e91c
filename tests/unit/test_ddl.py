"""Warehouse DDL generated from the schemas (pure parts)."""
from __future__ import annotations

from hip.catalogue import load_catalogue
from hip.records import HEADER_NAMES
from sinks.ddl import ddl_statements, pg_type, table_for, widening

CAT = load_catalogue()


def test_tables_follow_the_catalogue() -> None:
    for ds in CAT:
        t = table_for(ds)
        assert t.schema == ("stat" if ds.is_statistic else "std") and t.name == ds.name
        assert t.primary_key == ["org_code", *ds.business_key]
        names = [c.name for c in t.columns]
        assert names[:len(HEADER_NAMES)] == list(HEADER_NAMES)
        assert names[-2:] == ["deleted", "warehouse_ts"]
        assert all(not t.column(k).nullable for k in t.primary_key)
        assert ds.name_zh in t.comment
        assert all(c.comment for c in t.columns)


def test_types() -> None:
    t = table_for(CAT["inpatient_front_sheet"])
    assert t.column("fee_total").pg_type == "numeric(14,2)"
    assert t.column("admission_time").pg_type == "timestamptz"
    assert t.column("admission_date").pg_type == "date"
    assert t.column("operations").pg_type == "jsonb"
    assert t.column("op").pg_type == "text"
    assert t.column("admission_times").pg_type == "integer"
    assert t.column("deleted").default == "false" and not t.column("deleted").nullable
    assert pg_type({"type": "long"}) == "bigint" and pg_type(["null", "boolean"]) == "boolean"
    assert pg_type({"type": "map", "values": "string"}) == "jsonb"


def test_indexes_for_statistics_and_dashboards() -> None:
    fee = table_for(CAT["medical_fee"])
    cols = {i.columns for i in fee.indexes}
    assert ("org_code", "charge_date") in cols and ("org_code", "source_ts") in cols
    assert ("stat_date", "org_code") in {i.columns for i in table_for(CAT["bed_usage_stat"]).indexes}
    for ds in CAT:
        assert all(len(i.name) <= 63 for i in table_for(ds).indexes)


def test_statements_are_idempotent_and_create_the_schemas() -> None:
    statements = ddl_statements(CAT)
    assert statements[:3] == ["create schema if not exists std", "create schema if not exists stat",
                              "create schema if not exists dq"]
    assert all(s.startswith(("create schema if not exists", "create table if not exists",
                             "create index if not exists", "comment on")) for s in statements)


def test_widening() -> None:
    assert widening("integer", "bigint") is True
    assert widening("bigint", "integer") is False
    assert widening("numeric(14,2)", "numeric(18,2)") is True
    assert widening("numeric(14,2)", "numeric(12,2)") is False
    assert widening("numeric(14,2)", "numeric(14,4)") is False
    assert widening("text", "integer") is False
    assert widening("text", "text") is None
