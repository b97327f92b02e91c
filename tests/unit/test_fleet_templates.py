"""Connector configs rendered from templates, topic names, and the plan diff."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from connectors.fleet import Fleet
from connectors.plan import format_plan, plan
from connectors.templates import TEMPLATE_DIR, RenderContext, java_regex_literal, render_fleet, slot_name
from connectors.topics import escape, raw_topic
from hip.errors import ConfigError


def fleet(dbs: dict[str, str]) -> Fleet:
    systems = {s: {"db": db, "host": "db.example", "database": "hisdb", "credentials": f"cred-{s.lower()}",
                   "vendor_profile": "vendor_b", "capture": "log", "tables": ["dbo.患者信息", "his.pat_info"]}
               for s, db in dbs.items()}
    return Fleet.model_validate({"hospitals": [{"org": "SIM01", "name": "测试", "region": "长春", "enabled": True,
                                                "systems": systems}]})


CTX = RenderContext("kafka:9092", Path("/srv/hip/var/secrets"))


def test_postgres_config() -> None:
    cfg = render_fleet(fleet({"HIS": "postgresql"}), CTX)["hip.SIM01.HIS"]
    assert cfg["plugin.name"] == "pgoutput"
    assert cfg["publication.autocreate.mode"] == "disabled"
    assert cfg["slot.name"] == "hip_sim01_his"
    assert cfg["topic.prefix"] == "raw.SIM01.HIS"
    assert cfg["database.password"] == "${file:/srv/hip/var/secrets/cred-his.properties:password}"
    assert cfg["decimal.handling.mode"] == "string" and cfg["time.precision.mode"] == "connect"
    assert cfg["value.converter.replace.null.with.default"] == "false"
    assert cfg["skipped.operations"] == "none" and cfg["tombstones.on.delete"] == "false"
    assert cfg["heartbeat.interval.ms"] == "10000"
    assert "heartbeat.action.query" not in cfg and "signal.data.collection" not in cfg
    assert cfg["signal.enabled.channels"] == "kafka"
    assert cfg["table.include.list"] == r"dbo\.患者信息,his\.pat_info"
    assert "password" not in "".join(v for k, v in cfg.items() if not v.startswith("${"))


def test_mariadb_config_has_history_server_id_and_zone() -> None:
    cfg = render_fleet(fleet({"HIS": "mariadb", "LIS": "mariadb"}), CTX)
    his, lis = cfg["hip.SIM01.HIS"], cfg["hip.SIM01.LIS"]
    assert his["database.server.id"] != lis["database.server.id"]
    assert his["schema.history.internal.kafka.topic"] == "hip.schemahistory.SIM01.HIS"
    assert his["schema.history.internal.kafka.bootstrap.servers"] == "kafka:9092"
    assert his["bigint.unsigned.handling.mode"] == "precise"
    assert his["database.connectionTimeZone"] == "Asia/Shanghai"
    assert his["database.include.list"] == "dbo,his"
    assert "slot.name" not in his
    # Heartbeats committed an inflated skip count that lost a transaction at the next restart.
    assert his["heartbeat.interval.ms"] == "0"
    assert render_fleet(fleet({"HIS": "mysql"}), CTX)["hip.SIM01.HIS"]["heartbeat.interval.ms"] == "0"


def test_sqlserver_and_oracle_render() -> None:
    cfg = render_fleet(fleet({"HIS": "sqlserver", "EMR": "oracle"}), CTX)
    assert cfg["hip.SIM01.HIS"]["connector.class"].endswith("SqlServerConnector")
    assert cfg["hip.SIM01.HIS"]["topic.naming.strategy"].endswith("SchemaUnicodeTopicNamingStrategy")
    assert cfg["hip.SIM01.EMR"]["log.mining.strategy"] == "online_catalog"


def test_overrides_win_and_unknown_placeholder_fails(tmp_path: Path) -> None:
    f = Fleet.model_validate({"hospitals": [{"org": "SIM01", "name": "x", "region": "长春", "enabled": True, "systems": {
        "HIS": {"db": "postgresql", "host": "h", "database": "d", "credentials": "c", "vendor_profile": "v",
                "capture": "log", "overrides": {"snapshot.mode": "no_data"}}}}]})
    assert render_fleet(f, CTX)["hip.SIM01.HIS"]["snapshot.mode"] == "no_data"
    shutil.copytree(TEMPLATE_DIR, tmp_path, dirs_exist_ok=True)
    (tmp_path / "postgresql.yaml").write_text("x.y: '{nope}'\n", encoding="utf-8")
    with pytest.raises(ConfigError) as e:
        render_fleet(f, RenderContext("k", Path("/s"), tmp_path))
    assert "postgresql.yaml" in str(e.value) and "x.y" in str(e.value)


def test_poll_and_disabled_systems_have_no_connector() -> None:
    f = Fleet.model_validate({"hospitals": [{"org": "SIM01", "name": "x", "region": "长春", "enabled": False,
                                             "systems": {"HIS": {"db": "postgresql", "host": "h", "database": "d",
                                                                 "credentials": "c", "vendor_profile": "v",
                                                                 "capture": "log"}}}]})
    assert render_fleet(f, CTX) == {}


def test_topic_names_follow_debezium_unicode_strategy() -> None:
    assert raw_topic("SIM01", "HIS", "his", "pat_info") == "raw.SIM01.HIS.his.pat_u005finfo"
    assert raw_topic("SIM01", "HIS", "dbo", "患者信息") == "raw.SIM01.HIS.dbo._u60a3_u8005_u4fe1_u606f"
    # two Chinese names never collide (the default strategy maps both to ____)
    assert raw_topic("A", "HIS", "s", "门诊") != raw_topic("A", "HIS", "s", "住院")
    assert escape("a b") == "a_u0020b" and escape("ā") == "_u101"
    assert escape("𝄞") == "_ud834_udd1e"
    assert len(raw_topic("A", "HIS", "s", "x" * 400)) == 249


def test_helpers() -> None:
    assert java_regex_literal("his.a$b(1)") == r"his\.a\$b\(1\)"
    f = fleet({"HIS": "postgresql"})
    assert slot_name(f, "SIM-01", "HIS") == "hip_sim_01_his"


def test_plan_create_update_delete_only_own_prefix() -> None:
    desired = {"hip.A.HIS": {"a": "1", "b": "2"}, "hip.B.HIS": {"a": "1"}}
    current = {"hip.A.HIS": {"name": "hip.A.HIS", "a": "1", "b": "3"},
               "hip.C.HIS": {"connector.class": "io.debezium.connector.postgresql.PostgresConnector",
                             "slot.name": "hip_c_his", "database.hostname": "h"},
               "other.X": {"a": "1"}}
    changes = plan(desired, current, "hip")
    assert [(c.action, c.name) for c in changes] == [("update", "hip.A.HIS"), ("create", "hip.B.HIS"),
                                                     ("delete", "hip.C.HIS")]
    assert changes[0].diff == {"b": ("3", "2")}
    text = format_plan(changes)
    assert "b: 3 → 2" in text and "pg_drop_replication_slot('hip_c_his')" in text
    assert "1 to create, 1 to update, 1 to delete" in text
    assert plan(desired, {k: dict(v, name=k) for k, v in desired.items()}, "hip") == []
    assert format_plan([]).startswith("No changes")
