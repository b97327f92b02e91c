"""Avro encoding of standard records on Kafka.

Interface used by every worker: ``Codec.encode(dataset, record) -> bytes`` and
``Codec.decode(data) -> (dataset, record)``. The wire format is chosen in one place (here).
"""
from __future__ import annotations
