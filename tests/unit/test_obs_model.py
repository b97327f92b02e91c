"""The pure core of observability: lag, freshness, Connect states, binlog arithmetic, status."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from hip.observability.model import (
    HospitalStatus, Limits, binlog_lag_bytes, binlog_number, connector_identity, exit_code,
    format_age, format_table, freshness_seconds, group_lags, hospital_lags, hospital_status,
    parse_connectors, parse_properties, partition_lag, raw_topic_owner, resolve_config_value,
    _display_width, seconds_since_local_midnight, sort_worst_first, state_set, worst_connect_state,
)


class TestLag:
    def test_end_minus_committed(self) -> None:
        assert partition_lag(90, 100) == 10

    def test_no_commit_counts_everything_retained(self) -> None:
        assert partition_lag(None, 100, start=40) == 60
        assert partition_lag(-1001, 100, start=0) == 100  # librdkafka's OFFSET_INVALID

    def test_commit_below_log_start_lags_only_by_what_is_retained(self) -> None:
        assert partition_lag(5, 100, start=50) == 50

    def test_never_negative_when_end_was_read_before_a_newer_commit(self) -> None:
        assert partition_lag(120, 100) == 0

    def test_group_lags_skip_partitions_without_end_offset(self) -> None:
        rows = group_lags("g", {("t", 0): 5, ("t", 1): None, ("gone", 0): 3},
                          {("t", 0): 10, ("t", 1): 7}, {("t", 1): 2})
        assert [(r.topic, r.partition, r.committed, r.lag) for r in rows] == [("t", 0, 5, 5), ("t", 1, None, 5)]

    def test_hospital_roll_up_sums_raw_topics_of_one_org_and_system(self) -> None:
        rows = group_lags("norm", {("raw.SIMB01.HIS.public.visit", 0): 1, ("raw.SIMB01.HIS.public.fee", 0): 0,
                                   ("raw.SIMA01.LIS.lis.result", 0): 0, ("std.visit", 0): 0},
                          {("raw.SIMB01.HIS.public.visit", 0): 4, ("raw.SIMB01.HIS.public.fee", 0): 2,
                           ("raw.SIMA01.LIS.lis.result", 0): 9, ("std.visit", 0): 100})
        assert hospital_lags(rows) == {("norm", "SIMB01", "HIS"): 5, ("norm", "SIMA01", "LIS"): 9}

    @pytest.mark.parametrize("topic,owner", [
        ("raw.SIMB01.HIS.public.visit", ("SIMB01", "HIS")),
        ("raw.SIMA01.HIS.his_u5e8a.t", ("SIMA01", "HIS")),
        ("raw.SIMA01.HIS", ("SIMA01", "HIS")),
        ("std.outpatient_visit", None),
        ("rawx.A.B.c", None),
    ])
    def test_raw_topic_owner(self, topic: str, owner: tuple[str, str] | None) -> None:
        assert raw_topic_owner(topic) == owner


class TestFreshness:
    def test_age_of_newest_commit(self) -> None:
        newest = datetime(2026, 1, 1, 0, 0, tzinfo=timezone.utc)
        assert freshness_seconds(newest.timestamp() + 90, newest) == 90

    def test_naive_timestamp_is_utc(self) -> None:
        assert freshness_seconds(datetime(2026, 1, 1, 0, 1, tzinfo=timezone.utc).timestamp(),
                                 datetime(2026, 1, 1, 0, 0)) == 60

    def test_local_zone_timestamp(self) -> None:
        shanghai = timezone(timedelta(hours=8))
        ts = datetime(2026, 1, 1, 8, 0, tzinfo=shanghai)  # 00:00 UTC
        assert freshness_seconds(datetime(2026, 1, 1, 0, 10, tzinfo=timezone.utc).timestamp(), ts) == 600

    def test_source_clock_ahead_is_zero_not_negative(self) -> None:
        assert freshness_seconds(100.0, 160.0) == 0.0

    def test_nothing_arrived(self) -> None:
        assert freshness_seconds(100.0, None) is None


EXPANDED = {
    "hip.SIMB01.HIS": {
        "info": {"name": "hip.SIMB01.HIS", "type": "source", "config": {
            "connector.class": "io.debezium.connector.postgresql.PostgresConnector",
            "topic.prefix": "raw.SIMB01.HIS", "slot.name": "hip_simb01_his"}},
        "status": {"name": "hip.SIMB01.HIS", "connector": {"state": "RUNNING", "worker_id": "w"},
                   "tasks": [{"id": 1, "state": "FAILED", "trace": "..."}, {"id": 0, "state": "RUNNING"}]},
    },
    "odd-name": {"info": {"config": {"connector.class": "x.Y"}}, "status": {"connector": {"state": "PAUSED"}, "tasks": []}},
}


class TestConnect:
    def test_parse_expanded_listing(self) -> None:
        a, b = parse_connectors(EXPANDED)
        assert (a.name, a.org, a.system, a.state, a.tasks) == (
            "hip.SIMB01.HIS", "SIMB01", "HIS", "RUNNING", ((0, "RUNNING"), (1, "FAILED")))
        assert a.worst_state == "FAILED"
        assert (b.org, b.system, b.state, b.worst_state) == ("", "", "PAUSED", "PAUSED")

    def test_identity_from_topic_prefix_wins_over_name(self) -> None:
        assert connector_identity("whatever", {"topic.prefix": "raw.X1.LIS"}) == ("X1", "LIS")
        assert connector_identity("hip.X2.PACS", {}) == ("X2", "PACS")

    def test_state_set_marks_current_and_keeps_unknown_states(self) -> None:
        assert state_set("FAILED", ("RUNNING", "FAILED")) == [("RUNNING", 0.0), ("FAILED", 1.0)]
        assert state_set("NEW", ("RUNNING",)) == [("RUNNING", 0.0), ("NEW", 1.0)]

    def test_worst_state(self) -> None:
        assert worst_connect_state(["RUNNING", "PAUSED", "FAILED"]) == "FAILED"
        assert worst_connect_state([]) == ""

    def test_config_providers_expand_like_connect(self) -> None:
        files = {"/s/pg.properties": {"password": "pw", "user": "u"}}
        value = "${file:/s/pg.properties:password}"
        assert resolve_config_value(value, lambda p: files.get(p, {}), {}) == "pw"
        assert resolve_config_value("${env:PGPW}", lambda p: {}, {"PGPW": "e"}) == "e"
        assert resolve_config_value("plain", lambda p: {}, {}) == "plain"

    def test_properties(self) -> None:
        assert parse_properties("# c\nuser=hip\npassword = a=b\n! x\nkey: v\n") == {
            "user": "hip", "password": "a=b", "key": "v"}


class TestBinlog:
    LOGS = [("mysql-bin.000001", 1000), ("mysql-bin.000002", 500), ("mysql-bin.000003", 300)]

    def test_number(self) -> None:
        assert binlog_number("mysql-bin.000042") == 42
        assert binlog_number("") == 0

    def test_same_file(self) -> None:
        assert binlog_lag_bytes(self.LOGS, ("mysql-bin.000003", 300), ("mysql-bin.000003", 100)) == 200

    def test_across_files(self) -> None:
        # rest of file 1 (400) + all of file 2 (500) + head position in file 3 (300)
        assert binlog_lag_bytes(self.LOGS, ("mysql-bin.000003", 300), ("mysql-bin.000001", 600)) == 1200

    def test_purged_under_the_connector_counts_everything_retained(self) -> None:
        logs = self.LOGS[1:]
        assert binlog_lag_bytes(logs, ("mysql-bin.000003", 300), ("mysql-bin.000001", 10)) == 800

    def test_connector_ahead_of_a_stale_head_reading(self) -> None:
        assert binlog_lag_bytes(self.LOGS, ("mysql-bin.000002", 10), ("mysql-bin.000003", 5)) == 0


class TestStatus:
    LIMITS = Limits(stale_after_s=1800, stale_after_by_dataset={"staff": 604800}, max_lag_messages=100)

    def test_fine_hospital_needs_nothing(self) -> None:
        s = hospital_status("A", captures=["log"], connect_states=["RUNNING"],
                            freshness={"visit": 30, "staff": 90000}, limits=self.LIMITS)
        assert s.attention == () and s.severity == 0 and s.freshness_s == 30 and s.datasets == 2

    def test_each_reason(self) -> None:
        s = hospital_status("A", captures=["log", "poll"], connect_states=["RUNNING", "FAILED"],
                            freshness={"visit": 4000, "fee": 10}, lag_messages=500, rejects_today=7,
                            rejects_recent=2, limits=self.LIMITS)
        assert s.attention == ("connector failed", "1 dataset(s) stale", "lag", "rejecting records")
        assert s.stale_datasets == ("visit",) and s.capture == "log+poll" and s.severity == 2

    def test_log_hospital_without_connector_or_data(self) -> None:
        assert hospital_status("A", captures=["log"], limits=self.LIMITS).attention == ("no connector",)

    def test_push_hospital_without_data_yet_is_not_an_alarm(self) -> None:
        assert hospital_status("A", captures=["push"], limits=self.LIMITS).attention == ()

    def test_worst_first(self) -> None:
        fine = hospital_status("A", freshness={"v": 10}, limits=self.LIMITS)
        stale = hospital_status("B", freshness={"v": 4000, "w": 10}, limits=self.LIMITS)
        staler = hospital_status("C", freshness={"v": 4000}, limits=self.LIMITS)
        broken = hospital_status("D", connect_states=["FAILED"], freshness={"v": 10}, limits=self.LIMITS)
        lagging = hospital_status("E", freshness={"v": 10}, lag_messages=1000, limits=self.LIMITS)
        order = [r.org for r in sort_worst_first([fine, stale, staler, broken, lagging])]
        assert order == ["D", "C", "B", "E", "A"]

    def test_exit_code(self) -> None:
        fine = HospitalStatus("A")
        late = HospitalStatus("B", attention=("1 dataset(s) stale",))
        assert exit_code([fine], []) == 0
        assert exit_code([fine, late], []) == 1
        assert exit_code([fine], ["hip-sink down"]) == 1
        assert exit_code([], []) == 0

    def test_table_aligns_chinese_names(self) -> None:
        rows = [hospital_status("SIMB01", name="吉林大学第一医院", captures=["log"], connect_states=["RUNNING"],
                                freshness={"v": 65}, limits=self.LIMITS),
                hospital_status("X", name="ab", limits=self.LIMITS)]
        lines = format_table(rows, ["hip-sink down"]).splitlines()
        assert lines[0].split() == ["org", "hospital", "mode", "connector", "fresh", "stale", "lag",
                                    "rejects", "attention"]
        def column(line: str, text: str) -> int:  # terminal column: CJK characters are two wide
            return _display_width(line[:line.index(text)])
        assert column(lines[1], "log") == column(lines[2], "-") and "1m" in lines[1]
        assert lines[-2:] == ["2 hospitals, 0 need attention", "platform: hip-sink down"]

    @pytest.mark.parametrize("seconds,text", [(None, "-"), (5, "5s"), (125, "2m"), (3 * 3600 + 180, "3h03m"),
                                              (2 * 86400 + 7200, "2d02h")])
    def test_format_age(self, seconds: float | None, text: str) -> None:
        assert format_age(seconds) == text

    def test_today_is_local(self) -> None:
        shanghai = timezone(timedelta(hours=8))
        assert seconds_since_local_midnight(datetime(2026, 3, 1, 1, 30, tzinfo=shanghai)) == 5400
