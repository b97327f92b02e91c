"""The declared fleet: hospitals, their source systems and how each is captured.

Loaded from YAML (``connectors/fleet/*.yaml``) into pydantic models that reject unknown keys.
A bad file stops everything before anything runs: ``ConfigError`` names the file and the field.
Secrets never appear here: a system names its credentials, whose file lives in ``var/secrets``.
"""
from __future__ import annotations

import re
import zlib
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from hip.errors import ConfigError

FLEET_DIR = Path(__file__).resolve().parent / "fleet"
HOSPITALS_FILE = FLEET_DIR / "hospitals.yaml"
LOCAL_FILE = FLEET_DIR / "local.yaml"

# Systems named by the notice (附件2); 病案 and 手麻 use the codes of hip.records' source_system.
SYSTEMS: dict[str, str] = {"HIS": "HIS", "LIS": "LIS", "PACS": "PACS", "EMR": "EMR",
                           "MRS": "病案", "ANES": "手麻"}
# "unknown": not surveyed yet (attachment 3's 回执); allowed only while the hospital is disabled.
DbType = Literal["postgresql", "mariadb", "mysql", "sqlserver", "oracle", "unknown"]
CaptureMode = Literal["log", "poll", "push"]
DEFAULT_PORTS: dict[str, int] = {"postgresql": 5432, "mariadb": 3306, "mysql": 3306,
                                 "sqlserver": 1433, "oracle": 1521, "unknown": 0}
# Real organisation codes are not known yet; placeholders carry this prefix so nothing can go live
# with one (see Hospital.enabled).
PLACEHOLDER_PREFIX = "PH"
# Kafka topic prefixes and slot names are built from these, so they are kept to [A-Za-z0-9].
_ORG_RE = re.compile(r"^[A-Za-z0-9]{2,18}$")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
SERVER_ID_MIN = 100_000
SERVER_ID_SPAN = 4_000_000_000


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PollTable(_Model):
    """How one table is polled when only SELECT is granted."""

    cursor: str = Field(description="update-time or incrementing column")
    cursor_kind: Literal["timestamp", "increment"] = "timestamp"
    key: list[str] = Field(min_length=1, description="primary-key columns, in order")


class SystemSpec(_Model):
    """One source database of a hospital (HIS, LIS, …) and how it is captured."""

    db: DbType
    host: str
    port: int | None = None
    database: str
    credentials: str = Field(description="name of var/secrets/<name>.properties (user=, password=)")
    timezone: str = "Asia/Shanghai"
    vendor_profile: str
    capture: CaptureMode
    tables: list[str] = Field(default_factory=list,
                              description="captured tables as schema.table (database.table on MariaDB)")
    publication: str = "hip_capture"
    heartbeat_table: str | None = Field(
        default=None, description="schema.table the capture user may INSERT into; keeps WAL moving")
    signal_table: str | None = Field(
        default=None, description="schema.table of a DBA-provided Debezium signal table, if any")
    server_id: int | None = Field(default=None, ge=1, le=4_294_967_295)
    poll: dict[str, PollTable] = Field(default_factory=dict)
    poll_interval_s: float = Field(default=10.0, gt=0)
    key_diff_interval_s: float = Field(default=300.0, gt=0)
    poll_lag_s: int = Field(default=5, ge=0, le=3600, description=(
        "seconds an update-time cursor stays behind the database clock: above the longest "
        "transaction, or an update committed that late behind the cursor is not seen"))
    overrides: dict[str, str] = Field(default_factory=dict,
                                      description="connector settings that win over the template")

    @field_validator("credentials")
    @classmethod
    def _credentials_name(cls, v: str) -> str:
        if not _NAME_RE.match(v):
            raise ValueError("must be a plain file name ([A-Za-z0-9_.-]), not a secret or a path")
        return v

    @field_validator("tables")
    @classmethod
    def _qualified(cls, v: list[str]) -> list[str]:
        for t in v:
            if t.count(".") < 1 or "," in t:
                raise ValueError(f"table {t!r} must be schema.table without commas")
        return v

    @field_validator("overrides")
    @classmethod
    def _no_secret_overrides(cls, v: dict[str, str]) -> dict[str, str]:
        for k, val in v.items():
            if "password" in k and not val.startswith("${"):
                raise ValueError(f"{k}: passwords only through a config provider (${{file:…}})")
        return v

    @model_validator(mode="after")
    def _mode_needs(self) -> SystemSpec:
        if self.capture == "poll":
            missing = [t for t in self.tables if t not in self.poll]
            if missing:
                raise ValueError(f"poll capture needs a poll entry for {missing}")
        return self

    @property
    def resolved_port(self) -> int:
        return self.port or DEFAULT_PORTS[self.db]


class Hospital(_Model):
    """A hospital of attachment 1 with its organisation code and systems."""

    org: str
    name: str
    region: str
    enabled: bool = False
    systems: dict[str, SystemSpec] = Field(default_factory=dict)

    @field_validator("org")
    @classmethod
    def _org(cls, v: str) -> str:
        if not _ORG_RE.match(v):
            raise ValueError("organisation code must be 2-18 letters or digits")
        return v

    @field_validator("systems")
    @classmethod
    def _systems(cls, v: dict[str, SystemSpec]) -> dict[str, SystemSpec]:
        unknown = set(v) - set(SYSTEMS)
        if unknown:
            raise ValueError(f"unknown systems {sorted(unknown)}; known: {sorted(SYSTEMS)}")
        return v

    @model_validator(mode="after")
    def _no_live_placeholder(self) -> Hospital:
        if self.enabled and self.placeholder:
            raise ValueError(f"{self.org} is a placeholder organisation code: replace it before enabling")
        if self.enabled:
            unknown = [s for s, spec in self.systems.items() if spec.db == "unknown"]
            if unknown:
                raise ValueError(f"systems {unknown} of {self.org} have db: unknown; survey them first")
        return self

    @property
    def placeholder(self) -> bool:
        return self.org.startswith(PLACEHOLDER_PREFIX)


class Fleet(_Model):
    """Every hospital the platform captures, and the names its connectors share."""

    connector_prefix: str = Field(default="hip", pattern=r"^[a-z][a-z0-9-]{0,20}$")
    signal_topic: str = "hip.signals"
    cursor_topic: str = "hip.poll.cursors"
    keys_topic: str = "hip.poll.keys"
    hospitals: list[Hospital]

    @model_validator(mode="after")
    def _unique(self) -> Fleet:
        seen: set[str] = set()
        for h in self.hospitals:
            if h.org in seen:
                raise ValueError(f"organisation code {h.org} declared twice")
            seen.add(h.org)
        ids: dict[int, str] = {}
        for h, sys_name, spec in self.systems():
            if spec.db not in ("mariadb", "mysql"):
                continue
            sid = server_id(h.org, sys_name, spec)
            who = f"{h.org}.{sys_name}"
            if sid in ids:
                raise ValueError(f"server id {sid} of {who} collides with {ids[sid]}: set server_id")
            ids[sid] = who
        return self

    def systems(self, *, enabled_only: bool = False) -> list[tuple[Hospital, str, SystemSpec]]:
        """Every (hospital, system code, spec), in declaration order."""
        return [(h, s, spec) for h in self.hospitals if h.enabled or not enabled_only
                for s, spec in h.systems.items()]

    def select(self, *, region: str | None = None, org: str | None = None) -> list[Hospital]:
        """Hospitals matching a region (name) and/or an organisation code or hospital name."""
        out = [h for h in self.hospitals
               if (region is None or h.region == region)
               and (org is None or org in (h.org, h.name))]
        if (region or org) and not out:
            raise ConfigError(f"no hospital matches region={region!r} hospital={org!r}")
        return out

    def hospital(self, org: str) -> Hospital:
        for h in self.hospitals:
            if org in (h.org, h.name):
                return h
        raise ConfigError(f"no hospital {org!r} in the fleet")


def server_id(org: str, system: str, spec: SystemSpec) -> int:
    """The binlog client id of a MariaDB/MySQL connector: declared, else stable per org + system.

    Derived from a hash rather than a counter so that adding a hospital never renumbers the others.
    """
    if spec.server_id is not None:
        return spec.server_id
    return SERVER_ID_MIN + zlib.crc32(f"{org}.{system}".encode()) % SERVER_ID_SPAN


def _field_path(loc: tuple[Any, ...], data: Any) -> str:
    parts: list[str] = []
    node = data
    for item in loc:
        if isinstance(item, int) and isinstance(node, list) and item < len(node):
            node = node[item]
            label = node.get("org") if isinstance(node, dict) else None
            parts.append(f"[{item}]" + (f"({label})" if label else ""))
            continue
        parts.append(f".{item}")
        node = node.get(item) if isinstance(node, dict) else None
    return "".join(parts).lstrip(".")


def load_fleet(path: Path | str = LOCAL_FILE) -> Fleet:
    """Read and validate a fleet file; any problem is a ``ConfigError`` naming file and field."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read fleet file: {exc}", file=str(path)) from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise ConfigError(f"invalid YAML: {exc}", file=str(path),
                          line=mark.line + 1 if mark else None) from exc
    if not isinstance(data, dict):
        raise ConfigError("a fleet file is a mapping with a 'hospitals' list", file=str(path))
    try:
        return Fleet.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        raise ConfigError(err["msg"], file=str(path),
                          field=_field_path(tuple(err["loc"]), data) or None) from exc
