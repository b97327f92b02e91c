"""Pure functions behind the exporter and ``hip status``: no I/O, plain data in and out."""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Callable, Iterable, Mapping, Sequence

# ---------------------------------------------------------------------------------------------
# Consumer lag


@dataclass(frozen=True)
class PartitionLag:
    """Lag of one consumer group on one partition."""

    group: str
    topic: str
    partition: int
    committed: int | None
    end: int
    lag: int


def partition_lag(committed: int | None, end: int, start: int = 0) -> int:
    """Messages the group still has to read on a partition.

    Without a committed offset the group will read everything still retained (``start`` is the
    log start offset), and a committed offset below ``start`` (retention removed data) cannot
    lag by more than what is retained. Never negative: end offsets are read after the commits,
    so a momentary ``committed > end`` is a read race, not negative lag.
    """
    if end < 0:
        return 0
    base = start if committed is None or committed < 0 else max(committed, start)
    return max(0, end - base)


def group_lags(group: str, committed: Mapping[tuple[str, int], int | None],
               ends: Mapping[tuple[str, int], int],
               starts: Mapping[tuple[str, int], int] | None = None) -> list[PartitionLag]:
    """Lag per partition of every partition the group has a position on, sorted by topic, partition."""
    starts = starts or {}
    out: list[PartitionLag] = []
    for (topic, part), offset in sorted(committed.items()):
        if (topic, part) not in ends:
            continue
        end = ends[(topic, part)]
        c = None if offset is None or offset < 0 else offset
        out.append(PartitionLag(group, topic, part, c, end,
                                partition_lag(c, end, starts.get((topic, part), 0))))
    return out


_RAW_RE = re.compile(r"^raw\.([A-Za-z0-9]+)\.([A-Za-z0-9]+)(?:\.|$)")


def raw_topic_owner(topic: str) -> tuple[str, str] | None:
    """``(org, system)`` of a raw change topic ``raw.<org>.<system>.…``, else None."""
    m = _RAW_RE.match(topic)
    return (m.group(1), m.group(2)) if m else None


def hospital_lags(rows: Iterable[PartitionLag]) -> dict[tuple[str, str, str], int]:
    """Lag summed per (group, org, system) over raw topics: the per-hospital view of a consumer."""
    out: dict[tuple[str, str, str], int] = {}
    for r in rows:
        owner = raw_topic_owner(r.topic)
        if owner is None:
            continue
        key = (r.group, owner[0], owner[1])
        out[key] = out.get(key, 0) + r.lag
    return out


# ---------------------------------------------------------------------------------------------
# Freshness


def to_epoch(ts: datetime) -> float:
    """Seconds since the epoch; a naive timestamp is taken as UTC (the warehouse stores timestamptz)."""
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=timezone.utc)
    return ts.timestamp()


def freshness_seconds(now: float, newest: datetime | float | None) -> float | None:
    """Age of the newest source commit that reached the warehouse; None when nothing arrived.

    A source clock ahead of ours would give a negative age: report 0 rather than "fresher than now".
    """
    if newest is None:
        return None
    epoch = newest if isinstance(newest, (int, float)) else to_epoch(newest)
    return max(0.0, now - float(epoch))


# ---------------------------------------------------------------------------------------------
# Kafka Connect


@dataclass(frozen=True)
class ConnectorStatus:
    """State of one Connect connector and its tasks, attributed to a hospital system."""

    name: str
    org: str
    system: str
    connector_class: str
    state: str
    tasks: tuple[tuple[int, str], ...] = ()
    config: Mapping[str, str] = field(default_factory=dict, compare=False, repr=False)

    @property
    def worst_state(self) -> str:
        """The connector's or a task's state, whichever needs attention most."""
        return worst_connect_state([self.state, *[s for _, s in self.tasks]])


_CONNECT_SEVERITY = {"FAILED": 5, "UNASSIGNED": 4, "RESTARTING": 3, "PAUSED": 2, "STOPPED": 2,
                     "RUNNING": 0}


def worst_connect_state(states: Iterable[str]) -> str:
    """The most severe of several Connect states ("" when there are none)."""
    worst = ""
    for s in states:
        if not worst or _CONNECT_SEVERITY.get(s, 1) > _CONNECT_SEVERITY.get(worst, 1):
            worst = s
    return worst


def connector_identity(name: str, config: Mapping[str, str]) -> tuple[str, str]:
    """``(org, system)`` of a connector from ``topic.prefix`` ``raw.<org>.<system>``.

    Falls back on a name ``<prefix>.<org>.<system>``; unknown parts are "" so that a foreign
    connector still shows (with empty labels) instead of vanishing.
    """
    owner = raw_topic_owner(str(config.get("topic.prefix", "")))
    if owner:
        return owner
    parts = name.split(".")
    if len(parts) == 3 and all(parts):
        return parts[1], parts[2]
    return "", ""


def parse_connectors(expanded: Mapping[str, Mapping[str, object]]) -> list[ConnectorStatus]:
    """Flatten ``GET /connectors?expand=status&expand=info`` into one record per connector."""
    out: list[ConnectorStatus] = []
    for name, body in sorted(expanded.items()):
        info = body.get("info") or {}
        status = body.get("status") or {}
        config = dict(info.get("config") or {}) if isinstance(info, Mapping) else {}
        conn = status.get("connector") or {} if isinstance(status, Mapping) else {}
        tasks_raw = status.get("tasks") or [] if isinstance(status, Mapping) else []
        tasks = tuple(sorted((int(t.get("id", 0)), str(t.get("state", "UNASSIGNED")))
                             for t in tasks_raw if isinstance(t, Mapping)))
        org, system = connector_identity(name, config)
        out.append(ConnectorStatus(
            name=name, org=org, system=system,
            connector_class=str(config.get("connector.class", "")),
            state=str(conn.get("state", "UNASSIGNED")) if isinstance(conn, Mapping) else "UNASSIGNED",
            tasks=tasks, config=config))
    return out


def state_set(current: str, states: Sequence[str]) -> list[tuple[str, float]]:
    """One (state, 0/1) pair per known state, plus the current one when it is not known."""
    pairs = [(s, 1.0 if s == current else 0.0) for s in states]
    if current not in states:
        pairs.append((current, 1.0))
    return pairs


_PLACEHOLDER_RE = re.compile(r"\$\{(file|env):([^}]*)\}")


def resolve_config_value(value: str, read_properties: Callable[[str], Mapping[str, str]],
                         env: Mapping[str, str]) -> str:
    """Expand Connect config-provider placeholders (``${file:path:key}``, ``${env:NAME}``).

    The exporter reads a source with the connector's own credentials, through the same providers
    Connect uses, so that no password has to be copied anywhere else.
    """
    def expand(m: re.Match[str]) -> str:
        kind, ref = m.group(1), m.group(2)
        if kind == "env":
            return env.get(ref, "")
        path, _, key = ref.rpartition(":")
        return read_properties(path).get(key, "")
    return _PLACEHOLDER_RE.sub(expand, value)


def parse_properties(text: str) -> dict[str, str]:
    """Java ``.properties`` essentials: ``key=value`` or ``key: value``, ``#``/``!`` comments."""
    out: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line[0] in "#!":
            continue
        m = re.match(r"([^=:\s]+)\s*[=:\s]\s*(.*)$", line)
        if m:
            out[m.group(1)] = m.group(2)
    return out


# ---------------------------------------------------------------------------------------------
# MariaDB binlog


def binlog_number(file: str) -> int:
    """Sequence number of a binlog file name (``mysql-bin.000042`` → 42); 0 when there is none."""
    tail = file.rsplit(".", 1)[-1] if "." in file else ""
    return int(tail) if tail.isdigit() else 0


def binlog_lag_bytes(logs: Sequence[tuple[str, int]], head: tuple[str, int],
                     at: tuple[str, int]) -> int:
    """Binlog bytes from position ``at`` (the connector's offset) to ``head`` (the server's).

    ``logs`` is ``SHOW BINARY LOGS`` (name, size). Files between the two positions count whole.
    A connector offset in a file the server no longer has means data was purged under it: the
    lag is then everything retained, which the retention alert will already flag.
    """
    at_n, head_n = binlog_number(at[0]), binlog_number(head[0])
    if at_n == head_n:
        return max(0, head[1] - at[1])
    if at_n > head_n:
        return 0
    sizes = {binlog_number(n): s for n, s in logs}
    if at_n not in sizes:
        return sum(s for n, s in sizes.items() if n < head_n) + head[1]
    total = max(0, sizes[at_n] - at[1])
    total += sum(s for n, s in sizes.items() if at_n < n < head_n)
    return total + head[1]


# ---------------------------------------------------------------------------------------------
# The status view


@dataclass(frozen=True)
class Limits:
    """Thresholds above which a hospital needs attention; defaults match deploy/prometheus/rules."""

    stale_after_s: float = 1800.0
    stale_after_by_dataset: Mapping[str, float] = field(default_factory=dict)
    max_lag_messages: float = 10_000.0
    recent_rejects: float = 0.0


@dataclass(frozen=True)
class HospitalStatus:
    """One line of ``hip status``."""

    org: str
    name: str = ""
    capture: str = ""
    connect_state: str = ""
    freshness_s: float | None = None
    stale_datasets: tuple[str, ...] = ()
    datasets: int = 0
    lag_messages: float = 0.0
    rejects_today: float = 0.0
    rejects_recent: float = 0.0
    attention: tuple[str, ...] = ()

    @property
    def severity(self) -> int:
        """2 = broken (failed capture), 1 = late or rejecting, 0 = fine."""
        if self.connect_state in ("FAILED", "UNASSIGNED"):
            return 2
        return 1 if self.attention else 0


def dataset_threshold(dataset: str, limits: Limits) -> float:
    return limits.stale_after_by_dataset.get(dataset, limits.stale_after_s)


def hospital_status(org: str, *, name: str = "", captures: Iterable[str] = (),
                    connect_states: Iterable[str] = (), freshness: Mapping[str, float] | None = None,
                    lag_messages: float = 0.0, rejects_today: float = 0.0,
                    rejects_recent: float = 0.0, limits: Limits = Limits()) -> HospitalStatus:
    """Build one hospital's line and decide what about it needs attention.

    ``freshness`` maps dataset → seconds since its newest source commit reached the warehouse;
    the line shows the freshest dataset (is anything arriving at all?) and lists the datasets
    older than their threshold (which ones are late?).
    """
    freshness = dict(freshness or {})
    stale = tuple(sorted(d for d, age in freshness.items() if age > dataset_threshold(d, limits)))
    state = worst_connect_state(connect_states)
    modes = sorted(set(c for c in captures if c))
    reasons: list[str] = []
    if state in ("FAILED", "UNASSIGNED", "RESTARTING", "PAUSED", "STOPPED"):
        reasons.append(f"connector {state.lower()}")
    if stale:
        reasons.append(f"{len(stale)} dataset(s) stale")
    if "log" in modes and not freshness and not state:
        reasons.append("no connector")
    if lag_messages > limits.max_lag_messages:
        reasons.append("lag")
    if rejects_recent > limits.recent_rejects:
        reasons.append("rejecting records")
    return HospitalStatus(
        org=org, name=name, capture="+".join(modes), connect_state=state,
        freshness_s=min(freshness.values()) if freshness else None, stale_datasets=stale,
        datasets=len(freshness), lag_messages=lag_messages, rejects_today=rejects_today,
        rejects_recent=rejects_recent, attention=tuple(reasons))


def _worst_first_key(s: HospitalStatus) -> tuple[float, ...]:
    stale_ratio = len(s.stale_datasets) / s.datasets if s.datasets else 0.0
    fresh = s.freshness_s if s.freshness_s is not None else math.inf
    return (-s.severity, -stale_ratio, -fresh, -s.lag_messages, -s.rejects_today)


def sort_worst_first(rows: Iterable[HospitalStatus]) -> list[HospitalStatus]:
    """Broken before late before fine; within a class the staler, the more lagging first."""
    return sorted(rows, key=lambda s: (*_worst_first_key(s), s.org))


def exit_code(rows: Iterable[HospitalStatus], platform_problems: Sequence[str]) -> int:
    """0 when nothing needs attention, 1 otherwise (cron mails on non-zero)."""
    if platform_problems:
        return 1
    return 1 if any(r.attention for r in rows) else 0


def format_age(seconds: float | None) -> str:
    """Compact human age: ``42s``, ``17m``, ``5h03m``, ``3d04h``; ``-`` for never."""
    if seconds is None or math.isnan(seconds):
        return "-"
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m"
    if s < 86400:
        return f"{s // 3600}h{(s % 3600) // 60:02d}m"
    return f"{s // 86400}d{(s % 86400) // 3600:02d}h"


def _count(v: float) -> str:
    if v >= 1_000_000:
        return f"{v / 1_000_000:.1f}M"
    if v >= 10_000:
        return f"{v / 1000:.0f}k"
    return f"{v:.0f}"


STATUS_COLUMNS = ("org", "hospital", "mode", "connector", "fresh", "stale", "lag", "rejects", "attention")


def format_table(rows: Sequence[HospitalStatus], platform_problems: Sequence[str] = (),
                 width: int = 32) -> str:
    """The fleet as a fixed-width text table, then any platform-wide problems."""
    cells = [STATUS_COLUMNS] + [(
        r.org, (r.name[:width] if r.name else ""), r.capture or "-", r.connect_state or "-",
        format_age(r.freshness_s), f"{len(r.stale_datasets)}/{r.datasets}",
        _count(r.lag_messages), _count(r.rejects_today), ", ".join(r.attention) or "ok",
    ) for r in rows]
    widths = [max(_display_width(row[i]) for row in cells) for i in range(len(STATUS_COLUMNS))]
    lines = ["  ".join(_pad(v, widths[i]) for i, v in enumerate(row)).rstrip() for row in cells]
    attention = sum(1 for r in rows if r.attention)
    lines.append(f"{len(rows)} hospitals, {attention} need attention")
    lines.extend(f"platform: {p}" for p in platform_problems)
    return "\n".join(lines)


def _display_width(text: str) -> int:
    # CJK characters take two terminal columns; hospital names are Chinese.
    return sum(2 if ord(ch) > 0x2E80 else 1 for ch in text)


def _pad(text: str, width: int) -> str:
    return text + " " * (width - _display_width(text))


def seconds_since_local_midnight(now: datetime) -> float:
    """Seconds since midnight of ``now``'s own zone ("today" for the rejects column)."""
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    return (now - midnight).total_seconds()

