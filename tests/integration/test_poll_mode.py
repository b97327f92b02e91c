"""Poll mode against the real hospital databases and Kafka, with users that have SELECT only."""
from __future__ import annotations

import json
import time
import uuid
from contextlib import contextmanager
from typing import Any, Iterator

import pytest
from confluent_kafka import Consumer, TopicPartition

from connectors.fleet import Fleet
from connectors.poll_worker import SystemPoller
from connectors.sandbox import MariaDbHospital, PgHospital
from connectors.topics import raw_topic
from hip.settings import load_settings

pytestmark = pytest.mark.integration


def read_topic(bootstrap: str, topic: str, start: int = 0) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"it-{uuid.uuid4().hex}",
                  "enable.auto.commit": False})
    try:
        lo, hi = c.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
        out = []
        if hi <= start:
            return out
        c.assign([TopicPartition(topic, 0, start)])
        while len(out) < hi - start:
            m = c.poll(10)
            assert m is not None, f"timed out reading {topic}"
            assert not m.error(), m.error()
            out.append((json.loads(m.key()), json.loads(m.value())))
        return out
    finally:
        c.close()


def make_fleet(org: str, db: str, port: int, database: str, creds: str, table: str, cursor: str) -> Fleet:
    return Fleet.model_validate({"connector_prefix": "itpoll", "hospitals": [{
        "org": org, "name": "轮询测试医院", "region": "四平", "enabled": True, "systems": {"HIS": {
            "db": db, "host": "127.0.0.1", "port": port, "database": database, "credentials": creds,
            "vendor_profile": "vendor_b", "capture": "poll", "tables": [table],
            "poll": {table: {"cursor": cursor, "key": ["id"]}}}}}]})


def exercise(poller: SystemPoller, run_sql: Any, topic: str, bootstrap: str, schema_field: bool) -> None:
    """Snapshot, insert, update, delete, an insert with no update time; then a restart."""
    poller.start()
    assert poller.poll_once(diff=True) == 2
    events = read_topic(bootstrap, topic)
    assert [e[1]["op"] for e in events] == ["r", "r"]
    key, value = events[0]
    assert key == {"id": 1}
    assert value["before"] is None and value["after"]["name"] == "张三" and value["after"]["fee"] == "12.50"
    assert value["source"]["connector"] == "poll" and value["source"]["poll_position"].startswith("pl:")
    assert ("schema" in value["source"]) is schema_field
    # updated_at is local wall-clock time: Debezium's convention is epoch ms of that wall clock read as UTC
    assert value["after"]["updated_at"] == 1715335384000

    run_sql("INSERT INTO {t} (id, name, fee, updated_at) VALUES (3, '王五', 1.00, %s)", ("2024-05-10 11:00:00",))
    run_sql("UPDATE {t} SET name = '张三丰', updated_at = %s WHERE id = 1", ("2024-05-10 11:05:00",))
    run_sql("DELETE FROM {t} WHERE id = 2")
    run_sql("INSERT INTO {t} (id, name, fee, updated_at) VALUES (4, '赵六', 2.00, NULL)")
    assert poller.poll_once(diff=True) == 4
    new = read_topic(bootstrap, topic, 2)
    ops = [(e[1]["op"], e[0]["id"]) for e in new]
    assert ops[:2] == [("c", 3), ("u", 1)], ops
    assert sorted(ops[2:]) == [("c", 4), ("d", 2)], ops
    delete = next(e[1] for e in new if e[1]["op"] == "d")
    assert delete["before"] == {"id": 2} and delete["after"] is None
    positions = [e[1]["source"]["poll_position"] for e in events + new]
    assert positions == sorted(positions[:2]) + positions[2:] and len(set(positions)) == len(positions)
    assert delete["source"]["poll_position"] > max(e[1]["source"]["poll_position"] for e in new[:2])
    poller.close()

    # A restarted poller resumes from the durable cursor and key set: nothing is repeated.
    again = SystemPoller(poller.fleet, poller.hospital, poller.system, poller.spec, poller.secrets_dir,
                         poller.bootstrap)
    again.start()
    assert again.poll_once(diff=True) == 0
    run_sql("UPDATE {t} SET fee = 9.99, updated_at = %s WHERE id = 3", ("2024-05-10 12:00:00",))
    assert again.poll_once(diff=False) == 1
    last = read_topic(bootstrap, topic, 6)
    assert [(e[1]["op"], e[1]["after"]["fee"]) for e in last] == [("u", "9.99")]
    again.close()


@pytest.fixture
def settings() -> Any:
    return load_settings()


@contextmanager
def pg_hospital(settings: Any, prefix: str, **poller_args: Any) -> Iterator[tuple[PgHospital, SystemPoller, str]]:
    """A PostgreSQL hospital with two patients, a SELECT-only user, and a poller of its table."""
    tag = uuid.uuid4().hex[:8]
    pg = PgHospital(settings.hospital_pg_port, f"it_{prefix}_{tag}", settings.secrets_dir)
    try:
        pg.create("CREATE SCHEMA his; CREATE TABLE his.patient (id int PRIMARY KEY, name text, "
                  "fee numeric(10,2), updated_at timestamp);"
                  "INSERT INTO his.patient VALUES (1, '张三', 12.50, '2024-05-10 10:03:04'), "
                  "(2, '李四', 3.00, '2024-05-10 10:04:00');", ["his.patient"], publication=None)
        creds = pg.add_user(f"it_{tag}_sel", "select", ["his.patient"])
        org = f"IT{prefix[:4]}{tag}".upper()
        fleet = make_fleet(org, "postgresql", settings.hospital_pg_port, pg.database, creds, "his.patient",
                           "updated_at")
        h = fleet.hospitals[0]
        poller = SystemPoller(fleet, h, "HIS", h.systems["HIS"], settings.secrets_dir, settings.bootstrap_servers,
                              **poller_args)
        yield pg, poller, raw_topic(org, "HIS", "his", "patient")
    finally:
        pg.drop()


def test_poll_postgresql_select_only(settings: Any) -> None:
    with pg_hospital(settings, "poll") as (pg, poller, topic):
        exercise(poller, lambda sql, p=None: pg.execute(sql.format(t="his.patient"), p),
                 topic, settings.bootstrap_servers, True)


def test_poll_mariadb_select_only(settings: Any) -> None:
    tag = uuid.uuid4().hex[:8]
    my = MariaDbHospital(settings.hospital_mariadb_port, f"it_poll_{tag}", settings.secrets_dir)
    try:
        my.create(["CREATE TABLE patient (id INT PRIMARY KEY, name VARCHAR(50), fee DECIMAL(10,2), "
                   "updated_at DATETIME NULL)",
                   "INSERT INTO patient VALUES (1, '张三', 12.50, '2024-05-10 10:03:04'), "
                   "(2, '李四', 3.00, '2024-05-10 10:04:00')"])
        creds = my.add_user(f"it_{tag}_sel", "select")
        org = f"ITMY{tag}".upper()
        fleet = make_fleet(org, "mariadb", settings.hospital_mariadb_port, my.database, creds,
                           f"{my.database}.patient", "updated_at")
        h = fleet.hospitals[0]
        poller = SystemPoller(fleet, h, "HIS", h.systems["HIS"], settings.secrets_dir, settings.bootstrap_servers)
        exercise(poller, lambda sql, p=None: my.execute(sql.format(t="patient"), p),
                 raw_topic(org, "HIS", my.database, "patient"), settings.bootstrap_servers, False)
    finally:
        my.drop()


def test_poll_key_comparison_never_moves_the_cursor(settings: Any) -> None:
    """A row the key comparison finds ahead of the cursor is left to the cursor query; one behind it
    (committed late, or with no update time) is emitted. Either way the cursor stays: moving it
    to a fresh insert would skip the updates stamped between the old cursor and that insert."""
    # An hour's margin: changes stamped in the last hour are not yet due for the cursor query.
    with pg_hospital(settings, "polldiff", lag_s=3600) as (pg, poller, topic):
        poller.start()
        assert poller.poll_once(diff=True) == 2
        pg.execute("UPDATE his.patient SET name = '张三丰', updated_at = LOCALTIMESTAMP - interval '20 minutes' "
                   "WHERE id = 1")
        pg.execute("INSERT INTO his.patient VALUES (3, '王五', 1.00, LOCALTIMESTAMP - interval '10 minutes'), "
                   "(4, '赵六', 2.00, '2024-05-10 09:00:00')")
        # Row 3 is ahead of the cursor: not the key comparison's; row 4, behind it, is.
        assert poller.poll_once(diff=True) == 1
        assert [(e[1]["op"], e[0]["id"]) for e in read_topic(settings.bootstrap_servers, topic, 2)] == [("c", 4)]
        poller.lag_s = 0  # the hour has passed
        assert poller.poll_once(diff=False) == 2
        late = read_topic(settings.bootstrap_servers, topic, 3)
        assert [(e[1]["op"], e[0]["id"]) for e in late] == [("u", 1), ("c", 3)]
        assert late[0][1]["after"]["name"] == "张三丰"
        poller.close()
