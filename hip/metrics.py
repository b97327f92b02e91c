"""Every Prometheus metric of the platform, named in one place.

Naming: prefix ``hip_``, units in the name (``_seconds``, ``_bytes``, ``_total`` for counters).
Labels are bounded: ``org`` (≤ a few hundred facilities), ``dataset`` (72), ``system`` (HIS, LIS, …),
``stage`` (normalizer, sink, stats, ingest, poller), ``reason`` (a short stable code, never a message).
Kafka-side series add ``group``, ``topic``, ``partition``; Connect series add ``connector``, ``task``.
Workers import the metric objects from here and call ``serve(port)`` once at start.
"""
from __future__ import annotations

from dataclasses import dataclass

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
    # Fine between 1 and 5 s, where the 2 s target lies: a quantile is interpolated within a bucket.
    buckets=(0.05, 0.1, 0.25, 0.5, 0.75, 1, 1.5, 2, 2.5, 3, 4, 5, 10, 30, 60, 300, 900, 3600))
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


# --- Published by the exporter (``hip exporter run``) -------------------------------------------
# The exporter reads other systems (Kafka, Connect, source databases, the warehouse) on a refresh
# loop and publishes a snapshot per scrape, so its series are described here as specs rather than
# live prometheus_client objects: the same names and labels, one place.

@dataclass(frozen=True)
class MetricSpec:
    """Name, help text, type and label names of a metric the exporter publishes."""

    name: str
    help: str
    labels: tuple[str, ...]
    kind: str = "gauge"


CONNECT_STATES: tuple[str, ...] = ("RUNNING", "PAUSED", "STOPPED", "FAILED", "UNASSIGNED", "RESTARTING")

# consumer lag: partition level (the existing CONSUMER_LAG name) plus a per-hospital roll-up of raw topics
X_CONSUMER_LAG = MetricSpec("hip_consumer_lag_messages", "End offset minus committed offset",
                            ("group", "topic", "partition"))
X_HOSPITAL_LAG = MetricSpec("hip_hospital_consumer_lag_messages",
                            "Consumer lag summed over a hospital system's raw topics",
                            ("group", "org", "system"))
X_COMMITTED_OFFSET = MetricSpec("hip_consumer_committed_offset", "Committed offset of a group",
                                ("group", "topic", "partition"))
X_END_OFFSET = MetricSpec("hip_topic_end_offset", "Log end offset (high watermark)",
                          ("topic", "partition"))
# Connect: one series per possible state with value 1 for the current one (a state set), so that
# rules and dashboards select on a label and a vanished connector is visible as absent.
X_CONNECTOR_STATE = MetricSpec("hip_connector_state", "Connect connector state (1 = current state)",
                               ("connector", "org", "system", "state"))
X_TASK_STATE = MetricSpec("hip_connector_task_state", "Connect task state (1 = current state)",
                          ("connector", "org", "system", "task", "state"))
# source databases, read with the connector's own credentials
X_SOURCE_UP = MetricSpec("hip_source_up", "1 when the exporter could read the source's log position",
                         ("org", "system", "engine"))
X_SLOT_ACTIVE = MetricSpec("hip_source_slot_active", "1 while a consumer holds the replication slot",
                           ("org", "system", "slot"))
X_SLOT_RETAINED = MetricSpec("hip_source_slot_retained_wal_bytes",
                             "WAL the replication slot keeps on the source (current LSN - restart_lsn)",
                             ("org", "system", "slot"))
X_SLOT_LAG = MetricSpec("hip_source_slot_lag_bytes",
                        "WAL not yet confirmed by the connector (current LSN - confirmed_flush_lsn)",
                        ("org", "system", "slot"))
X_BINLOG_FILE = MetricSpec("hip_source_binlog_file_number", "Sequence number of the source's current binlog",
                           ("org", "system"))
X_BINLOG_POSITION = MetricSpec("hip_source_binlog_position_bytes", "Write position in the current binlog",
                               ("org", "system"))
X_BINLOG_RETAINED = MetricSpec("hip_source_binlog_retained_bytes", "Size of all binlogs kept on the source",
                               ("org", "system"))
X_BINLOG_LAG = MetricSpec("hip_source_binlog_lag_bytes",
                          "Binlog bytes between the connector's stored offset and the source's head",
                          ("org", "system"))
# warehouse
X_LAST_SOURCE_TS = MetricSpec("hip_warehouse_source_timestamp_seconds",
                              "Newest source commit time that reached the warehouse",
                              ("schema", "org", "dataset"))
X_FRESHNESS = MetricSpec("hip_freshness_seconds",
                         "Now minus the newest source commit time in the warehouse",
                         ("schema", "org", "dataset"))
X_ROWS = MetricSpec("hip_warehouse_rows", "Live rows of a warehouse table (planner statistics)",
                    ("schema", "dataset"))
# the fleet as declared, so dashboards and the status view can name hospitals that send nothing
X_HOSPITAL_INFO = MetricSpec("hip_hospital_info", "A declared hospital (value 1)",
                             ("org", "name", "region", "enabled"))
X_SYSTEM_INFO = MetricSpec("hip_hospital_system_info", "A declared source system (value 1)",
                           ("org", "system", "capture", "engine"))
# the exporter itself
X_SOURCE_READ_UP = MetricSpec("hip_exporter_read_up", "1 when the last read of a backend succeeded",
                              ("backend",))
X_SOURCE_READ_SECONDS = MetricSpec("hip_exporter_read_duration_seconds", "Duration of the last read",
                                   ("backend",))
X_SOURCE_READ_AGE = MetricSpec("hip_exporter_snapshot_age_seconds",
                               "Seconds since the last successful read of a backend", ("backend",))

EXPORTER_METRICS: tuple[MetricSpec, ...] = (
    X_CONSUMER_LAG, X_HOSPITAL_LAG, X_COMMITTED_OFFSET, X_END_OFFSET, X_CONNECTOR_STATE, X_TASK_STATE,
    X_SOURCE_UP, X_SLOT_ACTIVE, X_SLOT_RETAINED, X_SLOT_LAG, X_BINLOG_FILE, X_BINLOG_POSITION,
    X_BINLOG_RETAINED, X_BINLOG_LAG, X_LAST_SOURCE_TS, X_FRESHNESS, X_ROWS, X_HOSPITAL_INFO,
    X_SYSTEM_INFO, X_SOURCE_READ_UP, X_SOURCE_READ_SECONDS, X_SOURCE_READ_AGE,
)
