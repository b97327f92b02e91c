"""The local stack works end to end: broker, Connect + Debezium, registry, Prometheus."""
from __future__ import annotations

import json
import time
import uuid
from decimal import Decimal
from typing import Any, Callable, Iterator

import psycopg2
import pymysql
import pytest
import requests
from confluent_kafka import Consumer, Producer
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

from hip.codec import Codec
from hip.settings import Settings

pytestmark = pytest.mark.integration


def test_broker_produce_and_consume(stack: Settings, unique: str) -> None:
    topic = f"it.stack.{unique}"
    producer = Producer({"bootstrap.servers": stack.bootstrap_servers})
    for i in range(10):
        producer.produce(topic, key=str(i).encode(), value=f"v{i}".encode())
    assert producer.flush(20) == 0
    consumer = Consumer({"bootstrap.servers": stack.bootstrap_servers, "group.id": f"it-{unique}",
                         "auto.offset.reset": "earliest"})
    consumer.subscribe([topic])
    got: list[bytes] = []
    deadline = time.monotonic() + 30
    while len(got) < 10 and time.monotonic() < deadline:
        msg = consumer.poll(1.0)
        if msg is not None and not msg.error():
            got.append(msg.value())
    consumer.close()
    assert got == [f"v{i}".encode() for i in range(10)]


def test_connect_lists_debezium_plugins(stack: Settings) -> None:
    plugins = requests.get(f"{stack.connect_url}/connector-plugins", timeout=10).json()
    classes = {p["class"]: p for p in plugins}
    assert classes["io.debezium.connector.postgresql.PostgresConnector"]["version"] == "3.6.1.Final"
    assert classes["io.debezium.connector.mariadb.MariaDbConnector"]["type"] == "source"


# ---------------------------------------------------------------- Debezium capture


def _put_connector(stack: Settings, name: str, config: dict[str, Any]) -> None:
    r = requests.put(f"{stack.connect_url}/connectors/{name}/config", json=config, timeout=30)
    assert r.status_code in (200, 201), r.text


def _delete_connector(stack: Settings, name: str) -> None:
    requests.delete(f"{stack.connect_url}/connectors/{name}", timeout=30)


def _events(stack: Settings, topic: str) -> Iterator[tuple[float, dict[str, Any] | None]]:
    """Yield (arrival time, decoded value) from the start of a topic, polling until closed."""
    consumer = Consumer({"bootstrap.servers": stack.bootstrap_servers, "group.id": f"it-{uuid.uuid4().hex}",
                         "auto.offset.reset": "earliest", "topic.metadata.refresh.interval.ms": 1000})
    consumer.subscribe([topic])
    try:
        while True:
            msg = consumer.poll(0.5)
            if msg is None or msg.error():
                yield time.monotonic(), {"__idle__": True}
                continue
            yield time.monotonic(), None if msg.value() is None else json.loads(msg.value())
    finally:
        consumer.close()


def _capture_row_lifecycle(stack: Settings, topic: str, dml: Callable[[str], None]) -> dict[str, Any]:
    """Wait for the snapshot of the seed row, then run insert/update/delete; return events by op."""
    events = _events(stack, topic)
    deadline = time.monotonic() + 120
    for _, value in events:  # the snapshot read proves the connector is streaming
        assert time.monotonic() < deadline, f"no snapshot event on {topic} within 120 s"
        if value and value.get("op") == "r":
            break
    started = time.monotonic()
    dml("insert")
    dml("update")
    dml("delete")
    seen: dict[str, Any] = {}
    for arrived, value in events:
        assert arrived - started < 30, f"changes not captured within 30 s: saw {sorted(seen)}"
        if value and value.get("op") in ("c", "u", "d"):
            seen[value["op"]] = value
        if len(seen) == 3:
            return seen
    raise AssertionError("unreachable")


def test_debezium_postgres_captures_insert_update_delete(stack: Settings, unique: str,
                                                         hospital_pg_admin: Any) -> None:
    db, org, name = f"it_stack_{unique}", f"it{unique}", f"it-stack-pg-{unique}"
    with hospital_pg_admin.cursor() as cur:
        cur.execute(f"create database {db}")
    conn = psycopg2.connect(host="127.0.0.1", port=stack.hospital_pg_port, dbname=db, user="postgres",
                            password=stack.secret("hospital-pg-admin"))
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            # What the hospital's DBA does: the table, SELECT for the capture role, a publication.
            cur.execute("create table patient (id int primary key, name text, fee numeric(10,2),"
                        " visit_time timestamp)")
            cur.execute("insert into patient values (0, '种子', 1.00, '2026-01-01 00:00:00')")
            cur.execute("grant select on all tables in schema public to hip_capture")
            cur.execute("create publication hip_pub for table patient")
        secrets = stack.secret_file("hospital-pg")
        _put_connector(stack, name, {
            "connector.class": "io.debezium.connector.postgresql.PostgresConnector",
            "database.hostname": "127.0.0.1", "database.port": str(stack.hospital_pg_port),
            "database.user": f"${{file:{secrets}:user}}", "database.password": f"${{file:{secrets}:password}}",
            "database.dbname": db, "topic.prefix": f"raw.{org}.his", "plugin.name": "pgoutput",
            "slot.name": f"hip_{unique}", "publication.name": "hip_pub",
            "publication.autocreate.mode": "disabled", "decimal.handling.mode": "string",
        })

        def dml(step: str) -> None:
            with conn.cursor() as cur:
                cur.execute({"insert": "insert into patient values (1, '张三', 12.50, '2026-03-01 08:30:00')",
                             "update": "update patient set name = '张三丰', fee = 13.75 where id = 1",
                             "delete": "delete from patient where id = 1"}[step])

        seen = _capture_row_lifecycle(stack, f"raw.{org}.his.public.patient", dml)
        c, u, d = seen["c"], seen["u"], seen["d"]
        assert c["before"] is None and c["after"]["name"] == "张三" and c["after"]["fee"] == "12.50"
        # Local wall-clock time arrives as epoch micros of the same wall-clock read as UTC.
        assert c["after"]["visit_time"] == 1772353800000000
        assert u["after"]["name"] == "张三丰" and u["after"]["fee"] == "13.75"
        assert d["after"] is None and d["before"]["id"] == 1  # REPLICA IDENTITY DEFAULT: key only
        lsns = [e["source"]["lsn"] for e in (c, u, d)]
        assert lsns == sorted(lsns) and len(set(lsns)) == 3
        for e in (c, u, d):
            assert e["source"]["db"] == db and e["source"]["table"] == "patient"
            assert abs(e["source"]["ts_ms"] / 1000 - time.time()) < 120
    finally:
        _delete_connector(stack, name)
        conn.close()
        _drop_slot_and_db(hospital_pg_admin, f"hip_{unique}", db)


def _drop_slot_and_db(admin: Any, slot: str, db: str) -> None:
    deadline = time.monotonic() + 30
    with admin.cursor() as cur:
        while time.monotonic() < deadline:
            cur.execute("select active_pid from pg_replication_slots where slot_name = %s", (slot,))
            row = cur.fetchone()
            if row is None:
                break
            if row[0] is None:
                cur.execute("select pg_drop_replication_slot(%s)", (slot,))
                break
            time.sleep(0.5)
        cur.execute(f"drop database if exists {db} with (force)")


def test_debezium_mariadb_captures_insert_update_delete(stack: Settings, unique: str,
                                                        mariadb_admin: Any) -> None:
    db, org, name = f"it_stack_{unique}", f"it{unique}", f"it-stack-my-{unique}"
    with mariadb_admin.cursor() as cur:
        cur.execute(f"create database {db}")
        cur.execute(f"create table {db}.patient (id int primary key, name varchar(50), fee decimal(10,2),"
                    " visit_time datetime)")
        cur.execute(f"insert into {db}.patient values (0, '种子', 1.00, '2026-01-01 00:00:00')")
    secrets = stack.secret_file("hospital-mariadb")
    try:
        _put_connector(stack, name, {
            "connector.class": "io.debezium.connector.mariadb.MariaDbConnector",
            "database.hostname": "127.0.0.1", "database.port": str(stack.hospital_mariadb_port),
            "database.user": f"${{file:{secrets}:user}}", "database.password": f"${{file:{secrets}:password}}",
            "database.server.id": str(100000 + int(unique[:4], 16)), "topic.prefix": f"raw.{org}.his",
            "database.include.list": db, "decimal.handling.mode": "string",
            "schema.history.internal.kafka.topic": f"hip.schema-history.{org}.his",
            "schema.history.internal.kafka.bootstrap.servers": stack.bootstrap_servers,
        })
        conn = pymysql.connect(host="127.0.0.1", port=stack.hospital_mariadb_port, user="root",
                               password=stack.secret("hospital-mariadb-admin"), database=db, autocommit=True)

        def dml(step: str) -> None:
            with conn.cursor() as cur:
                cur.execute({"insert": "insert into patient values (1, '张三', 12.50, '2026-03-01 08:30:00')",
                             "update": "update patient set name = '张三丰', fee = 13.75 where id = 1",
                             "delete": "delete from patient where id = 1"}[step])

        seen = _capture_row_lifecycle(stack, f"raw.{org}.his.{db}.patient", dml)
        conn.close()
        c, u, d = seen["c"], seen["u"], seen["d"]
        assert c["before"] is None and c["after"]["name"] == "张三" and c["after"]["fee"] == "12.50"
        assert c["after"]["visit_time"] == 1772353800000  # DATETIME: epoch millis of the wall clock
        assert u["before"]["name"] == "张三" and u["after"]["fee"] == "13.75"  # binlog_row_image=FULL
        assert d["after"] is None and d["before"]["name"] == "张三丰"
        positions = [(e["source"]["file"], e["source"]["pos"], e["source"].get("row", 0)) for e in (c, u, d)]
        assert positions == sorted(positions)
        for e in (c, u, d):
            assert e["source"]["gtid"] and e["source"]["table"] == "patient"
            assert abs(e["source"]["ts_ms"] / 1000 - time.time()) < 120
    finally:
        _delete_connector(stack, name)
        with mariadb_admin.cursor() as cur:
            cur.execute(f"drop database if exists {db}")


# ---------------------------------------------------------------- registry


def test_avro_round_trip_through_registry(stack: Settings) -> None:
    """Our codec and confluent-kafka's serializer read each other's records."""
    codec = Codec(stack.registry_url)
    record = {
        "org_code": "PLACEHOLDER01", "source_system": "HIS", "source_table": "GY_KSDM",
        "source_key": '["0101"]', "op": "c", "source_position": "my:00000001:00000000000000000100:000000:1",
        "source_ts": 1772353800000, "ingest_ts": 1772353801000, "mapping_id": "vendor_a.GY_KSDM",
        "dept_code": "0101", "dept_name": "心血管内科",
    }
    data = codec.encode("department", record)
    sr = SchemaRegistryClient({"url": stack.registry_url})
    ctx = SerializationContext("std.department", MessageField.VALUE)
    theirs = AvroDeserializer(sr)(data, ctx)
    assert theirs["dept_name"] == "心血管内科" and theirs["op"] == "c"
    schema = json.dumps(codec.catalogue["department"].schema)
    again = AvroSerializer(sr, schema, conf={"auto.register.schemas": False, "use.latest.version": True})(theirs, ctx)
    dataset, ours = codec.decode(again)
    assert dataset == "department" and ours["dept_code"] == "0101" and ours["source_ts"] == theirs["source_ts"]


def test_registry_refuses_incompatible_change(stack: Settings, unique: str) -> None:
    codec = Codec(stack.registry_url)
    subject = f"it.compat.{unique}-value"
    v1 = {"type": "record", "name": "t", "fields": [{"name": "a", "type": "string"},
                                                   {"name": "fee", "type": ["null", {"type": "bytes", "logicalType": "decimal", "precision": 12, "scale": 2}], "default": None}]}
    codec.registry.set_compatibility(subject)
    codec.registry.register(subject, v1)
    v2_ok = {**v1, "fields": v1["fields"] + [{"name": "b", "type": ["null", "string"], "default": None}]}
    v2_bad = {**v1, "fields": v1["fields"] + [{"name": "c", "type": "string"}]}  # no default
    assert codec.registry.is_compatible(subject, v2_ok)
    assert not codec.registry.is_compatible(subject, v2_bad)


# ---------------------------------------------------------------- Prometheus


def test_prometheus_reports_a_project_target_up(stack: Settings) -> None:
    deadline = time.monotonic() + 60
    while True:
        targets = requests.get(f"{stack.prometheus_url}/api/v1/targets", timeout=10).json()["data"]["activeTargets"]
        up = [t["labels"]["job"] for t in targets if t["health"] == "up" and t["labels"]["job"].startswith("hip-")]
        if up or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert up, f"no hip-* target is up: {[(t['labels']['job'], t['health'], t.get('lastError')) for t in targets]}"
