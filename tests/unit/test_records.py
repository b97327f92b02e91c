"""Kafka keys of standard records: the same bytes the standard library's json wrote before."""
from __future__ import annotations

import json

from hip.records import record_key


def _json_key(org: str, values: list[object]) -> bytes:
    return json.dumps([org, *[None if v is None else str(v) for v in values]],
                      ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def test_record_key_is_byte_for_byte_the_json_key_for_every_code_point() -> None:
    # Keys decide partitions and the sink's and statistics' identities: a different escaping
    # would split one record's history in two.
    chars = [chr(c) for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF]
    for i in range(0, len(chars), 512):
        chunk = "".join(chars[i:i + 512])
        assert record_key("ORG", [chunk, None, 7]) == _json_key("ORG", [chunk, None, 7])


def test_record_key_of_common_values() -> None:
    assert record_key("SIMB01", ["R001", None, 3]) == b'["SIMB01","R001",null,"3"]'
    assert record_key("SIMB01", ['引号"\\\n\t\x01']) == _json_key("SIMB01", ['引号"\\\n\t\x01'])
