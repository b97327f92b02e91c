"""The statistics worker: a Faust app applying ``streams.stats.core`` to the standard topics.

Stage 1 (agent ``contribute``) reads ``std.<dataset>`` and keeps the ledger of each source record
(table ``stats-ledger``, keyed by dataset + org + business key, so a key is always updated from the
one partition its record hashes to): its last version and its measures in each cell. A new version
yields the change of each cell's totals (``core.plan``); the changes of a flush are summed per cell
and sent to the internal topic ``stats.deltas`` (a cell always maps to the same partition, by CRC-32
of its id), one message per partition, as one numbered ``core.Part`` per source partition. Stage 2
(agent ``total``) reads that topic and adds the changes into the cell totals (table ``stats-cells``),
applying each source partition's numbers once. Both tables are written once per flush through
``streams.stats.buffered``, each flush of a partition whole (a write-ahead record per partition:
stage 1's also holds the parts it sends, so a crash part way sends the same numbered parts again).
Changed cells are coalesced and produced to ``stat.<dataset>`` once per flush. A flush happens when
a stage holds ``HIP_STATS_FLUSH_EVENTS`` standard records (stage 1), ``HIP_STATS_FLUSH_CELLS``
changed cells, ``buffered.FLUSH_BYTES`` of writes, or after ``HIP_STATS_FLUSH_SECONDS``.

The tables are kept in RocksDB under ``var/data/stats/<app id>`` (Faust reads the changelog only
past the offset the local database already holds), so memory stays bounded however many records
the ledger remembers. The directory belongs with the changelog topics: ``make demo-reset`` removes
both; a directory kept while its changelog topics were deleted would bring back forgotten state.

Both agents (concurrency 1) take their events from the queue in small batches
(``streams.event_batches``), handle them one by one and ack manually: an event is acked only after
the flush that wrote its ledger entry and sent its changes (stage 1), or emitted the cells it
changed (stage 2), was acknowledged by the broker. A crash replays every event not yet acked. A
worker taking a partition over first finishes the partition's last flush from its write-ahead
record (stage 1 sends its parts again: stage 2 ignores the numbers it applied and emits their cells
again); a replayed event then finds its version in the ledger and changes nothing, or is counted
for the first time. An exception never escapes an agent: a bad record goes to ``dlq.stats``;
anything unknown stops the process before the event is acked, so a restart replays it.

Day rollover: unless ``HIP_STATS_AS_OF`` fixes the window, a timer notices the local date change
(Asia/Shanghai) and moves the window for new events. The first event of each source partition after
that (and after a start) first rolls the partition's window-dependent entries (stays, department
beds) to the new window, recomputing each from the fields the entry keeps (``core.roll``): inside the
event's iteration, so the ledger writes and the changes are flushed with the event; a crash
replays the event and the roll, which is idempotent. So that a
partition without standard records after midnight rolls too (a quiet night), the timer then sends
one tick to every partition of ``stats.ticks``, a topic stage 1 reads with the standard topics:
a tick is an event that rolls its partition and contributes nothing. ``HIP_STATS_NOW_OFFSET_S``
shifts the worker's clock (for the rollover test).
"""
from __future__ import annotations

import asyncio
import datetime as dt
import json
import zlib
import logging
import os
import time
from collections import Counter
from typing import Any
from zoneinfo import ZoneInfo

import faust

from hip import metrics
from hip.catalogue import load_catalogue
from hip.codec import codec_from_settings
from hip.errors import RecordError
from hip.proc import relax_gc, trim_heap
from hip.records import record_key
from hip.settings import load_settings
from streams.event_batches import batches
from streams.stats import buffered, core, reading
from streams.stats.decode import StatsDecoder
from streams.stats.flow import StageTwoLag

log = logging.getLogger("hip.stats")
STAGE = "stats"
LOCAL = ZoneInfo("Asia/Shanghai")
NOW_OFFSET = dt.timedelta(seconds=float(os.environ.get("HIP_STATS_NOW_OFFSET_S", "0")))


def local_now() -> dt.datetime:
    """The worker's local time (shifted by ``HIP_STATS_NOW_OFFSET_S`` in tests of the rollover)."""
    return dt.datetime.now(LOCAL) + NOW_OFFSET


def window_from_env() -> core.Window:
    """The census window both the worker and ``hip stats recompute`` must agree on."""
    as_of_text = os.environ.get("HIP_STATS_AS_OF")
    return window_for(dt.date.fromisoformat(as_of_text) if as_of_text else local_now().date())


def window_for(as_of: dt.date) -> core.Window:
    """The census window ending at ``as_of``: from ``HIP_STATS_SINCE``, or the 31 days before."""
    since_text = os.environ.get("HIP_STATS_SINCE")
    since = dt.date.fromisoformat(since_text) if since_text else as_of - dt.timedelta(days=31)
    return core.Window(since, as_of)


SUFFIX = os.environ.get("HIP_STATS_TOPIC_SUFFIX", "")
PARTITIONS = load_settings().std_partitions
WINDOW = window_from_env()
ROLLING = not os.environ.get("HIP_STATS_AS_OF")  # a fixed as_of is a fixed window: no rollover
FLUSH_CELLS = int(os.environ.get("HIP_STATS_FLUSH_CELLS", "2000"))
FLUSH_SECONDS = float(os.environ.get("HIP_STATS_FLUSH_SECONDS", "0.25"))
FLUSH_EVENTS = int(os.environ.get("HIP_STATS_FLUSH_EVENTS", "1000"))  # stage 1 events per flush, at most
# Stage 2's lag (deltas messages) above which stage 1's partitions are paused, and below which
# they are resumed: see StageTwoLag. A flush sends one message per deltas partition, carrying
# up to FLUSH_EVENTS events' changes: 50 messages are a few thousand events.
MAX_LAG = int(os.environ.get("HIP_STATS_MAX_LAG", "50"))
TRIM_SECONDS = float(os.environ.get("HIP_STATS_TRIM_SECONDS", "5"))  # 0: never hand freed memory back
QUALITY = os.environ.get("HIP_STATS_QUALITY", "1") != "0"
CATALOGUE = load_catalogue()
_listed = [d for d in os.environ.get("HIP_STATS_DATASETS", "").split(",") if d]
SOURCE_DATASETS = _listed or CATALOGUE.source_names()
SETTINGS = load_settings()

# HIP_STATS_APP_ID, by default "hip-stats-v2": the ledger keeps measures and stage 2 adds changes
# (before, absolute statements folded per record), so a new consumer group and new tables count
# everything again from the standard topics.
APP_ID = SETTINGS.stats_app_id
# The tables live in RocksDB under var/ (Faust's memory store grew with every record remembered:
# 352 MiB after 117,000 standard records). Small write buffers and caches keep the process bounded:
# 2 tables × HIP_STD_PARTITIONS databases, each at most 2 × 1 MiB of memtables and a 1 MiB cache
# (2 × 2 and 4 MiB made 96 MiB of the 339 a million-change catch-up reached).
DATADIR = SETTINGS.faust_datadir("stats", APP_ID)
# Copied per table: Faust pops keys from the options it is given.
# Ten bits a key in the Bloom filters (Faust's default is three): most reads are of keys not there
# yet (a new record's ledger entry, a cell's first total), and at three bits about a
# quarter of them still read a block of the database to find that out. rocksdict dropped the
# filter whenever a database was opened again; streams/faust_fixes.py (fix 10) keeps it.
TABLE_OPTIONS = {"driver": "rocksdict", "write_buffer_size": 1 << 20, "max_write_buffer_number": 2,
                 "block_cache_size": 1 << 20, "bloom_filter_size": 10}


class _StatsApp(faust.App):
    """Faust's app, with stage 2's held events released when the worker stops.

    Stage 2 acks its events only when ``flush`` has emitted the cells they changed, and on a quiet
    stream only the idle timer calls ``flush``. At shutdown Faust stops the timers, then waits for
    every event to be acked: without this it waited until it was killed. While it waits, stage 2
    is flushed every half second (events still buffered in the stream arrive during the wait too).
    """

    async def _consumer_wait_empty(self, consumer: Any, logger: Any) -> None:
        async def keep_flushing() -> None:
            while True:
                try:
                    await flush()
                except Exception as exc:  # noqa: BLE001 - the events stay unacked: replayed at the restart
                    log.warning("stats: flush while stopping failed: %r", exc)
                    return
                await asyncio.sleep(0.5)

        flusher = asyncio.ensure_future(keep_flushing())
        try:
            await super()._consumer_wait_empty(consumer, logger)
        finally:
            flusher.cancel()


reading.install_fixes()  # before the app makes its producer and consumer
app = _StatsApp(
    APP_ID,
    broker=f"kafka://{SETTINGS.bootstrap_servers}",
    # JSON for the tables' changelogs (keys stay str after recovery); topics say raw themselves.
    value_serializer="json",
    key_serializer="json",
    store="rocksdb://",
    datadir=str(DATADIR),
    topic_partitions=PARTITIONS,
    topic_replication_factor=1,
    **reading.app_options(),
    # A write-ahead record holds a whole flush of one partition: flushes stop at about
    # buffered.FLUSH_BYTES, but that counts characters, and an event (or stage 1's outbox) may
    # add its writes on top. Room to spare, so that no flush can be too big to send (a changelog
    # topic made before this setting keeps the broker's 1 MiB).
    producer_max_request_size=buffered.MESSAGE_BYTES,
)
TICKS = f"stats.ticks{SUFFIX}"


ticks_topic = reading.raw_topic(app, TICKS, partitions=PARTITIONS, internal=True)
std_topics = reading.raw_topic(app, *[f"std.{d}{SUFFIX}" for d in SOURCE_DATASETS], TICKS, partitions=PARTITIONS)
deltas_topic = reading.raw_topic(app, f"stats.deltas{SUFFIX}", partitions=PARTITIONS, internal=True)
STAT_TOPICS = {name: f"stat.{name}{SUFFIX}" for name in core.STAT_DATASETS}
dlq_topic = reading.raw_topic(app, f"dlq.stats{SUFFIX}")
ledger = app.Table("stats-ledger", default=None, key_type=str, partitions=PARTITIONS, options=dict(TABLE_OPTIONS),
                   extra_topic_configs={"max.message.bytes": str(buffered.MESSAGE_BYTES)})
cells = app.Table("stats-cells", default=None, key_type=str, partitions=PARTITIONS, options=dict(TABLE_OPTIONS),
                  extra_topic_configs={"max.message.bytes": str(buffered.MESSAGE_BYTES)})
LEDGER = buffered.BufferedTable(ledger, write_ahead=True)  # stage 1 reads and writes the ledger through this
CELLS = buffered.BufferedTable(cells, write_ahead=True)  # and stage 2 the cells
_recovered: set[int] = set()  # deltas partitions whose last flush this process wrote again
_recovered_sources: set[int] = set()  # source partitions whose last flush this process finished again
_codec: Any = None
_decoder: StatsDecoder | None = None


def codec() -> Any:
    global _codec
    if _codec is None:
        _codec = codec_from_settings()
        for name in core.STAT_DATASETS:
            _codec.register(name)
    return _codec


def decoder() -> StatsDecoder:
    global _decoder
    if _decoder is None:
        _decoder = StatsDecoder(codec(), quality=QUALITY)
    return _decoder


def target_partition(cell_text: str) -> int:
    """The deltas partition of a cell: stable across processes (``hash()`` is salted)."""
    return zlib.crc32(cell_text.encode()) % PARTITIONS


class _Held:
    """A stage's events not yet acked: ``flush`` acks them once their effects reached the broker."""

    def __init__(self) -> None:
        self.events: list[Any] = []
        self.since = 0.0  # when the oldest of them arrived

    def hold(self, event: Any) -> None:
        if not self.events:
            self.since = time.monotonic()
        self.events.append(event)

    def overdue(self) -> bool:
        return bool(self.events) and time.monotonic() - self.since >= FLUSH_SECONDS

    async def ack(self, events: list[Any]) -> None:
        for event in events:
            # What ``await stream.ack(event)`` does, less its per-event sensor hooks (the app's
            # monitor, ``faust_fixes.QuietMonitor``, drops them) and a coroutine per event.
            event.ack()


class _StageOne(_Held):
    """Stage 1's unacked events and the changes they made, summed per source partition and cell."""

    def __init__(self) -> None:
        super().__init__()
        # source partition -> deltas partition -> cell -> change of its totals
        self.deltas: dict[int, dict[int, dict[str, core.Measures]]] = {}
        self.ts: dict[int, int] = {}  # source partition -> latest source commit time of its changes (ms)
        self.cells = 0  # (source partition, cell) pairs held
        self.counted: Counter[tuple[str, str]] = Counter()  # events in by (org, system), for the metrics

    def add(self, part: int, deltas: dict[str, core.Measures], ts: int) -> None:
        if not deltas:
            return
        by_target = self.deltas.setdefault(part, {})
        for cell, delta in deltas.items():
            into = by_target.setdefault(target_partition(cell), {})
            if cell not in into:
                self.cells += 1
            core.merge_delta(into, cell, delta)
        if ts > self.ts.get(part, 0):
            self.ts[part] = ts

    def due(self) -> bool:
        return (len(self.events) >= FLUSH_EVENTS or self.cells >= FLUSH_CELLS
                or LEDGER.bytes >= buffered.FLUSH_BYTES or self.overdue())

    def take(self) -> tuple[dict[int, dict[int, dict[str, core.Measures]]], dict[int, int], list[Any]]:
        out = self.deltas, self.ts, self.events
        self.deltas, self.ts, self.events, self.cells = {}, {}, [], 0
        return out


ONE = _StageOne()


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


LAG = StageTwoLag(deltas_topic.get_topic_name(), frozenset(std_topics.topics), MAX_LAG)


@app.agent(std_topics, concurrency=1)
async def contribute(stream: Any) -> None:
    """Stage 1: a standard record version → the change of each cell it touches or left."""
    async for events in batches(app, stream, reading.TAKE, 0):
        for event in events:
            try:
                await _contribute(event)
                ONE.hold(event)
                if ONE.due():
                    await flush_behind()
            except Exception as exc:  # noqa: BLE001 - see _fatal
                _fatal(exc, "contribute")


async def _contribute(event: Any) -> None:
    window = WINDOW
    part = event.message.partition
    if part not in _recovered_sources:
        await _recover_source(part)  # before anything reads this partition's ledger
        _recovered_sources.add(part)
    if ROLLING and _rolled.get(part) != window.end:
        # Its ledger writes and changes are flushed with this event: a crash replays the event
        # and the roll.
        await _roll(part, window)
        _rolled[part] = window.end
    LAG.stage_one_event(app.consumer)
    if event.message.topic == TICKS:
        return  # a tick only rolls its partition
    try:
        dataset, record, findings = decoder().read(event.value, event.message.headers)
        ds = CATALOGUE[dataset]
        org = str(record["org_code"])
        source = core.source_ref(dataset, org, [record.get(k) for k in ds.business_key])
        new = core.contributions(dataset, record, window, quality=QUALITY, findings=findings)
    except RecordError as exc:
        await _dead_letter(event, exc.reason, str(exc))
        return
    except (KeyError, TypeError, ValueError) as exc:
        await _dead_letter(event, "stats.contribution", f"{type(exc).__name__}: {exc}")
        return
    ONE.counted[(org, str(record.get("source_system")))] += 1
    old = LEDGER.get(part, source)
    p = core.plan(source, core.Entry.from_json(old) if old else None, core.version(record), new,
                  fields=core.window_fields(dataset, record), window=window, partition=part)
    if p.entry is not None:
        LEDGER.set(part, source, p.entry.to_json())
        ONE.add(part, p.deltas, core.to_ms(record.get("source_ts")) or 0)


def outbox_key(partition: int) -> str:
    """The ledger key of a source partition's last numbered parts (see ``_flush_stage_one``)."""
    return f"O{partition}"


async def _recover_source(part: int) -> None:
    """Finish a source partition's last stage-1 flush: its ledger writes, then its parts again.

    Stage 2 ignores the parts it applied already; it may not have received them at all if the
    worker stopped part way. The numbering goes on from that outbox's numbers.
    """
    producer = await app.maybe_start_producer()
    written = await LEDGER.recover(producer, part)
    box = LEDGER.get(part, outbox_key(part))
    if box:
        await _send_parts(producer, {part: box})
    if written:
        log.info("stats: source partition %d: last flush finished again (%d keys)", part, written)


async def _roll(part: int, window: core.Window) -> None:
    """Move the window-dependent entries of one source partition to ``window`` (idempotent).

    Reads from RocksDB only the entries of the datasets whose contribution depends on the window
    (a ledger key starts with its dataset: ``core.source_ref``), one entry at a time: the rest of
    the ledger, most of it, is never read (every start rolled, and a full read of two million
    entries took seconds). Flushes whenever the rolled entries' changes or ledger writes reach
    a flush's size: a ledger of half a million records read whole took the worker to 520 MiB at
    its start. A crash part way replays the event and rolls again; the entries already rolled then
    change nothing.
    """
    await flush()  # the roll reads the ledger from RocksDB: nothing may wait in LEDGER
    rolled = 0
    for source, value in (kv for dataset in core.WINDOW_FIELDS for kv in LEDGER.items(part, core.source_prefix(dataset))):
        entry = core.Entry.from_json(value)
        if entry.partition != part or entry.fields is None:
            continue
        dataset, org = json.loads(source)[:2]
        p = core.roll(source, dataset, org, entry, window)
        if p is None or p.entry is None:
            continue
        LEDGER.set(part, source, p.entry.to_json())
        ONE.add(part, p.deltas, int(time.time() * 1000))
        rolled += 1
        if ONE.cells >= FLUSH_CELLS or LEDGER.bytes >= buffered.FLUSH_BYTES:
            await flush()
    if rolled:
        log.info("stats: partition %d rolled to %s (%d records)", part, window.as_of, rolled)


_rolled: dict[int, int] = {}  # source partition -> window end its entries were rolled to (this process)


_ticked_for: int | None = None  # the window end ticks were last sent for (this process)


@app.timer(interval=10.0)
async def midnight() -> None:
    """Advance the census window at local midnight, and tick every partition to roll it."""
    global WINDOW, _ticked_for
    if not ROLLING:
        return
    try:
        today = local_now().date()
        if today > WINDOW.as_of:
            WINDOW = window_for(today)
        if _ticked_for != WINDOW.end:  # after midnight, and once after a start (the night may have passed)
            for part in range(PARTITIONS):
                await ticks_topic.send(key=b"tick", value=WINDOW.as_of.isoformat().encode(), partition=part)
            _ticked_for = WINDOW.end
    except Exception as exc:  # noqa: BLE001 - a failed tick is sent again at the next run
        log.warning("stats: midnight tick failed: %r", exc)


def stat_record(cell: core.Cell, totals: dict[str, int], position: str, source_ts: int) -> dict[str, Any]:
    """The statistics record of a cell: the header, the key, measures and ratios."""
    now = int(time.time() * 1000)
    dataset, org, *_ = cell
    row = core.stat_fields(cell, totals)
    return {"org_code": org, "source_system": "STAT", "source_table": dataset,
            "source_key": core.cell_id(cell), "op": "u" if totals else "d",
            "source_position": position, "source_ts": source_ts, "ingest_ts": now, "mapping_id": None,
            **row, "computed_time": now}


class _StageTwo(_Held):
    """Stage 2's unacked events and the cells they changed, emitted and acked together."""

    def __init__(self) -> None:
        super().__init__()
        self.cells = core.Coalescer()

    def due(self) -> bool:
        return len(self.cells) >= FLUSH_CELLS or CELLS.bytes >= buffered.FLUSH_BYTES or self.overdue()

    def take(self) -> tuple[dict[str, tuple[core.Measures, str, int]], list[Any]]:
        events, self.events = self.events, []
        return self.cells.take(), events


PENDING = _StageTwo()


_FLUSHING = asyncio.Lock()


async def flush() -> None:
    """Emit each changed cell once, wait for the broker, then ack the events that changed them.

    One flush at a time (the idle timer and the agent both call this): a flush that took a cell's
    totals must have sent them before a later flush sends newer ones, or the older would land last.
    """
    async with _FLUSHING:
        await _flush_stage_one()
        await _flush_stage_two()


_behind: asyncio.Future[None] | None = None  # the flush an agent started and did not wait for


async def flush_behind() -> None:
    """Start a flush and go on while it waits for the broker; wait only for the one started before.

    An agent that awaited its own flush sat idle through two or three broker round trips per
    flush (a quarter of the worker's time). Going on is safe: a flush takes its events and table
    writes together before it awaits anything, later events read the taken writes until RocksDB has
    them (``BufferedTable.flushing``), and flushes run one at a time, so acks stay in order. At most
    one flush is in flight and one filling, so memory stays bounded.
    """
    global _behind
    if _behind is not None and not _behind.done():
        await asyncio.shield(_behind)  # both agents may wait for it: neither may cancel it
    _behind = asyncio.ensure_future(_flush_or_stop())
    await asyncio.sleep(0)  # let it take what is held now, so that ``due`` starts counting again


async def _flush_or_stop() -> None:
    try:
        await flush()
    except Exception as exc:  # noqa: BLE001 - see _fatal
        _fatal(exc, "flush")


async def _flush_stage_one() -> None:
    """Write each source partition's flush whole, send its numbered parts, then ack stage 1's events.

    A source partition's ledger writes and its parts (under ``outbox_key``) go first into its
    write-ahead record, acknowledged before any of them is written or sent: a worker that stops
    part way leaves either nothing of the flush (its events are replayed and counted then) or the
    whole of it in that record (``_recover_source`` finishes it, and stage 2 ignores the numbers
    it has applied). Without it, a change sent whose ledger entry did not land would be counted
    again by the replay.
    """
    if not (ONE.events or ONE.deltas or LEDGER.dirty):  # a roll's writes come before its event is held
        return
    # Taken together, before anything awaits: the agent goes on while this flush waits.
    deltas, stamps, events = ONE.take()
    boxes: dict[int, list[Any]] = {}
    for part, by_target in deltas.items():
        items: list[tuple[int, list[tuple[str, core.Measures]]]] = []
        for q, cells in sorted(by_target.items()):
            changed = [(cell, d) for cell, d in cells.items() if d]  # without the changes that cancelled out
            if changed:
                items.append((q, changed))
        if not items:
            continue
        last = LEDGER.get(part, outbox_key(part))  # the previous outbox holds the numbers so far
        seqs: dict[int, int] = dict(last[1]) if last else {}
        for q, _ in items:
            seqs[q] = seqs.get(q, 0) + 1
        # The outbox: this flush's parts, and every number so far (the next flush, here or after a
        # restart, numbers on from them).
        boxes[part] = [stamps.get(part, 0), sorted(seqs.items()), items]
        LEDGER.set(part, outbox_key(part), boxes[part])
    writes = LEDGER.take()
    producer = await app.maybe_start_producer()
    changelog = await LEDGER.write(producer, writes, await LEDGER.write_ahead(producer, writes))
    await _send_parts(producer, boxes)
    LEDGER.persisted(list(await asyncio.gather(*changelog)))
    await ONE.ack(events)
    counted, ONE.counted = ONE.counted, Counter()
    for (org, system), n in counted.items():  # one metrics update per label set and flush, not per event
        metrics.EVENTS_IN.labels(stage=STAGE, org=org, system=system).inc(n)


async def _send_parts(producer: Any, boxes: dict[int, list[Any]]) -> None:
    """One deltas message per partition, with the part of each source partition's outbox for it."""
    parts: dict[int, list[core.Part]] = {}
    for source, (ts, seqs, items) in sorted(boxes.items()):
        numbers = dict(seqs)
        for q, cells in items:
            parts.setdefault(q, []).append(core.Part(source, numbers[q], ts, cells))
    topic = deltas_topic.get_topic_name()
    await asyncio.gather(*[await producer.send(topic, str(q).encode(), core.encode_parts(group), q, None, None)
                           for q, group in sorted(parts.items())])


async def _flush_stage_two() -> None:
    if not PENDING.events:
        return
    # Taken together, before anything awaits: the agent goes on while this flush waits.
    dirty, events = PENDING.take()
    writes = CELLS.take()
    started = time.perf_counter()
    producer = await app.maybe_start_producer()
    changelog = await CELLS.write(producer, writes, await CELLS.write_ahead(producer, writes))
    futures = []
    out: Counter[tuple[str, str]] = Counter()
    for cell_text, (totals, pos, ts) in dirty.items():
        cell = core.parse_cell(cell_text)
        record = stat_record(cell, totals, pos, ts)
        dataset = cell[0]
        key = record_key(cell[1], list(cell[2:]))
        # Straight to the producer, as the tables' writes: partitioned by key as Faust's topic send
        # does (no partition given), without its per-message bookkeeping.
        futures.append(await producer.send(STAT_TOPICS[dataset], key, codec().encode(dataset, record), None, None, None))
        out[(cell[1], dataset)] += 1
    await asyncio.gather(*futures)
    for (org, dataset), n in out.items():
        metrics.RECORDS_OUT.labels(stage=STAGE, org=org, dataset=dataset).inc(n)
    CELLS.persisted(list(await asyncio.gather(*changelog)))
    await PENDING.ack(events)
    metrics.BATCH_SIZE.labels(stage=STAGE).observe(len(events))
    metrics.BATCH_SECONDS.labels(stage=STAGE).observe(time.perf_counter() - started)


def _apply(part: int, item: core.Part, applied: core.Applied, pos: str) -> None:
    """Add one part's changes into the cell totals, unless its number is among ``applied`` (the
    numbers applied from its source partition, key ``S<source>``).

    The cells go to ``PENDING`` either way: a part sent again by a flush finished after a crash
    emits its cells again (the worker before may have stopped before it emitted them)."""
    if applied.has(item.seq):
        for cell, _ in item.deltas:
            PENDING.cells.mark(cell, CELLS.get(part, f"T{cell}") or {}, pos, item.ts)
        return
    for cell, delta in item.deltas:
        key = f"T{cell}"
        totals = core.add_measures(CELLS.get(part, key), delta)
        CELLS.set(part, key, totals)
        PENDING.cells.mark(cell, totals, pos, item.ts)
    CELLS.set(part, f"S{item.source}", applied.add(item.seq).to_json())


def position(part: int) -> str:
    """The ``source_position`` of the rows stage 2 emits from a partition: the number of deltas
    messages that changed its totals so far, kept with them (``C<partition>``), so it only grows,
    across restarts and whatever order the messages are read in. "v2" sorts after the "st" of the
    statements topic the worker read before, so the sink takes the new rows."""
    return f"v2:{part:04d}:{CELLS.get(part, f'C{part}') or 0:020d}"


@app.agent(deltas_topic, concurrency=1)
async def total(stream: Any) -> None:
    """Stage 2: add the changes into the cell totals; changed cells are emitted by ``flush``."""
    async for events in batches(app, stream, reading.TAKE, 0):
        for event in events:
            await _total(event)


async def _total(event: Any) -> None:
    try:
        part = event.message.partition
        if part not in _recovered:
            # Finish this partition's last flush, whichever of its writes reached the changelog.
            written = await CELLS.recover(await app.maybe_start_producer(), part)
            _recovered.add(part)
            if written:
                log.info("stats: partition %d: last flush written again (%d keys)", part, written)
        parts = core.decode_parts(event.value)  # one part per source partition
        applied = [core.Applied.from_json(CELLS.get(part, f"S{item.source}")) for item in parts]
        if any(not done.has(item.seq) for item, done in zip(parts, applied)):
            CELLS.set(part, f"C{part}", (CELLS.get(part, f"C{part}") or 0) + 1)  # the next position
        pos = position(part)
        for item, done in zip(parts, applied):
            _apply(part, item, done, pos)
        LAG.stage_two_event(app.consumer, part, event.message.offset)
        PENDING.hold(event)
        if PENDING.due():
            await flush_behind()
    except Exception as exc:  # noqa: BLE001 - see _fatal
        _fatal(exc, "total")


@app.on_partitions_revoked.connect
async def _forget_recovered(sender: Any, revoked: Any, **kwargs: Any) -> None:
    """A partition assigned again may have been written by another worker meanwhile: recover it again.

    Faust flushed both stages before this (``_StatsApp._consumer_wait_empty``): nothing is pending."""
    _recovered.clear()
    _recovered_sources.clear()
    LAG.forget()


@app.timer(interval=FLUSH_SECONDS)
async def flush_idle() -> None:
    """Flush when no event arrives to trigger it."""
    try:
        if LAG.paused:
            LAG.check(app.consumer)
        if PENDING.overdue() or ONE.overdue():
            await flush()
    except Exception as exc:  # noqa: BLE001 - see _fatal
        _fatal(exc, "flush")


@app.timer(interval=TRIM_SECONDS or 3600.0)
async def trim() -> None:
    """Hand the memory freed since the last run back to the system (``hip.proc.trim_heap``)."""
    if TRIM_SECONDS:
        trim_heap()


def _create_own_topics() -> None:
    """``stats.ticks`` and ``stats.deltas``, a partition for each standard topic partition, before
    the worker starts.

    Faust declares only the topics its agents and tables own, and the ticks are read as one of the
    standard topics: the broker would otherwise create that one with its default partition count.
    The deltas topic Faust would create itself, but while it starts: after ``make demo-reset`` had
    deleted it, the group's first assignment was made from metadata that did not have it yet
    ("Ignoring missing topic"), so stage 2 had no partition for five minutes (until the metadata's
    next refresh), stage 1 was paused behind it, and its flush waited for the topic's metadata with
    its events unacked. Both now exist, with their partitions, before Faust asks for any.
    """
    from confluent_kafka.admin import NewTopic

    from hip.topics import create_missing, partition_count

    names = [TICKS, deltas_topic.get_topic_name()]
    create_missing(SETTINGS.bootstrap_servers, [NewTopic(name, PARTITIONS, 1) for name in names])
    for name in names:
        found = partition_count(SETTINGS.bootstrap_servers, name)
        deadline = time.monotonic() + 15
        while found is None and time.monotonic() < deadline:  # just created: the metadata may lag behind
            time.sleep(0.5)
            found = partition_count(SETTINGS.bootstrap_servers, name)
        if found != PARTITIONS:
            raise SystemExit(f"topic {name} has {found} partitions, the standard topics {PARTITIONS}: "
                             f"delete it (make demo-reset does) and start the worker again")


def main(argv: list[str] | None = None) -> None:
    """Run the worker (``hip stats run``)."""
    import sys

    _create_own_topics()
    port = int(os.environ.get("HIP_STATS_METRICS_PORT", SETTINGS.stats_metrics_port))
    if port:
        metrics.serve(port, STAGE)
    # Faust's worker command starts its web server unless told not to (web_enabled alone does not
    # stop it); two workers on one machine would then fight over port 6066.
    sys.argv = ["hip-stats", "worker", "-l", "info", "--without-web", *(argv or [])]
    relax_gc()  # set-up done: see hip.proc
    app.main()


if __name__ == "__main__":
    main()
