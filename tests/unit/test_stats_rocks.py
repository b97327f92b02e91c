"""The statistics' databases keep indexes and filters in one shared, bounded cache (streams/stats/rocks.py)."""
from pathlib import Path

from faust.stores.rocksdb import RocksDBOptions

from streams.stats.rocks import BoundedOptions, shared_cache

SIZES = {"write_buffer_size": 1 << 20, "max_write_buffer_number": 2, "bloom_filter_size": 10, "use_rocksdict": True}


def fill(db, n: int) -> None:  # type: ignore[no-untyped-def]
    for i in range(n):
        db[f'"[\\"medical_fee\\",\\"O{i % 7}\\",\\"F{i * 7919 % 1000003}\\"]"'.encode()] = b'["p",["c"],[]]'
    db.flush()


def test_indexes_and_filters_live_in_the_shared_cache_not_beside_it(tmp_path: Path) -> None:
    plain = RocksDBOptions(**SIZES).open(tmp_path / "plain.db")
    fill(plain, 60_000)
    outside = plain.property_int_value("rocksdb.estimate-table-readers-mem")
    plain.close()

    a, b = (BoundedOptions(**SIZES).open(tmp_path / name) for name in ("a.db", "b.db"))
    fill(a, 60_000)
    fill(b, 60_000)
    assert a[b'"[\\"medical_fee\\",\\"O0\\",\\"F0\\"]"'] == b'["p",["c"],[]]'
    # What RocksDB holds per file outside any cache grows with the keys; here it is a few pinned bytes.
    assert a.property_int_value("rocksdb.estimate-table-readers-mem") < outside / 20
    # One cache for both databases, bounded by its capacity.
    usage = a.property_int_value("rocksdb.block-cache-usage")
    assert usage == b.property_int_value("rocksdb.block-cache-usage") > 0
    assert usage <= a.property_int_value("rocksdb.block-cache-capacity")
    assert shared_cache() is shared_cache()
    a.close()
    b.close()
