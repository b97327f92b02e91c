"""The statistics' tables, written once per flush instead of once per change.

A Faust table write costs a RocksDB put and a changelog message, every time: a cell total that
a thousand records change in half a second was written a thousand times. Here a stage reads
through a dict of its writes since the last flush and keeps only each key's last value; the flush
writes each changed key once (``BufferedTable.write``), before the events that made the writes
are acked.

Each flush of a partition must land whole (``write_ahead``): its keys reach the changelog as
separate messages, and a crash can land some of them without the others. Stage 2's totals and the
numbers of the parts they applied must agree, and stage 1's ledger entries must agree with the
changes it sent (``streams.stats.app``). So each flush first writes, per partition, one record under
the key ``W<partition>`` holding every key and value of the flush, waits for the broker to
acknowledge it, and only then writes the keys themselves. A worker taking the partition over (after
a restart, with or without its local RocksDB) writes that record's keys again before it reads the
partition (``recover``): the last flush is then whole, whichever of its messages landed. Earlier
flushes were whole before the next one began (their writes are awaited before their events are
acked). The write-ahead record is overwritten by the next flush, so compaction keeps one per
partition.

Keys and values go to RocksDB and the changelog in the table's own encoding (JSON, by orjson as
Faust writes it when orjson is installed), so Faust's recovery restores them as it restores its
own writes; the changelog offset reached is recorded as Faust does, so a restart with its local
database reads only what came after. Reads go to the partition's RocksDB database directly: Faust's
``table.get`` asks the store twice (``__contains__``, then ``__getitem__``) through its serializer
registry, and this was a tenth of the worker's time.
"""
from __future__ import annotations

import asyncio
from typing import Any, Iterator, NamedTuple

import orjson
import rocksdict
from faust.types import TP

# A flush's write-ahead record for one partition must fit in one Kafka message: flushes stop at
# FLUSH_BYTES (approximate), and the cells changelog and the producer accept MESSAGE_BYTES.
FLUSH_BYTES = 512 * 1024
MESSAGE_BYTES = 8 << 20


def wal_key(partition: int) -> str:
    return f"W{partition}"


def encode_key(key: str) -> bytes:
    """A table key as Faust's JSON key serializer writes it (byte for byte: RocksDB and compaction
    match keys by their bytes; a test compares with Faust's own)."""
    return orjson.dumps(key)


def encode_value(value: Any) -> bytes:
    return orjson.dumps(value)


class Sent(NamedTuple):
    partition: int
    offset: int  # of the last message of a batch


async def send_batches(producer: Any, topic: str, partition: int, items: dict[bytes, bytes]) -> list[Any]:
    """Send keys and values to one partition in record batches built here; returns awaitables of ``Sent``.

    Faust's ``send`` made a future and a bookkeeping entry per message: with several changelog
    messages per standard record that was a tenth of the worker's time. The batches go through the
    producer's own queue, in order with its other sends to the partition.
    """
    kafka = producer._ensure_producer()  # aiokafka's producer under Faust's
    sent: list[Any] = []
    batch, count = kafka.create_batch(), 0
    for key, value in items.items():
        if batch.append(key=key, value=value, timestamp=None) is None:
            sent.append(await _send_batch(kafka, batch, topic, partition, count))
            batch, count = kafka.create_batch(), 0
            if batch.append(key=key, value=value, timestamp=None) is None:
                raise ValueError(f"{topic}: a value of {len(value)} bytes does not fit in a record batch")
        count += 1
    if count:
        sent.append(await _send_batch(kafka, batch, topic, partition, count))
    return sent


async def _send_batch(kafka: Any, batch: Any, topic: str, partition: int, count: int) -> Any:
    async def last_offset() -> Sent:
        meta = await batch_sent  # the offset of the batch's first message
        return Sent(meta.partition, meta.offset + count - 1)

    batch_sent = await kafka.send_batch(batch, topic, partition=partition)
    return asyncio.ensure_future(last_offset())


def encode_wal(items: dict[bytes, bytes]) -> bytes:
    """The write-ahead record: a JSON list of [key, value], built from their JSON encodings."""
    return b"[" + b",".join(b"[" + k + b"," + v + b"]" for k, v in items.items()) + b"]"


class BufferedTable:
    """Reads through the writes not yet flushed; ``write`` flushes them (see the module text).

    A flush awaits the broker, and the agents go on meanwhile: until ``write`` has put them in
    RocksDB, the keys a flush took stay readable here (``flushing``), or a change folded meanwhile
    would read the value from before them and overwrite them.
    """

    def __init__(self, table: Any, *, write_ahead: bool) -> None:
        self.table = table
        self.write_ahead_records = write_ahead
        self.dirty: dict[int, dict[str, Any]] = {}
        self.flushing: dict[int, dict[str, Any]] = {}  # taken by a flush, not yet in RocksDB
        self.encoded: dict[int, dict[str, bytes]] = {}  # the pending writes' values as they will be written
        self.bytes = 0  # approximate size of the pending writes (keys + JSON values)

    def get(self, partition: int, key: str) -> Any:
        for writes in (self.dirty, self.flushing):
            pending = writes.get(partition)
            if pending is not None and key in pending:
                return pending[key]
        raw = self.table.data._db_for_partition(partition).get(encode_key(key))
        return None if raw is None else orjson.loads(raw)

    def items(self, partition: int, prefix: str = "") -> Iterator[tuple[str, Any]]:
        """The keys starting with ``prefix`` and their values in one partition's RocksDB database,
        read as they are needed, in key order.

        A consistent view: writes made while the iteration runs are not seen. Neither are the
        writes not flushed yet (flush first). Faust's own ``table.items()`` would read every
        partition's database. The keys are stored as JSON strings, and JSON escapes a string
        character by character: the keys with a prefix are one range, from the prefix's encoding
        without its closing quote.
        """
        start = encode_key(prefix)[:-1]
        for raw_key, raw in self.table.data._db_for_partition(partition).items(from_key=start):
            if not raw_key.startswith(start):
                return  # past the range (Faust keeps its offset under a key of its own, not a JSON string)
            yield orjson.loads(raw_key), orjson.loads(raw)

    def set(self, partition: int, key: str, value: Any) -> None:
        self.dirty.setdefault(partition, {})[key] = value
        encoded = self.encoded.setdefault(partition, {})
        raw = encode_value(value)  # once: it sizes the write now and is what the flush writes
        before = encoded.get(key)
        self.bytes += len(raw) - (len(before) if before is not None else -len(key))
        encoded[key] = raw

    def take(self) -> dict[int, dict[bytes, bytes]]:
        """The writes since the last flush, encoded, for the next one (one flush at a time)."""
        assert not self.flushing, "the previous flush has not written its keys"
        self.flushing, self.dirty = self.dirty, {}
        encoded, self.encoded = self.encoded, {}
        self.bytes = 0
        return {p: {encode_key(k): v for k, v in items.items()} for p, items in encoded.items()}

    async def write_ahead(self, producer: Any, encoded: dict[int, dict[bytes, bytes]]) -> dict[int, bytes]:
        """Each partition's write-ahead record, acknowledged by the broker; returns them for ``write``."""
        if not self.write_ahead_records:
            return {}
        topic = self._topic()
        records = {p: encode_wal(items) for p, items in encoded.items() if items}
        await asyncio.gather(*[await producer.send(topic, encode_key(wal_key(p)), record, p, None, None)
                               for p, record in records.items()])
        return records

    async def write(self, producer: Any, encoded: dict[int, dict[bytes, bytes]],
                    ahead: dict[int, bytes]) -> list[Any]:
        """Write the keys to RocksDB and send them to the changelog.

        RocksDB gets each partition's keys and its write-ahead record (``ahead``, from
        ``write_ahead``) in one atomic batch, so the
        local record is always the last flush written locally (a restart with the local database
        may read nothing newer from the changelog). Returns the changelog futures: pass their
        results to ``persisted`` once they are all done.
        """
        topic, store = self._topic(), self.table.data
        for p, items in encoded.items():  # all of RocksDB first, before anything awaits
            batch = rocksdict.WriteBatch(raw_mode=True)
            for k, v in items.items():
                batch.put(k, v)
            if p in ahead:
                batch.put(encode_key(wal_key(p)), ahead[p])
            store._db_for_partition(p).write(batch)
            self.flushing.pop(p, None)
        futures = []
        for p, items in encoded.items():
            futures += await send_batches(producer, topic, p, items)
        return futures

    def persisted(self, results: list[Any]) -> None:
        """Record the changelog offsets reached, as Faust does after its own writes."""
        last: dict[int, int] = {}
        for meta in results:
            last[meta.partition] = max(meta.offset, last.get(meta.partition, -1))
        for p, offset in last.items():
            self.table.data.set_persisted_offset(TP(self._topic(), p), offset)

    async def recover(self, producer: Any, partition: int) -> int:
        """Write the partition's last flush again from its write-ahead record; returns its key count.

        Run inside an event of ``partition`` (the table reads that partition's database), before
        its first statement is folded.
        """
        raw = self.table.data._db_for_partition(partition).get(encode_key(wal_key(partition)))
        if raw is None:
            return 0
        items = {encode_key(k): encode_value(v) for k, v in orjson.loads(raw)}
        futures = await self.write(producer, {partition: items}, {partition: raw})
        self.persisted(list(await asyncio.gather(*futures)))
        return len(items)

    def _topic(self) -> str:
        return str(self.table.changelog_topic.get_topic_name())
