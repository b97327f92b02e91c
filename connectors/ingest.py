"""Adapter: the push-mode HTTP ingest service (aiohttp).

``POST /v1/datasets/{dataset}/records`` with ``Authorization: Bearer <hospital token>``.
Valid records go to ``std.<dataset>`` keyed by ``hip.records.record_key``; invalid ones are answered
with their findings and go nowhere else. Idempotent by (org, dataset, business key, version): a
version already accepted is a ``duplicate``, an older one ``stale``; neither is produced again.
The last accepted version per key sits in a SQLite file, written after Kafka acknowledged.
"""
from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path
from typing import Any, Callable

from aiohttp import web
from confluent_kafka import Producer

from connectors.push import (Checker, Encoder, ForgeryError, Prepared, TokenStore, prepare)
from hip.errors import TransientError
from hip.metrics import DEAD_LETTERS, ERRORS, EVENTS_IN, FINDINGS, RECORDS_OUT
from hip.records import std_topic

STAGE = "ingest"
MAX_BATCH = 5000


class VersionStore:
    """Last accepted source position per (org, dataset, business key)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(str(path), check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("CREATE TABLE IF NOT EXISTS accepted (org TEXT, dataset TEXT, key TEXT, "
                        "position TEXT NOT NULL, PRIMARY KEY (org, dataset, key))")

    def last(self, org: str, dataset: str, keys: list[str]) -> dict[str, str]:
        out: dict[str, str] = {}
        for i in range(0, len(keys), 500):
            chunk = keys[i:i + 500]
            rows = self.db.execute(
                f"SELECT key, position FROM accepted WHERE org=? AND dataset=? AND key IN ({','.join('?' * len(chunk))})",
                [org, dataset, *chunk])
            out.update(dict(rows.fetchall()))
        return out

    def store(self, org: str, dataset: str, accepted: dict[str, str]) -> None:
        with self.db:
            self.db.executemany(
                "INSERT INTO accepted VALUES (?,?,?,?) ON CONFLICT (org, dataset, key) "
                "DO UPDATE SET position = excluded.position WHERE excluded.position > accepted.position",
                [(org, dataset, k, p) for k, p in accepted.items()])


def openapi(datasets: list[str]) -> dict[str, Any]:
    item = {"type": "object", "required": ["version", "record"], "additionalProperties": False,
            "properties": {
                "version": {"oneOf": [{"type": "integer", "minimum": 0}, {"type": "string", "maxLength": 64}],
                            "description": "monotonically increasing per record; one kind and width per dataset"},
                "op": {"type": "string", "enum": ["c", "u", "d"], "default": "u"},
                "source_ts": {"oneOf": [{"type": "integer"}, {"type": "string", "format": "date-time"}],
                              "description": "commit time at the hospital: epoch ms or ISO-8601 with offset"},
                "record": {"type": "object", "description": "the dataset's fields in the standard form "
                           "(avro/schemas/<dataset>.avsc); org_code, if present, must be the token's"}}}
    finding = {"type": "object", "properties": {k: {"type": "string"} for k in ("severity", "rule", "field", "message")}}
    result = {"type": "object", "properties": {
        "index": {"type": "integer"},
        "status": {"type": "string", "enum": ["accepted", "duplicate", "stale", "rejected"]},
        "findings": {"type": "array", "items": finding}}}
    return {
        "openapi": "3.0.3",
        "info": {"title": "Provincial health information platform: push ingest", "version": "1"},
        "components": {"securitySchemes": {"hospitalToken": {"type": "http", "scheme": "bearer"}},
                       "schemas": {"Item": item, "Finding": finding, "Result": result}},
        "security": [{"hospitalToken": []}],
        "paths": {"/v1/datasets/{dataset}/records": {"post": {
            "summary": "Send a batch of standard records of one dataset",
            "parameters": [{"name": "dataset", "in": "path", "required": True,
                            "schema": {"type": "string", "enum": datasets}}],
            "requestBody": {"required": True, "content": {"application/json": {"schema": {
                "type": "object", "required": ["records"],
                "properties": {"records": {"type": "array", "maxItems": MAX_BATCH,
                                           "items": {"$ref": "#/components/schemas/Item"}}}}}}},
            "responses": {
                "200": {"description": "per-record results (rejected ones carry findings)",
                        "content": {"application/json": {"schema": {"type": "object", "properties": {
                            "accepted": {"type": "integer"}, "rejected": {"type": "integer"},
                            "results": {"type": "array", "items": {"$ref": "#/components/schemas/Result"}}}}}}},
                "400": {"description": "malformed body"}, "401": {"description": "unknown token"},
                "403": {"description": "a record belongs to another organisation: nothing written"},
                "404": {"description": "unknown dataset"}}}}},
    }


class Ingest:
    """The service's state: tokens, dataset metadata, checker, encoder, producer, version store."""

    def __init__(self, tokens: TokenStore, business_keys: dict[str, list[str]], check: Checker,
                 encode: Encoder, producer: Producer, versions: VersionStore,
                 clock: Callable[[], float] = time.time) -> None:
        self.tokens, self.business_keys, self.check, self.encode = tokens, business_keys, check, encode
        self.producer, self.versions, self.clock = producer, versions, clock
        self.lock = asyncio.Lock()

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/datasets/{dataset}/records", self.post_records)
        app.router.add_get("/openapi.json", self.get_openapi)
        app.router.add_get("/healthz", self.get_health)
        return app

    async def get_health(self, _request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    async def get_openapi(self, _request: web.Request) -> web.Response:
        return web.json_response(openapi(sorted(self.business_keys)))

    async def post_records(self, request: web.Request) -> web.Response:
        org = self.tokens.org_for(request.headers.get("Authorization"))
        if org is None:
            return _error(401, "unknown or missing bearer token")
        dataset = request.match_info["dataset"]
        if dataset not in self.business_keys:
            return _error(404, f"unknown dataset {dataset!r}")
        try:
            body = await request.json()
        except (ValueError, UnicodeDecodeError):
            return _error(400, "body is not JSON")
        items = body.get("records") if isinstance(body, dict) else None
        if not isinstance(items, list) or not items or len(items) > MAX_BATCH:
            return _error(400, f"body is {{\"records\": [1..{MAX_BATCH} items]}}")
        now_ms = int(self.clock() * 1000)
        loop = asyncio.get_running_loop()
        try:
            prepared = await loop.run_in_executor(None, self._prepare, org, dataset, items, now_ms)
            EVENTS_IN.labels(stage=STAGE, org=org, system="PUSH").inc(len(items))
            # One writer at a time: the version check and the store must see each other's results.
            async with self.lock:
                results = await loop.run_in_executor(None, self._write, org, dataset, prepared)
        except ForgeryError as exc:
            return _error(403, str(exc))
        except TransientError as exc:
            ERRORS.labels(stage=STAGE, kind="transient").inc()
            return _error(503, f"temporarily unavailable, resend the batch: {exc}")
        accepted = sum(1 for r in results if r["status"] == "accepted")
        rejected = sum(1 for r in results if r["status"] == "rejected")
        return web.json_response({"accepted": accepted, "rejected": rejected, "results": results})

    def _prepare(self, org: str, dataset: str, items: list[Any], now_ms: int) -> list[Prepared]:
        keys = self.business_keys[dataset]
        return [prepare(org, dataset, keys, i, it, self.check, self.encode, now_ms) for i, it in enumerate(items)]

    def _write(self, org: str, dataset: str, prepared: list[Prepared]) -> list[dict[str, Any]]:
        ok = [p for p in prepared if p.ok]
        stored = self.versions.last(org, dataset, sorted({p.identity for p in ok if p.identity}))
        newest: dict[str, str] = {}
        results: list[dict[str, Any]] = []
        to_send: list[Prepared] = []
        for p in prepared:
            findings = [f.as_dict() for f in p.findings]
            for f in p.findings:
                FINDINGS.labels(org=org, dataset=dataset, rule=f.rule, severity=f.severity).inc()
            if not p.ok:
                DEAD_LETTERS.labels(stage=STAGE, org=org, reason="rejected").inc()
                results.append({"index": p.index, "status": "rejected", "findings": findings})
                continue
            assert p.identity is not None and p.position is not None
            seen = max(stored.get(p.identity, ""), newest.get(p.identity, ""))
            if p.position == seen:
                results.append({"index": p.index, "status": "duplicate", "findings": findings})
            elif p.position < seen:
                results.append({"index": p.index, "status": "stale", "findings": findings})
            else:
                newest[p.identity] = p.position
                to_send.append(p)
                results.append({"index": p.index, "status": "accepted", "findings": findings})
        topic = std_topic(dataset)
        failures: list[str] = []
        for p in to_send:
            self.producer.produce(topic, key=p.key, value=p.value,
                                  on_delivery=lambda err, _m: failures.append(str(err)) if err else None)
        if to_send:
            left = self.producer.flush(30)
            if left or failures:
                raise TransientError(f"Kafka did not acknowledge {left or len(failures)} record(s)")
            RECORDS_OUT.labels(stage=STAGE, org=org, dataset=dataset).inc(len(to_send))
        self.versions.store(org, dataset, newest)
        return results


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def default_ingest(tokens: TokenStore, state_dir: Path, bootstrap: str, registry_url: str) -> Ingest:
    """The service wired to the catalogue, the conformance rules and the codec of ``hip``."""
    from hip.catalogue import load_catalogue
    from hip.codec import Codec
    from hip.conformance import check

    catalogue = load_catalogue()
    keys = {d.name: list(d.business_key) for d in catalogue if not d.is_statistic}
    codec = Codec(registry_url, catalogue)
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True,
                         "linger.ms": 5})
    return Ingest(tokens, keys, check, codec.encode, producer, VersionStore(state_dir / "ingest-versions.sqlite"))


def serve(ingest: Ingest, port: int, host: str = "127.0.0.1") -> None:
    web.run_app(ingest.app(), host=host, port=port, print=None)
