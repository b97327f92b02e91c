"""``hip datasets``: the 72 standard datasets (list, show, generate schemas and docs, check, validate)."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from hip import catalogue_docs, schemagen
from hip.catalogue import AVRO_DIR, load_catalogue, read_catalogue
from hip.compat import problems

RELEASED_DIR = AVRO_DIR / "released"


@click.group("datasets")
def datasets() -> None:
    """The standard datasets: catalogue, schemas, value sets, conformance, docs."""


@datasets.command("list")
@click.option("--category", help="Only datasets of this category.")
def list_(category: str | None) -> None:
    """List the datasets: number, name, Chinese name, business key."""
    for ds in load_catalogue():
        if category and ds.category != category:
            continue
        click.echo(f"{ds.number:>2}  {ds.name:<36} {ds.name_zh}  [{', '.join(ds.business_key)}]")


@datasets.command("show")
@click.argument("name")
@click.option("--schema", "as_schema", is_flag=True, help="Print the Avro schema instead of the summary.")
def show(name: str, as_schema: bool) -> None:
    """Show one dataset (by English name or number)."""
    cat = load_catalogue()
    ds = cat.by_number(int(name)) if name.isdigit() else cat[name]
    if as_schema:
        click.echo(json.dumps(ds.schema, ensure_ascii=False, indent=2))
        return
    click.echo(f"{ds.number} {ds.name_zh} ({ds.name}) topic {ds.topic}")
    click.echo(f"key: org_code, {', '.join(ds.business_key)}   partition: {', '.join(ds.partition_key)}")
    click.echo(f"WS 445: {ds.ws445 or '-'}  WS/T 500: {ds.ws500 or '-'}  systems: {', '.join(ds.systems)}")
    for f in ds.fields:
        click.echo(f"  {f['name']:<40} {f.get('doc', '')}")


@datasets.command("generate")
def generate() -> None:
    """Regenerate avro/schemas/*.avsc from avro/catalogue.yaml and avro/source/."""
    changed = schemagen.write_all()
    click.echo(f"{len(changed)} schema file(s) changed")


@datasets.command("docs")
def docs() -> None:
    """Regenerate docs/datasets/ from the catalogue and schemas."""
    changed = catalogue_docs.write()
    click.echo(f"{len(changed)} docs file(s) changed")


def compat_problems(released_dir: Path = RELEASED_DIR) -> list[str]:
    """Incompatibilities between the released snapshot and the current schemas."""
    out: list[str] = []
    current = {ds.name: ds.schema for ds in read_catalogue()}
    for path in sorted(released_dir.glob("*.avsc")):
        old = json.loads(path.read_text(encoding="utf-8"))
        new = current.get(path.stem)
        if new is None:
            out.append(f"{path.stem}: released dataset removed")
            continue
        out += [f"{path.stem}: {p}" for p in problems(old, new)]
    return out


@datasets.command("check")
def check_cmd() -> None:
    """Check that schemas and docs are generated and compatible with avro/released/ (exit 1 if not)."""
    failures: list[str] = []
    built = schemagen.build_all()
    for name, schema in built.items():
        path = schemagen.SCHEMA_DIR / f"{name}.avsc"
        if not path.exists() or path.read_text(encoding="utf-8") != schemagen.render(schema):
            failures.append(f"{path}: out of date (run `hip datasets generate`)")
    for name, text in catalogue_docs.render(read_catalogue()).items():
        path = catalogue_docs.DOCS_DIR / name
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            failures.append(f"{path}: out of date (run `hip datasets docs`)")
    failures += compat_problems()
    for f in failures:
        click.echo(f, err=True)
    if failures:
        sys.exit(1)
    click.echo(f"{len(built)} datasets: schemas, docs and compatibility ok")


@datasets.command("release")
def release() -> None:
    """Snapshot the current schemas into avro/released/ (after a compatible change is accepted)."""
    failures = compat_problems()
    if failures:
        raise click.ClickException("incompatible with the released schemas:\n  " + "\n  ".join(failures))
    RELEASED_DIR.mkdir(parents=True, exist_ok=True)
    for ds in read_catalogue():
        (RELEASED_DIR / f"{ds.name}.avsc").write_text(schemagen.render(ds.schema), encoding="utf-8")
    click.echo(f"released {len(read_catalogue())} schemas")


@datasets.command("validate")
@click.argument("name")
@click.argument("records", type=click.File("r", encoding="utf-8"))
def validate(name: str, records: Any) -> None:
    """Check JSON-lines RECORDS (``-`` for stdin) of dataset NAME; exit 1 on any error finding."""
    from hip.conformance import check

    errors = 0
    for number, line in enumerate(records, 1):
        if not line.strip():
            continue
        for f in check(name, json.loads(line)):
            errors += f.severity == "error"
            click.echo(f"{number}: {f.severity} {f.rule} {f.field or '-'}: {f.message}")
    if errors:
        sys.exit(1)
