"""The browsable catalogue in ``docs/datasets/``, generated from the catalogue and schemas.

``render()`` is pure (file name → text); ``hip datasets docs`` writes it, and a test keeps the
committed files equal to it.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from hip.catalogue import Catalogue, Dataset, load_catalogue, load_valueset_info, valueset_ids
from hip.conformance import RULES
from hip.settings import ROOT

DOCS_DIR = ROOT / "docs" / "datasets"


def _cell(text: Any) -> str:
    return str(text if text is not None else "").replace("|", "\\|").replace("\n", " ")


def _type_text(t: Any) -> tuple[str, bool]:
    nullable = isinstance(t, list) and "null" in t
    if isinstance(t, list):
        t = next(x for x in t if x != "null")
    if isinstance(t, str):
        return t, nullable
    if t.get("logicalType") == "decimal":
        return f"decimal({t['precision']},{t['scale']})", nullable
    if t.get("logicalType"):
        return str(t["logicalType"]), nullable
    if t["type"] == "array":
        items = t["items"]
        name = items if isinstance(items, str) else items.get("name", items.get("type"))
        return f"array<{name}>", nullable
    if t["type"] == "enum":
        return "enum(" + ",".join(t["symbols"]) + ")", nullable
    return str(t["type"]), nullable


def _zh(doc: str) -> str:
    return doc.split(" (", 1)[0].split(". ", 1)[0]


def _field_rows(fields: list[dict[str, Any]], key: list[str], personal: list[str]) -> list[str]:
    rows = ["| field | type | required | 中文名 | data element | value set | checks | note |",
            "|---|---|---|---|---|---|---|---|"]
    for f in fields:
        type_text, nullable = _type_text(f["type"])
        flags = []
        if f["name"] in key:
            flags.append("key")
        if f["name"] in personal:
            flags.append("personal")
        checks = ", ".join(k if not v else f"{k}={v}" for k, v in f.get("checks", {}).items())
        note = f["doc"].split(". ", 1)[1] if ". " in f.get("doc", "") else ""
        vs = f.get("valueset")
        rows.append("| " + " | ".join(_cell(x) for x in (
            f"`{f['name']}`" + (f" ({', '.join(flags)})" if flags else ""),
            type_text, "" if nullable else "yes", _zh(f.get("doc", "")), f.get("element", ""),
            f"[{vs}](valuesets.md#{vs.lower().replace('.', '')})" if vs else "",
            checks, note)) + " |")
    return rows


def _nested(fields: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    for f in fields:
        t = f["type"][1] if isinstance(f["type"], list) else f["type"]
        if isinstance(t, dict) and t.get("type") == "array" and isinstance(t["items"], dict) \
                and t["items"]["name"] not in seen:
            seen.add(t["items"]["name"])
            out.append(t["items"])
    return out


def _rule_text(rule: dict[str, Any]) -> str:
    kind = rule["rule"]
    sev = rule.get("severity", "default")
    args = ", ".join(f"{k}={v}" for k, v in rule.items() if k not in ("rule", "severity", "id"))
    rule_id = {"order": "time.order", "birth": "time.birth", "sum": "fee.sum", "part": "fee.part",
               "line": "fee.line", "stay_days": "time.stay_days", "within_hours": "time.within",
               "range": "value.range", "balance": "stock.balance"}[kind]
    rule_id = rule.get("id", rule_id)
    return f"- `{rule_id}` ({sev}): {kind}: {args}"


def render_dataset(ds: Dataset) -> str:
    lines = [f"# {ds.number} {ds.name_zh} — `{ds.name}`", ""]
    if ds.doc:
        lines += [ds.doc, ""]
    lines += [
        "| | |", "|---|---|",
        f"| topic | `{ds.topic}` |",
        f"| warehouse table | `{ds.warehouse_table}` |",
        f"| category | {ds.category} |",
        f"| business key | org_code, {', '.join(ds.business_key)} |",
        f"| partition key | org_code, {', '.join(ds.partition_key)} |",
        f"| personal fields | {', '.join(ds.personal_fields) or '—'} |",
        f"| WS 445 | {ds.ws445 or '—'}{f' ({ds.hdsd})' if ds.hdsd else ''} |",
        f"| WS/T 500 | {ds.ws500 or '—'} |",
        f"| systems | {', '.join(ds.systems)} |",
        "", "## Fields", "",
    ]
    lines += _field_rows(ds.fields, ds.business_key, ds.personal_fields)
    for rec in _nested(ds.fields):
        lines += ["", f"### {rec['name']}: {rec.get('doc', '')}", ""]
        lines += _field_rows(rec["fields"], [], [])
    lines += ["", "## Conformance", "",
              "Every field is checked for type, value set and code shape, times in the future and "
              "negative amounts (see [rules](rules.md)). Dataset rules:", ""]
    lines += [_rule_text(r) for r in ds.rules] or ["- none beyond the field checks"]
    return "\n".join(lines) + "\n"


def render_index(cat: Catalogue) -> str:
    lines = ["# The 72 standard datasets", "",
             "Generated from `avro/catalogue.yaml` and `avro/schemas/` by `hip datasets docs`; do not edit.",
             "", "See also: [conformance rules](rules.md), [value sets](valuesets.md).", "",
             "| # | dataset | 中文名 | category | business key | WS 445 | WS/T 500 | systems | fields |",
             "|---|---|---|---|---|---|---|---|---|"]
    for ds in cat:
        lines.append("| " + " | ".join(_cell(x) for x in (
            ds.number, f"[`{ds.name}`]({ds.name}.md)", ds.name_zh, ds.category, ", ".join(ds.business_key),
            ds.ws445 or "", ds.ws500 or "", ", ".join(ds.systems), len(ds.fields))) + " |")
    return "\n".join(lines) + "\n"


def render_rules() -> str:
    lines = ["# Conformance rules", "",
             "`hip.conformance.check(dataset, record)` returns findings with these rule ids. A record with an "
             "`error` finding is rejected (dead-letter topic); warnings are counted in dataset 60 "
             "(`upload_quality_stat`). A dataset rule may set its own severity.", "",
             "| rule | default severity | description |", "|---|---|---|"]
    lines += [f"| `{r.id}` | {r.severity} | {_cell(r.description)} |" for r in RULES]
    return "\n".join(lines) + "\n"


def render_valuesets() -> str:
    lines = ["# Value sets", "",
             "Files in `avro/valuesets/`: `<id>.tsv` code tables, `<id>.yaml` code systems checked by shape. "
             "`strict: no` marks a partial or unverified table (membership findings are warnings).", ""]
    for vs_id in valueset_ids():
        vs = load_valueset_info(vs_id)
        lines += [f"## {vs_id}", "", f"{vs.name}. Source: {vs.source or '—'}. "
                  f"{'Strict' if vs.strict else 'Not strict'}.", ""]
        lines += [f"> {n}" for n in vs.notes]
        if vs.notes:
            lines.append("")
        if vs.kind == "pattern":
            lines += [f"Shape: `{vs.pattern}`", ""]
        else:
            lines += ["| code | label |", "|---|---|"] + [f"| {c} | {_cell(l)} |" for c, l in vs.codes.items()] + [""]
    return "\n".join(lines)


def render(cat: Catalogue | None = None) -> dict[str, str]:
    """Every docs file by name."""
    cat = cat or load_catalogue()
    out = {"README.md": render_index(cat), "rules.md": render_rules(), "valuesets.md": render_valuesets()}
    for ds in cat:
        out[f"{ds.name}.md"] = render_dataset(ds)
    return out


def write(docs_dir: Path = DOCS_DIR) -> list[Path]:
    """Write the docs; returns files written, changed or removed."""
    docs_dir.mkdir(parents=True, exist_ok=True)
    files = render()
    changed: list[Path] = []
    for name, text in files.items():
        path = docs_dir / name
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
            changed.append(path)
    for stale in docs_dir.glob("*.md"):
        if stale.name not in files:
            stale.unlink()
            changed.append(stale)
    return changed
