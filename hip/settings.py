"""Where things are: ports, addresses and folders of the local stack.

Ports come from ``deploy/ports.env``; an environment variable of the same name overrides a line.
All data, logs and downloads live under ``var/`` (or ``$HIP_VAR``).
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PORTS_FILE = ROOT / "deploy" / "ports.env"


def _read_env_file(path: Path) -> dict[str, str]:
    values: dict[str, str] = {}
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        values[key.strip()] = value.strip()
    return values


@dataclass(frozen=True)
class Settings:
    """Addresses of every service of the stack, resolved once."""

    var: Path
    kafka_port: int
    connect_port: int
    registry_port: int
    hospital_pg_port: int
    warehouse_pg_port: int
    hospital_mariadb_port: int
    prometheus_port: int
    normalizer_metrics_port: int
    sink_metrics_port: int
    stats_metrics_port: int
    exporter_metrics_port: int
    poller_metrics_port: int
    ingest_port: int
    # Every std.* and stat.* topic has this many partitions: Faust's tables in the statistics
    # worker need their source topics partitioned alike.
    std_partitions: int = 6
    # The statistics worker's Faust app id: its consumer group, and the prefix of its tables' topics.
    stats_app_id: str = "hip-stats-v2"

    def faust_datadir(self, worker: str, app_id: str) -> Path:
        """A Faust app's data directory under ``var/``, made with its parents (Faust makes only the
        last level, and by default puts ``<app id>-data`` in the working directory)."""
        path = self.var / "data" / worker / app_id
        path.mkdir(parents=True, exist_ok=True)
        return path

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.kafka_port}"

    @property
    def connect_url(self) -> str:
        return f"http://127.0.0.1:{self.connect_port}"

    @property
    def registry_url(self) -> str:
        return f"http://127.0.0.1:{self.registry_port}/apis/ccompat/v7"

    @property
    def prometheus_url(self) -> str:
        return f"http://127.0.0.1:{self.prometheus_port}"

    @property
    def warehouse_dsn(self) -> str:
        return f"host=127.0.0.1 port={self.warehouse_pg_port} dbname=warehouse user=hip_warehouse password=warehouse"

    @property
    def secrets_dir(self) -> Path:
        """Credential files read by Connect's FileConfigProvider and by the workers."""
        return self.var / "secrets"

    def secret_file(self, name: str) -> Path:
        """Path of a credentials file ``user=…``/``password=…`` written by ``make up``."""
        return self.secrets_dir / f"{name}.properties"

    def secret(self, name: str, key: str = "password") -> str:
        """One value of a credentials file; the error names the file, never the value."""
        from hip.errors import ConfigError

        path = self.secret_file(name)
        try:
            values = _read_env_file(path)
        except FileNotFoundError:
            raise ConfigError("credentials file missing (run `make up`)", file=str(path)) from None
        if key not in values:
            raise ConfigError(f"no '{key}' entry", file=str(path), field=key)
        return values[key]


def render_template(text: str) -> str:
    """Substitute ``${NAME}`` from deploy/ports.env, the environment and ``ROOT`` (as deploy/up.sh does)."""
    values = _read_env_file(PORTS_FILE)
    values.update({k: v for k, v in os.environ.items() if k.startswith("HIP_")})
    values["ROOT"] = str(ROOT)
    return re.sub(r"\$\{([A-Z_]+)\}", lambda m: values.get(m.group(1), m.group(0)), text)


def load_settings() -> Settings:
    values = _read_env_file(PORTS_FILE)
    for key in list(values):
        if key in os.environ:
            values[key] = os.environ[key]

    def port(name: str) -> int:
        return int(values[f"HIP_{name}_PORT"])

    return Settings(
        var=Path(os.environ.get("HIP_VAR", ROOT / "var")),
        kafka_port=port("KAFKA"),
        connect_port=port("CONNECT"),
        registry_port=port("REGISTRY"),
        hospital_pg_port=port("HOSPITAL_PG"),
        warehouse_pg_port=port("WAREHOUSE_PG"),
        hospital_mariadb_port=port("HOSPITAL_MARIADB"),
        prometheus_port=port("PROMETHEUS"),
        normalizer_metrics_port=port("NORMALIZER_METRICS"),
        sink_metrics_port=port("SINK_METRICS"),
        stats_metrics_port=port("STATS_METRICS"),
        exporter_metrics_port=port("EXPORTER_METRICS"),
        poller_metrics_port=port("POLLER_METRICS"),
        ingest_port=port("INGEST"),
        std_partitions=int(os.environ.get("HIP_STD_PARTITIONS", "6")),
        stats_app_id=os.environ.get("HIP_STATS_APP_ID", "hip-stats-v2"),
    )
