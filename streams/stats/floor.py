"""The statistics worker's floor: Faust reading the standard topics as the worker does, nothing else.

``python -m streams.stats.bench_worker --floor`` runs this next to the worker on the same records.
The agent takes its events in the worker's batches and acks each one: no decoding, no ledger, no
tables, nothing produced. Its CPU a record is what any Faust processor of the standard topics pays
on the machine before it does any work; the worker's CPU above it is the statistics' own.

Reads the environment the worker reads (``streams.stats.isolated``): ``HIP_STATS_APP_ID``,
``HIP_STATS_TOPIC_SUFFIX``, ``HIP_STATS_DATASETS`` and ``HIP_STD_PARTITIONS``.
"""
from __future__ import annotations

import os
import sys
from typing import Any

import faust

from hip.proc import relax_gc
from hip.settings import load_settings
from streams.event_batches import batches
from streams.stats import reading

SETTINGS = load_settings()
SUFFIX = os.environ.get("HIP_STATS_TOPIC_SUFFIX", "")
DATASETS = [d for d in os.environ.get("HIP_STATS_DATASETS", "").split(",") if d]

reading.install_fixes()
APP_ID = os.environ.get("HIP_STATS_APP_ID", "hip-stats-floor")
app = faust.App(APP_ID, broker=f"kafka://{SETTINGS.bootstrap_servers}",
                datadir=str(SETTINGS.faust_datadir("stats", APP_ID)),
                topic_partitions=SETTINGS.std_partitions, topic_replication_factor=1,
                **reading.app_options())
std_topics = reading.raw_topic(app, *[f"std.{d}{SUFFIX}" for d in DATASETS],
                               partitions=SETTINGS.std_partitions)


@app.agent(std_topics, concurrency=1)
async def read(stream: Any) -> None:
    async for events in batches(app, stream, reading.TAKE, 0):
        for event in events:
            event.ack()


def main() -> None:
    if not DATASETS:
        raise SystemExit("HIP_STATS_DATASETS: name the standard datasets to read")
    sys.argv = ["hip-stats-floor", "worker", "-l", "info", "--without-web"]
    relax_gc()  # as the worker does: see hip.proc
    app.main()


if __name__ == "__main__":
    main()
