"""Every Prometheus metric of the platform, named in one place.

Naming: prefix ``hip_``, units in the name (``_seconds``, ``_bytes``, ``_total`` for counters).
Labels are bounded: ``org`` (≤ a few hundred facilities), ``dataset`` (72), ``system`` (HIS, LIS, …),
``stage`` (normalizer, sink, stats, ingest, poller), ``reason`` (a short stable code, never a message).
Workers import the metric objects from here and call ``serve(port)`` once at start.
"""
from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, start_http_server

EVENTS_IN = Counter("hip_events_in_total", "Change events or records consumed by a stage",
                    ["stage", "org", "system"])
RECORDS_OUT = Counter("hip_records_out_total", "Standard or statistics records produced or written",
                      ["stage", "org", "dataset"])
DEAD_LETTERS = Counter("hip_dead_letters_total", "Records sent to a dead-letter topic",
                       ["stage", "org", "reason"])
FINDINGS = Counter("hip_conformance_findings_total", "Conformance findings by rule",
                   ["org", "dataset", "rule", "severity"])
ERRORS = Counter("hip_errors_total", "Errors by stage and class (transient, fatal)", ["stage", "kind"])
RETRIES = Counter("hip_retries_total", "Retries of transient failures", ["stage"])
BATCH_SIZE = Histogram("hip_batch_size_records", "Records per processed batch", ["stage"],
                       buckets=(1, 10, 50, 100, 250, 500, 1000, 2500, 5000, 10000))
BATCH_SECONDS = Histogram("hip_batch_duration_seconds", "Time to process one batch", ["stage"],
                          buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
END_TO_END_SECONDS = Histogram(
    "hip_end_to_end_latency_seconds", "Source commit to warehouse commit", ["dataset"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300, 900, 3600))
PROCESSING_SECONDS = Histogram("hip_processing_latency_seconds", "Source commit to record produced",
                               ["stage"], buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300))
LAST_SOURCE_TS = Gauge("hip_last_source_timestamp_seconds",
                       "Newest source commit time written to the warehouse", ["org", "dataset"])
CONSUMER_LAG = Gauge("hip_consumer_lag_messages", "End offset minus committed offset",
                     ["group", "topic", "partition"])
WORKER_UP = Gauge("hip_worker_up", "1 while the worker runs", ["stage"])


def serve(port: int, stage: str) -> None:
    """Expose this process's metrics on ``127.0.0.1:port`` and mark the worker up."""
    start_http_server(port, addr="127.0.0.1")
    WORKER_UP.labels(stage=stage).set(1)
