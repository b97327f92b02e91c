"""The statistics worker: a Faust app applying ``streams.stats.core`` to the standard topics.

Stage 1 (agent ``contribute``) reads ``std.<dataset>`` and keeps the ledger of each source record
(table ``stats-ledger``, keyed by dataset + org + business key, so a key is always updated from the
one partition its record hashes to). It sends statements to the internal topic ``stats.statements``
keyed by cell. Stage 2 (agent ``total``) reads that topic and keeps the cell totals and each record's
applied statement in one table (``stats-cells``): one changelog topic, so its writes reach the
changelog in order. Each changed cell is produced to ``stat.<dataset>`` with its new totals.

Both agents iterate per event (tables may not change inside ``take()`` batches) with concurrency 1.
Faust acks an event when its iteration ends and flushes the producer before committing offsets, so
every send and changelog write of an event is durable before its offset is committed. An
exception never escapes an agent: a bad record goes to ``dlq.stats``; anything unknown stops the
process before the event is acked, so a restart replays it.

Configuration (environment): ``HIP_STATS_SINCE`` / ``HIP_STATS_AS_OF`` (the census window, ISO
dates; default the last 31 days up to today, local), ``HIP_STATS_TOPIC_SUFFIX`` (appended to every
topic name, for isolated runs), ``HIP_STD_PARTITIONS`` [6, the std topics' count], ``HIP_STATS_APP_ID`` [hip-stats],
``HIP_STATS_DATASETS`` (comma list of source datasets; default every standard dataset),
``HIP_STATS_QUALITY`` [1] (0 skips dataset 60).
"""
from __future__ import annotations

import datetime as dt
import json
import logging
import os
import time
from typing import Any
from zoneinfo import ZoneInfo

import faust

from hip import metrics
from hip.catalogue import load_catalogue
from hip.codec import codec_from_settings
from hip.errors import RecordError
from hip.records import record_key
from hip.settings import load_settings
from streams.stats import core

log = logging.getLogger("hip.stats")
STAGE = "stats"
LOCAL = ZoneInfo("Asia/Shanghai")


def window_from_env() -> core.Window:
    """The census window both the worker and ``hip stats recompute`` must agree on."""
    as_of_text = os.environ.get("HIP_STATS_AS_OF")
    as_of = dt.date.fromisoformat(as_of_text) if as_of_text else dt.datetime.now(LOCAL).date()
    since_text = os.environ.get("HIP_STATS_SINCE")
    since = dt.date.fromisoformat(since_text) if since_text else as_of - dt.timedelta(days=31)
    return core.Window(since, as_of)


SUFFIX = os.environ.get("HIP_STATS_TOPIC_SUFFIX", "")
PARTITIONS = load_settings().std_partitions
WINDOW = window_from_env()
QUALITY = os.environ.get("HIP_STATS_QUALITY", "1") != "0"
CATALOGUE = load_catalogue()
_listed = [d for d in os.environ.get("HIP_STATS_DATASETS", "").split(",") if d]
SOURCE_DATASETS = _listed or [d.name for d in CATALOGUE if not d.is_statistic]
SETTINGS = load_settings()

app = faust.App(
    os.environ.get("HIP_STATS_APP_ID", "hip-stats"),
    broker=f"kafka://{SETTINGS.bootstrap_servers}",
    # JSON for the tables' changelogs (keys stay str after recovery); topics say raw themselves.
    value_serializer="json",
    key_serializer="json",
    store="memory://",
    topic_partitions=PARTITIONS,
    topic_replication_factor=1,
    processing_guarantee="at_least_once",
    web_enabled=False,
    producer_linger=0.005,
    stream_buffer_maxsize=4096,
)
std_topics = app.topic(*[f"std.{d}{SUFFIX}" for d in SOURCE_DATASETS], key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw",
                       partitions=PARTITIONS)
statements_topic = app.topic(f"stats.statements{SUFFIX}", key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw",
                             partitions=PARTITIONS, internal=True)
stat_topics = {name: app.topic(f"stat.{name}{SUFFIX}", key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")
               for name in core.STAT_DATASETS}
dlq_topic = app.topic(f"dlq.stats{SUFFIX}", key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")
ledger = app.Table("stats-ledger", default=None, key_type=str, partitions=PARTITIONS)
cells = app.Table("stats-cells", default=None, key_type=str, partitions=PARTITIONS)
_codec: Any = None


def codec() -> Any:
    global _codec
    if _codec is None:
        _codec = codec_from_settings()
        for name in core.STAT_DATASETS:
            _codec.register(name)
    return _codec


def _fatal(exc: BaseException, where: str) -> None:
    # Exiting before the event is acked keeps its offset uncommitted: the restart replays it.
    log.critical("stats %s: unexpected %s: %s", where, type(exc).__name__, exc, exc_info=exc)
    metrics.ERRORS.labels(stage=STAGE, kind="fatal").inc()
    logging.shutdown()
    os._exit(70)


async def _dead_letter(event: Any, reason: str, message: str) -> None:
    headers = {"hip.reason": reason.encode(), "hip.message": message[:500].encode(),
               "hip.topic": str(event.message.topic).encode(),
               "hip.partition": str(event.message.partition).encode(),
               "hip.offset": str(event.message.offset).encode()}
    await dlq_topic.send(key=event.key, value=event.value, headers=headers)
    metrics.DEAD_LETTERS.labels(stage=STAGE, org="", reason=reason).inc()


@app.agent(std_topics, concurrency=1)
async def contribute(stream: Any) -> None:
    """Stage 1: a standard record version → statements for each cell it touches or left."""
    async for event in stream.events():
        try:
            try:
                dataset, record = codec().decode(event.value)
                ds = CATALOGUE[dataset]
                org = str(record["org_code"])
                source = core.source_ref(dataset, org, [record.get(k) for k in ds.business_key])
                new = core.contributions(dataset, record, WINDOW, quality=QUALITY)
            except RecordError as exc:
                await _dead_letter(event, exc.reason, str(exc))
                continue
            except (KeyError, TypeError, ValueError) as exc:
                await _dead_letter(event, "stats.contribution", f"{type(exc).__name__}: {exc}")
                continue
            metrics.EVENTS_IN.labels(stage=STAGE, org=org, system=str(record.get("source_system"))).inc()
            old = ledger.get(source)
            p = core.plan(source, core.Entry.from_json(old) if old else None, str(record["source_position"]), new)
            ts = core.to_ms(record.get("source_ts")) or 0
            for st in p.statements:
                await statements_topic.send(
                    key=st.cell.encode(),
                    value=json.dumps([st.cell, st.source, st.position, st.measures, ts],
                                     ensure_ascii=False, separators=(",", ":")).encode())
            if p.entry is not None and not p.stale and not p.replay:
                ledger[source] = p.entry.to_json()
        except Exception as exc:  # noqa: BLE001 - see _fatal
            _fatal(exc, "contribute")


def stat_record(cell: core.Cell, totals: dict[str, int], position: str, source_ts: int) -> dict[str, Any]:
    """The statistics record of a cell: the header, the key, measures and ratios."""
    now = int(time.time() * 1000)
    dataset, org, *_ = cell
    row = core.stat_fields(cell, totals)
    return {"org_code": org, "source_system": "STAT", "source_table": dataset,
            "source_key": core.cell_id(cell), "op": "u" if totals else "d",
            "source_position": position, "source_ts": source_ts, "ingest_ts": now, "mapping_id": None,
            **row, "computed_time": now}


@app.agent(statements_topic, concurrency=1)
async def total(stream: Any) -> None:
    """Stage 2: fold statements into cell totals and emit each changed cell."""
    async for event in stream.events():
        try:
            cell_text, source, position, measures, ts = json.loads(event.value)
            st = core.Statement(cell_text, source, position, {k: int(v) for k, v in measures.items()})
            state_key, member_key = f"T{cell_text}", f"M{cell_text}\x1f{source}"
            state_json, member_json = cells.get(state_key), cells.get(member_key)
            state = core.CellState.from_json(state_json) if state_json else None
            f = core.fold(state, core.Member.from_json(member_json) if member_json else None, st)
            if f.state is not None:
                cells[state_key] = f.state.to_json()
                state = f.state
            if f.member is not None:
                cells[member_key] = f.member.to_json()
            if not f.emit:
                continue
            cell = core.parse_cell(cell_text)
            totals = state.totals if state is not None else {}
            # Offsets only grow within the partition every statement of this cell lands on.
            pos = f"st:{event.message.partition:04d}:{event.message.offset:020d}"
            record = stat_record(cell, totals, pos, int(ts))
            dataset = cell[0]
            key = record_key(cell[1], list(cell[2:]))
            await stat_topics[dataset].send(key=key, value=codec().encode(dataset, record))
            metrics.RECORDS_OUT.labels(stage=STAGE, org=cell[1], dataset=dataset).inc()
        except Exception as exc:  # noqa: BLE001 - see _fatal
            _fatal(exc, "total")


def main(argv: list[str] | None = None) -> None:
    """Run the worker (``hip stats run``)."""
    import sys

    port = int(os.environ.get("HIP_STATS_METRICS_PORT", SETTINGS.stats_metrics_port))
    if port:
        metrics.serve(port, STAGE)
    sys.argv = ["hip-stats", "worker", "-l", "info", *(argv or [])]
    app.main()


if __name__ == "__main__":
    main()
