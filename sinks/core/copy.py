"""Rows for ``COPY … FROM STDIN`` in PostgreSQL's text format.

Text format: columns separated by TAB, rows by LF, ``\\N`` for NULL, and backslash escapes for
backslash, TAB, LF and CR inside values. jsonb values are JSON text written by ``to_json`` (exact
decimals, ISO instants), escaped like any other text. NUL cannot be stored in PostgreSQL text, so
a value containing it is a record error found here rather than by the database.
"""
from __future__ import annotations

import datetime as dt
import json
import math
from decimal import Decimal
from typing import Any, Callable, Mapping, Sequence

from hip.errors import RecordError

from sinks.core.table import DELETED, ColumnLike

NULL = "\\N"
_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})
_json_string = json.JSONEncoder(ensure_ascii=False).encode


def _refuse(value: Any) -> Any:
    raise TypeError(type(value).__name__)


def _plain_json_encoder() -> Callable[[Any], str]:
    """The C encoder for plain JSON values; it refuses decimals, instants and NaN, which ``to_json`` handles.

    ``JSONEncoder.encode`` builds its C encoder anew for every value, which cost more than the
    encoding (1.9 µs against 1.0 for a two-element diagnosis list); this one is built once.
    """
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:  # an interpreter without the C accelerator
        return json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode
    chunks = make(None, _refuse, json.encoder.encode_basestring, None, ":", ",", False, False, False)
    return lambda value: "".join(chunks(value, 0))


_json_plain = _plain_json_encoder()

Encoder = Callable[[Any], str]


def escape(text: str) -> str:
    """Escape one text value for the COPY text format."""
    # Most values need no escaping; four substring tests are cheaper than one translate.
    if "\\" in text or "\t" in text or "\n" in text or "\r" in text:
        text = text.translate(_ESCAPES)
    if "\x00" in text:
        raise RecordError("nul_character", "text contains a NUL character, which PostgreSQL cannot store")
    return text


def _timestamp(value: dt.datetime) -> str:
    # Naive instants are taken as UTC: the codec returns aware UTC values, and the session is UTC.
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.timezone.utc)
    return value.isoformat()


def _float(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    return repr(value)


def to_json(value: Any) -> str:
    """JSON text for a jsonb column: decimals keep every digit, instants become ISO strings."""
    if value is None:
        return "null"
    if isinstance(value, str):
        return _json_string(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise RecordError("json_non_finite", f"non-finite decimal {value} cannot be JSON")
        return format(value, "f")
    if isinstance(value, float):
        if not math.isfinite(value):
            raise RecordError("json_non_finite", f"non-finite number {value} cannot be JSON")
        return repr(value)
    if isinstance(value, dt.datetime):
        return _json_string(_timestamp(value))
    if isinstance(value, dt.date):
        return _json_string(value.isoformat())
    if isinstance(value, (bytes, bytearray)):
        return _json_string(bytes(value).hex())
    if isinstance(value, Mapping):
        return "{" + ",".join(_json_string(str(k)) + ":" + to_json(v) for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(to_json(v) for v in value) + "]"
    raise RecordError("unsupported_type", f"cannot write a {type(value).__name__} as JSON")


def encode_value(value: Any) -> str:
    """Encode one value by its Python type (the codec's types: see ``hip.codec``)."""
    if value is None:
        return NULL
    if isinstance(value, str):
        return escape(value)
    if isinstance(value, bool):
        return "t" if value else "f"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, float):
        return _float(value)
    if isinstance(value, dt.datetime):
        return _timestamp(value)
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, (bytes, bytearray)):
        return "\\\\x" + bytes(value).hex()
    if isinstance(value, (Mapping, list, tuple)):
        return escape(to_json(value))
    raise RecordError("unsupported_type", f"cannot write a {type(value).__name__} value")


def encode_json(value: Any) -> str:
    if value is None:
        return NULL
    try:
        text = _json_plain(value)
    except (TypeError, ValueError):
        text = to_json(value)
    return escape(text)


# The common column types' encoders, written once as code: ``{v}`` holds the value and ends up
# holding its text; anything unusual goes to ``encode_value``. Each is compiled into a function
# here, and ``compile_line`` writes the same code out per column (a call per value was a third of a
# line's cost).
_FAST_TEXT = ("if {v}.__class__ is str:\n"
              "    if '\\\\' in {v} or '\\t' in {v} or '\\n' in {v} or '\\r' in {v} or '\\x00' in {v}:\n"
              "        {v} = escape({v})\n"
              "else:\n"
              "    {v} = encode_value({v})\n")
_FAST_TIMESTAMP = ("if {v}.__class__ is datetime and {v}.tzinfo is not None:\n"
                   "    {v} = {v}.isoformat()\n"
                   "else:\n"
                   "    {v} = encode_value({v})\n")
# Numbers and dates whose ``str`` is already valid COPY input.
_FAST_STR_OF = ("if {v}.__class__ is Decimal or {v}.__class__ is int or {v}.__class__ is date:\n"
                "    {v} = str({v})\n"
                "else:\n"
                "    {v} = encode_value({v})\n")
_NAMES: dict[str, Any] = {"NULL": NULL, "escape": escape, "encode_value": encode_value, "datetime": dt.datetime,
                          "date": dt.date, "Decimal": Decimal}


def _compile(source: str, name: str, env: dict[str, Any]) -> Any:
    exec(compile(source, f"<{name}>", "exec"), env)  # noqa: S102 - our own text
    return env[name]


def _encoder(fast: str, name: str) -> Encoder:
    body = "".join("    " + line + "\n" for line in fast.format(v="v").splitlines())
    return _compile(f"def {name}(v):\n{body}    return v\n", name, dict(_NAMES))  # type: ignore[no-any-return]


encode_text = _encoder(_FAST_TEXT, "encode_text")
encode_timestamp = _encoder(_FAST_TIMESTAMP, "encode_timestamp")
encode_str_of = _encoder(_FAST_STR_OF, "encode_str_of")
_INLINE = {encode_text: _FAST_TEXT, encode_timestamp: _FAST_TIMESTAMP, encode_str_of: _FAST_STR_OF}


_BY_TYPE: dict[str, Encoder] = {"jsonb": encode_json, "json": encode_json, "text": encode_text,
                                "timestamptz": encode_timestamp, "date": encode_str_of,
                                "bigint": encode_str_of, "integer": encode_str_of, "smallint": encode_str_of}


def encoder_for(column: ColumnLike) -> Encoder:
    """The encoder of one column: JSON columns always get JSON text, others go by value type."""
    pg_type = column.pg_type.lower()
    if pg_type.startswith(("numeric", "decimal")):
        return encode_str_of
    if pg_type.startswith(("varchar", "character varying", "char")):
        return encode_text
    return _BY_TYPE.get(pg_type, encode_value)


class RowEncoder:
    """Encodes records into COPY text lines for a fixed list of columns."""

    def __init__(self, columns: Sequence[ColumnLike]) -> None:
        self.columns = list(columns)
        self._plan = [(c.name, encoder_for(c)) for c in self.columns if c.name != DELETED]
        names = [c.name for c in self.columns]
        self._deleted_at = names.index(DELETED) if DELETED in names else None
        self._line = compile_line(self._plan, self._deleted_at)

    def line(self, record: Mapping[str, Any]) -> str:
        """One COPY line (without the LF); ``deleted`` comes from the record's ``op``."""
        try:
            return self._line(record)
        except RecordError as exc:
            raise self._locate(record, exc) from None

    def _locate(self, record: Mapping[str, Any], error: RecordError) -> RecordError:
        # Off the hot path: name the field that failed.
        for name, enc in self._plan:
            try:
                enc(record.get(name))
            except RecordError as exc:
                return RecordError(exc.reason, f"{name}: {exc}", field=name)
        return error


def compile_line(plan: Sequence[tuple[str, Encoder]], deleted_at: int | None) -> Callable[[Mapping[str, Any]], str]:
    """A function writing one COPY line for ``plan`` (column name, encoder), ``deleted`` at ``deleted_at``."""
    env = dict(_NAMES)
    lines = ["def line(record):", "    get = record.get"]
    parts: list[str] = []
    for i, (name, enc) in enumerate(plan):
        v = f"v{i}"
        lines.append(f"    {v} = get({name!r})")
        fast = _INLINE.get(enc)
        if fast is None:
            env[f"enc{i}"] = enc
            lines.append(f"    {v} = enc{i}({v})")
        else:
            lines.extend("    " + c for c in fast.format(v=v).splitlines())
        parts.append(v)
    if deleted_at is not None:
        lines.append("    deleted = 't' if get('op') == 'd' else 'f'")
        parts.insert(deleted_at, "deleted")
    lines.append("    return " + " + '\\t' + ".join(parts) if parts else "    return ''")
    return _compile("\n".join(lines) + "\n", "line", env)  # type: ignore[no-any-return]
