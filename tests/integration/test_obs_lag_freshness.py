"""Lag and freshness move as they should.

- Lag arithmetic against the broker, with a consumer group of the test's own.
- With the workload running, pausing the sink (SIGSTOP of the process serving the sink's metrics
  port, then SIGCONT) makes the sink's lag and the hospital's freshness grow, and resuming brings
  both back down. Needs connectors, normalizer, sink and ``hip simulate`` (vendor b, sim_b01).
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Iterator

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from tests.integration.test_obs_helpers import S, exporter_sample, query, require_stack, wait_for

pytestmark = pytest.mark.integration
HIP = str(Path(sys.executable).parent / "hip")


@pytest.fixture()
def topic() -> Iterator[str]:
    name = f"hip.obs.lagtest.{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": S.bootstrap_servers})
    admin.create_topics([NewTopic(name, num_partitions=2, replication_factor=1)])[name].result(timeout=30)
    try:
        yield name
    finally:
        admin.delete_topics([name])[name].result(timeout=30)


def test_exporter_lag_equals_end_minus_committed(topic: str) -> None:
    require_stack()
    producer = Producer({"bootstrap.servers": S.bootstrap_servers})
    for i in range(30):
        producer.produce(topic, value=b"x", partition=i % 2)
    producer.flush(30)
    group = f"hip-obs-test-{uuid.uuid4().hex[:8]}"
    consumer = Consumer({"bootstrap.servers": S.bootstrap_servers, "group.id": group,
                         "enable.auto.commit": False})
    try:
        # 15 per partition: commit 10 on p0 and 4 on p1 → lag 5 and 11
        consumer.commit(offsets=[TopicPartition(topic, 0, 10), TopicPartition(topic, 1, 4)], asynchronous=False)
        wait_for("lag of p0", lambda: exporter_sample("hip_consumer_lag_messages", group=group, topic=topic,
                                                      partition="0") == 5.0, timeout_s=30)
        assert exporter_sample("hip_consumer_lag_messages", group=group, topic=topic, partition="1") == 11.0
        assert exporter_sample("hip_consumer_committed_offset", group=group, topic=topic, partition="1") == 4.0
        assert exporter_sample("hip_topic_end_offset", topic=topic, partition="1") == 15.0
        consumer.commit(offsets=[TopicPartition(topic, 0, 15), TopicPartition(topic, 1, 15)], asynchronous=False)
        wait_for("lag back to 0", lambda: exporter_sample("hip_consumer_lag_messages", group=group, topic=topic,
                                                          partition="1") == 0.0, timeout_s=30)
    finally:
        consumer.close()
        AdminClient({"bootstrap.servers": S.bootstrap_servers}).delete_consumer_groups([group])


def _pid_listening_on(port: int) -> int:
    out = subprocess.run(["ss", "-Hltnp", f"sport = :{port}"], capture_output=True, text=True, check=True).stdout
    m = re.search(r"pid=(\d+)", out)
    assert m, f"no process listens on 127.0.0.1:{port} (is the sink running?)"
    return int(m.group(1))


def _sink_lag() -> float:
    rows = query('hip:consumer_lag_messages:sum_by_group{group="hip-sink"}')
    return rows[0][1] if rows else 0.0


def _freshness(org: str) -> float | None:
    rows = query(f'hip:freshness_seconds:min_by_org{{org="{org}"}}')
    return rows[0][1] if rows else None


def test_pausing_the_sink_grows_lag_and_freshness_and_resuming_recovers(demo_pipeline: str) -> None:
    require_stack()
    org = "SIMB01"
    workload = subprocess.Popen([HIP, "simulate", "run", "--vendor", "b", "--db", "sim_b01",
                                 "--changes", "100000", "--rate", "20", "--seed", str(int(time.time()))],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(f"{org} fresh before the pause", lambda: (f := _freshness(org)) is not None and f < 60,
                 timeout_s=180)
        lag_before = _sink_lag()
        pid = _pid_listening_on(S.sink_metrics_port)
        os.kill(pid, signal.SIGSTOP)
        try:
            wait_for("sink lag growing", lambda: _sink_lag() > lag_before + 50, timeout_s=90)
            # 20 changes/s keep arriving at the source while nothing reaches the warehouse.
            wait_for(f"{org} freshness growing past 60 s", lambda: (_freshness(org) or 0) > 60, timeout_s=120)
        finally:
            os.kill(pid, signal.SIGCONT)
        wait_for("sink lag recovered", lambda: _sink_lag() < 200, timeout_s=180)
        wait_for(f"{org} fresh again", lambda: (f := _freshness(org)) is not None and f < 30, timeout_s=180)
    finally:
        workload.terminate()
        workload.wait(30)
