"""The catalogue of the 72 standard datasets and their value sets.

Metadata comes from ``avro/catalogue.yaml``, each dataset's schema from the committed
``avro/schemas/<name>.avsc``, value sets from ``avro/valuesets/<id>.tsv`` (code tables) or
``<id>.yaml`` (code systems checked by shape, e.g. ICD-10).

A value-set TSV starts with ``# id:``, ``# name:``, ``# source:``, ``# strict: yes|no`` and any
number of ``# note:`` lines (conflicts between sources, tables not found), then a
``code<TAB>label`` header and one code per line. ``strict: no`` marks a partial or unverified
table: membership findings against it are warnings instead of errors.
"""
from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import fastavro

from hip.errors import ConfigError
from hip.schemagen import AVRO_DIR, CATALOGUE_FILE, SCHEMA_DIR, VALUESET_DIR, load_yaml

_KEYS = {"number", "name", "name_zh", "category", "business_key", "partition_key", "personal_fields",
         "ws445", "hdsd", "ws500", "systems", "is_statistic", "doc"}


@dataclass(frozen=True, eq=False)
class Dataset:
    """One standard dataset: metadata from the catalogue plus its Avro schema."""

    number: int
    name: str
    name_zh: str
    category: str
    business_key: list[str]
    partition_key: list[str]
    personal_fields: list[str]
    ws445: str | None
    ws500: str | None
    systems: list[str]
    is_statistic: bool
    schema: dict[str, Any] = field(repr=False, compare=False)
    parsed: Any = field(repr=False, compare=False)
    hdsd: str | None = None
    doc: str | None = None

    @property
    def namespace(self) -> str:
        return "hip.stat" if self.is_statistic else "hip.std"

    @property
    def warehouse_schema(self) -> str:
        """The warehouse schema of its table, also its topic's prefix: ``stat`` or ``std``."""
        return "stat" if self.is_statistic else "std"

    @property
    def warehouse_table(self) -> str:
        return f"{self.warehouse_schema}.{self.name}"

    @property
    def topic(self) -> str:
        """Named as its warehouse table."""
        return self.warehouse_table

    @property
    def fields(self) -> list[dict[str, Any]]:
        """Every Avro field, header first."""
        fields: list[dict[str, Any]] = self.schema["fields"]
        return fields

    @property
    def rules(self) -> list[dict[str, Any]]:
        """Cross-field conformance rules declared for this dataset."""
        rules: list[dict[str, Any]] = self.schema.get("rules", [])
        return rules

    @functools.cached_property
    def named_types(self) -> dict[str, dict[str, Any]]:
        """Record types defined inside the schema, by short and full name (arrays may refer by name)."""
        out: dict[str, dict[str, Any]] = {}

        def walk(t: Any) -> None:
            if isinstance(t, list):
                for x in t:
                    walk(x)
            elif isinstance(t, dict):
                if t.get("type") == "record":
                    out[t["name"]] = t
                    out[f"{t.get('namespace', self.namespace)}.{t['name']}"] = t
                    for f in t["fields"]:
                        walk(f["type"])
                elif t.get("type") == "array":
                    walk(t["items"])

        for f in self.schema["fields"]:
            walk(f["type"])
        return out

    def field(self, name: str) -> dict[str, Any]:
        """The Avro field called ``name``; KeyError names the dataset when absent."""
        for f in self.schema["fields"]:
            if f["name"] == name:
                return dict(f)
        raise KeyError(f"dataset {self.name} has no field {name!r}")


@dataclass(frozen=True)
class Catalogue:
    """All datasets by English name, in notice order."""

    datasets: dict[str, Dataset]
    categories: dict[str, str]

    def by_number(self, number: int) -> Dataset:
        for ds in self.datasets.values():
            if ds.number == number:
                return ds
        raise KeyError(f"no dataset number {number}")

    def __getitem__(self, name: str) -> Dataset:
        try:
            return self.datasets[name]
        except KeyError:
            raise KeyError(f"unknown dataset {name!r}") from None

    def __iter__(self) -> Any:
        return iter(self.datasets.values())

    def source_names(self) -> list[str]:
        """The datasets records come from (not computed statistics), in notice order."""
        return [ds.name for ds in self.datasets.values() if not ds.is_statistic]

    def __len__(self) -> int:
        return len(self.datasets)


def read_catalogue(catalogue_file: Path = CATALOGUE_FILE, schema_dir: Path = SCHEMA_DIR) -> Catalogue:
    """Read and check the catalogue and its schemas (uncached; see ``load_catalogue``)."""
    raw = load_yaml(catalogue_file)
    where = str(catalogue_file)
    categories: dict[str, str] = raw.get("categories") or {}
    datasets: dict[str, Dataset] = {}
    numbers: set[int] = set()
    for entry in raw["datasets"]:
        unknown = set(entry) - _KEYS
        if unknown:
            raise ConfigError(f"unknown keys {sorted(unknown)}", file=where, field=str(entry.get("name")))
        name = entry["name"]
        if name in datasets or entry["number"] in numbers:
            raise ConfigError("dataset name or number repeated", file=where, field=name)
        if entry["category"] not in categories:
            raise ConfigError(f"unknown category {entry['category']!r}", file=where, field=name)
        if not set(entry["partition_key"]) <= set(entry["business_key"]):
            raise ConfigError("partition_key must be part of business_key", file=where, field=name)
        numbers.add(entry["number"])
        path = schema_dir / f"{name}.avsc"
        try:
            schema = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError("schema file missing (run `hip datasets generate`)", file=str(path)) from None
        try:
            parsed = fastavro.parse_schema(json.loads(json.dumps(schema)), _write_hint=False)
        except Exception as exc:  # fastavro raises several unrelated types for bad schemas
            raise ConfigError(f"invalid Avro schema: {exc}", file=str(path)) from exc
        datasets[name] = Dataset(
            number=int(entry["number"]), name=name, name_zh=entry["name_zh"],
            category=entry["category"], business_key=list(entry["business_key"]),
            partition_key=list(entry["partition_key"]),
            personal_fields=list(entry.get("personal_fields") or []),
            ws445=entry.get("ws445"), ws500=entry.get("ws500"),
            systems=list(entry.get("systems") or []),
            is_statistic=bool(entry.get("is_statistic", False)),
            schema=schema, parsed=parsed, hdsd=entry.get("hdsd"), doc=entry.get("doc"))
    return Catalogue(datasets=datasets, categories=categories)


@functools.lru_cache(maxsize=1)
def load_catalogue() -> Catalogue:
    """The catalogue of the committed schemas, read once per process."""
    return read_catalogue()


# ---------------------------------------------------------------- value sets


@dataclass(frozen=True)
class ValueSet:
    """A national code table (``kind`` table) or a code system checked by shape (``pattern``)."""

    id: str
    name: str
    kind: str
    codes: dict[str, str]
    pattern: str | None = None
    source: str | None = None
    notes: tuple[str, ...] = ()
    strict: bool = True

    def __contains__(self, code: object) -> bool:
        if self.kind == "pattern":
            return isinstance(code, str) and re.fullmatch(self.pattern or "", code) is not None
        return code in self.codes


def _read_tsv(path: Path) -> ValueSet:
    meta: dict[str, str] = {}
    notes: list[str] = []
    codes: dict[str, str] = {}
    header_seen = False
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not raw.strip():
            continue
        if raw.startswith("#"):
            key, sep, value = raw[1:].strip().partition(":")
            if sep and key.strip() in ("id", "name", "source", "strict"):
                meta[key.strip()] = value.strip()
            elif sep and key.strip() == "note":
                notes.append(value.strip())
            continue
        parts = raw.split("\t")
        if not header_seen:
            if parts[:2] != ["code", "label"]:
                raise ConfigError("first row must be 'code<TAB>label'", file=str(path), line=number)
            header_seen = True
            continue
        if len(parts) < 2 or not parts[0]:
            raise ConfigError("expected code<TAB>label", file=str(path), line=number)
        if parts[0] in codes:
            raise ConfigError(f"code {parts[0]!r} repeated", file=str(path), line=number)
        codes[parts[0]] = parts[1]
    if meta.get("id") != path.stem:
        raise ConfigError("'# id:' line must equal the file name", file=str(path))
    return ValueSet(id=path.stem, name=meta.get("name", ""), kind="table", codes=codes,
                    source=meta.get("source"), notes=tuple(notes),
                    strict=meta.get("strict", "yes") != "no")


def _read_yaml(path: Path) -> ValueSet:
    data = load_yaml(path)
    if data.get("id") != path.stem:
        raise ConfigError("id must equal the file name", file=str(path), field="id")
    kind = data.get("kind", "table")
    if kind == "pattern":
        re.compile(data["pattern"])
    return ValueSet(id=data["id"], name=data.get("name", ""), kind=kind,
                    codes={str(k): str(v) for k, v in (data.get("codes") or {}).items()},
                    pattern=data.get("pattern"), source=data.get("source"),
                    notes=tuple(data.get("notes") or ()), strict=bool(data.get("strict", True)))


@functools.lru_cache(maxsize=None)
def load_valueset_info(vs_id: str, valueset_dir: Path = VALUESET_DIR) -> ValueSet:
    """A value set with its metadata; ConfigError when no file has that id."""
    for suffix, reader in ((".tsv", _read_tsv), (".yaml", _read_yaml)):
        path = valueset_dir / f"{vs_id}{suffix}"
        if path.exists():
            return reader(path)
    raise ConfigError(f"no value set {vs_id!r}", file=str(valueset_dir))


def load_valueset(vs_id: str) -> dict[str, str]:
    """Code → label of a value set (empty for a code system checked by shape only)."""
    return dict(load_valueset_info(vs_id).codes)


def valueset_ids(valueset_dir: Path = VALUESET_DIR) -> list[str]:
    """Every value set id present on disk."""
    return sorted({p.stem for p in valueset_dir.iterdir() if p.suffix in (".tsv", ".yaml")})


__all__ = ["AVRO_DIR", "Catalogue", "Dataset", "ValueSet", "load_catalogue", "load_valueset",
           "load_valueset_info", "read_catalogue", "valueset_ids"]
