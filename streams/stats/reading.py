"""How the statistics worker reads the standard topics: its Faust settings for consuming.

Shared by the worker (``streams.stats.app``) and its floor (``streams.stats.floor``), which reads
the same topics the same way and does nothing else, so that the two are measured alike.
"""
from __future__ import annotations

import os
from typing import Any

from streams import faust_fixes

MAX_POLL_RECORDS = int(os.environ.get("HIP_STATS_MAX_POLL_RECORDS", "2000"))  # 0: Faust's default, no limit
FETCH_KIB = int(os.environ.get("HIP_STATS_FETCH_KIB", "64"))  # fetched ahead per partition
# A partition read to its end for a while is asked for records this often, not at every fetch
# (streams/faust_fixes.py, fix 9): most of the 66 × 6 standard partitions are empty. 0: every fetch.
FETCH_QUIET_S = float(os.environ.get("HIP_STATS_FETCH_QUIET_S", "0.5"))
# Events an agent takes from its queue at once (streams.event_batches), then handles one by one.
# Small: a rebalance waits until the events taken are acked, as Faust's stream waits for the one.
TAKE = 100


def install_fixes() -> None:
    """``streams.faust_fixes`` as the statistics use them: call before the app is made."""
    faust_fixes.install(quiet_every_s=FETCH_QUIET_S)


def app_options() -> dict[str, Any]:
    """The ``faust.App`` settings that decide how the standard topics are consumed."""
    return dict(
        processing_guarantee="at_least_once",
        web_enabled=False,
        Monitor=faust_fixes.QuietMonitor,  # Faust's per-message statistics: see streams/faust_fixes.py
        producer_linger=0.005,
        stream_buffer_maxsize=4096,
        # Per partition fetched. Stage 1 reads every standard topic (66 × HIP_STD_PARTITIONS
        # partitions) and in a catch-up each of them holds a fetch: Faust's default 1 MiB held the
        # process near 300 MiB with a hundred partitions, 256 KiB reached 361 MiB in a
        # million-change catch-up.
        consumer_max_fetch_size=FETCH_KIB * 1024,
        # Records handed over per poll. Faust's default is no limit: in a catch-up a poll unpacked
        # what every partition had fetched, about 150,000 records (60 MiB of Python objects) alive
        # at once.
        broker_max_poll_records=MAX_POLL_RECORDS or None,
    )


def raw_topic(app: Any, *names: str, **options: Any) -> Any:
    """A topic of bytes the worker decodes itself (read without Faust's codecs: faust_fixes, fix 5)."""
    return app.topic(*names, schema=faust_fixes.RawSchema(), key_type=bytes, value_type=bytes,
                     key_serializer="raw", value_serializer="raw", **options)
