"""The normalizer stage without Faust: raw messages in, messages to produce out.

:class:`Processor` wraps the pure core (:mod:`streams.core.normalize`) for one batch of raw change
messages and returns the messages to produce: Avro standard records on ``std.<dataset>``, dead
letters on ``dlq.normalize`` and conformance findings on ``dq.findings``. It also counts the
stage's metrics. Kafka plumbing that needs no Faust lives here too (topic creation, raw topic
discovery, the rebuild of the dictionary lookups), so that the Faust agent (``streams.normalizer``)
and ``hip normalizer redrive`` share every decision.

Dead letters (``dlq.normalize``): the message key and value are the original bytes; UTF-8 headers
carry ``hip.stage`` (``normalize``), ``hip.reason``, ``hip.error``, ``hip.mapping_id``,
``hip.dataset``, ``hip.org``, ``hip.topic``, ``hip.partition``, ``hip.offset``, ``hip.failed_at``,
``hip.redrives``, and ``hip.key`` (the original key bytes, also kept when the key is null: header
absent).

Standard records (``std.<dataset>``): Avro in the registry's wire format; a record whose source sent
a column as "unchanged, not sent" (PostgreSQL's TOAST placeholder) carries null in the fields read
from it and names them in the ``hip.unavailable`` header, so the sink keeps their stored values.

Findings (``dq.findings``, JSON, keyed like the record): one message per record version that has
any, with ``org``, ``dataset``, ``day`` (local date of the source commit in the hospital's zone),
``key`` (the record key, ``[org, *business key]``), ``status`` (``accepted`` or ``rejected``),
``mapping_id``, ``source_position``, ``source_ts`` and ``findings``: a list of ``rule``,
``severity``, ``field``, ``message``. (One message per finding was about a sixth of the stage's cost:
most records carry several recommended-field findings.)
"""
from __future__ import annotations

import datetime as dt
import logging
import re
import time
import traceback
from collections import Counter as Tally
from dataclasses import dataclass, field
from typing import Any, Callable, Collection, Iterable, MutableMapping, Protocol, Sequence

import orjson

from hip import metrics
from hip.errors import RecordError
from hip.records import findings_header, record_key, std_topic, unavailable_header
from streams.core import envelope
from streams.core.mapping import MappingSet
from streams.core.normalize import DeadLetter, StandardRecord, normalize

log = logging.getLogger("hip.normalizer")

STAGE = "normalizer"
DLQ_STAGE = "normalize"
DLQ_TOPIC = "dlq.normalize"
FINDINGS_TOPIC = "dq.findings"
RAW_TOPIC = re.compile(r"^raw\.")
UTC = dt.timezone.utc

RawMessage = tuple[bytes | None, bytes | None, str, int, int]  # key, value, topic, partition, offset
Headers = list[tuple[str, bytes]]
Check = Callable[[str, dict[str, Any]], Sequence[Any]]


class Encoder(Protocol):
    """What the stage needs of :class:`hip.codec.Codec`."""

    def encode(self, dataset: str, record: dict[str, Any]) -> bytes: ...


@dataclass(frozen=True)
class NormalizerConfig:
    """Tuning and topology of the normalizer; defaults suit one process on a small machine."""

    group: str = "hip-normalizer"
    std_partitions: int = 6
    std_retention_ms: int = -1          # standard topics are the platform's record of truth
    dlq_retention_ms: int = -1
    findings_retention_ms: int = 30 * 24 * 3600 * 1000
    batch_size: int = 2000
    batch_within_s: float = 0.1
    discover_interval_s: float = 10.0
    producer_linger_s: float = 0.02
    producer_max_batch_bytes: int = 512 * 1024
    max_poll_records: int = 5000
    max_fetch_bytes: int = 1024 * 1024  # per partition: 4 MiB × 40 raw topics reached 300 MiB in a catch-up
    stream_buffer_maxsize: int = 16384
    commit_interval_s: float = 1.0
    lookups_timeout_s: float = 60.0
    trim_interval_s: float = 5.0  # hand freed C heap back to the system (hip.proc.trim_heap); 0: never


@dataclass
class Outgoing:
    """One message to produce."""

    topic: str
    key: bytes | None
    value: bytes | None
    headers: Headers | None = None


@dataclass
class BatchResult:
    """Messages to produce for one batch and what they were."""

    messages: list[Outgoing] = field(default_factory=list)
    records: int = 0
    dead_letters: int = 0
    findings: int = 0


# --- topic names ------------------------------------------------------------------------------

_ESCAPE = re.compile(r"_u([0-9a-f]{4})")


_unescaped: dict[str, str] = {}


def unescape_topic(topic: str) -> str:
    """Cached :func:`_unescape_topic` (topics repeat on every message)."""
    plain = _unescaped.get(topic)
    if plain is None:
        plain = _unescape_topic(topic)
        if len(_unescaped) < 100_000:
            _unescaped[topic] = plain
    return plain


def _unescape_topic(topic: str) -> str:
    """Undo Debezium's unicode topic-name escaping (``_u005f`` → ``_``, ``_u4e2d`` → 中).

    Mappings route by the real table name, while ``DefaultUnicodeTopicNamingStrategy`` escapes
    every character outside ``[A-Za-z0-9.-]``; UTF-16 surrogate pairs arrive as two escapes.
    """
    if "_u" not in topic:
        return topic
    units = _ESCAPE.split(topic)
    out: list[str] = []
    pending: list[int] = []
    for i, part in enumerate(units):
        if i % 2 == 1:
            pending.append(int(part, 16))
            continue
        if pending and part == "":
            continue  # two escapes in a row (e.g. a surrogate pair)
        if pending:
            out.append(b"".join(u.to_bytes(2, "big") for u in pending).decode("utf-16-be", "replace"))
            pending = []
        out.append(part)
    if pending:
        out.append(b"".join(u.to_bytes(2, "big") for u in pending).decode("utf-16-be", "replace"))
    return "".join(out)


_topic_labels: dict[str, tuple[str, str]] = {}


def topic_labels(topic: str) -> tuple[str, str]:
    """(org, system) of a raw topic for metric labels; ``unknown`` when the name is not one."""
    labels = _topic_labels.get(topic)
    if labels is None:
        parts = topic.split(".")
        labels = (parts[1], parts[2]) if len(parts) >= 4 and parts[0] == "raw" else ("unknown", "unknown")
        if len(_topic_labels) < 100_000:
            _topic_labels[topic] = labels
    return labels


def raw_topics(names: Iterable[str], orgs: Collection[str] | None = None) -> list[str]:
    """The raw change topics among ``names``, sorted; only those of ``orgs`` when given.

    A raw topic of an organisation without a hospital mapping is not subscribed at all: every one
    of its events would be a dead letter, and a hospital being onboarded has its capture running
    before its mapping is ready.
    """
    return sorted(n for n in names if RAW_TOPIC.match(n) and (orgs is None or n.split(".")[1] in orgs))


# --- the processor ----------------------------------------------------------------------------

class _CapturingCheck:
    """Conformance check that remembers what it saw, so rejected records keep their findings.

    The core returns a dead letter (reason ``conformance``) for a record with error findings; the
    statistics of dataset 60 still need those findings by rule, with the record's key and day.
    """

    def __init__(self, check: Check, timed: bool) -> None:
        self.check = check
        self.timed = timed  # the check takes ``now``: the batch's arrival time, as the statistics use
        self.now: int | None = None
        self.seen: list[tuple[str, dict[str, Any], list[Any]]] = []

    def __call__(self, dataset: str, record: dict[str, Any]) -> Sequence[Any]:
        if self.timed and self.now is not None:
            findings = list(self.check(dataset, record, now=self.now))  # type: ignore[call-arg]
        else:
            findings = list(self.check(dataset, record))
        self.seen.append((dataset, record, findings))
        return findings


def _attr(finding: Any, name: str) -> Any:
    return finding.get(name) if isinstance(finding, dict) else getattr(finding, name, None)


def _default_check() -> Check:
    from hip import conformance

    return conformance.check


def _default_business_keys() -> dict[str, list[str]]:
    from hip.catalogue import load_catalogue

    return {name: list(ds.business_key) for name, ds in load_catalogue().datasets.items()}


class Processor:
    """Raw change messages → standard records, dead letters and findings, ready to produce."""

    def __init__(self, mappings: MappingSet, encoder: Encoder, lookups: MutableMapping[str, Any] | None = None, *,
                 check: Check | None = None, business_keys: dict[str, list[str]] | None = None,
                 dlq_topic: str = DLQ_TOPIC, findings_topic: str = FINDINGS_TOPIC,
                 clock: Callable[[], float] = time.time) -> None:
        self.mappings = mappings
        self.encoder = encoder
        self.lookups: MutableMapping[str, Any] = {} if lookups is None else lookups
        self.capture = _CapturingCheck(check or _default_check(), timed=check is None)
        self.business_keys = business_keys if business_keys is not None else _default_business_keys()
        self.dlq_topic = dlq_topic
        self.findings_topic = findings_topic
        self.clock = clock
        self._day_cache: dict[tuple[str, int], str] = {}

    # The adapter passes the unescaped topic to the core (it routes by real table names) and
    # keeps the original one in dead letters, which is where the message really came from.
    def _normalize(self, msg: RawMessage, now_ms: int) -> list[StandardRecord | DeadLetter]:
        key, value, topic, partition, offset = msg
        try:
            outs = normalize(key, value, unescape_topic(topic), partition, offset, self.mappings, self.lookups,
                             check=self.capture, now_ms=now_ms)
        except Exception as exc:  # a bug in the core must not stop every hospital: dead-letter it
            log.exception("normalize failed on %s[%d]@%d", topic, partition, offset)
            tb = traceback.format_exception_only(type(exc), exc)[-1].strip()
            return [DeadLetter(key, value, "internal_error", tb, None, topic, partition, offset)]
        for out in outs:
            if isinstance(out, DeadLetter):
                out.topic = topic
        return outs

    def process(self, messages: Iterable[RawMessage]) -> BatchResult:
        """Normalize a batch; output order follows input order, so order per key holds."""
        now = self.clock()
        now_ms = int(now * 1000)
        self.capture.now = now_ms  # each record's ingest_ts
        result = BatchResult()
        out = result.messages
        events_in: Tally[tuple[str, str]] = Tally()
        records_out: Tally[tuple[str, str]] = Tally()
        dead: Tally[tuple[str, str]] = Tally()
        found: Tally[tuple[str, str, str, str]] = Tally()
        latencies: list[float] = []
        for msg in messages:
            events_in[topic_labels(msg[2])] += 1
            self.capture.seen.clear()
            outputs = self._normalize(msg, now_ms)
            accepted_ids = set()
            for o in outputs:
                if isinstance(o, StandardRecord):
                    accepted_ids.add(id(o.record))
                    try:
                        value = self.encoder.encode(o.dataset, o.record)
                    except RecordError as exc:
                        d = DeadLetter(msg[0], msg[1], exc.reason, str(exc), o.record.get("mapping_id"),
                                       msg[2], msg[3], msg[4], o.dataset)
                        out.append(self._dead_letter(d, now))
                        dead[(topic_labels(msg[2])[0], d.reason)] += 1
                        continue
                    headers = [*(unavailable_header(o.unavailable) or ()), findings_header(o.findings)]
                    out.append(Outgoing(std_topic(o.dataset), o.key, value, headers))
                    org = o.record["org_code"]
                    records_out[(org, o.dataset)] += 1
                    latencies.append(now - o.record["source_ts"] / 1000.0)
                    if o.findings:
                        out.append(self._findings(o.dataset, o.record, o.key, o.findings, "accepted"))
                    for f in o.findings:
                        found[(org, o.dataset, str(_attr(f, "rule")), str(_attr(f, "severity")))] += 1
                else:
                    out.append(self._dead_letter(o, now))
                    dead[(topic_labels(msg[2])[0], o.reason)] += 1
            for dataset, record, findings in self.capture.seen:
                if id(record) in accepted_ids:
                    continue
                key = self._record_key(dataset, record)
                org = str(record.get("org_code"))
                if findings:
                    out.append(self._findings(dataset, record, key, findings, "rejected"))
                for f in findings:
                    found[(org, dataset, str(_attr(f, "rule")), str(_attr(f, "severity")))] += 1
        for (org, system), n in events_in.items():
            metrics.EVENTS_IN.labels(stage=STAGE, org=org, system=system).inc(n)
        for (org, dataset), n in records_out.items():
            metrics.RECORDS_OUT.labels(stage=STAGE, org=org, dataset=dataset).inc(n)
            result.records += n
        for (org, reason), n in dead.items():
            metrics.DEAD_LETTERS.labels(stage=STAGE, org=org, reason=reason).inc(n)
            result.dead_letters += n
        for (org, dataset, rule, severity), n in found.items():
            metrics.FINDINGS.labels(org=org, dataset=dataset, rule=rule, severity=severity).inc(n)
            result.findings += n
        if latencies:
            # One observation per batch (its oldest record) keeps the histogram off the hot path.
            metrics.PROCESSING_SECONDS.labels(stage=STAGE).observe(max(latencies))
        return result

    def _record_key(self, dataset: str, record: dict[str, Any]) -> bytes:
        bk = self.business_keys.get(dataset, [])
        return record_key(str(record.get("org_code")), [record.get(f) for f in bk])

    def _day(self, org: str, ts_ms: int) -> str:
        """Local calendar date of a source commit in the hospital's zone."""
        day_ms = ts_ms - ts_ms % 60_000  # zone offsets are whole minutes: cache per minute
        cached = self._day_cache.get((org, day_ms))
        if cached is None:
            hospital = self.mappings.hospitals.get(org)
            instant = dt.datetime.fromtimestamp(ts_ms / 1000.0, UTC)
            if hospital is not None:
                instant = instant.astimezone(hospital.zone)
            cached = instant.date().isoformat()
            if len(self._day_cache) > 200_000:
                self._day_cache.clear()
            self._day_cache[(org, day_ms)] = cached
        return cached

    def _findings(self, dataset: str, record: dict[str, Any], key: bytes, findings: Sequence[Any],
                  status: str) -> Outgoing:
        org = str(record.get("org_code"))
        ts = record.get("source_ts")
        body = {
            "org": org, "dataset": dataset,
            "day": self._day(org, int(ts)) if isinstance(ts, int) else None,
            "key": key.decode("utf-8"), "status": status,
            "mapping_id": record.get("mapping_id"), "source_position": record.get("source_position"),
            "source_ts": ts,
            "findings": [{"rule": _attr(f, "rule"), "severity": _attr(f, "severity"), "field": _attr(f, "field"),
                          "message": _attr(f, "message")} for f in findings],
        }
        # orjson: the same compact UTF-8 JSON as json.dumps(ensure_ascii=False), a tenth of the cost.
        return Outgoing(self.findings_topic, key, orjson.dumps(body, default=str))

    def _dead_letter(self, d: DeadLetter, now: float, redrives: int = 0) -> Outgoing:
        return Outgoing(self.dlq_topic, d.key, d.value, dead_letter_headers(d, now, redrives))


def dead_letter_headers(d: DeadLetter, now: float, redrives: int = 0) -> Headers:
    """Headers of one dead letter (see the module docstring)."""
    org = topic_labels(d.topic)[0]
    headers: Headers = [
        ("hip.stage", DLQ_STAGE.encode()),
        ("hip.reason", d.reason.encode("utf-8")),
        ("hip.error", d.message.encode("utf-8")[:8000]),
        ("hip.topic", d.topic.encode("utf-8")),
        ("hip.partition", str(d.partition).encode()),
        ("hip.offset", str(d.offset).encode()),
        ("hip.org", org.encode("utf-8")),
        ("hip.failed_at", dt.datetime.fromtimestamp(now, UTC).isoformat().encode()),
        ("hip.redrives", str(redrives).encode()),
    ]
    if d.mapping_id:
        headers.append(("hip.mapping_id", d.mapping_id.encode("utf-8")))
    if d.dataset:
        headers.append(("hip.dataset", d.dataset.encode("utf-8")))
    if d.key is not None:
        headers.append(("hip.key", d.key))
    return headers


def header_map(headers: Sequence[tuple[str, bytes | None]] | None) -> dict[str, bytes]:
    """Headers as a dict (the last value of a repeated name wins)."""
    return {k: v for k, v in (headers or []) if v is not None}


def source_of_dead_letter(headers: dict[str, bytes]) -> tuple[str, int, int, int]:
    """(topic, partition, offset, redrives so far) of a dead letter; RecordError if unreadable."""
    try:
        return (headers["hip.topic"].decode("utf-8"), int(headers["hip.partition"]), int(headers["hip.offset"]),
                int(headers.get("hip.redrives", b"0")))
    except (KeyError, ValueError) as exc:
        raise RecordError("bad_dead_letter", f"dead letter lacks its source position: {exc}") from None


# --- Kafka plumbing without Faust -------------------------------------------------------------

def mapped_datasets(mappings: MappingSet) -> list[str]:
    return sorted({m.dataset for route in mappings.routes.values() for m in route.mappings})


def ensure_topics(bootstrap: str, datasets: Iterable[str], cfg: NormalizerConfig, *,
                  dlq_topic: str = DLQ_TOPIC, findings_topic: str = FINDINGS_TOPIC) -> list[str]:
    """Create the output topics that do not exist yet; returns the names created.

    Standard topics get a fixed partition count up front: records of one key must always hash to
    the same partition, which a later partition increase would break.
    """
    from confluent_kafka.admin import AdminClient, NewTopic

    from hip.topics import create_missing

    existing = AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=15).topics
    wanted: dict[str, NewTopic] = {}
    for ds in datasets:
        name = std_topic(ds)
        wanted[name] = NewTopic(name, cfg.std_partitions, 1, config={"retention.ms": str(cfg.std_retention_ms)})
    wanted[dlq_topic] = NewTopic(dlq_topic, cfg.std_partitions, 1, config={"retention.ms": str(cfg.dlq_retention_ms)})
    wanted[findings_topic] = NewTopic(findings_topic, cfg.std_partitions, 1,
                                      config={"retention.ms": str(cfg.findings_retention_ms)})
    for name in wanted:
        if name in existing and len(existing[name].partitions) != cfg.std_partitions:
            log.warning("%s has %d partitions, configured %d: keys keep the existing layout", name,
                        len(existing[name].partitions), cfg.std_partitions)
    return create_missing(bootstrap, wanted.values())


def list_raw_topics(bootstrap: str, orgs: Collection[str] | None = None, timeout: float = 10.0) -> list[str]:
    from confluent_kafka.admin import AdminClient

    return raw_topics(AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=timeout).topics, orgs)


def dictionary_topics(topics: Iterable[str], mappings: MappingSet) -> list[str]:
    """Raw topics of captured dictionary tables (departments, staff, drug catalogue …)."""
    out = []
    for t in topics:
        try:
            parsed = envelope.parse_topic(unescape_topic(t))
        except RecordError:
            continue
        route = mappings.route(parsed.org, parsed.table)
        if route is not None and route.dictionary_key is not None:
            out.append(t)
    return out


def rebuild_lookups(bootstrap: str, topics: Sequence[str], mappings: MappingSet,
                    lookups: MutableMapping[str, Any], timeout_s: float = 60.0) -> int:
    """Read dictionary topics from their beginning to their current end through the core.

    The core writes dictionary rows into ``lookups`` as it sees them; outputs are dropped (the
    consumer group delivers them again in order). Returns the number of messages read.
    """
    if not topics:
        return 0
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "hip-normalizer-lookups",
                         "enable.auto.commit": False, "enable.partition.eof": True})
    try:
        md = consumer.list_topics(timeout=10).topics
        ends: dict[tuple[str, int], int] = {}
        assign = []
        for t in topics:
            for p in (md[t].partitions if t in md else {}):
                low, high = consumer.get_watermark_offsets(TopicPartition(t, p), timeout=10)
                if high > low:
                    ends[(t, p)] = high
                    assign.append(TopicPartition(t, p, OFFSET_BEGINNING))
        if not assign:
            return 0
        consumer.assign(assign)
        no_check: Check = lambda _d, _r: ()  # noqa: E731 - conformance is irrelevant to the state
        read = 0
        deadline = time.monotonic() + timeout_s
        while ends and time.monotonic() < deadline:
            for m in consumer.consume(1000, timeout=1.0):
                tp = (m.topic(), m.partition())
                if m.error():
                    if m.error().code() == -191:  # _PARTITION_EOF
                        ends.pop(tp, None)
                    continue
                read += 1
                try:
                    normalize(m.key(), m.value(), unescape_topic(m.topic()), m.partition(), m.offset(), mappings,
                              lookups, check=no_check)
                except Exception:  # noqa: BLE001 - the live path dead-letters it with its reason
                    pass
                if tp in ends and m.offset() + 1 >= ends[tp]:
                    ends.pop(tp)
        if ends:
            log.warning("lookups rebuild stopped after %.0f s with %d partitions unread", timeout_s, len(ends))
        return read
    finally:
        consumer.close()
