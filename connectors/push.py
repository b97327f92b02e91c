"""Push mode, pure core: hospital tokens, versions as source positions, records checked and framed.

The HTTP adapter is ``connectors.ingest``. A hospital sends, for one dataset, a batch of items
``{"version": <monotonic int or string>, "op": "c"|"u"|"d", "source_ts": <ms or ISO>, "record": {…}}``
where ``record`` holds the dataset's own fields in the standard form; the platform fills the header.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

from hip.errors import ConfigError, RecordError
from hip.records import HEADER_NAMES, OPS, record_key

SOURCE_SYSTEM = "PUSH"
TOKENS_FILE = "ingest-tokens.json"
MAX_VERSION_LEN = 64


def hash_token(token: str) -> str:
    # Tokens are 256-bit random strings: a plain SHA-256 is enough, no password stretching needed.
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_token() -> str:
    return secrets.token_urlsafe(32)


class TokenStore:
    """Hashed tokens → organisation code, kept in ``var/secrets/ingest-tokens.json``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.by_hash: dict[str, str] = {}
        if path.exists():
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except ValueError as exc:
                raise ConfigError(f"invalid JSON: {exc}", file=str(path)) from exc
            self.by_hash = {str(h): str(org) for h, org in data.get("tokens", {}).items()}

    def issue(self, org: str) -> str:
        """A new token for ``org`` (printed once, only its hash is stored)."""
        token = new_token()
        self.by_hash[hash_token(token)] = org
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"tokens": self.by_hash}, indent=1), encoding="utf-8")
        tmp.chmod(0o600)
        tmp.replace(self.path)
        return token

    def org_for(self, authorization: str | None) -> str | None:
        if not authorization or not authorization.startswith("Bearer "):
            return None
        return self.by_hash.get(hash_token(authorization[7:].strip()))


def version_position(version: Any) -> str:
    """A hospital's version as a ``source_position`` that sorts like the version.

    Integers are zero-padded; strings (e.g. ``20240510120000``) compare as sent, so a hospital must
    keep one kind and one width per dataset.
    """
    if isinstance(version, bool):
        raise ValueError("version must be a non-negative integer or a string")
    if isinstance(version, int):
        if version < 0 or version >= 10 ** 20:
            raise ValueError("integer version must be between 0 and 10^20")
        return f"pv:n:{version:020d}"
    if isinstance(version, str) and 0 < len(version) <= MAX_VERSION_LEN and version.isprintable():
        return f"pv:s:{version}"
    raise ValueError(f"version must be a non-negative integer or a printable string of 1-{MAX_VERSION_LEN}")


def parse_ts(value: Any, now_ms: int) -> int:
    if value is None:
        return now_ms
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        t = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        if t.tzinfo is None:
            raise ValueError("source_ts needs a zone offset (or epoch milliseconds)")
        return int(t.timestamp() * 1000)
    raise ValueError("source_ts must be epoch milliseconds or an ISO-8601 instant")


class FindingLike(Protocol):
    @property
    def severity(self) -> str: ...
    @property
    def rule(self) -> str: ...
    @property
    def field(self) -> str | None: ...
    @property
    def message(self) -> str: ...


@dataclass(frozen=True)
class Finding:
    severity: str
    rule: str
    field: str | None
    message: str

    def as_dict(self) -> dict[str, Any]:
        return {"severity": self.severity, "rule": self.rule, "field": self.field, "message": self.message}


@dataclass
class Prepared:
    """One pushed item after checking: either ``record`` (+ key, identity) or error findings."""

    index: int
    record: dict[str, Any] | None = None
    key: bytes | None = None
    value: bytes | None = None
    identity: str | None = None  # business key as JSON, for the idempotence store
    position: str | None = None
    findings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.record is not None and not any(f.severity == "error" for f in self.findings)


class ForgeryError(Exception):
    """A token tried to write another organisation's data: the whole batch is refused."""


Checker = Callable[[str, dict[str, Any]], Sequence[FindingLike]]
Encoder = Callable[[str, dict[str, Any]], bytes]


def prepare(org: str, dataset: str, business_key: Sequence[str], index: int, item: Any,
            check: Checker, encode: Encoder, now_ms: int) -> Prepared:
    """Frame one pushed item as a standard record and check it; never raises for bad data."""
    out = Prepared(index)
    if not isinstance(item, dict) or not isinstance(item.get("record"), dict):
        out.findings.append(Finding("error", "shape", None, "an item is {version, op?, source_ts?, record: {…}}"))
        return out
    unknown = set(item) - {"version", "op", "source_ts", "record"}
    if unknown:
        out.findings.append(Finding("error", "shape", None, f"unknown item keys {sorted(unknown)}"))
        return out
    body = dict(item["record"])
    claimed = body.get("org_code")
    if claimed is not None and claimed != org:
        raise ForgeryError(f"item {index} claims org_code {claimed!r}; this token writes only {org!r}")
    op = item.get("op", "u")
    try:
        position = version_position(item.get("version"))
        source_ts = parse_ts(item.get("source_ts"), now_ms)
        if op not in OPS or op == "r":
            raise ValueError("op must be c, u or d")
    except ValueError as exc:
        out.findings.append(Finding("error", "envelope", None, str(exc)))
        return out
    missing = [k for k in business_key if body.get(k) in (None, "")]
    if missing:
        out.findings.append(Finding("error", "business_key", missing[0], f"business key fields missing: {missing}"))
        return out
    values = [body[k] for k in business_key]
    for h in HEADER_NAMES:
        body.pop(h, None)
    record = {"org_code": org, "source_system": SOURCE_SYSTEM, "source_table": dataset,
              "source_key": json.dumps([None if v is None else str(v) for v in values], ensure_ascii=False),
              "op": op, "source_position": position, "source_ts": source_ts, "ingest_ts": now_ms,
              "mapping_id": None, **body}
    out.findings.extend(Finding(f.severity, f.rule, f.field, f.message) for f in check(dataset, record))
    if any(f.severity == "error" for f in out.findings):
        return out
    try:
        out.value = encode(dataset, record)
    except (RecordError, ValueError, TypeError) as exc:
        # Only the record's own faults; a registry outage propagates and the batch is retried.
        out.findings.append(Finding("error", "schema", None, f"{type(exc).__name__}: {exc}"))
        return out
    out.record, out.position = record, position
    out.key = record_key(org, values)
    out.identity = record["source_key"]
    return out
