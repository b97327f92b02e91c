"""The difference between the declared fleet and what Connect runs. Pure."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Action = Literal["create", "update", "delete"]
# Connect adds these to every stored config; they are not part of the declaration.
_IGNORED = frozenset({"name"})


@dataclass(frozen=True)
class Change:
    action: Action
    name: str
    desired: dict[str, str] | None = None
    # key -> (current, desired); None where a side lacks the key
    diff: dict[str, tuple[str | None, str | None]] = field(default_factory=dict)
    note: str = ""


def _strip(config: dict[str, str]) -> dict[str, str]:
    return {k: str(v) for k, v in config.items() if k not in _IGNORED}


def config_diff(current: dict[str, str], desired: dict[str, str]) -> dict[str, tuple[str | None, str | None]]:
    cur, want = _strip(current), _strip(desired)
    return {k: (cur.get(k), want.get(k)) for k in sorted(set(cur) | set(want)) if cur.get(k) != want.get(k)}


def plan(desired: dict[str, dict[str, str]], current: dict[str, dict[str, str]], prefix: str) -> list[Change]:
    """Changes that make ``current`` (connectors named ``<prefix>.*``) equal ``desired``.

    Connectors outside the prefix belong to someone else and are never touched.
    """
    changes: list[Change] = []
    for name in sorted(desired):
        if name not in current:
            changes.append(Change("create", name, desired[name]))
            continue
        diff = config_diff(current[name], desired[name])
        if diff:
            changes.append(Change("update", name, desired[name], diff))
    for name in sorted(current):
        if name.startswith(prefix + ".") and name not in desired:
            changes.append(Change("delete", name, None, note=_leftover_note(current[name])))
    return changes


def _leftover_note(config: dict[str, str]) -> str:
    """Deleting a connector leaves its replication slot, which then retains WAL until dropped."""
    if "PostgresConnector" in config.get("connector.class", "") and config.get("slot.name"):
        return (f"replication slot {config['slot.name']} stays on {config.get('database.hostname')}: "
                f"the DBA runs SELECT pg_drop_replication_slot('{config['slot.name']}');")
    return ""


def _mask(key: str, value: str | None) -> str:
    if value is None:
        return "∅"
    if ("password" in key or "secret" in key) and not value.startswith("${"):
        return "****"
    return value


def format_plan(changes: list[Change]) -> str:
    """The plan as people read it: one block per connector, changed keys with old → new."""
    if not changes:
        return "No changes: Connect runs exactly the declared fleet."
    sign = {"create": "+", "update": "~", "delete": "-"}
    lines: list[str] = []
    for c in changes:
        lines.append(f"{sign[c.action]} {c.action} {c.name}")
        if c.action == "create" and c.desired:
            lines.append(f"    {len(c.desired)} settings, topic.prefix={c.desired.get('topic.prefix', '?')}")
        for k, (old, new) in c.diff.items():
            lines.append(f"    {k}: {_mask(k, old)} → {_mask(k, new)}")
        if c.note:
            lines.append(f"    note: {c.note}")
    counts = {a: sum(1 for c in changes if c.action == a) for a in ("create", "update", "delete")}
    lines.append(f"Plan: {counts['create']} to create, {counts['update']} to update, {counts['delete']} to delete.")
    return "\n".join(lines)
