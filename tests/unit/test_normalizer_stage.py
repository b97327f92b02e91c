"""The normalizer stage without Kafka: outputs, dead-letter headers, findings, topic names."""
from __future__ import annotations

import json
from collections import Counter
from typing import Any

import pytest

from hip.codec import FramedEncoder
from streams.core.mapping import load_mappings
from streams.normalizer_events import workload_events
from streams.normalizer_stage import (
    DLQ_TOPIC, FINDINGS_TOPIC, Processor, header_map, source_of_dead_letter, unescape_topic)


class _Codec:
    def __init__(self) -> None:
        from hip.catalogue import load_catalogue

        self.catalogue = load_catalogue()

    def register(self, dataset: str) -> int:
        return 7


@pytest.fixture(scope="module")
def mappings() -> Any:
    return load_mappings()


def _org(mappings: Any, profile: str) -> str:
    return next(o for o, h in sorted(mappings.hospitals.items()) if h.profile == profile)


def test_unescape_topic() -> None:
    assert unescape_topic("raw.X1.HIS.his.pat_u005finfo") == "raw.X1.HIS.his.pat_info"
    assert unescape_topic("raw.X1.HIS.db.t_u4e2d_u6587") == "raw.X1.HIS.db.t中文"
    assert unescape_topic("raw.X1.HIS.db.plain") == "raw.X1.HIS.db.plain"


@pytest.mark.parametrize("profile", ["vendor_a", "vendor_b"])
def test_every_event_is_a_record_or_a_dead_letter(mappings: Any, profile: str) -> None:
    org = _org(mappings, profile)
    events = workload_events(profile[-1], org, 1500, dirty=0.05)
    result = Processor(mappings, FramedEncoder(_Codec()), {}).process(events)
    topics = Counter(m.topic for m in result.messages)
    assert result.records > 1000 and result.dead_letters > 0
    assert topics[DLQ_TOPIC] == result.dead_letters
    assert sum(n for t, n in topics.items() if t.startswith("std.")) == result.records
    assert {"c", "u", "d", "r"} <= {json.loads(e[1])["op"] for e in events}
    for m in result.messages:
        if m.topic.startswith("std."):
            assert m.value is not None and m.value[:5] == b"\x00\x00\x00\x00\x07"
            assert json.loads(m.key or b"")[0] == org
        elif m.topic == DLQ_TOPIC:
            h = header_map(m.headers)
            topic, partition, offset, redrives = source_of_dead_letter(h)
            original = next(e for e in events if (e[2], e[3], e[4]) == (topic, partition, offset))
            assert m.value == original[1] and m.key == original[0] and h["hip.key"] == original[0]
            assert h["hip.reason"] and h["hip.error"] and h["hip.org"] == org.encode() and redrives == 0
        else:
            assert m.topic == FINDINGS_TOPIC
            f = json.loads(m.value or b"")
            assert f["org"] == org and f["status"] in ("accepted", "rejected")
            assert f["findings"] and all(x["rule"] and x["severity"] for x in f["findings"])
            assert f["day"].startswith("2024-")


def test_a_core_failure_is_a_dead_letter_not_a_crash(mappings: Any) -> None:
    org = _org(mappings, "vendor_b")
    events = workload_events("b", org, 50)

    class Broken:
        def encode(self, dataset: str, record: dict[str, Any]) -> bytes:
            return b""

    def explode(dataset: str, record: dict[str, Any]) -> list[Any]:
        raise ZeroDivisionError("boom")

    result = Processor(mappings, Broken(), {}, check=explode).process(events)
    reasons = Counter(header_map(m.headers)["hip.reason"] for m in result.messages if m.topic == DLQ_TOPIC)
    assert reasons[b"internal_error"] > 0


def test_a_toast_placeholder_travels_as_the_unavailable_header(mappings: Any) -> None:
    from hip.records import UNAVAILABLE_HEADER

    org = _org(mappings, "vendor_b")
    events = workload_events("b", org, 600, dirty=0.0)
    i = next(i for i, e in enumerate(events) if e[2].endswith(".outpt_u005fvisit") and json.loads(e[1])["op"] == "c")
    k, v, t, p, o = events[i]
    change = json.loads(v)
    change["op"], change["before"] = "u", None
    change["after"]["present_illness"] = "__debezium_unavailable_value"
    batch = events[:i + 1] + [(k, json.dumps(change).encode(), t, p, 10**6)]
    visits = [m for m in Processor(mappings, FramedEncoder(_Codec()), {}).process(batch).messages
              if m.topic == "std.outpatient_visit"]
    assert UNAVAILABLE_HEADER not in header_map(visits[-2].headers)  # the insert sent every column
    assert header_map(visits[-1].headers)[UNAVAILABLE_HEADER] == b"present_illness"
