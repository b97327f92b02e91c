"""Declarative mappings: load, validate against source and schema, compile per hospital.

Files (``streams/mappings``)::

    vendor_a.yaml             one per vendor profile: source description, code tables,
                              dictionaries, and the table → dataset mappings
    hospitals/<org>.yaml      one per hospital: organisation code, profile, time zone,
                              renamed tables, code-table additions

Everything is checked at load time (DESIGN rule 7): tables and columns against the profile's DDL,
datasets and fields and their types against the Avro schemas, code tables and their national
codes against the value sets, dictionaries and lookups. Errors are :class:`ConfigError` naming
the file, the line and the field.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Callable
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from hip.errors import ConfigError, RecordError
from streams.core import yamlmarks
from streams.core.source import Decoder, SourceDescription, Table, decoder_for, parse_ddl
from streams.core.transforms import CompileContext, Expr, Fn, Lookups, Row, compile_expr
from streams.core.yamlmarks import line_of

ROOT = Path(__file__).resolve().parents[2]
MAPPINGS_DIR = ROOT / "streams" / "mappings"

_PROFILE_KEYS = {"profile", "source", "code_tables", "dictionaries", "ignore", "mappings"}
_MAPPING_KEYS = {"id", "table", "dataset", "key", "where", "fields"}
_HOSPITAL_KEYS = {"org_code", "name", "profile", "time_zone", "tables", "code_tables", "systems"}
_WHERE_OPS = {"in", "not_in", "null"}

# Dataset catalogue access is injected so the core stays testable without the schema files.
SchemaFields = dict[str, dict[str, Any]]


@dataclass(frozen=True)
class FieldPlan:
    """One dataset field of a compiled mapping."""

    name: str
    fn: Fn
    finish: Callable[[Any], Any]
    columns: frozenset[str]
    required: bool
    from_key: bool  # computable from the primary key alone (key-only delete images)
    column: str | None = None  # the expression is this column, as is
    constant: tuple[Any] | None = None  # the expression is this constant


@dataclass
class CompiledMapping:
    """One source table → one dataset, for one hospital."""

    id: str
    dataset: str
    key_columns: tuple[str, ...]
    business_key: tuple[str, ...]
    fields: list[FieldPlan]
    where: Callable[[Row], bool | None]
    where_columns: frozenset[str]
    # True when the business key needs more than the primary key: a key-only delete image then
    # needs the business key remembered from the row's earlier changes.
    remembers_key: bool = False
    fill: Fill = field(init=False, repr=False)  # the fields of a whole row image, as one generated function

    def __post_init__(self) -> None:
        self.fill = compile_fill(self.fields, self.id)


Fill = Callable[[dict[str, Any], Row, Lookups], list[str]]


def _same(v: Any) -> Any:
    return v


def compile_fill(plans: list[FieldPlan], name: str) -> Fill:
    """One function setting every planned field of ``record`` from a whole row image.

    What a loop over the plans does (each field's expression, then its finisher), written out per
    field: a plain column is read inline, a constant is a name, an identity finisher is left out.
    About 45 fields a record make this the normalizer's hottest loop. Returns the required fields
    that got no value.
    """
    env: dict[str, Any] = {}
    lines = ["def fill(record, row, lookups):", "    get = row.get", "    missing = []"]
    for k, plan in enumerate(plans):
        if plan.column is not None:
            lines.append(f"    v = get({plan.column!r})")
        elif plan.constant is not None:
            env[f"_c{k}"] = plan.constant[0]
            lines.append(f"    v = _c{k}")
        else:
            env[f"_f{k}"] = plan.fn
            lines.append(f"    v = _f{k}(row, lookups)")
        if plan.finish is not _same:
            env[f"_d{k}"] = plan.finish
            lines.append(f"    v = _d{k}(v)")
        if plan.required:
            lines += ["    if v is None:", f"        missing.append({plan.name!r})"]
        lines.append(f"    record[{plan.name!r}] = v")
    lines.append("    return missing")
    exec(compile("\n".join(lines), f"<fields of {name}>", "exec"), env)
    fill: Fill = env["fill"]
    return fill


@dataclass
class TableRoute:
    """Everything needed for events of one captured table of one hospital."""

    org: str
    profile: str
    table: Table
    decoders: dict[str, Decoder]
    mappings: list[CompiledMapping]
    dictionary_key: tuple[str, ...] | None
    # Columns whose JSON value is already the Python value (strings, integers, booleans).
    passthrough: frozenset[str] = frozenset()


@dataclass
class Hospital:
    org_code: str
    name: str
    profile: str
    zone: ZoneInfo
    file: str


@dataclass
class MappingSet:
    """Compiled mappings of every hospital, routed by (org, captured table name)."""

    routes: dict[tuple[str, str], TableRoute] = field(default_factory=dict)
    hospitals: dict[str, Hospital] = field(default_factory=dict)
    ignored: set[tuple[str, str]] = field(default_factory=set)

    def route(self, org: str, table: str) -> TableRoute | None:
        return self.routes.get((org, table))


# --- Avro field types -------------------------------------------------------------------------

def _avro_kind(avro_type: Any) -> tuple[str, bool, int | None, int | None]:
    """(kind, nullable, decimal precision, decimal scale) of an Avro field type."""
    nullable = False
    t = avro_type
    if isinstance(t, list):
        rest = [x for x in t if x != "null"]
        nullable = len(rest) < len(t)
        t = rest[0] if len(rest) == 1 else rest
    if isinstance(t, dict):
        logical = t.get("logicalType")
        if logical == "decimal":
            return "decimal", nullable, int(t["precision"]), int(t.get("scale", 0))
        if logical == "date":
            return "date", nullable, None, None
        if logical in ("timestamp-millis", "timestamp-micros"):
            return "timestamp", nullable, None, None
        if t.get("type") == "array":
            return "array", nullable, None, None
        if t.get("type") == "enum":
            return "string", nullable, None, None
        t = t.get("type")
    kinds = {"string": "string", "int": "int", "long": "int", "boolean": "bool", "double": "double",
             "float": "double"}
    return kinds.get(str(t), "unsupported"), nullable, None, None


_ACCEPTS: dict[str, frozenset[str]] = {
    "string": frozenset(("string", "int")),
    "int": frozenset(("int",)),
    "bool": frozenset(("bool",)),
    "double": frozenset(("double", "int", "decimal")),
    "decimal": frozenset(("decimal", "int")),
    "date": frozenset(("date",)),
    "timestamp": frozenset(("timestamp",)),
}


def _finisher(name: str, kind: str, expr_kind: str, precision: int | None, scale: int | None) -> Callable[[Any], Any]:
    if kind == "string" and expr_kind == "int":
        return lambda v: None if v is None else str(v)
    if kind == "double":
        return lambda v: None if v is None else float(v)
    if kind == "decimal":
        assert precision is not None and scale is not None
        quantum = Decimal(1).scaleb(-scale)
        limit = Decimal(10) ** (precision - scale)

        def dec(v: Any) -> Any:
            if v is None:
                return None
            try:
                q = Decimal(v).quantize(quantum)
            except InvalidOperation:
                raise RecordError("bad_value", f"{name}: {v!r} does not fit decimal({precision},{scale})",
                                  field=name) from None
            if abs(q) >= limit:
                raise RecordError("bad_value", f"{name}: {v} exceeds decimal({precision},{scale})", field=name)
            return q
        return dec
    return _same


# --- loading ----------------------------------------------------------------------------------

def _err(message: str, file: str, node: Any = None, key: Any = None, field_name: str | None = None) -> ConfigError:
    return ConfigError(message, file=file, line=line_of(node, key), field=field_name)


def _check_keys(node: Any, allowed: set[str], file: str, what: str) -> None:
    if not isinstance(node, dict):
        raise _err(f"{what} must be a mapping", file, node)
    for k in node:
        if k not in allowed:
            raise _err(f"unknown key {k!r} in {what}; allowed: {', '.join(sorted(allowed))}", file, node, k, str(k))


def _code_tables(node: Any, file: str) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    if node is None:
        return out
    if not isinstance(node, dict):
        raise _err("code_tables must map a name to {local: national}", file, node)
    for name, table in node.items():
        if not isinstance(table, dict):
            raise _err(f"code table {name} must map local codes to national codes", file, node, name, str(name))
        for local, national in table.items():
            if not isinstance(local, (str, int)) or isinstance(local, bool) or not isinstance(national, str):
                raise _err(f"code table {name}: write codes as quoted strings ({local!r}: {national!r})",
                           file, table, local, str(name))
        out[str(name)] = {str(k): v for k, v in table.items()}
    return out


@dataclass
class ProfileFile:
    """A vendor profile's mapping file, loaded but not yet compiled for a hospital."""

    name: str
    file: str
    source: SourceDescription
    code_tables: dict[str, dict[str, str]]
    code_table_nodes: Any
    dictionaries: dict[str, tuple[str, ...]]
    ignore: set[str]
    mappings: list[Any]


def load_profile(path: Path, root: Path = ROOT) -> ProfileFile:
    file = str(path)
    doc = yamlmarks.load(path)
    _check_keys(doc, _PROFILE_KEYS, file, "a profile")
    for required in ("profile", "source", "mappings"):
        if required not in doc:
            raise _err(f"missing {required!r}", file, doc, field_name=required)
    src = doc["source"]
    _check_keys(src, {"ddl", "dialect"}, file, "source")
    if src.get("dialect") not in ("mariadb", "postgres"):
        raise _err("source dialect is mariadb or postgres", file, src, "dialect", "source.dialect")
    ddl = root / str(src.get("ddl"))
    if not ddl.exists():
        raise _err(f"source description {ddl} not found", file, src, "ddl", "source.ddl")
    source = parse_ddl(ddl, src["dialect"])
    dictionaries: dict[str, tuple[str, ...]] = {}
    for tname, key in (doc.get("dictionaries") or {}).items():
        table = source.tables.get(tname)
        if table is None:
            raise _err(f"dictionary table {tname!r} is not in {ddl.name}", file, doc["dictionaries"], tname, tname)
        cols = tuple(key) if key else table.key
        for c in cols:
            if c not in table.columns:
                raise _err(f"dictionary {tname} has no column {c!r}", file, doc["dictionaries"], tname, tname)
        dictionaries[tname] = cols
    ignore = set(doc.get("ignore") or [])
    for tname in ignore:
        if tname not in source.tables:
            raise _err(f"ignored table {tname!r} is not in {ddl.name}", file, doc.get("ignore"), field_name=tname)
    if not isinstance(doc["mappings"], list):
        raise _err("mappings is a list", file, doc, "mappings", "mappings")
    return ProfileFile(name=str(doc["profile"]), file=file, source=source,
                       code_tables=_code_tables(doc.get("code_tables"), file),
                       code_table_nodes=doc.get("code_tables"), dictionaries=dictionaries, ignore=ignore,
                       mappings=list(doc["mappings"]))


def _is_null(col: str, want: bool) -> Callable[[Row], bool]:
    def test(row: Row) -> bool:
        return (row.get(col) is None) == want
    return test


def _member(col: str, values: frozenset[Any], inside: bool) -> Callable[[Row], bool]:
    def test(row: Row) -> bool:
        return (row.get(col) in values) == inside
    return test


def _where(node: Any, table: Table, file: str, field_name: str) -> tuple[Callable[[Row], bool | None], frozenset[str]]:
    """Row filter: all conditions must hold. Returns None when a needed column is unknown."""
    if node is None:
        return (lambda row: True), frozenset()
    if not isinstance(node, list):
        raise _err("where is a list of conditions", file, node, field_name=field_name)
    tests: list[Callable[[Row], bool]] = []
    columns: set[str] = set()
    for cond in node:
        if not isinstance(cond, dict) or "column" not in cond or len(cond) != 2:
            raise _err("a condition is {column: C, in: [...]} or not_in: [...] or null: true|false",
                       file, cond if isinstance(cond, dict) else node, field_name=field_name)
        col = cond["column"]
        if col not in table.columns:
            raise _err(f"table {table.name} has no column {col!r}", file, cond, "column", field_name)
        (op,) = [k for k in cond if k != "column"]
        if op not in _WHERE_OPS:
            raise _err(f"unknown condition {op!r}", file, cond, op, field_name)
        arg = cond[op]
        columns.add(col)
        if op == "null":
            tests.append(_is_null(col, bool(arg)))
        else:
            if not isinstance(arg, list):
                raise _err(f"{op} takes a list of values", file, cond, op, field_name)
            tests.append(_member(col, frozenset(arg), op == "in"))

    def where(row: Row) -> bool | None:
        return all(t(row) for t in tests)
    return where, frozenset(columns)


def compile_mapping(node: Any, prof: ProfileFile, hospital: Hospital, code_tables: dict[str, dict[str, str]],
                    decoders: dict[str, dict[str, Decoder]], schemas: Callable[[str], tuple[SchemaFields, list[str]]],
                    valueset: Callable[[str], set[str] | None]) -> CompiledMapping:
    """Compile one mapping entry for one hospital."""
    file = prof.file
    _check_keys(node, _MAPPING_KEYS, file, "a mapping")
    for required in ("id", "table", "dataset", "fields"):
        if required not in node:
            raise _err(f"mapping lacks {required!r}", file, node, field_name=required)
    mid = str(node["id"])
    table = prof.source.tables.get(node["table"])
    if table is None:
        raise _err(f"table {node['table']!r} is not in the source description", file, node, "table", "table")
    try:
        fields_by_name, business_key = schemas(node["dataset"])
    except KeyError:
        raise _err(f"unknown dataset {node['dataset']!r}", file, node, "dataset", "dataset") from None
    key_columns = tuple(node.get("key") or table.key)
    for c in key_columns:
        if c not in table.columns:
            raise _err(f"key column {c!r} is not in {table.name}", file, node, "key", "key")
    where, where_columns = _where(node.get("where"), table, file, f"{mid}.where")
    fields_node = node["fields"]
    if not isinstance(fields_node, dict):
        raise _err("fields maps dataset fields to expressions", file, node, "fields", "fields")
    plans: list[FieldPlan] = []
    for fname, expr_node in fields_node.items():
        where_line = line_of(fields_node, fname)
        avro = fields_by_name.get(fname)
        if avro is None:
            raise ConfigError(f"dataset {node['dataset']} has no field {fname!r}", file=file, line=where_line,
                              field=f"{mid}.{fname}")
        ctx = CompileContext(file=file, table=table, source=prof.source, code_tables=code_tables, zone=hospital.zone,
                             dictionaries=prof.dictionaries, decoders=decoders, org=hospital.org_code,
                             field=f"{mid}.{fname}", line=where_line)
        expr: Expr = compile_expr(expr_node, ctx)
        kind, nullable, precision, scale = _avro_kind(avro["type"])
        if expr.kind not in _ACCEPTS.get(kind, frozenset()):
            hint = " (use timestamp: or date:)" if expr.kind in ("datetime", "timestamptz") else ""
            raise ConfigError(f"expression gives {expr.kind} but field {fname} is {kind}{hint}", file=file,
                              line=where_line, field=f"{mid}.{fname}")
        vs = avro.get("valueset")
        if vs:
            allowed = valueset(vs)
            for ct in ctx.used_code_tables:
                if allowed is None:
                    continue
                bad = sorted(set(code_tables[ct].values()) - allowed)
                if bad:
                    raise ConfigError(f"code table {ct} maps to {bad}, not in value set {vs}", file=file,
                                      line=line_of(prof.code_table_nodes, ct) or where_line, field=f"{mid}.{fname}")
        plans.append(FieldPlan(fname, expr.fn, _finisher(fname, kind, expr.kind, precision, scale), expr.columns,
                               required=not nullable, from_key=expr.columns <= set(table.key),
                               column=expr.column, constant=expr.constant))
    mapped = {p.name for p in plans}
    for bk in business_key:
        if bk not in mapped:
            raise _err(f"business key field {bk!r} of {node['dataset']} is not mapped", file, node, "fields",
                       f"{mid}.{bk}")
    for name, avro in fields_by_name.items():
        if name not in mapped and not _avro_kind(avro["type"])[1]:
            raise _err(f"required field {name!r} of {node['dataset']} is not mapped", file, node, "fields",
                       f"{mid}.{name}")
    by_name = {p.name: p for p in plans}
    return CompiledMapping(id=mid, dataset=str(node["dataset"]), key_columns=key_columns,
                           business_key=tuple(business_key), fields=plans, where=where,
                           where_columns=where_columns,
                           remembers_key=not all(by_name[b].from_key for b in business_key))


def load_hospital(path: Path) -> tuple[Hospital, Any]:
    file = str(path)
    doc = yamlmarks.load(path)
    _check_keys(doc, _HOSPITAL_KEYS, file, "a hospital")
    for required in ("org_code", "profile"):
        if required not in doc:
            raise _err(f"missing {required!r}", file, doc, field_name=required)
    org = str(doc["org_code"])
    if not org.isalnum():
        raise _err("org_code must be letters and digits (it is part of topic names)", file, doc, "org_code", "org_code")
    try:
        zone = ZoneInfo(str(doc.get("time_zone", "Asia/Shanghai")))
    except (ZoneInfoNotFoundError, ValueError):
        raise _err(f"unknown time zone {doc.get('time_zone')!r}", file, doc, "time_zone", "time_zone") from None
    return Hospital(org_code=org, name=str(doc.get("name", org)), profile=str(doc["profile"]), zone=zone,
                    file=file), doc


def _catalogue_schemas() -> tuple[Callable[[str], tuple[SchemaFields, list[str]]], Callable[[str], set[str] | None]]:
    from hip import catalogue

    cat = catalogue.load_catalogue()
    header = set(__import__("hip.records", fromlist=["HEADER_NAMES"]).HEADER_NAMES)

    def schemas(name: str) -> tuple[SchemaFields, list[str]]:
        ds = cat.datasets[name]
        return ({f["name"]: f for f in ds.schema["fields"] if f["name"] not in header}, list(ds.business_key))

    cache: dict[str, set[str] | None] = {}

    def valueset(vs: str) -> set[str] | None:
        if vs not in cache:
            try:
                codes = catalogue.load_valueset(vs)
                cache[vs] = set(codes) if codes else None
            except Exception:  # shape-checked code systems (ICD-10 …) have no closed list
                cache[vs] = None
        return cache[vs]
    return schemas, valueset


def load_mappings(directory: Path = MAPPINGS_DIR, *, root: Path = ROOT,
                  schemas: Callable[[str], tuple[SchemaFields, list[str]]] | None = None,
                  valueset: Callable[[str], set[str] | None] | None = None) -> MappingSet:
    """Load every profile and hospital under ``directory`` and compile them; ConfigError if any is wrong."""
    if schemas is None or valueset is None:
        default_schemas, default_valueset = _catalogue_schemas()
        schemas = schemas or default_schemas
        valueset = valueset or default_valueset
    profiles: dict[str, ProfileFile] = {}
    for path in sorted(directory.glob("*.yaml")):
        prof = load_profile(path, root)
        if prof.name in profiles:
            raise ConfigError(f"profile {prof.name} defined twice", file=str(path), field="profile")
        profiles[prof.name] = prof
    out = MappingSet()
    for path in sorted((directory / "hospitals").glob("*.yaml")):
        hospital, doc = load_hospital(path)
        found = profiles.get(hospital.profile)
        if found is None:
            raise _err(f"unknown profile {hospital.profile!r}", hospital.file, doc, "profile", "profile")
        prof = found
        if hospital.org_code in out.hospitals:
            raise _err(f"organisation {hospital.org_code} configured twice", hospital.file, doc, "org_code", "org_code")
        out.hospitals[hospital.org_code] = hospital
        code_tables = {k: dict(v) for k, v in prof.code_tables.items()}
        for name, extra in _code_tables(doc.get("code_tables"), hospital.file).items():
            if name not in code_tables:
                raise _err(f"code table {name!r} is not in profile {prof.name}", hospital.file,
                           doc["code_tables"], name, name)
            code_tables[name].update(extra)
        renamed: dict[str, str] = {}
        for logical, actual in (doc.get("tables") or {}).items():
            if logical not in prof.source.tables:
                raise _err(f"profile {prof.name} has no table {logical!r}", hospital.file, doc["tables"], logical, logical)
            renamed[logical] = str(actual)
        decoders = {t.name: {c.name: decoder_for(c, prof.source.dialect) for c in t.columns.values()}
                    for t in prof.source.tables.values()}
        by_table: dict[str, list[CompiledMapping]] = {}
        seen_ids: set[str] = set()
        for node in prof.mappings:
            cm = compile_mapping(node, prof, hospital, code_tables, decoders, schemas, valueset)
            if cm.id in seen_ids:
                raise _err(f"mapping id {cm.id} used twice", prof.file, node, "id", "id")
            seen_ids.add(cm.id)
            by_table.setdefault(str(node["table"]), []).append(cm)
        for tname, table in prof.source.tables.items():
            actual = renamed.get(tname, tname)
            maps = by_table.get(tname, [])
            dict_key = prof.dictionaries.get(tname)
            if not maps and dict_key is None:
                if tname in prof.ignore:
                    out.ignored.add((hospital.org_code, actual))
                continue
            out.routes[(hospital.org_code, actual)] = TableRoute(
                org=hospital.org_code, profile=prof.name, table=table, decoders=decoders[tname],
                mappings=maps, dictionary_key=dict_key,
                passthrough=frozenset(c.name for c in table.columns.values() if c.kind in ("string", "int", "bool")))
    return out


__all__ = ["CompiledMapping", "FieldPlan", "Hospital", "MappingSet", "TableRoute", "load_mappings",
           "Lookups"]
