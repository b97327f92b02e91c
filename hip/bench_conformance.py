"""Throughput of ``hip.conformance.check``: ``python -m hip.bench_conformance [--seconds S]``.

For a few datasets and three record shapes (required fields only, about half the fields, every
field), prints records/s of the general path (each check in turn, the clock read per record: the
logic ``check`` used before the generated fast path) next to ``check`` and ``check_batch`` now.
"""
from __future__ import annotations

import argparse
import datetime as dt
import time
from typing import Any, Callable

from hip import conformance
from hip.catalogue import load_catalogue
from hip.samples import sample_record

DATASETS = ("patient_info", "outpatient_visit", "western_prescription", "lab_report", "medical_fee",
            "inpatient_front_sheet", "tcm_front_sheet")


def _general(dataset: str, record: dict[str, Any]) -> list[conformance.Finding]:
    plan = conformance.plan_for(dataset)
    now_ms = int(dt.datetime.now(dt.timezone.utc).timestamp() * 1000)
    out: list[conformance.Finding] = []
    conformance._check_general(plan, record, now_ms, out)
    return out


def _rate(fn: Callable[[], object], batch: int, seconds: float) -> float:
    """Best records/s over repeated runs of ``fn`` (which handles ``batch`` records)."""
    fn()
    best = 0.0
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        t0 = time.perf_counter()
        for _ in range(20):
            fn()
        best = max(best, 20 * batch / (time.perf_counter() - t0))
    return best


def _shapes(dataset: str) -> dict[str, dict[str, Any]]:
    full = sample_record(dataset)
    minimal = sample_record(dataset, full=False)
    # About half the optional fields, as a hospital system typically fills them.
    half = {k: (v if minimal[k] is not None or i % 2 else None) for i, (k, v) in enumerate(full.items())}
    return {"required": minimal, "half": half, "full": full}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=0.3, help="measuring time per cell")
    parser.add_argument("datasets", nargs="*", default=list(DATASETS))
    args = parser.parse_args(argv)
    catalogue = load_catalogue()
    print(f"{'dataset':<24} {'shape':<8} {'fields':>6} {'findings':>8} {'general/s':>10} "
          f"{'check/s':>10} {'batch/s':>10} {'speed-up':>8}")
    for name in args.datasets:
        fields = len(catalogue[name].fields)
        for shape, record in _shapes(name).items():
            findings = conformance.check(name, record)
            assert findings == _general(name, record), (name, shape)
            records = [record] * 100
            before = _rate(lambda: [_general(name, r) for r in records], len(records), args.seconds)
            now = _rate(lambda: [conformance.check(name, r) for r in records], len(records), args.seconds)
            batch = _rate(lambda: conformance.check_batch(name, records), len(records), args.seconds)
            filled = sum(v is not None for v in record.values())
            print(f"{name:<24} {shape:<8} {filled:>6} {len(findings):>8} {before:>10,.0f} "
                  f"{now:>10,.0f} {batch:>10,.0f} {now / before:>7.1f}x")


if __name__ == "__main__":
    main()
