"""Poll mode core: Debezium-compatible value encoding, envelopes, cursors, key comparison."""
from __future__ import annotations

import datetime as dt
import json
import uuid
from decimal import Decimal

from connectors.poller import (Envelope, TableRef, TableState, behind_cursor, changes_from_rows, cursor_ms,
                               deletes_from_keys, encode_value, incremental_query, max_cursor_query,
                               snapshot_query)

REF = TableRef("SIM01", "HIS", "hisdb", "his", "pat_info", ("pat_id",), "updated_at", "timestamp",
               "Asia/Shanghai", "postgresql")


def test_encoding_matches_debezium_connect_mode() -> None:
    assert encode_value(Decimal("12.50")) == "12.50"
    assert encode_value(Decimal("1E+2")) == "100"
    assert encode_value(dt.datetime(2024, 5, 10, 10, 3, 4, 123456)) == 1715335384123
    assert encode_value(dt.datetime(2024, 5, 10, 10, 3, 4, tzinfo=dt.timezone(dt.timedelta(hours=8)))) \
        == "2024-05-10T02:03:04Z"
    assert encode_value(dt.date(1970, 1, 11)) == 10
    assert encode_value(dt.time(1, 0, 0, 5000)) == 3_600_005
    assert encode_value(dt.timedelta(hours=1)) == 3_600_000
    assert encode_value(b"\x00\x01") == "AAE="
    u = uuid.uuid4()
    assert encode_value(u) == str(u) and encode_value({"a": 1}) == '{"a":1}'
    assert encode_value(None) is None and encode_value(True) is True


def test_cursor_ms_uses_the_declared_zone() -> None:
    assert cursor_ms(dt.datetime(2024, 5, 10, 8, 0), "Asia/Shanghai") == \
        int(dt.datetime(2024, 5, 10, 0, 0, tzinfo=dt.timezone.utc).timestamp() * 1000)
    assert cursor_ms(42, "Asia/Shanghai") == 42


def events(env: Envelope) -> list[dict]:
    return [json.loads(e.value) for e in env.events]


def test_rows_become_create_update_and_snapshot_reads() -> None:
    state, known = TableState(), set()
    env = Envelope(REF, "raw.SIM01.HIS.his.pat_u005finfo")
    row = {"pat_id": "p1", "name": "张三", "updated_at": dt.datetime(2024, 5, 10, 10, 0)}
    changes_from_rows(env, [row], state, known, snapshot=True, now_ms=1)
    changes_from_rows(env, [row, {**row, "pat_id": "p2"}], state, known, snapshot=False, now_ms=2)
    evs = events(env)
    assert [e["op"] for e in evs] == ["r", "u", "c"]
    assert evs[0]["source"]["snapshot"] == "true" and evs[1]["source"]["snapshot"] == "false"
    assert evs[0]["source"]["schema"] == "his" and evs[0]["source"]["table"] == "pat_info"
    assert evs[2]["after"]["name"] == "张三" and evs[2]["before"] is None
    assert env.events[0].key == b'{"pat_id":"p1"}'
    positions = [e["source"]["poll_position"] for e in evs]
    assert positions == sorted(positions)
    assert state.cursor == row["updated_at"] and state.last_key == ["p2"] and state.seq == 3


def test_vanished_keys_become_deletes_after_the_cursor() -> None:
    state = TableState(cursor=dt.datetime(2030, 1, 1), last_key=["p1"], seq=5)
    known = {("p1",), ("p2",)}
    env = Envelope(REF, "t")
    gone = deletes_from_keys(env, known, {("p1",)}, state, now_ms=1000)
    assert gone == [("p2",)] and known == {("p1",)}
    ev = events(env)[0]
    assert ev["op"] == "d" and ev["before"] == {"pat_id": "p2"} and ev["after"] is None
    # positioned after every update already emitted, even when the cursor is ahead of the clock
    assert ev["source"]["poll_position"] > f"pl:{cursor_ms(state.cursor, 'Asia/Shanghai'):020d}:0000000005"


def test_state_round_trip() -> None:
    s = TableState(cursor=dt.datetime(2024, 1, 2, 3, 4, 5), last_key=["a", 1], seq=7, snapshot_done=True)
    assert TableState.from_json(s.to_json()) == s
    assert TableState.from_json(TableState(cursor=12, last_key=[]).to_json()).cursor == 12


def test_queries() -> None:
    sql, params = incremental_query(REF, TableState(), 100, 2, 28800)
    assert 'FROM "his"."pat_info"' in sql and "LOCALTIMESTAMP" in sql and params == [2]
    sql, params = incremental_query(REF, TableState(cursor=5, last_key=["p"]), 100, 2, 0)
    assert '("updated_at", "pat_id") > (%s, %s)' in sql and params[:2] == [5, "p"]
    sql, _ = incremental_query(REF, TableState(cursor=5, last_key=[]), 100, 2, 0)
    assert '"updated_at" > %s' in sql
    my = TableRef("S", "HIS", "db", "db", "T`x", ("ID",), "XGSJ", "timestamp", "Asia/Shanghai", "mariadb")
    sql, params = incremental_query(my, TableState(cursor=5), 10, 2, 28800)
    assert "`db`.`T``x`" in sql and "UTC_TIMESTAMP() + INTERVAL %s SECOND" in sql and params == [5, 28798]
    inc = TableRef("S", "HIS", "db", "db", "T", ("ID",), "ID", "increment", "Asia/Shanghai", "mariadb")
    assert "UTC_TIMESTAMP" not in incremental_query(inc, TableState(cursor=5), 10, 2, 0)[0]
    sql, params = snapshot_query(REF, ["p9"], 50)
    assert '("pat_id") > (%s)' in sql and "LIMIT 50" in sql and params == ["p9"]


def test_snapshot_start_stays_behind_the_margin() -> None:
    # Rows stamped within the margin may still be committing: the cursor must not start past them.
    sql, params = max_cursor_query(REF, 2, 28800)
    assert sql.startswith('SELECT MAX("updated_at")') and "LOCALTIMESTAMP" in sql and params == [2]
    inc = TableRef("S", "HIS", "db", "db", "T", ("ID",), "ID", "increment", "Asia/Shanghai", "mariadb")
    assert max_cursor_query(inc, 2, 0) == ("SELECT MAX(`ID`) FROM `db`.`T`", [])


def test_rows_found_by_key_leave_the_cursor() -> None:
    state = TableState(cursor=dt.datetime(2024, 5, 10, 10, 0), last_key=["p5"])
    env = Envelope(REF, "raw.t")
    late = {"pat_id": "p1", "updated_at": dt.datetime(2024, 5, 10, 9, 0)}
    ahead = {"pat_id": "p9", "updated_at": dt.datetime(2024, 5, 10, 11, 0)}
    assert behind_cursor(late, REF, state) and not behind_cursor(ahead, REF, state)
    assert behind_cursor({"pat_id": "p2", "updated_at": None}, REF, state)
    changes_from_rows(env, [late], state, set(), snapshot=False, now_ms=1, advance=False)
    assert state.cursor == dt.datetime(2024, 5, 10, 10, 0) and state.last_key == ["p5"]
    assert events(env)[0]["op"] == "c"
