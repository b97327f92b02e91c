"""Raw topic names, identical for Debezium connectors and the poller.

Connectors use ``io.debezium.schema.DefaultUnicodeTopicNamingStrategy``: every character outside
``[A-Za-z0-9.-]`` (``_`` included, it is the escape character) becomes ``_u`` + its UTF-16 code unit
in lower-case hex (padded to 4 only when shorter than 3 digits, exactly as Debezium does). So two
different Chinese table names can never collide into one topic, which the default ``_`` replacement
allows. The poller builds its topics with the same function so both modes land in one place.
"""
from __future__ import annotations

MAX_TOPIC = 249
_VALID = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-")


def escape(name: str) -> str:
    """Debezium's unicode topic-name escaping of one string."""
    out: list[str] = []
    for ch in name:
        if ch in _VALID:
            out.append(ch)
            continue
        raw = ch.encode("utf-16-be")
        for i in range(0, len(raw), 2):
            h = format(int.from_bytes(raw[i:i + 2], "big"), "x")
            out.append("_u" + ("00" + h if len(h) <= 2 else h))
    return "".join(out)


def topic_prefix(org: str, system: str) -> str:
    return f"raw.{org}.{system}"


def raw_topic(org: str, system: str, schema: str, table: str) -> str:
    """``raw.<org>.<system>.<schema>.<table>`` as Debezium names it (MariaDB: schema = database)."""
    name = escape(f"{topic_prefix(org, system)}.{schema}.{table}")
    if name in (".", ".."):
        return escape(name.replace(".", "_"))
    return name[:MAX_TOPIC]


def split_table(qualified: str) -> tuple[str, str]:
    """``schema.table`` → (schema, table); the table part may itself contain dots."""
    schema, _, table = qualified.partition(".")
    return schema, table
