"""Push mode end to end: HTTP ingest wired to the catalogue, conformance, codec and the real Kafka."""
from __future__ import annotations

import asyncio
import socket
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

import pytest
import requests
from aiohttp import web
from confluent_kafka import Consumer, TopicPartition

from connectors.ingest import default_ingest
from connectors.push import TokenStore
from hip.codec import Codec
from hip.records import record_key, std_topic
from hip.settings import load_settings

pytestmark = pytest.mark.integration
DATASET = "department"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    settings = load_settings()
    tmp: Path = tmp_path_factory.mktemp("ingest")
    tokens = TokenStore(tmp / "tokens.json")
    tag = uuid.uuid4().hex[:6].upper()
    org_a, org_b = f"ITA{tag}", f"ITB{tag}"
    token_a, token_b = tokens.issue(org_a), tokens.issue(org_b)
    ingest = default_ingest(TokenStore(tmp / "tokens.json"), tmp, settings.bootstrap_servers,
                            settings.registry_url)
    port = free_port()
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(ingest.app())

    def serve() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(runner.setup())
        loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", port).start())
        loop.run_forever()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    for _ in range(50):
        try:
            requests.get(url + "/healthz", timeout=1)
            break
        except requests.ConnectionError:
            time.sleep(0.1)
    yield {"url": url, "org_a": org_a, "org_b": org_b, "token_a": token_a, "token_b": token_b,
           "bootstrap": settings.bootstrap_servers, "registry": settings.registry_url}
    asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)


def post(svc: dict[str, Any], token: str, records: list[dict[str, Any]]) -> requests.Response:
    return requests.post(f"{svc['url']}/v1/datasets/{DATASET}/records", json={"records": records},
                         headers={"Authorization": f"Bearer {token}"}, timeout=30)


def end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"it-{uuid.uuid4().hex}"})
    try:
        meta = c.list_topics(topic, timeout=10).topics[topic]
        return {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in meta.partitions}
    finally:
        c.close()


def read_from(bootstrap: str, topic: str, start: dict[int, int]) -> list[tuple[bytes, bytes]]:
    end = end_offsets(bootstrap, topic)
    want = sum(end[p] - start.get(p, 0) for p in end)
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"it-{uuid.uuid4().hex}"})
    try:
        c.assign([TopicPartition(topic, p, start.get(p, 0)) for p in end])
        out = []
        while len(out) < want:
            m = c.poll(10)
            assert m is not None and not m.error()
            out.append((m.key(), m.value()))
        return out
    finally:
        c.close()


def test_push_accepts_good_rejects_bad_and_refuses_other_hospitals(service: dict[str, Any]) -> None:
    svc = service
    topic = std_topic(DATASET)
    assert requests.get(svc["url"] + "/openapi.json", timeout=5).json()["openapi"].startswith("3.")
    assert post(svc, "not-a-token", [{"version": 1, "record": {"dept_code": "01"}}]).status_code == 401
    before = end_offsets(svc["bootstrap"], topic) if _topic_exists(svc["bootstrap"], topic) else {}
    good = {"version": 1, "op": "c", "source_ts": "2024-05-10T10:00:00+08:00",
            "record": {"dept_code": "0101", "dept_name": "心血管内科", "approved_beds": 40, "is_active": True}}
    bad = {"version": 1, "record": {"dept_code": "0102", "approved_beds": "forty"}}
    r = post(svc, svc["token_a"], [good, bad])
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["accepted"] == 1 and body["rejected"] == 1
    assert body["results"][1]["status"] == "rejected" and body["results"][1]["findings"]
    # the same version again is a duplicate, an older one stale: nothing more is produced
    r = post(svc, svc["token_a"], [good, {**good, "version": 0}])
    assert [x["status"] for x in r.json()["results"]] == ["duplicate", "stale"]
    # another hospital's org_code with hospital A's token: the whole batch is refused
    forged = {"version": 5, "record": {**good["record"], "org_code": svc["org_b"], "dept_code": "0999"}}
    r = post(svc, svc["token_a"], [forged])
    assert r.status_code == 403, r.text
    messages = read_from(svc["bootstrap"], topic, before)
    mine = [m for m in messages if m[0] == record_key(svc["org_a"], ["0101"])]
    assert len(mine) == 1
    assert not [m for m in messages if svc["org_b"].encode() in m[0]]
    dataset, record = Codec(svc["registry"]).decode(mine[0][1])
    assert dataset == DATASET
    assert record["org_code"] == svc["org_a"] and record["source_system"] == "PUSH"
    assert record["source_position"] == "pv:n:00000000000000000001" and record["dept_name"] == "心血管内科"


def _topic_exists(bootstrap: str, topic: str) -> bool:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "it-meta"})
    try:
        return topic in c.list_topics(timeout=10).topics
    finally:
        c.close()
