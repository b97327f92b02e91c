"""The normalizer's findings travel with each standard record; the statistics use them as is.

Dataset 60 must equal a recomputation; that holds only if the findings in the header are exactly
what the conformance rules give on the record the statistics decode, with the arrival as "now".
"""
from __future__ import annotations

from typing import Any

import pytest

from hip.avro_compiled import compile_decoder
from hip.catalogue import load_catalogue
from hip.codec import FramedEncoder
from hip.conformance import check
from hip.records import FINDINGS_HEADER, findings_header, header_findings
from streams.core.mapping import load_mappings
from streams.normalizer_events import workload_events
from streams.normalizer_stage import Processor
from streams.stats import core

CATALOGUE = load_catalogue()


class _Codec:
    catalogue = CATALOGUE

    def register(self, dataset: str) -> int:
        return 1


def test_header_round_trip() -> None:
    class F:
        rule, severity = "value_set", "warning"

    name, value = findings_header([F(), {"rule": "required", "severity": "error"}])
    assert name == FINDINGS_HEADER
    assert header_findings([("other", b"x"), (name, value)]) == [("value_set", "warning"), ("required", "error")]
    assert header_findings({name: value}) == header_findings([(name, value)])  # Faust may give a mapping
    assert header_findings([findings_header([])]) == []
    assert header_findings([("hip.unavailable", b"a")]) is None and header_findings(None) is None


@pytest.mark.parametrize("vendor", ["a", "b"])
def test_header_findings_equal_the_rules_on_the_decoded_record(vendor: str) -> None:
    mappings = load_mappings()
    profile = f"vendor_{vendor}"
    org = next(o for o, h in sorted(mappings.hospitals.items()) if h.profile == profile)
    events = workload_events(vendor, org, 3000, dirty=0.05)
    decoders: dict[str, Any] = {}
    seen = with_findings = 0
    for m in Processor(mappings, FramedEncoder(_Codec()), {}).process(events).messages:
        if not m.topic.startswith("std."):
            continue
        dataset = m.topic[4:]
        if dataset not in decoders:
            decoders[dataset] = compile_decoder(CATALOGUE[dataset].schema, plain_times=True)
        record = decoders[dataset](m.value)
        carried = header_findings(m.headers)
        assert carried is not None, m.topic
        recomputed = [(f.rule, f.severity) for f in check(dataset, dict(record), now=record["ingest_ts"])]
        assert sorted(carried) == sorted(recomputed), (dataset, record)
        if record["op"] != "d":
            assert core.quality_contributions(dataset, org, record, carried) == \
                core.quality_contributions(dataset, org, record)
        seen += 1
        with_findings += bool(carried)
    assert seen > 1000 and with_findings > 50  # the dirty share produces findings to compare
