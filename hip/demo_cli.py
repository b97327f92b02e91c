"""``hip demo``: the live view and the closing report of ``make demo``."""
from __future__ import annotations

import os
import time
from collections import Counter
from typing import Any

import click
import requests

from hip.settings import Settings, load_settings

# The consumer groups of the demo's normalizer and sink (their workers' defaults:
# streams/normalizer_stage.py, sinks/worker.py).
NORMALIZER_GROUP = "hip-normalizer"
SINK_GROUP = "hip-sink"

DLQ_TOPICS = ("dlq.normalize", "dlq.sink", "dlq.stats")


def prom_query(s: Settings, expr: str) -> list[dict[str, Any]]:
    r = requests.get(f"{s.prometheus_url}/api/v1/query", params={"query": expr}, timeout=5)
    r.raise_for_status()
    return list(r.json()["data"]["result"])


def prom_value(s: Settings, expr: str) -> float:
    result = prom_query(s, expr)
    return sum(float(x["value"][1]) for x in result)


def _alive(pids: tuple[int, ...]) -> bool:
    for pid in pids:
        try:
            os.kill(pid, 0)
            return True
        except OSError:
            continue
    return False


@click.group()
def demo() -> None:
    """Live view and report of the demo run (used by `make demo`)."""


@demo.command()
@click.option("--while-pid", "pids", type=int, multiple=True, help="Watch while any of these processes runs.")
@click.option("--drain", default=180, show_default=True, help="Then wait up to this many seconds for lag 0.")
@click.option("--every", default=5.0, show_default=True, help="Seconds between lines.")
def watch(pids: tuple[int, ...], drain: int, every: float) -> None:
    """Print rates, lag and dead letters every few seconds, then wait for the pipeline to drain."""
    s = load_settings()
    click.echo(f"{'time':8}  {'changes/s':>9}  {'std/s':>7}  {'warehouse/s':>11}  {'lag normalizer':>14}  "
               f"{'lag sink+stats':>14}  {'dead letters':>12}")
    deadline: float | None = None
    idle = 0
    while True:
        try:
            rate_in = prom_value(s, 'sum(rate(hip_events_in_total{stage="normalizer"}[20s]))')
            rate_std = prom_value(s, 'sum(rate(hip_records_out_total{stage="normalizer"}[20s]))')
            rate_wh = prom_value(s, 'sum(rate(hip_records_out_total{stage="sink"}[20s]))')
            lag = {x["metric"].get("group", "?"): float(x["value"][1]) for x in prom_query(
                s, 'sum by (group) (hip_consumer_lag_messages{job="hip-exporter"})')}
            dead = prom_value(s, "sum(hip_dead_letters_total)")
        except requests.RequestException as exc:
            click.echo(f"(Prometheus not answering: {exc})")
            time.sleep(every)
            continue
        # Only the workers' own groups: the tests leave groups of their own behind (hip-stats-test-…),
        # whose lag never falls and kept the demo waiting out its whole drain time.
        lag_norm = lag.get(NORMALIZER_GROUP, 0.0)
        # The statistics worker's group counts too: its results reach the warehouse through the sink.
        lag_sink = lag.get(SINK_GROUP, 0.0) + lag.get(s.stats_app_id, 0.0)
        click.echo(f"{time.strftime('%H:%M:%S'):8}  {rate_in:9.0f}  {rate_std:7.0f}  {rate_wh:11.0f}  "
                   f"{lag_norm:14.0f}  {lag_sink:14.0f}  {dead:12.0f}")
        if not _alive(pids):
            if deadline is None:
                deadline = time.monotonic() + drain
                click.echo("workload finished; waiting for the pipeline to drain")
            idle = idle + 1 if lag_norm == 0 and lag_sink == 0 and rate_wh == 0 and rate_std == 0 else 0
            # Rates are averaged over 20 s and scraped every 5 s: quiet for 25 s means drained.
            if idle >= 5 or time.monotonic() > deadline:
                if idle < 5:
                    click.echo(f"pipeline still busy after {drain}s; the report shows the state so far")
                return
        time.sleep(every)


@demo.command("wait-topics")
@click.option("--prefix", required=True, help="Topic name prefix to watch.")
@click.option("--settle", default=8.0, show_default=True, help="Seconds without a new topic.")
@click.option("--timeout", default=180.0, show_default=True)
def wait_topics(prefix: str, settle: float, timeout: float) -> None:
    """Wait until topics with this prefix stop appearing (connector snapshots create them)."""
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": load_settings().bootstrap_servers})
    seen: set[str] = set()
    changed, start = time.monotonic(), time.monotonic()
    while time.monotonic() - changed < settle:
        if time.monotonic() - start > timeout:
            raise click.ClickException(f"topics {prefix}* still appearing after {timeout:.0f} s")
        now = {t for t in admin.list_topics(timeout=10).topics if t.startswith(prefix)}
        if now != seen or not now:
            seen, changed = now, time.monotonic()
        time.sleep(1.0)
    click.echo(f"{len(seen)} topics {prefix}*")


def dead_letter_counts(s: Settings) -> Counter[tuple[str, str, str]]:
    """(topic, org, reason) → count, read from the dead-letter topics' headers."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": s.bootstrap_servers, "group.id": "hip-demo-report",
                         "enable.auto.commit": False})
    counts: Counter[tuple[str, str, str]] = Counter()
    try:
        topics = consumer.list_topics(timeout=10).topics
        for topic in DLQ_TOPICS:
            if topic not in topics:
                continue
            for p in topics[topic].partitions:
                low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
                if high <= low:
                    continue
                consumer.assign([TopicPartition(topic, p, low)])
                seen = low
                while seen < high:
                    msg = consumer.poll(2.0)
                    if msg is None:
                        break
                    if msg.error():
                        continue
                    seen = (msg.offset() or 0) + 1
                    h: dict[str, str] = {}
                    for k, v in list(msg.headers() or []):
                        h[str(k)] = v if isinstance(v, str) else (v or b"").decode("utf-8", "replace")
                    org = h.get("hip.org") or _org_of_topic(h.get("hip.topic", ""))
                    counts[(topic, org or "?", h.get("hip.reason", "?"))] += 1
    finally:
        consumer.close()
    return counts


def _org_of_topic(topic: str) -> str:
    parts = topic.split(".")
    return parts[1] if len(parts) > 2 and parts[0] == "raw" else ""


def warehouse_counts(s: Settings) -> dict[str, dict[str, tuple[int, int]]]:
    """dataset → org → (live rows, deleted rows) for every std and stat table that has rows."""
    import psycopg2

    from hip.catalogue import load_catalogue

    out: dict[str, dict[str, tuple[int, int]]] = {}
    conn = psycopg2.connect(s.warehouse_dsn)
    try:
        with conn.cursor() as cur:
            cur.execute("select table_schema || '.' || table_name from information_schema.tables "
                        "where table_schema in ('std', 'stat')")
            existing = {r[0] for r in cur.fetchall()}
            for ds in load_catalogue():
                table = ds.warehouse_table
                if table not in existing:
                    continue
                cur.execute(f"select org_code, count(*) filter (where not deleted), count(*) filter (where deleted) "
                            f"from {table} group by org_code")
                for org, live, deleted in cur.fetchall():
                    out.setdefault(ds.name, {})[org] = (live, deleted)
    finally:
        conn.close()
    return out


@demo.command()
@click.option("--all-orgs", is_flag=True, help="Every organisation in the warehouse, not only the local fleet's.")
def report(all_orgs: bool) -> None:
    """Rows per dataset and hospital in the warehouse, and dead letters by reason."""
    from connectors.fleet import load_fleet
    from hip.catalogue import load_catalogue

    s = load_settings()
    counts = warehouse_counts(s)
    orgs = sorted({o for per in counts.values() for o in per})
    if not all_orgs:
        fleet_orgs = {h.org for h in load_fleet().hospitals}
        orgs = [o for o in orgs if o in fleet_orgs]
        counts = {d: per for d, per in counts.items() if any(o in per for o in orgs)}
    cat = load_catalogue()
    click.echo("\nWarehouse rows per dataset and hospital (live / soft-deleted):")
    head = f"{'#':>3}  {'dataset':32} " + "".join(f"{o:>18}" for o in orgs)
    click.echo(head)
    click.echo("-" * len(head))
    for name in sorted(counts, key=lambda n: cat[n].number):
        cells = "".join(f"{'%d / %d' % counts[name].get(o, (0, 0)):>18}" for o in orgs)
        click.echo(f"{cat[name].number:>3}  {name[:32]:32} {cells}")
    totals = "".join(f"{sum(per.get(o, (0, 0))[0] for per in counts.values()):>18}" for o in orgs)
    click.echo(f"{'':3}  {'total live rows':32} {totals}")

    dead = dead_letter_counts(s)
    click.echo("\nDead letters by topic, hospital and reason:")
    if not dead:
        click.echo("  none")
    for (topic, org, reason), n in sorted(dead.items()):
        if not all_orgs and org not in orgs:
            continue
        click.echo(f"  {topic:15} {org:10} {reason:28} {n:>8}")
