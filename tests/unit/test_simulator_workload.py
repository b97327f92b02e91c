"""The workload generator: deterministic, valid ID numbers, dirty share respected, SQL shape."""
from __future__ import annotations

from collections import Counter
from datetime import datetime

import pytest

from connectors.simulator import identity
from connectors.simulator.profiles import PROFILES
from connectors.simulator.workload import Workload, id_columns, render_sql, seed_transactions
from streams.core.source import parse_ddl


def _ops(vendor: str, seed: int, changes: int = 3000, dirty: float = 0.0) -> list[tuple[str, str, tuple[object, ...]]]:
    w = Workload(PROFILES[vendor], seed=seed, start=datetime(2024, 3, 1, 8), dirty=dirty)
    return [(op.kind, op.table, tuple(sorted(map(str, op.values.items())))) for tx in w.take(changes) for op in tx.ops]


@pytest.mark.parametrize("vendor", ["a", "b"])
def test_same_seed_same_workload(vendor: str) -> None:
    assert _ops(vendor, 5) == _ops(vendor, 5)
    assert _ops(vendor, 5) != _ops(vendor, 6)


def test_check_digit_matches_gb11643_example() -> None:
    # The worked example of GB 11643-1999.
    assert identity.id_check_digit("11010519491231002") == "X"
    assert identity.is_valid_id("11010519491231002X")
    assert not identity.is_valid_id("110105194912310021")


@pytest.mark.parametrize("vendor", ["a", "b"])
def test_patient_id_numbers_are_valid(vendor: str) -> None:
    profile = PROFILES[vendor]
    table = profile.specs["patient"].table
    id_col = "SFZH" if vendor == "a" else "id_no"
    type_col, resident = ("ZJLX", "1") if vendor == "a" else ("id_type", "ID")
    w = Workload(profile, seed=2)
    rows = [op.values for tx in w.take(4000) for op in tx.ops if op.table == table and op.kind == "insert"]
    residents = [r for r in rows if r[type_col] == resident]
    assert len(residents) > 50
    assert all(identity.is_valid_id(r[id_col]) for r in residents)


@pytest.mark.parametrize("vendor", ["a", "b"])
@pytest.mark.parametrize("share", [0.01, 0.05])
def test_dirty_share_is_respected(vendor: str, share: float) -> None:
    w = Workload(PROFILES[vendor], seed=9, dirty=share)
    ops = [op for tx in w.take(30000) for op in tx.ops if op.kind == "insert"]
    spoiled = [op for op in ops if op.dirty]
    assert abs(len(spoiled) / len(ops) - share) < share * 0.25
    assert {op.dirty for op in spoiled} == {"code", "missing", "date"}


@pytest.mark.parametrize("vendor", ["a", "b"])
def test_workload_makes_updates_deletes_and_multi_row_transactions(vendor: str) -> None:
    w = Workload(PROFILES[vendor], seed=4)
    txs = list(w.take(5000))
    kinds = Counter(op.kind for tx in txs for op in tx.ops)
    assert kinds["insert"] and kinds["update"] and kinds["delete"]
    assert max(len(tx.ops) for tx in txs) > 3
    actions = set(w.stats.by_action)
    assert {"registration_cancel", "fee_refund", "order_stop", "lab_correct", "patient_fix", "discharge"} <= actions


@pytest.mark.parametrize("vendor", ["a", "b"])
def test_every_row_fits_the_ddl(vendor: str) -> None:
    profile = PROFILES[vendor]
    desc = parse_ddl(profile.ddl, profile.dialect)
    txs = seed_transactions(profile) + list(Workload(profile, seed=1).take(3000))
    for tx in txs:
        for op in tx.ops:
            table = desc.tables[op.table]
            assert set(op.values) <= set(table.columns), op.table
            assert tuple(op.key) == table.key, op.table
            sql, params = render_sql(profile, op)
            assert sql.count("%s") == len(params)


def test_the_simulated_clock_follows_the_real_clock_once_caught_up() -> None:
    """Capped by a fixed time, every later change got that same past time, and a poller whose
    update-time cursor had passed those keys at that second never saw them (a second demo)."""
    from datetime import timedelta

    real = [datetime(2026, 11, 27, 8, 49, 29)]
    w = Workload(PROFILES["b"], seed=3, start=real[0] - timedelta(minutes=5), limit=lambda: real[0])
    for _ in w.take(2000):
        pass
    assert w.now == real[0]  # caught up, and never past the real clock
    real[0] += timedelta(minutes=3)
    times = []
    for _ in w.take(300):
        times.append(w.now)
        real[0] += timedelta(seconds=1)
    assert times == sorted(times)  # never backwards
    assert times[-1] > datetime(2026, 11, 27, 8, 52, 29)  # it moved on with the real clock


@pytest.mark.parametrize("vendor", ["a", "b"])
def test_a_later_run_never_numbers_a_row_an_earlier_run_wrote(vendor: str) -> None:
    # Each run starts its id counter above the largest id it finds in id_columns (next_free_id).
    # Short runs, so that some end on a stock document, whose number no other table carries.
    profile = PROFILES[vendor]
    keys = {spec.table: spec.key for spec in profile.specs.values()}
    written: dict[str, set[tuple[str, ...]]] = {}
    largest: dict[tuple[str, str], int] = {}
    for seed in range(1, 31):
        start = 1 + max(largest.values(), default=0)
        for tx in Workload(profile, seed=seed, start=datetime(2024, 3, 1, 8), id_start=start).take(25):
            for op in tx.ops:
                if op.kind != "insert":
                    continue
                key = tuple(str(op.values[c]) for c in keys[op.table])
                assert key not in written.setdefault(op.table, set()), f"run {seed}: {op.table} {key} again"
                written[op.table].add(key)
                for table, column in id_columns(profile):
                    if table == op.table:
                        digits = "".join(ch for ch in str(op.values[column]) if ch.isdigit())
                        largest[(table, column)] = max(largest.get((table, column), 0), int(digits or 0))
