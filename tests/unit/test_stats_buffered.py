"""The statistics' tables written once per flush; stage 2's kept whole by a write-ahead record (streams/stats/buffered.py)."""
import asyncio
import json
from pathlib import Path
from typing import Any, NamedTuple

import rocksdict

from streams.stats.buffered import BufferedTable, encode_key, encode_wal, wal_key

TOPIC = "hip-stats-stats-cells-changelog"


class Meta(NamedTuple):
    partition: int
    offset: int


class Store:
    """What ``BufferedTable`` uses of Faust's RocksDB store: one real RocksDB database per partition."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.dbs: dict[int, Any] = {}
        self.persisted: dict[int, int] = {}
        self.partition = 0  # the partition of the event being processed

    def _encode_key(self, key: str) -> bytes:
        return encode_key(key)

    def _encode_value(self, value: Any) -> bytes:
        return json.dumps(value).encode()

    def _db_for_partition(self, p: int) -> Any:
        if p not in self.dbs:
            options = rocksdict.Options(raw_mode=True)
            self.dbs[p] = rocksdict.Rdict(str(self.root / f"p{p}"), options=options)
        return self.dbs[p]

    def _get(self, key: bytes) -> bytes | None:
        value: bytes | None = self._db_for_partition(self.partition).get(key)
        return value

    def set_persisted_offset(self, tp: Any, offset: int) -> None:
        assert tp.topic == TOPIC
        self.persisted[tp.partition] = offset

    def value(self, p: int, key: str) -> Any:
        raw = self._db_for_partition(p).get(self._encode_key(key))
        return None if raw is None else json.loads(raw)


class Topic:
    def get_topic_name(self) -> str:
        return TOPIC


class Table:
    def __init__(self, store: Store) -> None:
        self.data = store
        self.changelog_topic = Topic()

    def get(self, key: str) -> Any:
        return self.data.value(self.data.partition, key)


class Producer:
    """Records what is sent; each partition's offsets count from 0."""

    def __init__(self) -> None:
        self.sent: list[tuple[int, bytes, bytes]] = []

    async def send(self, topic: str, key: bytes, value: bytes, partition: int, ts: Any, headers: Any) -> Any:
        assert topic == TOPIC
        offset = sum(1 for p, _, _ in self.sent if p == partition)
        self.sent.append((partition, key, value))
        fut = asyncio.get_running_loop().create_future()
        fut.set_result(Meta(partition, offset))
        return fut

    def _ensure_producer(self) -> "Producer":
        return self  # the aiokafka producer under Faust's: record batches

    def create_batch(self) -> "Batch":
        return Batch()

    async def send_batch(self, batch: "Batch", topic: str, *, partition: int) -> Any:
        first = None
        for key, value in batch.messages:
            meta = await (await self.send(topic, key, value, partition, None, None))
            first = meta if first is None else first
        fut = asyncio.get_running_loop().create_future()
        fut.set_result(first)
        return fut


class Batch:
    """Holds two messages, so that a flush of three keys needs two batches."""

    def __init__(self) -> None:
        self.messages: list[tuple[bytes, bytes]] = []

    def append(self, *, key: bytes, value: bytes, timestamp: Any) -> Any:
        if len(self.messages) == 2:
            return None
        self.messages.append((key, value))
        return True


def store_of(tmp_path: Path, write_ahead: bool = True) -> tuple[BufferedTable, Store]:
    store = Store(tmp_path)
    return BufferedTable(Table(store), write_ahead=write_ahead), store


async def flush(cells: BufferedTable, producer: Producer) -> None:
    """What the worker's flush does with the table, in order."""
    writes = cells.take()
    futures = await cells.write(producer, writes, await cells.write_ahead(producer, writes))
    cells.persisted(list(await asyncio.gather(*futures)))


def test_reads_go_through_the_writes_not_yet_flushed(tmp_path: Path) -> None:
    cells, store = store_of(tmp_path)
    cells.set(0, "Tcell", [{"n": 1}, None])
    assert cells.get(0, "Tcell") == [{"n": 1}, None]
    assert cells.get(1, "Tcell") is None  # another partition's write is not this one's
    asyncio.run(flush(cells, Producer()))
    assert cells.dirty == {} and cells.get(0, "Tcell") == [{"n": 1}, None]  # from RocksDB now


def test_a_key_written_again_counts_its_last_size_once(tmp_path: Path) -> None:
    cells, _ = store_of(tmp_path)
    cells.set(0, "Tcell", [{"n": 1}, None])
    once = cells.bytes
    cells.set(0, "Tcell", [{"n": 2}, None])
    assert cells.bytes == once
    cells.set(0, "Tcell", [{"n": 2000}, None])
    assert cells.bytes == once + 3
    cells.take()
    assert cells.bytes == 0


def test_a_flush_writes_ahead_then_each_key_once(tmp_path: Path) -> None:
    cells, store = store_of(tmp_path)
    producer = Producer()
    for n in range(1, 4):  # three statements on one total: one write
        cells.set(0, "Tcell\x1f门诊", [{"n": n}, ["src", f"p{n}"]])
    cells.set(0, "Mcell\x1fsrc", ["p3", {"n": 1}])
    cells.set(2, "Tother", [{"n": 5}, None])
    asyncio.run(flush(cells, producer))

    keys = [(p, json.loads(k)) for p, k, _ in producer.sent]
    assert keys[:2] == [(0, "W0"), (2, "W2")]  # the write-ahead records come first
    assert sorted(keys[2:]) == [(0, "Mcell\x1fsrc"), (0, "Tcell\x1f门诊"), (2, "Tother")]
    assert json.loads(producer.sent[0][2]) == [["Tcell\x1f门诊", [{"n": 3}, ["src", "p3"]]],
                                               ["Mcell\x1fsrc", ["p3", {"n": 1}]]]
    assert store.value(0, "Tcell\x1f门诊") == [{"n": 3}, ["src", "p3"]]
    assert store.value(0, wal_key(0)) == json.loads(producer.sent[0][2])  # the local record is this flush
    assert store.persisted == {0: 2, 2: 1}  # each partition's last changelog offset


def test_recover_writes_the_last_flush_again_from_its_record(tmp_path: Path) -> None:
    cells, store = store_of(tmp_path)
    # A crash after the write-ahead record reached the changelog, before the keys did: the
    # restore brought back the record alone.
    items = {store._encode_key("Tcell"): store._encode_value([{"n": 7}, None]),
             store._encode_key("Mcell\x1fsrc"): store._encode_value(["p9", {"n": 7}])}
    store.partition = 1
    store._db_for_partition(1)[store._encode_key(wal_key(1))] = encode_wal(items)
    producer = Producer()

    assert asyncio.run(cells.recover(producer, 1)) == 2
    assert store.value(1, "Tcell") == [{"n": 7}, None] and store.value(1, "Mcell\x1fsrc") == ["p9", {"n": 7}]
    assert sorted(json.loads(k) for _, k, _ in producer.sent) == ["Mcell\x1fsrc", "Tcell"]
    assert store.persisted == {1: 1}
    assert asyncio.run(cells.recover(producer, 2)) == 0  # a partition never flushed: nothing to do


def test_without_write_ahead_only_the_keys_are_written(tmp_path: Path) -> None:
    ledger, store = store_of(tmp_path, write_ahead=False)
    producer = Producer()
    ledger.set(3, "source", ["v1"])
    ledger.set(3, "source", ["v2"])
    asyncio.run(flush(ledger, producer))
    assert [(p, json.loads(k), json.loads(v)) for p, k, v in producer.sent] == [(3, "source", ["v2"])]
    assert store.value(3, "source") == ["v2"] and store.value(3, wal_key(3)) is None


def test_keys_taken_by_a_flush_stay_readable_until_rocksdb_has_them(tmp_path: Path) -> None:
    # The agents go on while a flush waits for the broker: a change folded then must read the
    # value the flush is writing, not the older one still in RocksDB.
    cells, store = store_of(tmp_path)
    cells.set(0, "Tcell", [{"n": 1}, None])
    asyncio.run(flush(cells, Producer()))
    cells.set(0, "Tcell", [{"n": 2}, None])
    writes = cells.take()
    assert store.value(0, "Tcell") == [{"n": 1}, None]  # RocksDB does not have it yet
    assert cells.get(0, "Tcell") == [{"n": 2}, None]
    cells.set(0, "Tcell", [{"n": 3}, None])  # folded meanwhile: for the next flush
    assert cells.get(0, "Tcell") == [{"n": 3}, None]

    async def rest() -> None:
        await cells.write(Producer(), writes, await cells.write_ahead(Producer(), writes))

    asyncio.run(rest())
    assert cells.flushing == {} and store.value(0, "Tcell") == [{"n": 2}, None]
    assert cells.get(0, "Tcell") == [{"n": 3}, None]


def test_keys_are_encoded_as_faust_encodes_them() -> None:
    """RocksDB lookups and changelog compaction match keys by their bytes."""
    from faust.serializers.registry import Registry

    faust_keys = Registry(key_serializer="json", value_serializer="json")
    for key in ["W3", '["63","440101","门诊",1]', '["4","440101","R1"]\x1f["61",""]', "引号\"\\"]:
        assert encode_key(key) == faust_keys.dumps_key(str, key, serializer="json")


def test_items_reads_one_partitions_database_as_a_consistent_view(tmp_path: Path) -> None:
    # The day's rollover walks one partition's ledger this way: a ledger read whole (Faust's
    # table.items(), every partition at once) took the worker to 520 MiB at its start.
    ledger, store = store_of(tmp_path, write_ahead=False)
    for n in range(3):
        ledger.set(1, f"src{n}", [n])
    ledger.set(2, "other", [9])
    asyncio.run(flush(ledger, Producer()))
    store._db_for_partition(1)[b"__faust\0offset__"] = b"17"  # Faust's own key: not a table key

    seen = []
    for key, value in ledger.items(1):
        seen.append((key, value))
        ledger.set(1, "src9", [9])  # written while it runs: not seen
        asyncio.run(flush(ledger, Producer()))
    assert seen == [("src0", [0]), ("src1", [1]), ("src2", [2])]
    assert dict(ledger.items(1))["src9"] == [9]


def test_items_with_a_prefix_reads_only_the_keys_that_start_with_it(tmp_path: Path) -> None:
    # The rollover reads only the window-dependent datasets' entries: a ledger key starts with its
    # dataset, and the keys of a dataset are one range of the database.
    ledger, store = store_of(tmp_path, write_ahead=False)
    keys = ['["department","O1","D1"]', '["department","O1","D2"]', '["departments","O1","X"]',
            '["inpatient_visit","O1","V\\"1"]', '["inpatient_visit","O2","门诊"]', '["medical_fee","O1","F1"]']
    for n, key in enumerate(keys):
        ledger.set(1, key, [n])
    asyncio.run(flush(ledger, Producer()))
    store._db_for_partition(1)[b"__faust\0offset__"] = b"17"

    assert [k for k, _ in ledger.items(1, '["department",')] == keys[:2]
    assert [k for k, _ in ledger.items(1, '["inpatient_visit",')] == keys[3:5]
    assert [k for k, _ in ledger.items(1, '["lab_report",')] == []
    assert [k for k, _ in ledger.items(1)] == sorted(keys, key=lambda k: encode_key(k))
