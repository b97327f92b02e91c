"""``hip fleet``: the declared hospital fleet against Kafka Connect, preflight, poller and ingest.

Exit codes: 0 ok; 1 differences, failures or missing prerequisites; 2 bad configuration.
"""
from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import click

from connectors.connect_client import ConnectClient, validation_errors
from connectors.fleet import LOCAL_FILE, Fleet, Hospital, load_fleet
from connectors.plan import Change, format_plan, plan
from connectors.templates import TEMPLATE_DIR, RenderContext, connector_name, render_fleet
from connectors.topics import topic_prefix
from hip.settings import Settings, load_settings


class Ctx:
    def __init__(self, fleet_file: Path, template_dir: Path) -> None:
        self.settings: Settings = load_settings()
        self.fleet_file = fleet_file
        self.template_dir = template_dir
        self._fleet: Fleet | None = None

    @property
    def fleet(self) -> Fleet:
        if self._fleet is None:
            self._fleet = load_fleet(self.fleet_file)
        return self._fleet

    def render_ctx(self) -> RenderContext:
        return RenderContext(self.settings.bootstrap_servers, self.settings.secrets_dir, self.template_dir)

    def client(self) -> ConnectClient:
        return ConnectClient(self.settings.connect_url)

    def desired(self) -> dict[str, dict[str, str]]:
        return render_fleet(self.fleet, self.render_ctx())


pass_ctx = click.make_pass_decorator(Ctx)


@click.group()
@click.option("--fleet", "fleet_file", type=click.Path(path_type=Path), envvar="HIP_FLEET",
              default=LOCAL_FILE, show_default=True, help="fleet declaration (YAML)")
@click.option("--templates", "template_dir", type=click.Path(path_type=Path, file_okay=False),
              envvar="HIP_TEMPLATES", default=TEMPLATE_DIR, show_default=True,
              help="folder of connector templates")
@click.pass_context
def fleet(ctx: click.Context, fleet_file: Path, template_dir: Path) -> None:
    """Hospital fleet: connectors through the Connect REST API, preflight, poll and push modes."""
    ctx.obj = Ctx(fleet_file, template_dir)


def _changes(c: Ctx) -> list[Change]:
    desired = c.desired()
    current = c.client().configs()
    return plan(desired, current, c.fleet.connector_prefix)


@fleet.command("plan")
@pass_ctx
def plan_cmd(c: Ctx) -> None:
    """Show what apply would create, update and delete (exit 1 when there are differences)."""
    changes = _changes(c)
    click.echo(format_plan(changes))
    sys.exit(1 if changes else 0)


@fleet.command()
@click.option("--validate/--no-validate", default=True, show_default=True,
              help="check each changed config with Connect's validation endpoint first")
@pass_ctx
def apply(c: Ctx, validate: bool) -> None:
    """Converge Connect to the declaration; only changed connectors are touched."""
    client = c.client()
    changes = _changes(c)
    click.echo(format_plan(changes))
    if not changes:
        return
    if validate:
        bad = {}
        for ch in changes:
            if ch.desired is not None:
                errs = validation_errors(client.validate({**ch.desired, "name": ch.name}))
                if errs:
                    bad[ch.name] = errs
        if bad:
            for name, errs in bad.items():
                for key, msgs in errs.items():
                    click.echo(f"invalid {name}: {key}: {'; '.join(msgs)}", err=True)
            raise click.ClickException("Connect rejected the configuration; nothing was changed")
    start = time.monotonic()
    with click.progressbar(changes, label="applying", file=sys.stderr) as bar:
        for ch in bar:
            if ch.action == "delete":
                client.delete(ch.name)
            else:
                assert ch.desired is not None
                client.put_config(ch.name, ch.desired)
    click.echo(f"applied {len(changes)} change(s) in {time.monotonic() - start:.1f} s")


def _targets(c: Ctx, region: str | None, hospital: str | None, all_: bool) -> list[Hospital]:
    if not (region or hospital or all_):
        raise click.UsageError("choose --hospital, --region or --all")
    return c.fleet.select(region=region, org=hospital)


def _first_line(trace: str | None) -> str:
    if not trace:
        return ""
    lines = [ln.strip() for ln in trace.splitlines() if ln.strip()]
    causes = [ln for ln in lines if ln.startswith("Caused by:")]
    return (causes[-1] if causes else lines[0])[:300]


def status_rows(c: Ctx, hospitals: list[Hospital]) -> list[dict[str, Any]]:
    running = c.client().connectors()
    rows = []
    for h in hospitals:
        for system, spec in h.systems.items():
            name = connector_name(c.fleet, h.org, system)
            row: dict[str, Any] = {"org": h.org, "hospital": h.name, "region": h.region, "system": system,
                                   "capture": spec.capture, "connector": name, "state": "", "tasks": "",
                                   "error": ""}
            if spec.capture != "log":
                row["state"] = f"{spec.capture} mode" if h.enabled else "disabled"
            elif name not in running:
                row["state"] = "ABSENT" if h.enabled else "disabled"
            else:
                st = running[name]["status"]
                row["state"] = st["connector"]["state"]
                row["tasks"] = ",".join(f"{t['id']}:{t['state']}" for t in st.get("tasks", []))
                failed = [t for t in st.get("tasks", []) if t["state"] == "FAILED"]
                trace = st["connector"].get("trace") or (failed[0].get("trace") if failed else None)
                row["error"] = _first_line(trace)
                if failed and row["state"] == "RUNNING":
                    row["state"] = "RUNNING (task FAILED)"
            rows.append(row)
    return rows


@fleet.command()
@click.option("--region", help="region as in attachment 1, e.g. 长春")
@click.option("--hospital", help="organisation code or hospital name")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
@pass_ctx
def status(c: Ctx, region: str | None, hospital: str | None, as_json: bool) -> None:
    """Connector and task states per hospital and system, with the failing task's error."""
    rows = status_rows(c, c.fleet.select(region=region, org=hospital))
    if as_json:
        click.echo(json.dumps(rows, ensure_ascii=False, indent=1))
    else:
        for r in rows:
            click.echo(f"{r['region']:<4} {r['org']:<8} {r['system']:<5} {r['state']:<22} {r['tasks']:<12} "
                       f"{r['hospital']}")
            if r["error"]:
                click.echo(f"      error: {r['error']}")
    sys.exit(1 if any("FAILED" in r["state"] or r["state"] == "ABSENT" for r in rows) else 0)


def _log_connectors(c: Ctx, hospitals: list[Hospital]) -> list[str]:
    return [connector_name(c.fleet, h.org, s) for h in hospitals if h.enabled
            for s, spec in h.systems.items() if spec.capture == "log"]


def _scope(f: Any) -> Any:
    f = click.option("--all", "all_", is_flag=True, help="every hospital of the fleet")(f)
    f = click.option("--hospital", help="organisation code or hospital name")(f)
    return click.option("--region", help="region as in attachment 1")(f)


@fleet.command()
@click.option("--failed", is_flag=True, required=True, help="restart only failed connectors and tasks")
@_scope
@pass_ctx
def restart(c: Ctx, failed: bool, region: str | None, hospital: str | None, all_: bool) -> None:
    """Restart failed connectors and tasks of a hospital, a region or all."""
    client = c.client()
    running = client.connectors()
    count = 0
    for name in _log_connectors(c, _targets(c, region, hospital, all_)):
        st = running.get(name, {}).get("status")
        if not st:
            continue
        if st["connector"]["state"] == "FAILED" or any(t["state"] == "FAILED" for t in st.get("tasks", [])):
            client.restart(name, only_failed=failed)
            click.echo(f"restarted {name}")
            count += 1
    click.echo(f"{count} connector(s) restarted")


@fleet.command()
@_scope
@pass_ctx
def pause(c: Ctx, region: str | None, hospital: str | None, all_: bool) -> None:
    """Pause the connectors of a hospital, a region or all."""
    client = c.client()
    for name in _log_connectors(c, _targets(c, region, hospital, all_)):
        client.pause(name)
        click.echo(f"paused {name}")


@fleet.command()
@_scope
@pass_ctx
def resume(c: Ctx, region: str | None, hospital: str | None, all_: bool) -> None:
    """Resume the connectors of a hospital, a region or all."""
    client = c.client()
    for name in _log_connectors(c, _targets(c, region, hospital, all_)):
        client.resume(name)
        click.echo(f"resumed {name}")


@fleet.command()
@click.option("--hospital", required=True, help="organisation code or hospital name")
@click.option("--system", required=True, help="HIS, LIS, PACS, EMR, MRS or ANES")
@click.option("--table", "tables", multiple=True, required=True,
              help="schema.table (database.table on MariaDB); repeat for several")
@pass_ctx
def snapshot(c: Ctx, hospital: str, system: str, tables: tuple[str, ...]) -> None:
    """Ad-hoc incremental snapshot of chosen tables, through Debezium's Kafka signal channel."""
    from confluent_kafka import Producer

    h = c.fleet.hospital(hospital)
    spec = h.systems.get(system)
    if spec is None or spec.capture != "log":
        raise click.UsageError(f"{h.org} {system} is not captured in log mode")
    unknown = [t for t in tables if t not in spec.tables]
    if unknown:
        raise click.UsageError(f"not captured tables: {unknown}")
    _ensure_topic(c.settings.bootstrap_servers, c.fleet.signal_topic)
    producer = Producer({"bootstrap.servers": c.settings.bootstrap_servers, "acks": "all"})
    value = {"type": "execute-snapshot", "data": {"data-collections": list(tables), "type": "INCREMENTAL"}}
    producer.produce(c.fleet.signal_topic, key=topic_prefix(h.org, system).encode(),
                     value=json.dumps(value).encode())
    if producer.flush(30):
        raise click.ClickException("signal not delivered")
    click.echo(f"snapshot signal sent to {c.fleet.signal_topic} for {topic_prefix(h.org, system)}: {', '.join(tables)}")


def _ensure_topic(bootstrap: str, topic: str) -> None:
    from confluent_kafka.admin import NewTopic  # type: ignore[attr-defined]

    from hip.topics import create_missing

    # One partition: the signal channel reads partition 0 only.
    create_missing(bootstrap, [NewTopic(topic, num_partitions=1, replication_factor=1)], timeout=10)


@fleet.command()
@click.option("--hospital", required=True, help="organisation code or hospital name")
@click.option("--system", help="only this system")
@pass_ctx
def preflight(c: Ctx, hospital: str, system: str | None) -> None:
    """Check with the hospital's own credentials what capture needs; print the DBA's statements."""
    from connectors.preflight import format_report, run_preflight

    h = c.fleet.hospital(hospital)
    ok = True
    for s, spec in h.systems.items():
        if system and s != system:
            continue
        report = run_preflight(c.fleet, h, s, spec, c.settings.secrets_dir)
        click.echo(format_report(report))
        ok = ok and report.declared_works
    sys.exit(0 if ok else 1)


@fleet.command()
@pass_ctx
def validate(c: Ctx) -> None:
    """Render every log-mode connector and have Connect validate it (no connector is created)."""
    client = c.client()
    installed = {p["class"] for p in client.plugins()}
    failed = False
    for name, config in c.desired().items():
        if config["connector.class"] not in installed:
            click.echo(f"? {name}: plugin {config['connector.class']} not installed here")
            continue
        errs = validation_errors(client.validate({**config, "name": name}))
        failed = failed or bool(errs)
        click.echo(f"{'✗' if errs else '✓'} {name}" + "".join(f"\n    {k}: {'; '.join(v)}" for k, v in errs.items()))
    sys.exit(1 if failed else 0)


@fleet.command()
@click.option("--hospital", help="only this hospital (default: every enabled hospital in poll mode)")
@click.option("--once", is_flag=True, help="one pass with a key comparison, then exit")
@click.option("--metrics-port", type=int, default=0, help="serve Prometheus metrics on this port")
@pass_ctx
def poll(c: Ctx, hospital: str | None, once: bool, metrics_port: int) -> None:
    """Run the poller for systems in poll mode (long-running unless --once)."""
    from connectors.poll_worker import SystemPoller
    from hip.metrics import serve

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    hs = [c.fleet.hospital(hospital)] if hospital else c.fleet.hospitals
    pollers = [SystemPoller(c.fleet, h, s, spec, c.settings.secrets_dir, c.settings.bootstrap_servers)
               for h in hs if h.enabled for s, spec in h.systems.items() if spec.capture == "poll"]
    if not pollers:
        raise click.ClickException("no enabled system in poll mode")
    if metrics_port:
        serve(metrics_port, "poller")
    if once:
        for p in pollers:
            p.start()
            click.echo(f"{p.hospital.org}.{p.system}: {p.poll_once(diff=True)} event(s)")
            p.close()
        return
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    threads = [threading.Thread(target=p.run, args=(stop.is_set,), name=f"poll-{p.hospital.org}.{p.system}",
                                daemon=True) for p in pollers]
    for t in threads:
        t.start()
    try:
        # A system that stopped on a permanent error stops the process: a poller that quietly
        # skips a hospital is worse than one the status page shows as down.
        while not stop.is_set() and all(t.is_alive() for t in threads):
            stop.wait(1.0)
    except KeyboardInterrupt:
        stop.set()
    dead = [] if stop.is_set() else [t.name for t in threads if not t.is_alive()]
    stop.set()
    for t in threads:
        t.join(timeout=30)
    if dead:
        raise click.ClickException(f"stopped on a permanent error: {', '.join(dead)} (traceback above)")


@fleet.command()
@click.option("--port", type=int, default=None, help="default: HIP_INGEST_PORT")
@pass_ctx
def ingest(c: Ctx, port: int | None) -> None:
    """Serve the push-mode HTTP ingest (OpenAPI at /openapi.json)."""
    from connectors.ingest import default_ingest, serve
    from connectors.push import TOKENS_FILE, TokenStore

    s = c.settings
    tokens = TokenStore(s.secrets_dir / TOKENS_FILE)
    serve(default_ingest(tokens, s.var / "ingest", s.bootstrap_servers, s.registry_url), port or s.ingest_port)


@fleet.command("push-token")
@click.argument("org")
@pass_ctx
def push_token(c: Ctx, org: str) -> None:
    """Issue a push token for a hospital; printed once, only its hash is kept."""
    from connectors.push import TOKENS_FILE, TokenStore

    h = c.fleet.hospital(org)
    token = TokenStore(c.settings.secrets_dir / TOKENS_FILE).issue(h.org)
    click.echo(token)
    if not os.isatty(1):
        return
    click.echo(f"(token for {h.org} {h.name}; store it now, it cannot be shown again)", err=True)
