"""Cost of the statistics per record, in process: decode alone versus decode + contributions + ledger.

``python -m streams.stats.bench [--records N]`` prints a table. It measures the pure work the
statistics worker adds for each standard record (with and without dataset 60's conformance pass),
using the same randomized workload shape as the integration test; Kafka and Faust overhead are not
included.
"""
from __future__ import annotations

import argparse
import datetime as dt
import io
import time
from decimal import Decimal
from typing import Any

import fastavro

from hip.catalogue import load_catalogue
from streams.stats import core


def workload(n: int) -> list[tuple[str, dict[str, Any]]]:
    import random
    rng = random.Random(1)
    out: list[tuple[str, dict[str, Any]]] = []
    base = dt.date(2024, 1, 26)
    for i in range(n):
        day = base + dt.timedelta(days=rng.randrange(8))
        head = {"org_code": f"H{i % 66}", "source_system": "HIS", "source_table": "t", "source_key": "[]",
                "op": "u", "source_position": f"pl:{i:020d}", "source_ts": 1_700_000_000_000,
                "ingest_ts": 1_700_000_005_000, "mapping_id": None}
        kind = i % 4
        if kind == 0:
            out.append(("medical_fee", {**head, "fee_detail_id": f"F{i}", "visit_type_code": "3", "charge_date": day,
                                        "ordering_dept_code": "IM", "fee_class_code": "06",
                                        "amount": Decimal(rng.randrange(100, 9999)) / 100}))
        elif kind == 1:
            out.append(("outpatient_registration", {**head, "registration_no": f"G{i}", "registration_date": day,
                                                    "dept_code": "IM", "visit_type_code": "1"}))
        elif kind == 2:
            out.append(("inpatient_visit", {**head, "inpatient_no": f"Z{i % 500}", "admission_times": 1,
                                            "admission_date": day, "admission_dept_code": "IM",
                                            "discharge_date": day + dt.timedelta(days=rng.randrange(0, 5))}))
        else:
            out.append(("operation_record", {**head, "operation_no": f"S{i}", "op_date": day, "dept_code": "SU"}))
    return out


def encoded(records: list[tuple[str, dict[str, Any]]]) -> list[tuple[Any, bytes]]:
    cat = load_catalogue()
    out = []
    for dataset, rec in records:
        buf = io.BytesIO()
        fastavro.schemaless_writer(buf, cat[dataset].parsed, rec)
        out.append((cat[dataset].parsed, buf.getvalue()))
    return out


def run(n: int) -> list[tuple[str, float]]:
    records = workload(n)
    blobs = encoded(records)
    window = core.Window(dt.date(2024, 1, 20), dt.date(2024, 2, 3))
    cat = load_catalogue()
    names = [d for d, _ in records]

    def decode_only() -> None:
        for schema, b in blobs:
            fastavro.schemaless_reader(io.BytesIO(b), schema)

    def with_stats(quality: bool) -> None:
        ledger = core.Ledger()
        for (schema, b), dataset in zip(blobs, names):
            rec = fastavro.schemaless_reader(io.BytesIO(b), schema)
            key = core.source_ref(dataset, rec["org_code"], [rec[k] for k in cat[dataset].business_key])
            ledger.apply(key, rec["source_position"], core.contributions(dataset, rec, window, quality=quality))

    results = []
    for label, fn in (("decode only", decode_only), ("decode + stats (58,61-64)", lambda: with_stats(False)),
                      ("decode + stats incl. 60 conformance", lambda: with_stats(True))):
        t0 = time.perf_counter()
        fn()
        results.append((label, n / (time.perf_counter() - t0)))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--records", type=int, default=20000)
    args = parser.parse_args()
    results = run(args.records)
    base = results[0][1]
    print(f"{'path':40} {'records/s':>12} {'µs/record':>10} {'added µs':>9}")
    for label, rate in results:
        print(f"{label:40} {rate:12.0f} {1e6 / rate:10.1f} {1e6 / rate - 1e6 / base:9.1f}")


if __name__ == "__main__":
    main()
