"""The metrics exporter: lag, Connect states, source log positions, warehouse freshness and rows.

Each backend is read by its own loop every few seconds and the last reading is published at
scrape time. Reading on scrape would multiply the load by the number of Prometheus servers and
let one slow source database stall the whole scrape; a loop per backend bounds both.
Started as ``hip exporter run``.
"""
from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Iterator

import click
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from hip import metrics as m
from hip.errors import ConfigError, PlatformError, TransientError
from hip.observability import backends
from hip.observability.model import (
    ConnectorStatus, freshness_seconds, hospital_lags, state_set, to_epoch,
)
from hip.settings import Settings, load_settings

log = logging.getLogger("hip.exporter")

Sample = tuple[m.MetricSpec, tuple[str, ...], float]


@dataclass
class BackendState:
    """Last reading of one backend, replaced whole so a scrape never sees half a refresh."""

    samples: list[Sample] = field(default_factory=list)
    ok: bool = False
    duration_s: float = 0.0
    last_ok: float = 0.0
    extra: object = None


class Exporter(Collector):
    """Refresh loops per backend plus a collector publishing their last readings."""

    BACKENDS = ("kafka", "connect", "sources", "warehouse", "fleet")

    def __init__(self, settings: Settings, interval_s: float = 5.0,
                 warehouse_interval_s: float = 15.0, fleet_file: str | None = None) -> None:
        self.settings = settings
        self.interval_s = interval_s
        self.warehouse_interval_s = warehouse_interval_s
        self.fleet_file = fleet_file
        self.state: dict[str, BackendState] = {b: BackendState() for b in self.BACKENDS}
        self._stop = threading.Event()
        self._pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="hip-exporter-source")

    # -- reading --------------------------------------------------------------------------------

    def refresh(self, backend: str) -> None:
        """Read one backend once and swap in its new state; failures keep the last good samples out."""
        reader: Callable[[], tuple[list[Sample], object]] = getattr(self, f"_read_{backend}")
        started = time.monotonic()
        prev = self.state[backend]
        try:
            samples, extra = reader()
        except (TransientError, ConfigError) as exc:
            log.warning("%s read failed: %s", backend, exc)
            # Stale numbers would look healthy: publish nothing for this backend until it reads again.
            self.state[backend] = BackendState([], False, time.monotonic() - started, prev.last_ok, None)
            return
        except Exception:  # noqa: BLE001 - one broken backend must not stop the others' loops
            log.exception("%s read failed unexpectedly", backend)
            self.state[backend] = BackendState([], False, time.monotonic() - started, prev.last_ok, None)
            return
        self.state[backend] = BackendState(samples, True, time.monotonic() - started, time.time(), extra)

    def _read_kafka(self) -> tuple[list[Sample], object]:
        rows = backends.read_consumer_lags(self.settings.bootstrap_servers)
        out: list[Sample] = []
        ends: dict[tuple[str, str], float] = {}
        for r in rows:
            labels = (r.group, r.topic, str(r.partition))
            out.append((m.X_CONSUMER_LAG, labels, float(r.lag)))
            if r.committed is not None:
                out.append((m.X_COMMITTED_OFFSET, labels, float(r.committed)))
            ends[(r.topic, str(r.partition))] = float(r.end)
        out.extend((m.X_END_OFFSET, k, v) for k, v in sorted(ends.items()))
        out.extend((m.X_HOSPITAL_LAG, k, float(v)) for k, v in sorted(hospital_lags(rows).items()))
        return out, None

    def _read_connect(self) -> tuple[list[Sample], object]:
        connectors = backends.read_connectors(self.settings.connect_url)
        out: list[Sample] = []
        for c in connectors:
            ident = (c.name, c.org, c.system)
            out.extend((m.X_CONNECTOR_STATE, (*ident, s), v)
                       for s, v in state_set(c.state, m.CONNECT_STATES))
            for task, state in c.tasks:
                out.extend((m.X_TASK_STATE, (*ident, str(task), s), v)
                           for s, v in state_set(state, m.CONNECT_STATES))
        return out, connectors

    def _read_sources(self) -> tuple[list[Sample], object]:
        connectors = self.state["connect"].extra
        if not isinstance(connectors, list):
            raise TransientError("no connector list yet (Connect unreachable)")
        targets = [c for c in connectors
                   if backends.engine_of(c.connector_class) and c.org and c.state != "STOPPED"]
        futures = [(c, self._pool.submit(self._read_one_source, c)) for c in targets]
        out: list[Sample] = []
        for c, fut in futures:
            out.extend(fut.result())
        return out, None

    def _read_one_source(self, c: ConnectorStatus) -> list[Sample]:
        engine = backends.engine_of(c.connector_class)
        who = (c.org, c.system)
        try:
            if engine == "postgresql":
                slot = backends.read_pg_slot(c)
                if slot is None:
                    return [(m.X_SOURCE_UP, (*who, engine), 1.0)]
                sl = (*who, slot.slot)
                return [(m.X_SOURCE_UP, (*who, engine), 1.0),
                        (m.X_SLOT_ACTIVE, sl, 1.0 if slot.active else 0.0),
                        (m.X_SLOT_RETAINED, sl, slot.retained_bytes),
                        (m.X_SLOT_LAG, sl, slot.lag_bytes)]
            binlog = backends.read_binlog(c, self.settings.connect_url)
            out: list[Sample] = [(m.X_SOURCE_UP, (*who, engine), 1.0),
                                 (m.X_BINLOG_FILE, who, float(binlog.file_number)),
                                 (m.X_BINLOG_POSITION, who, float(binlog.position)),
                                 (m.X_BINLOG_RETAINED, who, float(binlog.retained_bytes))]
            if binlog.lag_bytes is not None:
                out.append((m.X_BINLOG_LAG, who, float(binlog.lag_bytes)))
            return out
        except TransientError as exc:
            log.warning("%s", exc)
            return [(m.X_SOURCE_UP, (*who, engine), 0.0)]

    def _read_warehouse(self) -> tuple[list[Sample], object]:
        reading = backends.read_warehouse(self.settings.warehouse_dsn)
        out: list[Sample] = [(m.X_LAST_SOURCE_TS, k, to_epoch(ts)) for k, ts in sorted(reading.newest.items())]
        out.extend((m.X_ROWS, k, v) for k, v in sorted(reading.rows.items()))
        return out, reading

    def _read_fleet(self) -> tuple[list[Sample], object]:
        try:
            from connectors.fleet import LOCAL_FILE, load_fleet
        except ImportError as exc:
            raise TransientError(f"fleet model not available: {exc}") from exc
        fleet = load_fleet(self.fleet_file or LOCAL_FILE)
        out: list[Sample] = []
        for h in fleet.hospitals:
            out.append((m.X_HOSPITAL_INFO, (h.org, h.name, h.region, str(h.enabled).lower()), 1.0))
            out.extend((m.X_SYSTEM_INFO, (h.org, s, spec.capture, spec.db), 1.0)
                       for s, spec in h.systems.items())
        return out, None

    def _loop(self, backend: str, interval_s: float) -> None:
        while not self._stop.is_set():
            self.refresh(backend)
            self._stop.wait(interval_s)

    def start(self) -> None:
        """Start one daemon loop per backend; Connect first, the source loop needs its list."""
        self.refresh("connect")
        intervals = {"warehouse": self.warehouse_interval_s, "fleet": 60.0}
        for b in self.BACKENDS:
            threading.Thread(target=self._loop, args=(b, intervals.get(b, self.interval_s)),
                             name=f"hip-exporter-{b}", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()
        self._pool.shutdown(wait=False, cancel_futures=True)

    # -- publishing -----------------------------------------------------------------------------

    def collect(self) -> Iterator[Metric]:
        now = time.time()
        families = {spec.name: GaugeMetricFamily(spec.name, spec.help, labels=list(spec.labels))
                    for spec in m.EXPORTER_METRICS}
        for backend, st in self.state.items():
            for spec, labels, value in st.samples:
                families[spec.name].add_metric(list(labels), value)
            families[m.X_SOURCE_READ_UP.name].add_metric([backend], 1.0 if st.ok else 0.0)
            families[m.X_SOURCE_READ_SECONDS.name].add_metric([backend], st.duration_s)
            if st.last_ok:
                families[m.X_SOURCE_READ_AGE.name].add_metric([backend], max(0.0, now - st.last_ok))
        # Freshness is computed per scrape from the stored timestamps so it keeps growing between
        # warehouse reads exactly as a stalled pipeline would make it grow.
        for spec, labels, value in self.state["warehouse"].samples:
            if spec is m.X_LAST_SOURCE_TS:
                age = freshness_seconds(now, value)
                if age is not None:
                    families[m.X_FRESHNESS.name].add_metric(list(labels), age)
        yield from families.values()


@click.group("exporter")
def exporter() -> None:
    """Publish lag, connector states, source log positions and warehouse freshness to Prometheus."""


@exporter.command("run")
@click.option("--port", type=int, default=None, help="Metrics port (default: HIP_EXPORTER_METRICS_PORT).")
@click.option("--interval", type=float, default=5.0, show_default=True,
              help="Seconds between reads of Kafka, Connect and the source databases.")
@click.option("--warehouse-interval", type=float, default=15.0, show_default=True,
              help="Seconds between freshness and row-count reads of the warehouse.")
@click.option("--fleet", "fleet_file", default=None, help="Fleet file (default: connectors/fleet/local.yaml).")
def run(port: int | None, interval: float, warehouse_interval: float, fleet_file: str | None) -> None:
    """Run the exporter until interrupted."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    settings = load_settings()
    port = port or settings.exporter_metrics_port
    registry = CollectorRegistry()
    exp = Exporter(settings, interval, warehouse_interval, fleet_file)
    registry.register(exp)
    try:
        start_http_server(port, addr="127.0.0.1", registry=registry)
    except OSError as exc:
        raise PlatformError(f"cannot listen on 127.0.0.1:{port}: {exc}") from exc
    exp.start()
    log.info("exporter on 127.0.0.1:%d, reading every %.0fs", port, interval)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        exp.stop()
