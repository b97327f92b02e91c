"""``hip mappings``: load and validate every mapping before anything runs."""
from __future__ import annotations

from pathlib import Path

import click

from streams.core.mapping import MAPPINGS_DIR, load_mappings


@click.group("mappings")
def mappings() -> None:
    """Declarative source-to-dataset mappings (streams/mappings)."""


@mappings.command("check")
@click.option("--dir", "directory", type=click.Path(exists=True, file_okay=False, path_type=Path),
              default=MAPPINGS_DIR, show_default=True, help="Folder with profile and hospitals/*.yaml files.")
def check(directory: Path) -> None:
    """Validate every profile and hospital mapping against source DDL, Avro schemas and value sets.

    Exit code 0 when all are valid, 2 with file:line [field] of the first error otherwise.
    """
    result = load_mappings(directory)
    per_org: dict[str, int] = {}
    datasets: set[str] = set()
    for (org, _), route in result.routes.items():
        per_org[org] = per_org.get(org, 0) + len(route.mappings)
        datasets.update(m.dataset for m in route.mappings)
    for org, hospital in sorted(result.hospitals.items()):
        click.echo(f"{org} {hospital.name}: profile {hospital.profile}, zone {hospital.zone}, "
                   f"{per_org.get(org, 0)} table mappings")
    click.echo(f"ok: {len(result.hospitals)} hospitals, {len(datasets)} datasets")
