"""Push mode: tokens, versions, record framing and the HTTP service with a fake producer."""
from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from connectors.ingest import Ingest, VersionStore, openapi
from connectors.push import ForgeryError, TokenStore, hash_token, prepare, version_position
from hip.records import record_key


@dataclass
class F:
    severity: str
    rule: str
    field: str | None
    message: str


def check(dataset: str, record: dict[str, Any]) -> list[F]:
    out = []
    if record.get("dept_name") is None:
        out.append(F("warning", "completeness", "dept_name", "missing"))
    if isinstance(record.get("approved_beds"), int) and record["approved_beds"] < 0:
        out.append(F("error", "range", "approved_beds", "negative"))
    return out


def encode(dataset: str, record: dict[str, Any]) -> bytes:
    if not isinstance(record.get("approved_beds", 0), (int, type(None))):
        raise TypeError("approved_beds is not an int")
    return json.dumps(record, ensure_ascii=False).encode()


class FakeProducer:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, bytes]] = []

    def produce(self, topic: str, key: bytes, value: bytes, on_delivery: Any = None) -> None:
        self.sent.append((topic, key, value))

    def flush(self, timeout: float) -> int:
        return 0


def test_tokens_are_stored_hashed(tmp_path: Path) -> None:
    store = TokenStore(tmp_path / "t.json")
    token = store.issue("ORG1")
    text = (tmp_path / "t.json").read_text()
    assert token not in text and hash_token(token) in text
    again = TokenStore(tmp_path / "t.json")
    assert again.org_for(f"Bearer {token}") == "ORG1"
    assert again.org_for("Bearer nope") is None and again.org_for(None) is None


def test_version_positions_sort_like_versions() -> None:
    assert version_position(9) < version_position(10)
    assert version_position("20240510120000") < version_position("20240510120001")
    for bad in (-1, True, "", None, 1.5, "x" * 65):
        with pytest.raises(ValueError):
            version_position(bad)


def test_prepare_frames_header_and_refuses_forgery() -> None:
    item = {"version": 3, "op": "c", "source_ts": "2024-05-10T10:00:00+08:00",
            "record": {"dept_code": "01", "dept_name": "内科", "org_code": "ORG1", "source_system": "HIS"}}
    p = prepare("ORG1", "department", ["dept_code"], 0, item, check, encode, 99)
    assert p.ok and p.key == record_key("ORG1", ["01"])
    assert p.record["source_system"] == "PUSH" and p.record["source_position"] == "pv:n:00000000000000000003"
    assert p.record["source_ts"] == 1715306400000 and p.record["ingest_ts"] == 99
    with pytest.raises(ForgeryError):
        prepare("ORG1", "department", ["dept_code"], 0, {**item, "record": {"dept_code": "1", "org_code": "X"}},
                check, encode, 0)
    bad = prepare("ORG1", "department", ["dept_code"], 1, {"version": 1, "record": {"dept_name": "x"}},
                  check, encode, 0)
    assert not bad.ok and bad.findings[0].rule == "business_key"
    schema = prepare("ORG1", "department", ["dept_code"], 1,
                     {"version": 1, "record": {"dept_code": "2", "approved_beds": "many"}}, check, encode, 0)
    assert not schema.ok and schema.findings[-1].rule == "schema"


def test_service(tmp_path: Path) -> None:
    tokens = TokenStore(tmp_path / "t.json")
    ta, tb = tokens.issue("ORGA"), tokens.issue("ORGB")
    producer = FakeProducer()
    ingest = Ingest(tokens, {"department": ["dept_code"]}, check, encode, producer,
                    VersionStore(tmp_path / "v.sqlite"))

    async def scenario() -> None:
        async with TestClient(TestServer(ingest.app())) as client:
            url = "/v1/datasets/department/records"

            async def post(token: str, records: Any) -> Any:
                r = await client.post(url, json={"records": records}, headers={"Authorization": f"Bearer {token}"})
                return r.status, await r.json()

            good = {"version": 2, "record": {"dept_code": "01", "dept_name": "内科"}}
            neg = {"version": 1, "record": {"dept_code": "02", "approved_beds": -1}}
            status, body = await post(ta, [good, neg])
            assert status == 200 and body["accepted"] == 1 and body["rejected"] == 1
            assert "range" in [f["rule"] for f in body["results"][1]["findings"]]
            assert len(producer.sent) == 1 and producer.sent[0][0] == "std.department"
            status, body = await post(ta, [good, {**good, "version": 1}, {**good, "version": 3}])
            assert [r["status"] for r in body["results"]] == ["duplicate", "stale", "accepted"]
            # hospital B may write the same business key for itself: keys are per organisation
            status, body = await post(tb, [good])
            assert body["accepted"] == 1
            status, body = await post(ta, [{"version": 9, "record": {"dept_code": "01", "org_code": "ORGB"}}])
            assert status == 403 and len(producer.sent) == 3
            assert (await client.post(url, json={"records": [good]})).status == 401
            r = await client.post("/v1/datasets/nope/records", json={"records": [good]},
                                  headers={"Authorization": f"Bearer {ta}"})
            assert r.status == 404
            spec = await (await client.get("/openapi.json")).json()
            assert spec["paths"]["/v1/datasets/{dataset}/records"]["post"]["parameters"][0]["schema"]["enum"] \
                == ["department"]

    asyncio.run(scenario())
    assert openapi(["a"])["openapi"] == "3.0.3"
