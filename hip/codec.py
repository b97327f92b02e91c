"""Avro encoding of standard and statistics records on Kafka.

Wire format: the schema registry's (Confluent-compatible, served by Apicurio under
``/apis/ccompat/v7``): one magic byte ``0``, the 4-byte big-endian schema id, then the Avro body.
Consumers written with confluent-kafka's ``AvroDeserializer`` read these records as they are.

Schemas are registered once per dataset (subject ``<topic>-value``, backward compatibility) and their
ids cached, so the hot path is one dict lookup and one fastavro call per record. Decoding reads with
the writer's schema (fetched by id, cached) and resolves into the catalogue's current schema.
"""
from __future__ import annotations

import importlib
import io
import json
import struct
import time
from typing import Any, Callable

import fastavro
import requests

from hip.avro_compiled import Encoder, Fallback, compile_decoder, compile_encoder
from hip.catalogue import Catalogue, load_catalogue
from hip.errors import FatalError, RecordError, TransientError

MAGIC = 0
_HEADER = struct.Struct(">bI")
COMPATIBILITY = "BACKWARD"
# The reader schemaless_reader calls once it has parsed the schemas: private, hence the fallback to
# the public (re-parsing) path when a fastavro build lacks it.
_fast_read: Any = getattr(importlib.import_module("fastavro._read"), "_read_data", None)


class RegistryClient:
    """The few calls of the Confluent-compatible registry API the platform needs."""

    RETRIABLE = {408, 429, 500, 502, 503, 504}

    def __init__(self, url: str, timeout: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.session = requests.Session()

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        try:
            r = self.session.request(method, self.url + path, timeout=self.timeout,
                                     data=None if body is None else json.dumps(body),
                                     headers={"Content-Type": "application/vnd.schemaregistry.v1+json"})
        except requests.RequestException as exc:
            raise TransientError(f"schema registry {self.url} unreachable: {exc}") from exc
        if r.status_code in self.RETRIABLE:
            raise TransientError(f"schema registry {method} {path}: HTTP {r.status_code} {r.text[:200]}")
        if r.status_code == 409:
            raise FatalError(f"schema registry refused an incompatible schema for {path}: {r.text[:500]}")
        if r.status_code >= 400:
            raise FatalError(f"schema registry {method} {path}: HTTP {r.status_code} {r.text[:500]}")
        return r.json() if r.content else None

    def register(self, subject: str, schema: dict[str, Any]) -> int:
        return int(self._call("POST", f"/subjects/{subject}/versions", {"schema": json.dumps(schema)})["id"])

    def set_compatibility(self, subject: str, level: str = COMPATIBILITY) -> None:
        self._call("PUT", f"/config/{subject}", {"compatibility": level})

    def is_compatible(self, subject: str, schema: dict[str, Any]) -> bool:
        try:
            body = self._call("POST", f"/compatibility/subjects/{subject}/versions/latest",
                              {"schema": json.dumps(schema)})
        except FatalError as exc:
            if "40401" in str(exc) or "404" in str(exc):  # no version yet: anything is compatible
                return True
            raise
        return bool(body.get("is_compatible"))

    def schema_by_id(self, schema_id: int) -> dict[str, Any]:
        schema: dict[str, Any] = json.loads(self._call("GET", f"/schemas/ids/{schema_id}")["schema"])
        return schema


def parsed_once_reader(schema: Any) -> Callable[[bytes], dict[str, Any]] | None:
    """A reader of registry-framed bodies written with ``schema`` itself, the schema parsed once
    (``fastavro.schemaless_reader`` parses on every call); ``None`` when fastavro lacks the hook."""
    if _fast_read is None:
        return None
    named: dict[str, Any] = {}
    parsed = fastavro.parse_schema(json.loads(json.dumps(schema)), named, _write_hint=False)
    options: dict[str, Any] = {}

    def read(data: bytes) -> dict[str, Any]:
        return _fast_read(io.BytesIO(data[5:]), parsed, named, None, options)  # type: ignore[no-any-return]

    return read


class FramedEncoder:
    """The registry wire format, with schemas compiled once.

    Needs of the codec only ``register`` and ``catalogue`` (the benchmarks and tests pass a local
    stand-in with no registry). ``Codec.encode`` is this with the registry's ids.
    Records are written by :mod:`hip.avro_compiled` (2.6× faster on the standard records), and by
    fastavro whenever that one declines a value, so errors stay fastavro's.
    """

    def __init__(self, codec: Any) -> None:
        self.codec = codec
        self._plans: dict[str, tuple[bytes, Any, Encoder | None]] = {}

    def encode(self, dataset: str, record: dict[str, Any]) -> bytes:
        plan = self._plans.get(dataset)
        if plan is None:
            plan = self._plan(dataset)
        if plan[2] is not None:
            try:
                return plan[0] + plan[2](record)
            except Fallback:
                pass
        buf = io.BytesIO()
        buf.write(plan[0])
        try:
            fastavro.schemaless_writer(buf, plan[1], record)
        except (ValueError, TypeError, AttributeError, KeyError) as exc:
            raise RecordError("avro_encode", f"{dataset}: record does not fit its schema: {exc}") from exc
        return buf.getvalue()

    def encode_plan(self, dataset: str) -> None:
        """Register the dataset's schema now rather than on its first record."""
        if dataset not in self._plans:
            self._plan(dataset)

    def _plan(self, dataset: str) -> tuple[bytes, Any, Encoder | None]:
        schema_id = self.codec.register(dataset)
        schema = json.loads(json.dumps(self.codec.catalogue[dataset].schema))
        plan = (_HEADER.pack(MAGIC, schema_id), fastavro.parse_schema(schema), compile_encoder(schema))
        self._plans[dataset] = plan
        return plan


def subject_for(topic: str) -> str:
    return f"{topic}-value"


class Codec:
    """Encode and decode records of the catalogue's datasets in the registry's wire format."""

    def __init__(self, registry_url: str, catalogue: Catalogue | None = None) -> None:
        self.catalogue = catalogue or load_catalogue()
        self.registry = RegistryClient(registry_url)
        self._ids: dict[str, int] = {}
        self._writers: dict[int, tuple[str, Any]] = {}
        self._framed = FramedEncoder(self)
        self._readers: dict[int, tuple[str, Callable[[bytes], dict[str, Any]]]] = {}

    def register(self, dataset: str, attempts: int = 5) -> int:
        """Register the dataset's schema (idempotent) with backward compatibility; returns its id."""
        if dataset not in self._ids:
            ds = self.catalogue[dataset]
            subject = subject_for(ds.topic)
            for attempt in range(attempts):
                try:
                    self.registry.set_compatibility(subject)
                    schema_id = self.registry.register(subject, ds.schema)
                    break
                except FatalError as exc:
                    # Two workers setting up one subject at once: the registry refuses one of them
                    # with "already exists"; the subject is then set up and a retry succeeds.
                    if "already exists" not in str(exc) or attempt == attempts - 1:
                        raise
                    time.sleep(0.2 * (attempt + 1))
            self._ids[dataset] = schema_id
            self._writers[schema_id] = (dataset, ds.parsed)
        return self._ids[dataset]

    def encode(self, dataset: str, record: dict[str, Any]) -> bytes:
        return self._framed.encode(dataset, record)

    def decode(self, data: bytes) -> tuple[str, dict[str, Any]]:
        if len(data) < 5 or data[0] != MAGIC:
            raise RecordError("bad_magic", "not a registry-framed Avro record (magic byte missing)")
        _, schema_id = _HEADER.unpack_from(data)
        reader = self._readers.get(schema_id) or self._reader(schema_id)
        dataset, read = reader
        try:
            return dataset, read(data)
        except Exception as exc:  # fastavro raises many types on corrupt bodies
            raise RecordError("avro_decode", f"schema id {schema_id}: cannot decode body: {exc}") from exc

    def _reader(self, schema_id: int) -> tuple[str, Callable[[bytes], dict[str, Any]]]:
        """How to read one schema id's bodies, decided once.

        ``fastavro.schemaless_reader`` parses its schemas again on every call (two thirds of the
        cost of a wide record). Records written with the catalogue's own schema, nearly all of them,
        go to the reader compiled for that schema (:mod:`hip.avro_compiled`, fastavro's values at a
        third of the cost); older versions are resolved into the current schema by ``schemaless_reader``.
        """
        writer = self._writers.get(schema_id) or self._load_writer(schema_id)
        dataset, writer_schema = writer
        reader_schema = self.catalogue[dataset].parsed
        read: Callable[[bytes], dict[str, Any]]
        fast = None
        if writer_schema is reader_schema:
            schema = self.catalogue[dataset].schema
            fast = compile_decoder(schema) or parsed_once_reader(schema)
        if fast is not None:
            read = fast
        else:
            resolve = None if writer_schema is reader_schema else reader_schema

            def read(data: bytes) -> dict[str, Any]:
                record = fastavro.schemaless_reader(io.BytesIO(data[5:]), writer_schema, resolve)
                return record  # type: ignore[return-value]
        self._readers[schema_id] = (dataset, read)
        return dataset, read

    def _load_writer(self, schema_id: int) -> tuple[str, Any]:
        schema = self.registry.schema_by_id(schema_id)
        dataset = str(schema["name"]).rsplit(".", 1)[-1]
        if dataset not in self.catalogue.datasets:
            raise RecordError("unknown_schema", f"schema id {schema_id} is {schema['name']}, not in the catalogue")
        current = self.catalogue[dataset]
        # The catalogue's own schema (what the normalizer registers, nearly every record): share its
        # parsed form, so readers see that the body needs no resolution. A process that only reads
        # (the sink) learns every id here; it resolved every record through fastavro before.
        same = schema == current.schema
        self._writers[schema_id] = (dataset, current.parsed if same else fastavro.parse_schema(schema, _write_hint=False))
        return self._writers[schema_id]


def codec_from_settings() -> Codec:
    from hip.settings import load_settings

    return Codec(load_settings().registry_url)
