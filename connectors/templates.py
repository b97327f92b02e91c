"""Connector configurations rendered from the per-database templates in ``connectors/templates``.

Pure: fleet model + template files in, ``{connector name: config}`` out. ``common.yaml`` is merged
under ``<db>.yaml``; each value is a ``str.format`` template over ``CONTEXT_NAMES``; a value that renders
empty is left out; a system's ``overrides`` win last.
"""
from __future__ import annotations

import re
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import yaml

from connectors.fleet import Fleet, Hospital, SystemSpec, server_id
from connectors.topics import split_table, topic_prefix
from hip.errors import ConfigError

TEMPLATE_DIR = Path(__file__).resolve().parent / "templates"
CONTEXT_NAMES = ("name", "org", "system", "host", "port", "database", "secret_file", "topic_prefix",
                 "slot", "publication", "server_id", "table_include", "database_regex", "timezone",
                 "signal_topic", "signal_channels", "signal_table", "bootstrap",
                 "schema_history_topic", "heartbeat_query")
_JAVA_REGEX_META = re.compile(r"([\\.\[\]{}()*+?^$|-])")


@dataclass(frozen=True)
class RenderContext:
    """What the fleet file does not say: where Kafka and the secrets live on this deployment."""

    bootstrap: str
    secrets_dir: Path
    template_dir: Path = TEMPLATE_DIR


def connector_name(fleet: Fleet, org: str, system: str) -> str:
    return f"{fleet.connector_prefix}.{org}.{system}"


def slot_name(fleet: Fleet, org: str, system: str) -> str:
    """Replication slot: one per hospital and system, [a-z0-9_] as PostgreSQL requires."""
    return re.sub(r"[^a-z0-9_]", "_", f"{fleet.connector_prefix}_{org}_{system}".lower())[:63]


def java_regex_literal(text: str) -> str:
    """A Java regex matching exactly ``text`` (Debezium include lists are regexes)."""
    return _JAVA_REGEX_META.sub(r"\\\1", text)


def load_templates(template_dir: Path) -> dict[str, dict[str, str]]:
    """Every ``<name>.yaml`` of the folder, values as strings; bad YAML is a ``ConfigError``."""
    out: dict[str, dict[str, str]] = {}
    for path in sorted(template_dir.glob("*.yaml")):
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"invalid YAML: {exc}", file=str(path)) from exc
        if not isinstance(data, dict):
            raise ConfigError("a template is a mapping of connector settings", file=str(path))
        out[path.stem] = {str(k): "" if v is None else str(v) for k, v in data.items()}
    if "common" not in out:
        raise ConfigError("common.yaml is missing", file=str(template_dir))
    return out


def _context(fleet: Fleet, h: Hospital, system: str, spec: SystemSpec, ctx: RenderContext) -> dict[str, str]:
    name = connector_name(fleet, h.org, system)
    tables = [java_regex_literal(t) for t in spec.tables]
    heartbeat = ""
    if spec.heartbeat_table:
        heartbeat = (f"INSERT INTO {spec.heartbeat_table} (id, ts) VALUES (1, now()) "
                     "ON CONFLICT (id) DO UPDATE SET ts = EXCLUDED.ts")
    dbs = sorted({split_table(t)[0] for t in spec.tables}) or [spec.database]
    return {
        "name": name, "org": h.org, "system": system, "host": spec.host,
        "port": str(spec.resolved_port), "database": spec.database,
        "secret_file": str((ctx.secrets_dir / f"{spec.credentials}.properties").resolve()),
        "topic_prefix": topic_prefix(h.org, system), "slot": slot_name(fleet, h.org, system),
        "publication": spec.publication,
        "server_id": str(server_id(h.org, system, spec)) if spec.db in ("mariadb", "mysql") else "",
        "table_include": ",".join(tables),
        "database_regex": ",".join(java_regex_literal(d) for d in dbs),
        "timezone": spec.timezone, "signal_topic": fleet.signal_topic,
        "signal_channels": "source,kafka" if spec.signal_table else "kafka",
        "signal_table": spec.signal_table or "", "bootstrap": ctx.bootstrap,
        "schema_history_topic": f"hip.schemahistory.{h.org}.{system}",
        "heartbeat_query": heartbeat,
    }


class _StrictMap(dict[str, str]):
    def __missing__(self, key: str) -> str:
        raise KeyError(key)


def _render_value(template: str, context: Mapping[str, str], file: str, key: str) -> str:
    try:
        for _, field, _, _ in string.Formatter().parse(template):
            if field is not None and field not in context:
                raise KeyError(field)
        return template.format_map(_StrictMap(context))
    except KeyError as exc:
        raise ConfigError(f"unknown placeholder {{{exc.args[0]}}}; known: {', '.join(CONTEXT_NAMES)}",
                          file=file, field=key) from exc
    except (ValueError, IndexError) as exc:
        raise ConfigError(f"bad template value: {exc}", file=file, field=key) from exc


def render_system(fleet: Fleet, h: Hospital, system: str, spec: SystemSpec, ctx: RenderContext,
                  templates: dict[str, dict[str, str]] | None = None) -> dict[str, str]:
    """The connector config of one log-captured system."""
    templates = templates if templates is not None else load_templates(ctx.template_dir)
    if spec.db not in templates:
        raise ConfigError(f"no template for database type {spec.db}",
                          file=str(ctx.template_dir / f"{spec.db}.yaml"))
    context = _context(fleet, h, system, spec, ctx)
    config: dict[str, str] = {}
    for source in ("common", spec.db):
        for key, template in templates[source].items():
            config[key] = _render_value(template, context, str(ctx.template_dir / f"{source}.yaml"), key)
    config.update(spec.overrides)
    return {k: v for k, v in config.items() if v != ""}


def render_fleet(fleet: Fleet, ctx: RenderContext) -> dict[str, dict[str, str]]:
    """Desired connectors of every enabled hospital system captured in ``log`` mode."""
    templates = load_templates(ctx.template_dir)
    return {connector_name(fleet, h.org, s): render_system(fleet, h, s, spec, ctx, templates)
            for h, s, spec in fleet.systems(enabled_only=True) if spec.capture == "log"}
