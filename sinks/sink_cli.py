"""``hip sink``: run the warehouse sink, replay topics, re-normalize a hospital, reconcile."""
from __future__ import annotations

import datetime as dt
import logging
import signal
import sys
from pathlib import Path
from typing import Any, Callable

import click

from hip.settings import load_settings

from sinks.core.deadletter import DLQ_TOPIC, STAGE
from sinks.core.table import TableLike


def catalogue_topics(include: tuple[str, ...] = ()) -> list[str]:
    """Every std/stat topic of the catalogue, or only those of the named datasets."""
    from hip.catalogue import load_catalogue

    cat = load_catalogue()
    names = include or tuple(cat.datasets)
    return [cat[n].topic for n in names]


def catalogue_tables() -> Callable[[str], TableLike]:
    """Dataset name → warehouse table, from the catalogue and the generated DDL."""
    from hip.catalogue import load_catalogue
    from sinks.ddl import table_for

    cat = load_catalogue()
    cache: dict[str, TableLike] = {}

    def resolve(dataset: str) -> TableLike:
        if dataset not in cache:
            cache[dataset] = table_for(cat[dataset])
        return cache[dataset]
    return resolve


def default_decoder() -> Any:
    from hip.codec import codec_from_settings

    return codec_from_settings()


def _when(value: str | None) -> dt.datetime | None:
    if value is None:
        return None
    try:
        when = dt.datetime.fromisoformat(value)
    except ValueError as exc:
        raise click.BadParameter(f"{value!r} is not an ISO time") from exc
    if when.tzinfo is None:
        raise click.BadParameter(f"{value!r} needs a zone, e.g. {value}+08:00")
    return when


@click.group("sink")
def sink() -> None:
    """Write standard and statistics records into the warehouse."""


@sink.command("run")
@click.option("--dataset", "datasets", multiple=True, help="Only these datasets (default: all 72).")
@click.option("--group", default="hip-sink", show_default=True, help="Kafka consumer group.")
@click.option("--batch-size", default=5000, show_default=True, help="Records per batch at most.")
@click.option("--batch-wait", default=0.2, show_default=True, help="Seconds to wait filling a batch.")
@click.option("--metrics-port", type=int, default=None, help="Prometheus port (default: ports.env).")
def run_cmd(datasets: tuple[str, ...], group: str, batch_size: int, batch_wait: float,
            metrics_port: int | None) -> None:
    """Consume std.* and stat.* topics and upsert them into the warehouse until stopped."""
    from hip import metrics
    from hip.proc import relax_gc
    from sinks.warehouse import Warehouse
    from sinks.worker import BatchWriter, SinkConfig, SinkWorker

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    settings = load_settings()
    topics = catalogue_topics(datasets)
    tables = catalogue_tables()
    decoder = default_decoder()
    config = SinkConfig(bootstrap_servers=settings.bootstrap_servers, group_id=group,
                        batch_max=batch_size, batch_wait_s=batch_wait)
    metrics.serve(metrics_port or settings.sink_metrics_port, STAGE)
    worker = SinkWorker(config, topics, lambda producer: BatchWriter(
        Warehouse(settings.warehouse_dsn), decoder, tables, producer, DLQ_TOPIC))

    def stop(signum: int, frame: Any) -> None:
        worker.stop_event.set()
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    click.echo(f"sink: {len(topics)} topics, group {group}", err=True)
    relax_gc()  # set-up done: see hip.proc
    worker.run()


@sink.command("replay")
@click.option("--dataset", required=True, help="Dataset whose topic is replayed.")
@click.option("--org", default=None, help="Only this hospital (organisation code).")
@click.option("--since", default=None, help="From this time (ISO with zone), by message timestamp.")
@click.option("--until", default=None, help="Up to this time (ISO with zone), exclusive.")
@click.option("--batch-size", default=5000, show_default=True)
@click.option("--topic", default=None, help="Read this topic instead of the dataset's.")
def replay_cmd(dataset: str, org: str | None, since: str | None, until: str | None, batch_size: int,
               topic: str | None) -> None:
    """Re-apply a dataset's topic to the warehouse; old versions never overwrite newer rows."""
    from tqdm import tqdm

    from sinks.replay import make_producer, replay
    from sinks.warehouse import Warehouse
    from sinks.worker import BatchWriter

    settings = load_settings()
    tables = catalogue_tables()
    topic = topic or catalogue_topics((dataset,))[0]
    producer = make_producer(settings.bootstrap_servers)
    warehouse = Warehouse(settings.warehouse_dsn, application_name="hip-sink-replay")
    writer = BatchWriter(warehouse, default_decoder(), tables, producer, DLQ_TOPIC)
    with tqdm(desc=f"replay {topic}" + (f" {org}" if org else ""), unit="msg", file=sys.stderr) as bar:
        def planned(plan: Any) -> None:
            bar.total = plan.total
            bar.refresh()
        report = replay(settings.bootstrap_servers, topic, writer, org=org, since=_when(since),
                        until=_when(until), batch_max=batch_size, progress=bar.update, on_plan=planned)
    warehouse.close()
    click.echo(f"read {report.read}, matched {report.matched}, rows changed {report.applied}, "
               f"dead letters {report.dead_letters}, {report.seconds:.1f}s")


@sink.command("renormalize")
@click.option("--org", required=True, help="Hospital whose raw topics are normalized again.")
@click.option("--since", default=None, help="From this time (ISO with zone), by message timestamp.")
def renormalize_cmd(org: str, since: str | None) -> None:
    """Re-run the normalizer over a hospital's raw topics after a mapping fix."""
    from tqdm import tqdm

    from sinks.renormalize import renormalize

    settings = load_settings()
    with tqdm(desc=f"renormalize {org}", unit="event", file=sys.stderr) as bar:
        report = renormalize(settings.bootstrap_servers, org, since=_when(since), progress=bar.update)
    click.echo(str(report))


@sink.command("reconcile")
@click.option("--org", "orgs", multiple=True,
              help="Hospital(s) to check (default: with --against source, every enabled hospital of the fleet "
                   "that has a mapping; required with --against topic).")
@click.option("--dataset", "datasets", multiple=True, help="Datasets (default: every dataset the org maps to).")
@click.option("--against", type=click.Choice(["source", "topic"]), default="source", show_default=True,
              help="source: hospital tables through the mapping core; topic: newest record per key.")
@click.option("--fleet", "fleet_file", type=click.Path(path_type=Path, dir_okay=False), envvar="HIP_FLEET",
              default=None, help="Fleet declaration [default: connectors/fleet/local.yaml].")
@click.option("--mappings", "mappings_dir", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="Folder of vendor profiles and hospitals/<org>.yaml [default: streams/mappings].")
@click.option("--warehouse-schema", default=None,
              help="Compare with the tables of this schema instead of the dataset's (a copy, for tests).")
@click.option("--limit", default=20, show_default=True, help="Keys printed per kind of difference.")
def reconcile_cmd(orgs: tuple[str, ...], datasets: tuple[str, ...], against: str, fleet_file: Path | None,
                  mappings_dir: Path | None, warehouse_schema: str | None, limit: int) -> None:
    """Compare source data with the warehouse per dataset; exit 1 when anything differs.

    Rows are compared by key with a checksum of the mapped fields (not op, source_position,
    source_ts, ingest_ts or warehouse_ts). Source rows the mapping core rejects are counted as
    "rejected at source": they are expected to be absent from the warehouse.
    """
    from dataclasses import replace

    from hip.catalogue import load_catalogue
    from sinks.reconciler import reconcile, topic_records
    from sinks.warehouse import Warehouse

    settings = load_settings()
    cat = load_catalogue()
    resolve = catalogue_tables()

    def tables(name: str) -> TableLike:
        table = resolve(name)
        return replace(table, schema=warehouse_schema) if warehouse_schema else table  # type: ignore[type-var]

    if against == "topic" and not orgs:
        raise click.UsageError("--against topic needs --org")
    sides: dict[str, Any] = {}
    if against == "source":
        from connectors.fleet import LOCAL_FILE, load_fleet
        from sinks.reconciler import source_side
        from streams.core.mapping import MAPPINGS_DIR, load_mappings

        fleet = load_fleet(fleet_file or LOCAL_FILE)
        mappings = load_mappings(mappings_dir or MAPPINGS_DIR)
        if not orgs:
            orgs = tuple(h.org for h in fleet.hospitals if h.enabled and h.org in mappings.hospitals)
        for org in orgs:
            click.echo(f"reading the source tables of {org} …", err=True)
            sides[org] = source_side(org, fleet, mappings, tables=tables)
    warehouse = Warehouse(settings.warehouse_dsn, application_name="hip-sink-reconcile")
    decoder = default_decoder() if against == "topic" else None
    dirty = 0
    for org in orgs:
        side = sides.get(org)
        names = datasets
        if not names:
            names = tuple(cat.datasets) if side is None else tuple(sorted(_mapped_datasets(mappings, org)))
        for name in names:
            table = tables(name)
            if side is None:
                source: Any = topic_records(settings.bootstrap_servers, cat[name].topic, org, decoder,
                                            list(table.primary_key))
            else:
                from sinks.core.reconcile import KeyChecksums, compared_fields

                source = side.datasets.get(name) or KeyChecksums(*compared_fields(table))
            diff = reconcile(org, name, table, source, warehouse)
            status = "ok" if diff.clean else "DIFF"
            click.echo(f"{status:4} {org} {name}: source {diff.source_rows}, warehouse {diff.warehouse_rows}, "
                       f"missing {len(diff.missing)}, extra {len(diff.extra)}, different {len(diff.different)}"
                       + (f", rejected at source {diff.rejected}" if side is not None else "")
                       + (f", duplicate at source {len(diff.duplicates)}" if diff.duplicates else ""))
            for kind in ("missing", "extra", "different", "duplicates"):
                keys = getattr(diff, kind)
                for k in keys[:limit]:
                    click.echo(f"     {kind.rstrip('s') if kind == 'duplicates' else kind} {list(k)}")
                if len(keys) > limit:
                    click.echo(f"     … {len(keys) - limit} more {kind}")
            dirty += 0 if diff.clean else 1
        if side is not None:
            click.echo(f"     {org}: {side.rows_read} source rows mapped, rejected at source "
                       f"{sum(side.rejected.values())}"
                       + "".join(f"; {ds} {reason}: {n}" for (ds, reason), n in sorted(side.rejected.items())))
    warehouse.close()
    if dirty:
        sys.exit(1)


def _mapped_datasets(mappings: Any, org: str) -> set[str]:
    """Datasets the mappings of one hospital produce."""
    return {m.dataset for (o, _), route in mappings.routes.items() if o == org for m in route.mappings}
