"""The statistics' decoder gives the same contributions as the general codec's decoding."""
from __future__ import annotations

import datetime as dt
import io
import random
from decimal import Decimal

import fastavro

from hip.catalogue import load_catalogue
from streams.stats import core
from streams.stats.bench import LocalCodec
from streams.stats.decode import StatsDecoder


def test_plain_decoding_contributes_like_the_codec() -> None:
    cat = load_catalogue()
    codec = LocalCodec(cat)
    decoder = StatsDecoder(codec)  # type: ignore[arg-type]
    rng = random.Random(3)
    window = core.Window(dt.date(2024, 1, 20), dt.date(2024, 2, 3))
    for i in range(300):
        day = dt.date(2024, 1, 18) + dt.timedelta(days=rng.randrange(18))
        head = {"org_code": "H1", "source_system": "HIS", "source_table": "t", "source_key": "[]", "op": "u",
                "source_position": f"{i:08d}", "source_ts": 1_706_000_000_000 + rng.randrange(10**8),
                "ingest_ts": 1_706_100_000_000 + rng.randrange(10**8), "mapping_id": None}
        dataset, rec = rng.choice([
            ("inpatient_visit", {**head, "inpatient_no": f"Z{i}", "admission_times": 1, "admission_date": day,
                                 "admission_time": 1_706_000_000_000 + rng.randrange(10**9),
                                 "discharge_date": rng.choice([None, day + dt.timedelta(days=2)])}),
            ("medical_fee", {**head, "fee_detail_id": f"F{i}", "charge_date": None,
                             "charge_time": 1_706_000_000_000 + rng.randrange(10**9), "visit_type_code": "1",
                             "amount": Decimal(rng.randrange(-999, 99999)) / 100}),
            ("outpatient_registration", {**head, "registration_no": f"G{i}", "registration_date": day}),
        ])
        data = codec.encode(dataset, rec)
        general = fastavro.schemaless_reader(io.BytesIO(data[5:]), cat[dataset].parsed)
        name, plain = decoder.decode(data, whole=True)  # no findings: the rules run on the record
        assert name == dataset
        assert isinstance(plain["source_ts"], int)
        assert core.contributions(dataset, plain, window) == core.contributions(dataset, general, window)


def test_an_older_schema_that_differs_only_in_a_decimal_scale_is_resolved_not_misread() -> None:
    import copy
    import struct

    from hip.codec import Codec

    from tests.unit.test_codec_decode import FEE, FakeRegistry

    codec = Codec("http://registry.invalid", load_catalogue())
    codec.registry = FakeRegistry()  # type: ignore[assignment]
    current = codec.catalogue["medical_fee"].schema
    same_id = codec.registry.register("std.medical_fee-value", copy.deepcopy(current))
    older = copy.deepcopy(current)
    for f in older["fields"]:
        if f["name"] == "amount":  # the same parsing canonical form, other bytes for the same value
            f["type"] = [t if not isinstance(t, dict) else {**t, "scale": 3} for t in f["type"]]
    old_id = codec.registry.register("std.medical_fee-value", older)
    decoder = StatsDecoder(codec)
    body = io.BytesIO()
    fastavro.schemaless_writer(body, fastavro.parse_schema(copy.deepcopy(older)), FEE)
    _, old = decoder.decode(struct.pack(">bI", 0, old_id) + body.getvalue())
    assert old["amount"] == Decimal("12.34")
    body = io.BytesIO()
    fastavro.schemaless_writer(body, codec.catalogue["medical_fee"].parsed, FEE)
    _, new = decoder.decode(struct.pack(">bI", 0, same_id) + body.getvalue())
    assert new["amount"] == Decimal("12.34")
    assert "compile_decoder" in decoder._readers[same_id][1].__qualname__


def test_the_projected_decoding_gives_what_the_whole_record_gives() -> None:
    """On the simulated hospitals' standard records of both vendors, every dataset they feed."""
    from hip.records import header_findings
    from streams.core.mapping import load_mappings
    from streams.normalizer_events import workload_events
    from streams.normalizer_stage import Processor
    from streams.stats.bench import SIMULATED_WINDOW, hospital

    cat = load_catalogue()
    codec = LocalCodec(cat)
    mappings = load_mappings()
    window = SIMULATED_WINDOW
    seen = set()
    for quality in (True, False):
        decoder = StatsDecoder(codec, quality=quality)  # type: ignore[arg-type]
        for vendor in ("a", "b"):
            processor = Processor(mappings, codec, {})
            events = workload_events(vendor, hospital(mappings, vendor), 3000, dirty=0.05)
            for m in processor.process(events).messages:
                if not m.topic.startswith("std."):
                    continue
                findings = header_findings(m.headers)
                dataset, whole = decoder.decode(m.value, whole=True)
                _, part = decoder.decode(m.value)
                seen.add(dataset)
                business_key = cat[dataset].business_key
                assert [part[k] for k in business_key] == [whole[k] for k in business_key]
                assert core.version(part) == core.version(whole)
                assert core.window_fields(dataset, part) == core.window_fields(dataset, whole)
                assert part["source_system"] == whole["source_system"]
                assert part["source_ts"] == whole["source_ts"]
                assert (core.contributions(dataset, part, window, quality=quality, findings=findings)
                        == core.contributions(dataset, whole, window, quality=quality, findings=findings))
    assert set(core.CONTRIBUTORS) <= seen


def test_each_contributor_declares_the_fields_it_reads() -> None:
    """Every field name a contributor's code names (its helpers' too) is in ``CONTRIBUTOR_FIELDS``,
    or the projected decoding would leave it out and the contribution would silently change."""
    import ast
    import inspect

    cat = load_catalogue()
    helpers = {"inpatient_visit": [core.stay_dept]}
    for dataset, fn in core.CONTRIBUTORS.items():
        fields = {f["name"] for f in cat[dataset].schema["fields"]}
        named = set()
        for code in (fn, *helpers.get(dataset, [])):
            tree = ast.parse(inspect.getsource(code))
            measures = {id(k) for node in ast.walk(tree) if isinstance(node, ast.Dict) for k in node.keys}
            for node in ast.walk(tree):  # the measures' names (dict keys) are not fields read
                if isinstance(node, ast.Constant) and node.value in fields and id(node) not in measures:
                    named.add(node.value)
        assert named, dataset
        assert named <= set(core.CONTRIBUTOR_FIELDS[dataset]), (dataset, named - set(core.CONTRIBUTOR_FIELDS[dataset]))
