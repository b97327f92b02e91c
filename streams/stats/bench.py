"""What the statistics cost the pipeline: normalizer alone versus normalizer + statistics, one run.

``python -m streams.stats.bench [--events N] [--vendor a|b] [--repeat R]`` prints a table.

Measured, in one process, on the same simulated Debezium events (``streams.normalizer_events``):

- normalizer: ``streams.normalizer_stage.Processor`` over batches of 2,000 (decode, map, validate,
  conformance, the registry-framed Avro encoding of every standard record with a fixed schema id,
  findings and dead letters, metrics), as the worker runs it without Kafka;
- normalizer + statistics: the same, plus for every encoded standard record what the statistics
  worker does to it: decode (``streams.stats.decode``), contributions, both ledger stages
  (``core.Ledger``), coalescing of changed cells (``core.Coalescer``) and, every 2,000 events, the
  encoding of one ``stat.<dataset>`` record per changed cell. Once without dataset 60 and once with
  it (its findings read from the record's ``hip.findings`` header, as the worker does).

Not measured: Kafka and Faust (consuming, producing, changelogs, commits) on either side. The
statistics' share is ``1 − rate(normalizer + statistics) / rate(normalizer)``: the throughput the
pipeline would lose if one process did both. Each mode runs ``--repeat`` times; the best is kept.
"""
from __future__ import annotations

import argparse
import datetime as dt
import time
from typing import Any, Callable

from hip.catalogue import Catalogue, load_catalogue
from hip.codec import FramedEncoder
from hip.proc import machine
from streams.stats import core
from streams.stats.decode import StatsDecoder

FLUSH_EVENTS = 2000
SIMULATED_WINDOW = core.Window(dt.date(2024, 2, 1), dt.date(2024, 3, 15))  # covers the simulated days


class LocalCodec:
    """``hip.codec.Codec``'s framing and the attributes ``StatsDecoder`` reads, without a registry."""

    def __init__(self, catalogue: Catalogue) -> None:
        self.catalogue = catalogue
        self._ids: dict[str, int] = {}
        self._writers: dict[int, tuple[str, Any]] = {}
        for i, ds in enumerate(catalogue, start=1):
            self._ids[ds.name] = i
            self._writers[i] = (ds.name, ds.parsed)

        self._framed = FramedEncoder(self)

    def register(self, dataset: str) -> int:
        return self._ids[dataset]

    def encode(self, dataset: str, record: dict[str, Any]) -> bytes:
        """The normalizer's encoding (``FramedEncoder``), with this codec's fixed ids."""
        return self._framed.encode(dataset, record)

    def _load_writer(self, schema_id: int) -> tuple[str, Any]:
        return self._writers[schema_id]


def hospital(mappings: Any, vendor: str) -> str:
    """A configured hospital of the vendor (an unknown organisation dead-letters every event)."""
    orgs = sorted(o for o, h in mappings.hospitals.items() if getattr(h, "vendor", "") == vendor)
    return orgs[0] if orgs else sorted(o for o in mappings.hospitals if o.startswith(f"SIM{vendor.upper()}"))[0]


class Statistics:
    """The statistics worker's per-record work, in memory."""

    def __init__(self, codec: LocalCodec, window: core.Window, quality: bool) -> None:
        self.codec = codec
        self.decoder = StatsDecoder(codec, quality=quality)  # type: ignore[arg-type]
        self.window = window
        self.quality = quality
        self.ledger = core.Ledger()
        self.pending = core.Coalescer()
        self.catalogue = codec.catalogue
        self.emitted = 0

    def record(self, data: bytes, position: str, headers: Any) -> None:
        dataset, rec, findings = self.decoder.read(data, headers)
        ds = self.catalogue[dataset]
        org = str(rec["org_code"])
        source = core.source_ref(dataset, org, [rec.get(k) for k in ds.business_key])
        new = core.contributions(dataset, rec, self.window, quality=self.quality, findings=findings)
        ledger = self.ledger
        p = core.plan(source, ledger.entries.get(source), core.version(rec), new,
                      fields=core.window_fields(dataset, rec), window=self.window)
        if p.entry is None:
            return
        ledger.entries[source] = p.entry
        for cell, delta in p.deltas.items():
            totals = ledger.cells[cell] = core.add_measures(ledger.cells.get(cell), delta)
            self.pending.mark(cell, totals, position, 0)

    def flush(self) -> None:
        for cell_text, (totals, position, ts) in self.pending.take().items():
            cell = core.parse_cell(cell_text)
            row = {"org_code": cell[1], "source_system": "STAT", "source_table": cell[0],
                   "source_key": cell_text, "op": "u" if totals else "d", "source_position": position,
                   "source_ts": ts, "ingest_ts": ts, "mapping_id": None, **core.stat_fields(cell, totals),
                   "computed_time": ts}
            self.codec.encode(cell[0], row)
            self.emitted += 1


def run(events: list[Any], mappings: Any, window: core.Window, stats: Callable[[], Statistics | None]
        ) -> tuple[float, int, int]:
    """Seconds, standard records and statistics records for one pass over ``events``."""
    from streams.normalizer_stage import Processor

    catalogue = load_catalogue()
    s = stats()
    processor = Processor(mappings, LocalCodec(catalogue), {})
    records = 0
    started = time.perf_counter()
    for i in range(0, len(events), FLUSH_EVENTS):
        for m in processor.process(events[i:i + FLUSH_EVENTS]).messages:
            if not m.topic.startswith("std."):
                continue
            records += 1
            if s is not None:
                s.record(m.value or b"", f"st:0000:{records:020d}", m.headers)
        if s is not None:
            s.flush()
    return time.perf_counter() - started, records, s.emitted if s is not None else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20000, help="simulated row changes")
    parser.add_argument("--vendor", choices=("a", "b"), default="b")
    parser.add_argument("--repeat", type=int, default=2, help="passes per mode; the best is kept")
    args = parser.parse_args()
    import logging

    from streams.core.mapping import load_mappings
    from streams.normalizer_events import workload_events

    logging.basicConfig(level="WARNING")
    mappings = load_mappings()
    events = workload_events(args.vendor, hospital(mappings, args.vendor), args.events, dirty=0.02)
    window = SIMULATED_WINDOW
    codec = LocalCodec(load_catalogue())
    modes: list[tuple[str, Callable[[], Statistics | None]]] = [
        ("normalizer alone", lambda: None),
        ("normalizer + statistics (58, 61-64)", lambda: Statistics(codec, window, quality=False)),
        ("normalizer + statistics (58, 60-64)", lambda: Statistics(codec, window, quality=True)),
    ]
    run(events[:500], mappings, window, modes[2][1])  # warm caches: schemas, mappings, conformance plans
    results = []
    for name, make in modes:
        best = min((run(events, mappings, window, make) for _ in range(max(1, args.repeat))), key=lambda r: r[0])
        results.append((name, *best))
    base = len(events) / results[0][1]
    print(f"\nstatistics cost, in process (no Kafka, no Faust), {len(events)} simulated events of vendor "
          f"{args.vendor}; machine: {machine()}\n")
    print(f"{'mode':<38} {'std recs':>8} {'stat recs':>9} {'seconds':>8} {'events/s':>9} {'µs/event':>9} "
          f"{'stats share':>11}")
    for name, secs, records, emitted in results:
        rate = len(events) / secs
        share = "-" if name == results[0][0] else f"{100 * (1 - rate / base):.1f}%"
        print(f"{name:<38} {records:>8} {emitted:>9} {secs:>8.2f} {rate:>9.0f} {1e6 / rate:>9.1f} {share:>11}")
    print("\nstats share = 1 - events/s (normalizer + statistics) / events/s (normalizer alone); target < 20%.")


if __name__ == "__main__":
    main()
