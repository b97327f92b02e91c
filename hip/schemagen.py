"""Build the 72 Avro schemas from the catalogue and the compact field source.

``avro/catalogue.yaml`` holds each dataset's metadata; ``avro/source/*.yaml`` holds its fields,
one compact line per field, and its cross-field rules. ``hip datasets generate`` writes
``avro/schemas/<name>.avsc``; a test keeps the committed files equal to what this module builds.

Field line grammar (whitespace separated)::

    <name> <type>[!] <中文名> [DExx.xx.xxx.xx] [@<value set id>] [%<tag>] [-- note words]

``!`` marks a field every record must carry (no null branch); business-key fields are always
required. Types: ``str``, ``text`` (narrative), ``int``, ``long``, ``bool``, ``dbl``, ``date``,
``ts`` (timestamp-millis, UTC), ``money`` (decimal 14,2), ``qty`` (decimal 14,4),
``dec(p,s)``, ``strs`` (array of strings), ``list<Type>`` (array of a record in ``types``).
A line ``<<group`` inserts the lines of a named group from ``groups`` (shared context fields).
Tags feed the conformance rules: ``%idno=<type field>`` (GB 11643 check digit when the id type
is 01), ``%birth`` (a birth date), ``%future`` (may lie in the future), ``%signed`` (amount or
quantity may be negative, e.g. a refund line), ``%pct`` (a percentage 0–100), ``%should``
(the standard requires it but a hospital may lack it: a warning, not a rejection).
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from hip.errors import ConfigError
from hip.records import HEADER_FIELDS

AVRO_DIR = Path(__file__).resolve().parent.parent / "avro"
CATALOGUE_FILE = AVRO_DIR / "catalogue.yaml"
SOURCE_DIR = AVRO_DIR / "source"
SCHEMA_DIR = AVRO_DIR / "schemas"
VALUESET_DIR = AVRO_DIR / "valuesets"

MONEY = (14, 2)
QTY = (14, 4)
_ELEMENT = re.compile(r"^DE\d\d\.\d\d\.\d\d\d\.\d\d$")
_DEC = re.compile(r"^dec\((\d+),(\d+)\)$")
_LIST = re.compile(r"^list<([A-Za-z][A-Za-z0-9_]*)>$")
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


@dataclass
class FieldSpec:
    """One dataset field as written in the compact source."""

    name: str
    type: str
    name_zh: str
    required: bool = False
    element: str | None = None
    valueset: str | None = None
    tags: dict[str, str] = field(default_factory=dict)
    note: str | None = None


def parse_field(line: str, *, where: str) -> FieldSpec:
    """Parse one compact field line; ``where`` names the file and dataset in errors."""
    text, _, note = line.partition(" -- ")
    parts = text.split()
    if len(parts) < 3:
        raise ConfigError(f"field line needs name, type and Chinese name: {line!r}", file=where)
    name, type_, zh, *rest = parts
    if not _NAME.match(name):
        raise ConfigError(f"field name must be snake_case: {name!r}", file=where)
    required = type_.endswith("!")
    type_ = type_.rstrip("!")
    spec = FieldSpec(name=name, type=type_, name_zh=zh, required=required,
                     note=note.strip() or None)
    for token in rest:
        if _ELEMENT.match(token):
            spec.element = token
        elif token.startswith("@"):
            spec.valueset = token[1:]
        elif token.startswith("%"):
            key, _, value = token[1:].partition("=")
            spec.tags[key] = value
        else:
            raise ConfigError(f"unexpected token {token!r} in field {name!r}", file=where)
    return spec


def field_doc(spec: FieldSpec) -> str:
    """The Avro doc string: Chinese name, data-element id and value set, then any note."""
    doc = spec.name_zh
    extras = [x for x in (spec.element, f"value set {spec.valueset}" if spec.valueset else None) if x]
    if extras:
        doc += " (" + "; ".join(extras) + ")"
    if spec.note:
        doc += ". " + spec.note
    return doc


class SchemaBuilder:
    """Turns field specs into Avro JSON; named record types are emitted once per schema."""

    def __init__(self, types: dict[str, dict[str, Any]], namespace: str, where: str) -> None:
        self.types = types
        self.namespace = namespace
        self.where = where
        self.defined: set[str] = set()

    def avro_type(self, spec: FieldSpec) -> Any:
        t = spec.type
        simple: dict[str, Any] = {
            "str": "string", "text": "string", "int": "int", "long": "long", "bool": "boolean",
            "dbl": "double",
            "date": {"type": "int", "logicalType": "date"},
            "ts": {"type": "long", "logicalType": "timestamp-millis"},
            "money": {"type": "bytes", "logicalType": "decimal", "precision": MONEY[0], "scale": MONEY[1]},
            "qty": {"type": "bytes", "logicalType": "decimal", "precision": QTY[0], "scale": QTY[1]},
            "strs": {"type": "array", "items": "string"},
        }
        if t in simple:
            return simple[t]
        m = _DEC.match(t)
        if m:
            return {"type": "bytes", "logicalType": "decimal", "precision": int(m[1]), "scale": int(m[2])}
        m = _LIST.match(t)
        if m:
            return {"type": "array", "items": self.record_type(m[1])}
        raise ConfigError(f"unknown type {t!r} of field {spec.name!r}", file=self.where)

    def record_type(self, type_name: str) -> Any:
        if type_name in self.defined:
            return type_name
        if type_name not in self.types:
            raise ConfigError(f"unknown record type {type_name!r}", file=self.where)
        self.defined.add(type_name)
        definition = self.types[type_name]
        return {
            "type": "record", "name": type_name, "namespace": self.namespace,
            "doc": definition["doc"],
            "fields": [self.avro_field(parse_field(line, where=f"{self.where} {type_name}"))
                       for line in definition["fields"]],
        }

    def avro_field(self, spec: FieldSpec, force_required: bool = False) -> dict[str, Any]:
        base = self.avro_type(spec)
        out: dict[str, Any] = {"name": spec.name}
        if spec.required or force_required:
            out["type"] = base
        else:
            out["type"] = ["null", base]
            out["default"] = None
        out["doc"] = field_doc(spec)
        if spec.element:
            out["element"] = spec.element
        if spec.valueset:
            out["valueset"] = spec.valueset
        if spec.tags:
            out["checks"] = dict(sorted(spec.tags.items()))
        return out


def load_yaml(path: Path) -> Any:
    try:
        with path.open(encoding="utf-8") as fh:
            return yaml.safe_load(fh)
    except yaml.YAMLError as exc:
        raise ConfigError(f"invalid YAML: {exc}", file=str(path)) from exc


def expand(lines: list[str], groups: dict[str, list[str]], where: str) -> list[str]:
    """Replace ``<<group`` lines by the group's lines (groups may not nest)."""
    out: list[str] = []
    for line in lines:
        if line.startswith("<<"):
            name = line[2:].strip()
            if name not in groups:
                raise ConfigError(f"unknown field group {name!r}", file=where)
            out.extend(groups[name])
        else:
            out.append(line)
    return out


def load_sources(source_dir: Path = SOURCE_DIR) -> tuple[dict[str, Any], dict[str, Any]]:
    """Merge ``avro/source/*.yaml`` into (record types, dataset field definitions)."""
    types: dict[str, Any] = {}
    datasets: dict[str, Any] = {}
    groups: dict[str, list[str]] = {}
    loaded = [(path, load_yaml(path) or {}) for path in sorted(source_dir.glob("*.yaml"))]
    for path, data in loaded:
        for name, lines in (data.get("groups") or {}).items():
            if name in groups:
                raise ConfigError(f"field group {name!r} defined twice", file=str(path))
            groups[name] = list(lines)
    for path, data in loaded:
        for key in data:
            if key not in ("types", "datasets", "groups"):
                raise ConfigError(f"unknown top-level key {key!r}", file=str(path))
        for name, definition in (data.get("types") or {}).items():
            if name in types:
                raise ConfigError(f"record type {name!r} defined twice", file=str(path))
            types[name] = dict(definition, fields=expand(definition["fields"], groups, str(path)))
        for name, definition in (data.get("datasets") or {}).items():
            if name in datasets:
                raise ConfigError(f"dataset {name!r} defined twice", file=str(path))
            datasets[name] = dict(definition, _file=str(path),
                                  fields=expand(definition.get("fields") or [], groups, str(path)))
    return types, datasets


def build_schema(meta: dict[str, Any], source: dict[str, Any], types: dict[str, Any]) -> dict[str, Any]:
    """The Avro schema of one dataset: shared header, then its own fields."""
    name = meta["name"]
    where = f"{source.get('_file', 'avro/source')} [{name}]"
    namespace = "hip.stat" if meta.get("is_statistic") else "hip.std"
    builder = SchemaBuilder(types, namespace, where)
    fields: list[dict[str, Any]] = [dict(f) for f in HEADER_FIELDS]
    seen = {f["name"] for f in fields}
    key = set(meta["business_key"])
    for line in source.get("fields") or []:
        spec = parse_field(line, where=where)
        if spec.name in seen:
            raise ConfigError(f"field {spec.name!r} defined twice", file=where)
        seen.add(spec.name)
        fields.append(builder.avro_field(spec, force_required=spec.name in key))
    for k in meta["business_key"] + meta["partition_key"] + meta["personal_fields"]:
        if k not in seen:
            raise ConfigError(f"catalogue names field {k!r} that the dataset lacks", file=where)
    doc = f"{meta['number']} {meta['name_zh']}"
    if meta.get("doc"):
        doc += ". " + str(meta["doc"]).strip()
    schema: dict[str, Any] = {"type": "record", "name": name, "namespace": namespace, "doc": doc,
                              "fields": fields}
    if source.get("rules"):
        schema["rules"] = source["rules"]
    return schema


def build_all(catalogue_file: Path = CATALOGUE_FILE,
              source_dir: Path = SOURCE_DIR) -> dict[str, dict[str, Any]]:
    """Every dataset's schema by English name, in notice order."""
    catalogue = load_yaml(catalogue_file)
    types, sources = load_sources(source_dir)
    out: dict[str, dict[str, Any]] = {}
    for meta in catalogue["datasets"]:
        source = sources.get(meta["name"])
        if source is None:
            raise ConfigError(f"no field source for dataset {meta['name']!r}", file=str(source_dir))
        out[meta["name"]] = build_schema(meta, source, types)
    extra = set(sources) - set(out)
    if extra:
        raise ConfigError(f"field source for datasets not in the catalogue: {sorted(extra)}",
                          file=str(source_dir))
    return out


def render(schema: dict[str, Any]) -> str:
    """Stable text of a schema file."""
    return json.dumps(schema, ensure_ascii=False, indent=2) + "\n"


def write_all(schema_dir: Path = SCHEMA_DIR) -> list[Path]:
    """Regenerate ``avro/schemas``; returns the files written or changed."""
    schema_dir.mkdir(parents=True, exist_ok=True)
    changed: list[Path] = []
    schemas = build_all()
    for name, schema in schemas.items():
        path = schema_dir / f"{name}.avsc"
        text = render(schema)
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
            changed.append(path)
    for stale in schema_dir.glob("*.avsc"):
        if stale.stem not in schemas:
            stale.unlink()
            changed.append(stale)
    return changed
