"""Per-schema Avro writers and readers of the standard records, with fastavro as the reference.

Why: fastavro resolves every union per value, and the standard records are mostly unions
(``["null", "string"]``, nullable timestamps, decimals, dates). Writing cost 46 µs a record, a third
of the normalizer's time, and reading 48 µs, a third of the statistics' (``make bench``,
docs/benchmarks.md). The code compiled here for one schema picks each union branch by the Python
type of the value when writing and by the branch index when reading: 17 µs to write, the same bytes.

Writing: "the bytes fastavro writes, or fastavro's own error". Whenever a value is not of the
exact type this encoder knows (a string in an int field, a ``float`` for a decimal, a missing
required field, an int out of range, an unknown enum symbol), the compiled function raises
:class:`Fallback` and the caller encodes that record with fastavro, which writes it or raises its
error. Schemas with maps, fixed, unions other than ``["null", X]`` or non-null defaults are not
compiled (``None``); fastavro writes those.

Reading: :func:`compile_decoder` returns what fastavro's reader returns for a body written with
the same schema; bodies of an older schema version go through fastavro's schema resolution.

Tests compare both directions with fastavro on random records of every dataset of the catalogue.
"""
from __future__ import annotations

import datetime as dt
import struct
from decimal import Context, Decimal
from typing import Any, Callable

Encoder = Callable[[dict[str, Any]], bytes]

_INT_MIN, _INT_MAX = -(1 << 31), (1 << 31) - 1
_LONG_MIN, _LONG_MAX = -(1 << 63), (1 << 63) - 1
_DOUBLE = struct.Struct("<d")
_EPOCH_ORDINAL = dt.date(1970, 1, 1).toordinal()
_SMALL = [bytes([(n << 1) ^ (n >> 63)]) for n in range(-64, 64)]  # one byte each


class Fallback(Exception):
    """The value is not one this encoder writes; encode the record with fastavro instead."""


def _varint(n: int) -> bytes:
    """Avro's zig-zag variable-length encoding of a long."""
    z = (n << 1) ^ (n >> 63)
    out = bytearray()
    while z > 0x7F:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


def _long(n: int) -> bytes:
    if -64 <= n < 64:
        return _SMALL[n + 64]
    if not _LONG_MIN <= n <= _LONG_MAX:
        raise Fallback
    return _varint(n)


def _int(n: int) -> bytes:
    if not _INT_MIN <= n <= _INT_MAX:
        raise Fallback
    return _long(n)


def _string(v: Any) -> bytes:
    if type(v) is not str:
        raise Fallback
    b = v.encode("utf-8")
    return _long(len(b)) + b


def _decimal(precision: int, scale: int) -> Callable[[Any], bytes]:
    def enc(v: Any) -> bytes:
        if type(v) is not Decimal:
            raise Fallback
        sign, digits, exp = v.as_tuple()
        if not isinstance(exp, int) or -exp > scale or len(digits) > precision:
            raise Fallback  # NaN, infinity, more digits than the schema keeps: fastavro's error
        unscaled = 0
        for d in digits:
            unscaled = unscaled * 10 + d
        unscaled *= int(10 ** (scale + exp))
        if sign:
            unscaled = -unscaled
        b = unscaled.to_bytes((unscaled.bit_length() + 8) // 8, "big", signed=True)
        return _long(len(b)) + b
    return enc


def _date(v: Any) -> bytes:
    if type(v) is dt.date:
        return _long(v.toordinal() - _EPOCH_ORDINAL)
    if type(v) is int:
        return _int(v)
    raise Fallback


_RECENT: dict[int, bytes] = {}  # timestamps repeat: a batch's ingest time, a transaction's commit time


def _timestamp_millis(v: Any) -> bytes:
    if type(v) is not int:
        raise Fallback
    b = _RECENT.get(v)
    if b is None:
        b = _long(v)
        if len(_RECENT) >= 4096:
            _RECENT.clear()
        _RECENT[v] = b
    return b


def _plain_int(v: Any) -> bytes:
    if type(v) is not int:
        raise Fallback
    return _int(v)


def _plain_long(v: Any) -> bytes:
    if type(v) is not int:
        raise Fallback
    return _long(v)


def _double(v: Any) -> bytes:
    if type(v) is not float:
        raise Fallback
    return _DOUBLE.pack(v)


def _boolean(v: Any) -> bytes:
    if type(v) is not bool:
        raise Fallback
    return b"\x01" if v else b"\x00"


def _enum(symbols: list[str]) -> Callable[[Any], bytes]:
    index = {s: _long(i) for i, s in enumerate(symbols)}

    def enc(v: Any) -> bytes:
        b = index.get(v) if type(v) is str else None
        if b is None:
            raise Fallback
        return b
    return enc


def _array(items: Callable[[Any], bytes]) -> Callable[[Any], bytes]:
    def enc(v: Any) -> bytes:
        if type(v) is not list:
            raise Fallback
        if not v:
            return b"\x00"
        return _long(len(v)) + b"".join(items(x) for x in v) + b"\x00"  # one block, as fastavro writes
    return enc


def _name(named: dict[str, Any], schema: dict[str, Any], fn: Any) -> None:
    """Make a record's writer or reader findable by its name, for later fields that refer to it."""
    named[schema["name"]] = fn
    if schema.get("namespace"):
        named[f"{schema['namespace']}.{schema['name']}"] = fn


def _writer(t: Any, named: dict[str, Callable[[Any], bytes]]) -> Callable[[Any], bytes] | None:
    """The writer of one type, or ``None`` when this module does not write it."""
    if isinstance(t, list):
        if len(t) != 2 or t[0] != "null":
            return None
        inner = _writer(t[1], named)
        if inner is None:
            return None

        def nullable(v: Any, write: Callable[[Any], bytes] = inner) -> bytes:
            return b"\x00" if v is None else b"\x02" + write(v)
        return nullable
    if isinstance(t, str):
        known = {"string": _string, "int": _plain_int, "long": _plain_long, "boolean": _boolean,
                 "double": _double}.get(t)
        return known or named.get(t)
    if not isinstance(t, dict):
        return None
    logical, base = t.get("logicalType"), t.get("type")
    if logical == "decimal" and base == "bytes":
        return _decimal(int(t["precision"]), int(t.get("scale", 0)))
    if logical == "date" and base == "int":
        return _date
    if logical == "timestamp-millis" and base == "long":
        return _timestamp_millis
    if logical is not None:
        return None
    if base == "enum":
        return _enum(list(t["symbols"]))
    if base == "array":
        items = _writer(t["items"], named)
        return None if items is None else _array(items)
    if base == "record":
        return _record(t, named)
    return _writer(base, named)


_SMALL_AFTER_NULL_TAG = [b"\x02" + b for b in _SMALL]  # a non-null union branch, then a short length


def _record(schema: dict[str, Any], named: dict[str, Callable[[Any], bytes]]) -> Callable[[Any], bytes] | None:
    """The record's writer, generated as one function with a straight run of code per field.

    The hot loop of the normalizer. Written out per field, with strings inline, it avoids the
    per-field tuple and the branches on the field's kind of a loop over (name, writer) pairs.
    """
    env: dict[str, Any] = {"Fallback": Fallback, "_SMALL": _SMALL, "_TAGGED": _SMALL_AFTER_NULL_TAG,
                           "_varint": _varint}
    lines = ["def encode(record):",
             "    if type(record) is not dict:",
             "        raise Fallback",
             "    get = record.get",
             "    parts = []",
             "    out = parts.append"]
    for k, f in enumerate(schema["fields"]):
        t, name = f["type"], f["name"]
        if f.get("default", None) is not None:
            return None
        nullable = isinstance(t, list) and len(t) == 2 and t[0] == "null"
        w = _writer(t[1] if nullable else t, named)
        if w is None:
            return None
        lines += [f"    v = get({name!r})",
                  "    if v is None:",
                  # a required field without a value: fastavro names it
                  "        out(b'\\x00')" if nullable else "        raise Fallback"]
        if w is _string:
            small = "_TAGGED" if nullable else "_SMALL"
            long_prefix = "b'\\x02' + _varint(n)" if nullable else "_varint(n)"
            lines += ["    elif type(v) is str:",
                      "        b = v.encode('utf-8')",
                      "        n = len(b)",
                      f"        out({small}[n + 64] if n < 64 else {long_prefix})",
                      "        out(b)",
                      "    else:",
                      "        raise Fallback"]
        else:
            env[f"_write{k}"] = w
            lines += ["    else:"]
            if nullable:
                lines += ["        out(b'\\x02')"]
            lines += [f"        out(_write{k}(v))"]
    lines.append("    return b''.join(parts)")
    exec(compile("\n".join(lines), f"<avro writer of {schema.get('name', 'record')}>", "exec"), env)
    encode: Callable[[Any], bytes] = env["encode"]
    _name(named, schema, encode)
    return encode


def compile_encoder(schema: dict[str, Any]) -> Encoder | None:
    """An encoder of records of ``schema`` (parsed JSON form), or ``None`` for types it does not write."""
    if schema.get("type") != "record":
        return None
    return _record(schema, {})


# ---------------------------------------------------------------------------------------------
# Reading: the values fastavro's reader returns (or, with ``plain_times``, dates as epoch days
# and timestamps as epoch milliseconds, what the statistics read), for the types written above.

Decoder = Callable[[bytes], dict[str, Any]]
Reader = Callable[[bytes, int], tuple[Any, int]]
_UTC_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)


def _read_long(b: bytes, i: int) -> tuple[int, int]:
    byte = b[i]
    i += 1
    n = byte & 0x7F
    shift = 7
    while byte & 0x80:
        byte = b[i]
        i += 1
        n |= (byte & 0x7F) << shift
        shift += 7
    return (n >> 1) ^ -(n & 1), i


def _read_bytes(b: bytes, i: int) -> tuple[bytes, int]:
    n, i = _read_long(b, i)
    end = i + n
    if n < 0 or end > len(b):
        raise ValueError(f"a length of {n} bytes runs past the end of the record")
    return b[i:end], end


def _read_string(b: bytes, i: int) -> tuple[str, int]:
    raw, i = _read_bytes(b, i)
    return raw.decode("utf-8"), i


def _read_boolean(b: bytes, i: int) -> tuple[bool, int]:
    return b[i] != 0, i + 1


def _read_double(b: bytes, i: int) -> tuple[float, int]:
    return _DOUBLE.unpack_from(b, i)[0], i + 8


def _read_date(b: bytes, i: int) -> tuple[dt.date, int]:
    n, i = _read_long(b, i)
    return dt.date.fromordinal(n + _EPOCH_ORDINAL), i


def _read_timestamp_millis(b: bytes, i: int) -> tuple[dt.datetime, int]:
    n, i = _read_long(b, i)
    return _UTC_EPOCH + dt.timedelta(microseconds=n * 1000), i


def _read_decimal(precision: int, scale: int) -> Reader:
    context = Context(prec=precision)

    def read(b: bytes, i: int) -> tuple[Decimal, int]:
        raw, i = _read_bytes(b, i)
        unscaled = int.from_bytes(raw, "big", signed=True)
        return context.create_decimal(unscaled).scaleb(-scale, context), i
    return read


def _read_enum(symbols: list[str]) -> Reader:
    def read(b: bytes, i: int) -> tuple[str, int]:
        n, i = _read_long(b, i)
        return symbols[n], i
    return read


def _read_array(items: Reader) -> Reader:
    def read(b: bytes, i: int) -> tuple[list[Any], int]:
        out: list[Any] = []
        while True:
            n, i = _read_long(b, i)
            if n == 0:
                return out, i
            if n < 0:  # a block with its size in bytes after the count
                n = -n
                _, i = _read_long(b, i)
            for _ in range(n):
                v, i = items(b, i)
                out.append(v)
    return read


def _reader(t: Any, named: dict[str, Reader], plain_times: bool) -> Reader | None:
    """The reader of one type, or ``None`` when this module does not read it."""
    if isinstance(t, list):
        if len(t) != 2 or t[0] != "null":
            return None
        inner = _reader(t[1], named, plain_times)
        if inner is None:
            return None

        def nullable(b: bytes, i: int, read: Reader = inner) -> tuple[Any, int]:
            index = b[i]
            if index == 0:
                return None, i + 1
            if index != 2:
                raise ValueError(f"union index {index} out of range")
            return read(b, i + 1)
        return nullable
    if isinstance(t, str):
        known: Reader | None = {"string": _read_string, "int": _read_long, "long": _read_long,
                                "boolean": _read_boolean, "double": _read_double}.get(t)
        return known or named.get(t)
    if not isinstance(t, dict):
        return None
    logical, base = t.get("logicalType"), t.get("type")
    if logical == "decimal" and base == "bytes":
        return _read_decimal(int(t["precision"]), int(t.get("scale", 0)))
    if logical == "date" and base == "int":
        return _read_long if plain_times else _read_date
    if logical == "timestamp-millis" and base == "long":
        return _read_long if plain_times else _read_timestamp_millis
    if logical is not None:
        return None
    if base == "enum":
        return _read_enum(list(t["symbols"]))
    if base == "array":
        items = _reader(t["items"], named, plain_times)
        return None if items is None else _read_array(items)
    if base == "record":
        return _read_record(t, named, plain_times)
    return _reader(base, named, plain_times)


PRESENT = True  # a projected reader's value for a field read only for its presence


def _varint_lines(pad: str, store: str | None) -> list[str]:
    """Read one zig-zag varint at ``i`` (into ``n`` and then ``store``, or skipped when ``None``)."""
    if store is None:
        return [f"{pad}while b[i] & 0x80:", f"{pad}    i += 1", f"{pad}i += 1"]
    return [f"{pad}n = b[i]",
            f"{pad}i += 1",
            f"{pad}if n & 0x80:",
            f"{pad}    n &= 0x7F",
            f"{pad}    shift = 7",
            f"{pad}    while True:",
            f"{pad}        c = b[i]",
            f"{pad}        i += 1",
            f"{pad}        n |= (c & 0x7F) << shift",
            f"{pad}        if c < 0x80:",
            f"{pad}            break",
            f"{pad}        shift += 7",
            f"{pad}{store} = (n >> 1) ^ -(n & 1)"]


def _length_lines(pad: str, name: str) -> list[str]:
    """Read a string's or bytes' length at ``i`` into ``n`` and its end into ``end``, checked."""
    return [f"{pad}n = b[i]",
            f"{pad}if n < 0x80:",
            f"{pad}    n = (n >> 1) ^ -(n & 1)",
            f"{pad}    i += 1",
            f"{pad}else:",
            f"{pad}    n, i = _read_long(b, i)",
            f"{pad}end = i + n",
            f"{pad}if n < 0 or end > len(b):",
            f"{pad}    raise ValueError({name + ': a length of %d bytes runs past the end of the record'!r} % n)"]


def _read_record(schema: dict[str, Any], named: dict[str, Reader], plain_times: bool,
                 project: dict[str, bool] | None = None) -> Reader | None:
    """The record's reader, generated as one function with a straight run of code per field.

    This is the hot loop of the sink and the statistics. Written out per field, with strings and
    longs read inline, it takes half the time of a loop over (name, reader) pairs: no per-field
    tuple, branch on the field's kind or call for the common types.

    ``project`` (field name → whether its value is wanted) makes a reader of some fields only: a
    field mapped to ``True`` is read as usual; one mapped to ``False`` is read for its presence only
    (``None`` when null, ``""`` for an empty string, else :data:`PRESENT`); any other is skipped.
    Every field is still walked through, so lengths and union indexes are still checked.
    """
    env: dict[str, Any] = {"_read_long": _read_long, "PRESENT": PRESENT}
    lines = ["def read(b, i):", "    r = {}"]
    for k, f in enumerate(schema["fields"]):
        t, name = f["type"], f["name"]
        nullable = isinstance(t, list) and len(t) == 2 and t[0] == "null"
        base = t[1] if nullable else t
        reader = _reader(base, named, plain_times)
        if reader is None:
            return None
        want = True if project is None else project.get(name)
        target = f"r[{name!r}]"
        pad = "        " if nullable else "    "
        if nullable:
            lines += ["    x = b[i]", "    i += 1", "    if x == 0:"]
            lines.append(f"        {target} = None" if want is not None else "        pass")
            lines.append("    elif x == 2:")
        sized = reader is _read_string or (isinstance(base, dict) and base.get("type") == "bytes")
        if want is True and reader is _read_string:
            lines += _length_lines(pad, name) + [f"{pad}{target} = b[i:end].decode('utf-8')", f"{pad}i = end"]
        elif want is True and reader is _read_long:  # ints, longs, and dates and timestamps with plain_times
            lines += _varint_lines(pad, target)
        elif want is True:
            env[f"_read{k}"] = reader
            lines.append(f"{pad}{target}, i = _read{k}(b, i)")
        else:  # read past the value; keep its presence if asked
            if sized:
                lines += _length_lines(pad, name) + [f"{pad}i = end"]
            elif reader is _read_long or isinstance(base, dict) and base.get("type") == "enum":
                lines += _varint_lines(pad, None)
            elif reader is _read_boolean:
                lines.append(f"{pad}i += 1")
            elif reader is _read_double:
                lines.append(f"{pad}i += 8")
            else:
                env[f"_read{k}"] = reader
                lines.append(f"{pad}_, i = _read{k}(b, i)")
            if want is False:
                lines.append(f"{pad}{target} = PRESENT if n else ''" if reader is _read_string
                             else f"{pad}{target} = PRESENT")
        if nullable:
            lines += ["    else:", f"        raise ValueError({name + ': union index %d out of range'!r} % x)"]
    lines.append("    return r, i")
    title = schema.get("name", "record") + (" (projected)" if project is not None else "")
    exec(compile("\n".join(lines), f"<avro reader of {title}>", "exec"), env)
    read: Reader = env["read"]
    if project is None:
        _name(named, schema, read)
    return read


def compile_decoder(schema: dict[str, Any], *, plain_times: bool = False, offset: int = 5,
                    project: dict[str, bool] | None = None) -> Decoder | None:
    """A reader of bodies written with ``schema`` itself, starting at ``offset`` (after the registry
    framing), or ``None`` for types this module does not read. ``plain_times``: dates and
    timestamps stay epoch days and epoch milliseconds. ``project``: the top-level fields to read,
    and how (see :func:`_read_record`)."""
    if schema.get("type") != "record":
        return None
    read = _read_record(schema, {}, plain_times, project)
    if read is None:
        return None

    def decode(data: bytes) -> dict[str, Any]:
        return read(data, offset)[0]  # type: ignore[no-any-return]
    return decode
