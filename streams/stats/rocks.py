"""RocksDB options for the statistics' tables: memory bounded however large the tables grow.

Faust opens each table partition's database with a block cache of its own, and RocksDB keeps every
file's index and Bloom filter in memory outside that cache, for as long as the file exists. Those
grow with the keys: the ledger remembers every standard record, and stage 2 a member per record and
cell. At 8.3 million keys (about two million records) they held 43 MB, and the worker passed its
300 MiB limit in the end-to-end benchmark.

Here every database of the worker shares one block cache (``HIP_STATS_CACHE_MIB``), and the index
and filter blocks live in it too, partitioned: only each file's small top level stays pinned, the
partitions come and go with the data blocks. The worker's RocksDB memory is then that cache plus
the write buffers, whatever the tables hold.
"""
from __future__ import annotations

import os
from typing import Any

import rocksdict
from faust.stores.rocksdb import RocksDBOptions

CACHE_MIB = int(os.environ.get("HIP_STATS_CACHE_MIB", "16"))
_cache: Any = None


def shared_cache() -> Any:
    """The one block cache of this process's statistics databases."""
    global _cache
    if _cache is None:
        _cache = rocksdict.Cache(CACHE_MIB << 20)
    return _cache


class BoundedOptions(RocksDBOptions):
    """Faust's options for one database, with the shared cache holding indexes and filters too."""

    def as_options(self) -> Any:
        options = super().as_options()
        table = rocksdict.BlockBasedOptions()
        table.set_block_cache(shared_cache())
        table.set_bloom_filter(self.bloom_filter_size, True)
        table.set_cache_index_and_filter_blocks(True)
        table.set_index_type(rocksdict.BlockBasedIndexType.two_level_index_search())
        table.set_partition_filters(True)
        table.set_pin_top_level_index_and_filter(True)
        table.set_pin_l0_filter_and_index_blocks_in_cache(True)
        options.set_block_based_table_factory(table)
        return options


def bound(table: Any, *, write_buffer_size: int, max_write_buffer_number: int, bloom_filter_size: int) -> None:
    """Open ``table``'s databases with ``BoundedOptions`` (before the worker opens any)."""
    table.data.rocksdb_options = BoundedOptions(
        write_buffer_size=write_buffer_size, max_write_buffer_number=max_write_buffer_number,
        bloom_filter_size=bloom_filter_size, use_rocksdict=True)
