"""The closed set of typed field transforms a mapping may use, compiled into closures.

A field expression in YAML is either a column name (a plain string) or a one-key mapping naming a
transform. There are no expression strings: every transform below is checked when the mapping
loads (columns exist, kinds fit, code tables and dictionaries are known) and compiled once into a
function ``(row, lookups) -> value``.

============== ===================================================== ===========
transform      YAML                                                   result kind
============== ===================================================== ===========
column         ``BRID`` or ``{column: BRID}``                          column's
const          ``{const: "1"}``                                         str/int/bool/decimal
trim           ``{trim: BRXM}`` (blank → null)                         string
text           ``{text: BRID}`` (number → decimal digits)              string
timestamp      ``{timestamp: GHSJ}`` (local wall clock + zone → UTC)   timestamp (epoch ms)
date           ``{date: GHSJ}`` (local calendar date)                  date
code           ``{code: {from: BRXB, table: sex, unknown: error}}``    string
concat         ``{concat: [a, b], sep: "-"}`` (nulls skipped)          string
add/sub/mul    ``{add: [a, b]}``, ``{sub: [a, b]}``, ``{mul: [a, b]}``  decimal (exact)
neg            ``{neg: JE}``                                            decimal
coalesce       ``{coalesce: [a, b]}``                                   first's kind
lookup         ``{lookup: {table: GY_KSDM, key: KSDM, field: KSMC}}``  dictionary column's
flag           ``{flag: {from: THBZ, when: [1]}}``                      bool
age            ``{age: {birth: CSNY, at: RYSJ}}`` (whole years)         int
============== ===================================================== ===========
"""
from __future__ import annotations

from dataclasses import dataclass
from dataclasses import field as dc_field
from datetime import date, datetime, timezone, tzinfo
from decimal import Decimal
from typing import Any, Callable, Mapping

from hip.errors import ConfigError, RecordError
from streams.core.source import Decoder, SourceDescription, Table
from streams.core.yamlmarks import line_of

Row = dict[str, Any]
Lookups = Mapping[str, Any]
Fn = Callable[[Row, Lookups], Any]

_EPOCH_UTC = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MS = 1000

NUMERIC = frozenset(("int", "decimal"))


@dataclass(frozen=True)
class Expr:
    """A compiled field expression: its function, result kind and the columns it reads.

    ``column`` names the column a plain column expression returns, ``constant`` holds what a
    constant returns (a 1-tuple, as the constant may be ``None``-like): the mapping's generated
    field code reads those inline instead of calling ``fn``.
    """

    fn: Fn
    kind: str
    columns: frozenset[str]
    column: str | None = None
    constant: tuple[Any] | None = None


@dataclass
class CompileContext:
    """What a transform may refer to while one mapping compiles."""

    file: str
    table: Table
    source: SourceDescription
    code_tables: dict[str, dict[str, str]]
    zone: tzinfo
    dictionaries: dict[str, tuple[str, ...]]
    decoders: dict[str, dict[str, Decoder]]
    org: str
    field: str = ""
    line: int | None = None
    used_code_tables: set[str] = dc_field(default_factory=set)

    def error(self, message: str, node: Any) -> ConfigError:
        return ConfigError(message, file=self.file, line=line_of(node) or self.line, field=self.field)


def lookup_key(org: str, table: str, values: tuple[Any, ...] | list[Any]) -> str:
    """Key of one captured dictionary row in the lookup state (org + table + key values)."""
    return org + "|" + table + "|" + "|".join("" if v is None else str(v) for v in values)


def to_utc_ms(value: datetime, zone: tzinfo) -> int:
    """Epoch milliseconds of a naive local wall-clock time in ``zone`` (or of an aware time)."""
    aware = value if value.tzinfo is not None else value.replace(tzinfo=zone)
    delta = aware - _EPOCH_UTC
    return (delta.days * 86400 + delta.seconds) * _MS + delta.microseconds // 1000


def compile_expr(node: Any, ctx: CompileContext) -> Expr:
    """Compile one YAML expression node; errors name the file, line and field."""
    if isinstance(node, str):
        return _column(node, node, ctx)
    if not isinstance(node, dict) or len(node) == 0:
        raise ctx.error(f"a field expression is a column name or a one-key transform, not {node!r}", node)
    keys = [k for k in node if k != "sep"]
    if len(keys) != 1:
        raise ctx.error(f"one transform per expression, got {sorted(map(str, node))}", node)
    name = keys[0]
    arg = node[name]
    builder = _TRANSFORMS.get(name)
    if builder is None:
        raise ctx.error(f"unknown transform {name!r}; known: {', '.join(sorted(_TRANSFORMS))}", node)
    if name != "concat" and "sep" in node:
        raise ctx.error("'sep' belongs to concat only", node)
    return builder(arg, node, ctx)


def _column(name: Any, node: Any, ctx: CompileContext) -> Expr:
    if not isinstance(name, str):
        raise ctx.error(f"column name must be a string, not {name!r}", node)
    column = ctx.table.columns.get(name)
    if column is None:
        raise ctx.error(f"table {ctx.table.name} has no column {name!r}", node)

    def get(row: Row, lookups: Lookups) -> Any:
        return row.get(name)
    return Expr(get, column.kind, frozenset((name,)), column=name)


def _const(arg: Any, node: Any, ctx: CompileContext) -> Expr:
    if isinstance(arg, bool):
        kind = "bool"
    elif isinstance(arg, int):
        kind = "int"
    elif isinstance(arg, float):
        arg = Decimal(str(arg))
        kind = "decimal"
    elif isinstance(arg, str):
        kind = "string"
    else:
        raise ctx.error(f"a constant is a string, number or boolean, not {arg!r}", node)
    value = arg

    def const(row: Row, lookups: Lookups) -> Any:
        return value
    return Expr(const, kind, frozenset(), constant=(value,))


def _need(expr: Expr, kinds: frozenset[str] | tuple[str, ...], what: str, node: Any, ctx: CompileContext) -> None:
    if expr.kind not in kinds:
        raise ctx.error(f"{what} needs {' or '.join(sorted(kinds))}, got {expr.kind}", node)


def _trim(arg: Any, node: Any, ctx: CompileContext) -> Expr:
    inner = compile_expr(arg, ctx)
    _need(inner, ("string",), "trim", node, ctx)
    f = inner.fn

    def trim(row: Row, lookups: Lookups) -> Any:
        v = f(row, lookups)
        if v is None:
            return None
        v = v.strip()
        return v or None
    return Expr(trim, "string", inner.columns)


def _text(arg: Any, node: Any, ctx: CompileContext) -> Expr:
    inner = compile_expr(arg, ctx)
    _need(inner, ("string", "int", "decimal"), "text", node, ctx)
    f = inner.fn

    def text(row: Row, lookups: Lookups) -> Any:
        v = f(row, lookups)
        return None if v is None else str(v)
    return Expr(text, "string", inner.columns)


def _timestamp(arg: Any, node: Any, ctx: CompileContext) -> Expr:
    inner = compile_expr(arg, ctx)
    _need(inner, ("datetime", "timestamptz"), "timestamp", node, ctx)
    f = inner.fn
    zone = ctx.zone

    def timestamp(row: Row, lookups: Lookups) -> Any:
        v = f(row, lookups)
        return None if v is None else to_utc_ms(v, zone)
    return Expr(timestamp, "timestamp", inner.columns)


def _date(arg: Any, node: Any, ctx: CompileContext) -> Expr:
    inner = compile_expr(arg, ctx)
    _need(inner, ("datetime", "timestamptz", "date"), "date", node, ctx)
    f = inner.fn
    zone = ctx.zone
    kind = inner.kind

    def local_date(row: Row, lookups: Lookups) -> Any:
        v = f(row, lookups)
        if v is None:
            return None
        if kind == "date":
            return v
        if kind == "timestamptz":
            return v.astimezone(zone).date()
        return v.date()
    return Expr(local_date, "date", inner.columns)


def _code(arg: Any, node: Any, ctx: CompileContext) -> Expr:
    if not isinstance(arg, dict) or "from" not in arg or "table" not in arg:
        raise ctx.error("code needs {from: <expression>, table: <code table>}", node)
    extra = set(arg) - {"from", "table", "unknown"}
    if extra:
        raise ctx.error(f"unknown code option(s) {sorted(extra)}", node)
    inner = compile_expr(arg["from"], ctx)
    _need(inner, ("string", "int", "bool"), "code", node, ctx)
    table_name = arg["table"]
    table = ctx.code_tables.get(table_name)
    if table is None:
        raise ctx.error(f"unknown code table {table_name!r}", node)
    ctx.used_code_tables.add(table_name)
    unknown = arg.get("unknown", "error")
    if unknown not in ("error", "null"):
        raise ctx.error("code option unknown is 'error' (dead letter) or 'null'", node)
    f = inner.fn
    field_name = ctx.field
    strict = unknown == "error"

    def code(row: Row, lookups: Lookups) -> Any:
        v = f(row, lookups)
        if v is None:
            return None
        local = v if isinstance(v, str) else str(int(v))
        national = table.get(local)
        if national is None and strict:
            raise RecordError("unknown_code", f"{field_name}: local code {local!r} is not in code table "
                                              f"{table_name}", field=field_name)
        return national
    return Expr(code, "string", inner.columns)


def _list_args(arg: Any, node: Any, ctx: CompileContext, what: str, n: int | None = None) -> list[Expr]:
    if not isinstance(arg, list) or not arg or (n is not None and len(arg) != n):
        count = f"{n} " if n else ""
        raise ctx.error(f"{what} takes a list of {count}expressions", node)
    return [compile_expr(a, ctx) for a in arg]


def _concat(arg: Any, node: Any, ctx: CompileContext) -> Expr:
    parts = _list_args(arg, node, ctx, "concat")
    for p in parts:
        _need(p, ("string", "int"), "concat", node, ctx)
    sep = node.get("sep", "")
    if not isinstance(sep, str):
        raise ctx.error("sep must be a string", node)
    fns = [p.fn for p in parts]

    def concat(row: Row, lookups: Lookups) -> Any:
        values = [str(v) for v in (f(row, lookups) for f in fns) if v is not None and v != ""]
        return sep.join(values) if values else None
    return Expr(concat, "string", frozenset().union(*(p.columns for p in parts)))


def _arith(op: str) -> Callable[[Any, Any, CompileContext], Expr]:
    def build(arg: Any, node: Any, ctx: CompileContext) -> Expr:
        parts = _list_args(arg, node, ctx, op, None if op == "add" else 2)
        for p in parts:
            _need(p, NUMERIC, op, node, ctx)
        fns = [p.fn for p in parts]
        columns = frozenset().union(*(p.columns for p in parts))
        if op == "add":
            def add(row: Row, lookups: Lookups) -> Any:
                total = Decimal(0)
                for f in fns:
                    v = f(row, lookups)
                    if v is None:
                        return None
                    total += v
                return total
            return Expr(add, "decimal", columns)
        a, b = fns

        if op == "sub":
            def sub(row: Row, lookups: Lookups) -> Any:
                x, y = a(row, lookups), b(row, lookups)
                return None if x is None or y is None else Decimal(x) - Decimal(y)
            return Expr(sub, "decimal", columns)

        def mul(row: Row, lookups: Lookups) -> Any:
            x, y = a(row, lookups), b(row, lookups)
            return None if x is None or y is None else Decimal(x) * Decimal(y)
        return Expr(mul, "decimal", columns)
    return build


def _neg(arg: Any, node: Any, ctx: CompileContext) -> Expr:
    inner = compile_expr(arg, ctx)
    _need(inner, NUMERIC, "neg", node, ctx)
    f = inner.fn

    def neg(row: Row, lookups: Lookups) -> Any:
        v = f(row, lookups)
        return None if v is None else -Decimal(v)
    return Expr(neg, "decimal", inner.columns)


def _coalesce(arg: Any, node: Any, ctx: CompileContext) -> Expr:
    parts = _list_args(arg, node, ctx, "coalesce")
    kinds = {p.kind for p in parts}
    if len(kinds) != 1:
        raise ctx.error(f"coalesce needs expressions of one kind, got {sorted(kinds)}", node)
    fns = [p.fn for p in parts]

    def coalesce(row: Row, lookups: Lookups) -> Any:
        for f in fns:
            v = f(row, lookups)
            if v is not None:
                return v
        return None
    return Expr(coalesce, parts[0].kind, frozenset().union(*(p.columns for p in parts)))


def _lookup(arg: Any, node: Any, ctx: CompileContext) -> Expr:
    if not isinstance(arg, dict) or not {"table", "key", "field"} <= set(arg) or len(arg) != 3:
        raise ctx.error("lookup needs exactly {table, key, field}", node)
    table_name = arg["table"]
    if table_name not in ctx.dictionaries:
        raise ctx.error(f"lookup table {table_name!r} is not declared under dictionaries", node)
    table = ctx.source.tables[table_name]
    field_name = arg["field"]
    column = table.columns.get(field_name)
    if column is None:
        raise ctx.error(f"dictionary {table_name} has no column {field_name!r}", node)
    raw_keys = arg["key"] if isinstance(arg["key"], list) else [arg["key"]]
    keys = [compile_expr(k, ctx) for k in raw_keys]
    if len(keys) != len(ctx.dictionaries[table_name]):
        raise ctx.error(f"dictionary {table_name} is keyed by {list(ctx.dictionaries[table_name])}", node)
    fns = [k.fn for k in keys]
    prefix = ctx.org + "|" + table_name + "|"
    decode = ctx.decoders[table_name][field_name]

    def lookup(row: Row, lookups: Lookups) -> Any:
        parts = []
        for f in fns:
            v = f(row, lookups)
            if v is None:
                return None
            parts.append(str(v))
        entry = lookups.get(prefix + "|".join(parts))
        if entry is None:
            return None
        return decode(entry.get(field_name))
    return Expr(lookup, column.kind, frozenset().union(*(k.columns for k in keys)))


def _flag(arg: Any, node: Any, ctx: CompileContext) -> Expr:
    # "when", not "true": YAML reads a bare true key as a boolean.
    if not isinstance(arg, dict) or set(arg) != {"from", "when"} or not isinstance(arg["when"], list):
        raise ctx.error("flag needs {from: <expression>, when: [values that mean true]}", node)
    inner = compile_expr(arg["from"], ctx)
    truthy = frozenset(arg["when"])
    f = inner.fn

    def flag(row: Row, lookups: Lookups) -> Any:
        v = f(row, lookups)
        return None if v is None else v in truthy
    return Expr(flag, "bool", inner.columns)


def _age(arg: Any, node: Any, ctx: CompileContext) -> Expr:
    if not isinstance(arg, dict) or set(arg) != {"birth", "at"}:
        raise ctx.error("age needs {birth: <date>, at: <date or time>}", node)
    birth = compile_expr(arg["birth"], ctx)
    at = compile_expr(arg["at"], ctx)
    _need(birth, ("date",), "age birth", node, ctx)
    _need(at, ("date", "datetime"), "age at", node, ctx)
    fb, fa = birth.fn, at.fn

    def age(row: Row, lookups: Lookups) -> Any:
        b, a = fb(row, lookups), fa(row, lookups)
        if b is None or a is None:
            return None
        ad: date = a.date() if isinstance(a, datetime) else a
        years: int = ad.year - b.year - ((ad.month, ad.day) < (b.month, b.day))
        return years
    return Expr(age, "int", birth.columns | at.columns)


_TRANSFORMS: dict[str, Callable[[Any, Any, CompileContext], Expr]] = {
    "column": lambda arg, node, ctx: _column(arg, node, ctx),
    "const": _const, "trim": _trim, "text": _text, "timestamp": _timestamp, "date": _date,
    "code": _code, "concat": _concat, "add": _arith("add"), "sub": _arith("sub"),
    "mul": _arith("mul"), "neg": _neg, "coalesce": _coalesce, "lookup": _lookup, "flag": _flag,
    "age": _age,
}
TRANSFORM_NAMES = frozenset(_TRANSFORMS)
