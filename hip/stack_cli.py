"""``hip stack``: health checks of the local stack, used by deploy/up.sh and by operators."""
from __future__ import annotations

import json
import socket
import time
import uuid
from typing import Any, Callable

import click
import requests

from hip.settings import Settings, load_settings

DEBEZIUM_PLUGINS = (
    "io.debezium.connector.postgresql.PostgresConnector",
    "io.debezium.connector.mariadb.MariaDbConnector",
)


def check_kafka(s: Settings) -> str:
    """The broker accepts a produce and returns it to a consumer."""
    from confluent_kafka import Consumer, KafkaException, Producer

    topic = "hip.health"
    payload = uuid.uuid4().hex.encode()
    # log_level 0: a broker that is down is reported once below, not by librdkafka every second.
    producer = Producer({"bootstrap.servers": s.bootstrap_servers, "socket.timeout.ms": 5000,
                         "message.timeout.ms": 10000, "log_level": 0})
    try:
        producer.list_topics(timeout=5)
    except KafkaException as exc:
        raise RuntimeError(f"no broker answers at {s.bootstrap_servers}: {exc.args[0].str()}") from None
    errors: list[str] = []

    def delivered(err: Any, _msg: Any) -> None:
        if err is not None:
            errors.append(str(err))

    producer.produce(topic, payload, on_delivery=delivered)
    if producer.flush(15) or errors:
        raise RuntimeError(f"produce to {topic} failed: {errors or 'timeout'}")
    consumer = Consumer({"bootstrap.servers": s.bootstrap_servers, "group.id": f"hip-health-{payload.decode()}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False, "log_level": 0})
    try:
        consumer.subscribe([topic])
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            msg = consumer.poll(1.0)
            if msg is not None and not msg.error() and msg.value() == payload:
                return "produce and consume ok"
    finally:
        consumer.close()
    raise RuntimeError("message produced but not consumed back")


def check_connect(s: Settings) -> str:
    plugins = requests.get(f"{s.connect_url}/connector-plugins", timeout=5).json()
    classes = {p["class"]: p.get("version") for p in plugins}
    missing = [c for c in DEBEZIUM_PLUGINS if c not in classes]
    if missing:
        raise RuntimeError(f"Connect is up but lacks plugins {missing}; plugin.path is {s.var / 'connect-plugins'}")
    return ", ".join(f"{c.rsplit('.', 1)[-1]} {classes[c]}" for c in DEBEZIUM_PLUGINS)


def check_registry(s: Settings) -> str:
    r = requests.get(f"{s.registry_url}/subjects", timeout=5)
    r.raise_for_status()
    return f"{len(r.json())} subjects"


def check_postgres(port: int, dbname: str, user: str, password: str) -> str:
    import psycopg2

    with psycopg2.connect(host="127.0.0.1", port=port, dbname=dbname, user=user, password=password,
                          connect_timeout=5) as conn, conn.cursor() as cur:
        cur.execute("show server_version")
        row = cur.fetchone()
    conn.close()
    return f"PostgreSQL {row[0] if row else '?'}"


def check_mariadb(s: Settings) -> str:
    import pymysql

    conn = pymysql.connect(host="127.0.0.1", port=s.hospital_mariadb_port, user="hip_capture",
                           password=s.secret("hospital-mariadb"), connect_timeout=5)
    try:
        with conn.cursor() as cur:
            cur.execute("select version(), @@binlog_format, @@binlog_row_image, @@gtid_strict_mode")
            version, fmt, image, _gtid = cur.fetchone()
    finally:
        conn.close()
    if fmt != "ROW" or image != "FULL":
        raise RuntimeError(f"binlog_format={fmt} binlog_row_image={image}; capture needs ROW and FULL")
    return f"MariaDB {version}, binlog {fmt}/{image}"


def check_prometheus(s: Settings) -> str:
    r = requests.get(f"{s.prometheus_url}/api/v1/targets", timeout=5)
    r.raise_for_status()
    targets = r.json()["data"]["activeTargets"]
    up = sum(1 for t in targets if t["health"] == "up")
    return f"{up}/{len(targets)} targets up"


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


CHECKS: dict[str, Callable[[Settings], str]] = {
    "pg-hospital": lambda s: check_postgres(s.hospital_pg_port, "postgres", "hip_capture", s.secret("hospital-pg")),
    "pg-warehouse": lambda s: check_postgres(s.warehouse_pg_port, "warehouse", "hip_warehouse", s.secret("warehouse")),
    "mariadb": check_mariadb,
    "kafka": check_kafka,
    "connect": check_connect,
    "registry": check_registry,
    "prometheus": check_prometheus,
}


@click.group()
def stack() -> None:
    """Health of the local stack (started by `make up`)."""


PLATFORM_TOPICS = ("dlq.normalize", "dlq.sink", "dlq.stats", "dq.findings")


@stack.command()
def topics() -> None:
    """Create every std.*, stat.* and dead-letter topic (idempotent).

    Made up front, with one partition count, so that no worker starts before the topics it reads
    exist and the statistics worker's tables are co-partitioned with their sources.
    """
    from confluent_kafka.admin import NewTopic  # type: ignore[attr-defined]

    from hip.catalogue import load_catalogue
    from hip.topics import create_missing

    s = load_settings()
    names = [ds.topic for ds in load_catalogue()] + list(PLATFORM_TOPICS)
    try:
        created = create_missing(s.bootstrap_servers,
                                 [NewTopic(n, s.std_partitions, 1, config={"retention.ms": "-1"}) for n in names])
    except Exception as exc:  # noqa: BLE001 - the broker's reason, said once
        raise click.ClickException(f"creating topics: {exc}") from exc
    click.echo(f"{len(created)} topics created, {len(names) - len(created)} already there")


@stack.command()
@click.argument("components", nargs=-1, type=click.Choice(sorted(CHECKS)))
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def health(components: tuple[str, ...], as_json: bool) -> None:
    """Check that each component answers (all by default). Exit 1 if any does not."""
    s = load_settings()
    results: dict[str, dict[str, object]] = {}
    for name in components or tuple(CHECKS):
        try:
            results[name] = {"ok": True, "detail": CHECKS[name](s)}
        except Exception as exc:  # noqa: BLE001 - a health check reports any failure as "down"
            results[name] = {"ok": False, "detail": f"{type(exc).__name__}: {exc}"}
    if as_json:
        click.echo(json.dumps(results, ensure_ascii=False, indent=2))
    else:
        for name, r in results.items():
            click.echo(f"{name:13} {'ok  ' if r['ok'] else 'DOWN'}  {r['detail']}")
    if not all(r["ok"] for r in results.values()):
        raise SystemExit(1)
