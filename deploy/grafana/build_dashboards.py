"""Write the Grafana dashboards of deploy/grafana/dashboards/ from the compact spec below.

The JSON files are what Grafana provisions and what the tests load; edit this spec and run
``var/venv/bin/python deploy/grafana/build_dashboards.py`` rather than editing 4 JSON files by hand
(a unit test fails when the files and the spec disagree).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parent / "dashboards"
DS = {"type": "prometheus", "uid": "hip-prometheus"}
RI = "$__rate_interval"


def t(expr: str, legend: str = "", *, instant: bool = False, table: bool = False) -> dict[str, Any]:
    """One Prometheus query of a panel."""
    q: dict[str, Any] = {"datasource": DS, "expr": expr, "legendFormat": legend or "__auto",
                         "range": not instant, "instant": instant}
    if table:
        q["format"] = "table"
    return q


def panel(kind: str, title: str, targets: list[dict[str, Any]], w: int = 12, h: int = 8,
          unit: str = "short", desc: str = "", **extra: Any) -> dict[str, Any]:
    p: dict[str, Any] = {"type": kind, "title": title, "description": desc, "datasource": DS,
                         "targets": targets,
                         "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
                         "options": {}, "gridPos": {"w": w, "h": h}}
    p.update(extra)
    return p


def stat(title: str, expr: str, unit: str = "short", thresholds: tuple[float, ...] = (1,),
         desc: str = "") -> dict[str, Any]:
    steps = [{"color": "green", "value": None}] + [{"color": c, "value": v}
                                                  for c, v in zip(("orange", "red"), thresholds)]
    p = panel("stat", title, [t(expr, instant=True)], w=4, h=4, unit=unit, desc=desc)
    p["fieldConfig"]["defaults"]["thresholds"] = {"mode": "absolute", "steps": steps}
    p["options"] = {"colorMode": "background", "reduceOptions": {"calcs": ["lastNotNull"]}}
    return p


def table(title: str, targets: list[dict[str, Any]], sort_by: str | None = None, w: int = 24,
          h: int = 12, desc: str = "", hide: tuple[str, ...] = ("Time",)) -> dict[str, Any]:
    transformations: list[dict[str, Any]] = [
        {"id": "merge", "options": {}},
        {"id": "organize", "options": {"excludeByName": {k: True for k in hide}}},
    ]
    if sort_by:
        transformations.append({"id": "sortBy", "options": {"sort": [{"field": sort_by, "desc": True}]}})
    return panel("table", title, targets, w=w, h=h, desc=desc, transformations=transformations)


def variable_org() -> dict[str, Any]:
    return {"name": "org", "label": "Hospital", "type": "query", "datasource": DS,
            "query": {"query": "label_values(hip_hospital_info, org)", "refId": "org"},
            "definition": "label_values(hip_hospital_info, org)", "refresh": 2, "sort": 1,
            "includeAll": False, "multi": False}


def dashboard(uid: str, title: str, panels: list[dict[str, Any]], variables: list[dict[str, Any]] | None = None,
              desc: str = "") -> dict[str, Any]:
    x = y = row_h = 0
    for i, p in enumerate(panels, start=1):
        p["id"] = i
        w, h = p["gridPos"]["w"], p["gridPos"]["h"]
        if x + w > 24:
            x, y, row_h = 0, y + row_h, 0
        p["gridPos"] = {"x": x, "y": y, "w": w, "h": h}
        x, row_h = x + w, max(row_h, h)
        for j, q in enumerate(p["targets"]):
            q["refId"] = chr(ord("A") + j)
    return {"uid": uid, "title": title, "description": desc, "tags": ["hip"], "timezone": "browser",
            "editable": False, "graphTooltip": 1, "schemaVersion": 39, "version": 1,
            "refresh": "10s", "time": {"from": "now-1h", "to": "now"},
            "templating": {"list": variables or []}, "annotations": {"list": []},
            "links": [{"title": "HIP", "type": "dashboards", "tags": ["hip"], "asDropdown": True}],
            "panels": panels}


def fleet() -> dict[str, Any]:
    return dashboard("hip-fleet", "HIP fleet overview", [
        stat("Hospitals", 'count(hip_hospital_info{enabled="true"})', thresholds=()),
        stat("Hospitals with stale data", "count(hip:stale_datasets:count_by_org > 0) or vector(0)",
             desc="Hospitals with at least one dataset older than its threshold."),
        stat("Connectors failed",
             'count(hip_connector_state{state="FAILED"} == 1 or hip_connector_task_state{state="FAILED"} == 1) or vector(0)'),
        stat("Dead letters, 1h", "sum(increase(hip_dead_letters_total[1h])) or vector(0)", thresholds=(1, 100)),
        stat("Workers down", 'count(up{job=~"hip-.*"} == 0) or vector(0)'),
        stat("Worst freshness", "max(hip:freshness_seconds:min_by_org)", unit="s",
             thresholds=(900, 1800), desc="The hospital whose freshest dataset is oldest."),
        table("Hospitals, worst first", [
            t("max by (org) (hip:freshness_ratio)", instant=True, table=True),
            t("hip:freshness_seconds:min_by_org", instant=True, table=True),
            t("hip:stale_datasets:count_by_org", instant=True, table=True),
            t('sum by (org) (hip_connector_state{state="FAILED"}) + sum by (org) (hip_connector_task_state{state="FAILED"})'
              ' or sum by (org) (hip_connector_state{state="FAILED"})', instant=True, table=True),
            t("hip:hospital_lag_messages:sum_by_org", instant=True, table=True),
            t("sum by (org) (increase(hip_dead_letters_total[1h]))", instant=True, table=True),
        ], sort_by="Value #A", h=14,
            desc="A: worst dataset freshness / threshold (>1 stale); B: freshest dataset age (s); "
                 "C: stale datasets; D: failed connectors and tasks; E: consumer lag; F: dead letters 1h."),
        panel("bargauge", "Worst 20 hospitals by freshness / threshold",
              [t("sort_desc(topk(20, max by (org) (hip:freshness_ratio)))", "{{org}}", instant=True)],
              h=10, options={"displayMode": "gradient", "orientation": "horizontal"}),
        panel("timeseries", "Freshest dataset age per hospital",
              [t("hip:freshness_seconds:min_by_org", "{{org}}")], h=10, unit="s"),
        panel("timeseries", "Dead letters per hospital",
              [t(f"sum by (org) (rate(hip_dead_letters_total[{RI}])) or vector(0)", "{{org}}")], unit="ops"),
        panel("timeseries", "Consumer lag per hospital",
              [t("hip:hospital_lag_messages:sum_by_org", "{{org}}")]),
    ], desc="66 hospitals: who is late, who fails, who is rejected. Worst first.")


def hospital() -> dict[str, Any]:
    o = 'org="$org"'
    return dashboard("hip-hospital", "HIP hospital drill-down", [
        table("Source systems", [t(f"hip_hospital_system_info{{{o}}}", instant=True, table=True)],
              w=8, h=7, hide=("Time", "Value", "__name__", "job", "instance")),
        table("Connectors (current state)",
              [t(f"hip_connector_state{{{o}}} == 1", instant=True, table=True)],
              w=8, h=7, hide=("Time", "Value", "__name__", "job", "instance")),
        table("Tasks (current state)",
              [t(f"hip_connector_task_state{{{o}}} == 1", instant=True, table=True)],
              w=8, h=7, hide=("Time", "Value", "__name__", "job", "instance")),
        panel("timeseries", "Consumer lag by system",
              [t(f"sum by (group, system) (hip_hospital_consumer_lag_messages{{{o}}})", "{{system}} {{group}}")]),
        panel("timeseries", "Source log retained and behind",
              [t(f"hip_source_slot_retained_wal_bytes{{{o}}}", "{{system}} WAL retained"),
               t(f"hip_source_slot_lag_bytes{{{o}}}", "{{system}} WAL not confirmed"),
               t(f"hip_source_binlog_lag_bytes{{{o}}}", "{{system}} binlog behind"),
               t(f"hip_source_binlog_retained_bytes{{{o}}}", "{{system}} binlog retained")], unit="bytes"),
        panel("bargauge", "Freshness per dataset",
              [t(f"sort_desc(hip_freshness_seconds{{{o}}})", "{{dataset}}", instant=True)],
              h=14, unit="s", options={"displayMode": "gradient", "orientation": "horizontal"}),
        panel("timeseries", "Records written per dataset",
              [t(f'sum by (dataset) (rate(hip_records_out_total{{{o}, stage="sink"}}[{RI}]))', "{{dataset}}")],
              h=14, unit="ops"),
        panel("timeseries", "Change events in by system",
              [t(f"sum by (stage, system) (rate(hip_events_in_total{{{o}}}[{RI}]))", "{{stage}} {{system}}")],
              unit="ops"),
        panel("barchart", "Rejects by rule and reason, 24h",
              [t(f"sum by (rule, severity) (increase(hip_conformance_findings_total{{{o}}}[24h])) or vector(0)",
                 "{{rule}} {{severity}}", instant=True),
               t(f"sum by (stage, reason) (increase(hip_dead_letters_total{{{o}}}[24h])) or vector(0)",
                 "DLQ {{stage}} {{reason}}", instant=True)],
              desc="Conformance findings by rule (kept) and dead letters by reason (rejected)."),
    ], [variable_org()], desc="One hospital: systems, connectors, lag, datasets, rejects.")


def pipeline() -> dict[str, Any]:
    def q(p: float, metric: str, by: str = "") -> str:
        return f"histogram_quantile({p}, sum by ({by + ', ' if by else ''}le) (rate({metric}_bucket[{RI}])))"
    return dashboard("hip-pipeline", "HIP pipeline", [
        panel("timeseries", "Events in per stage", [t(f"sum by (stage) (rate(hip_events_in_total[{RI}]))", "{{stage}}")],
              w=8, unit="ops"),
        panel("timeseries", "Records out per stage", [t(f"sum by (stage) (rate(hip_records_out_total[{RI}]))", "{{stage}}")],
              w=8, unit="ops"),
        panel("timeseries", "Dead letters per stage and reason",
              [t(f"sum by (stage, reason) (rate(hip_dead_letters_total[{RI}])) or vector(0)", "{{stage}} {{reason}}")],
              w=8, unit="ops"),
        panel("timeseries", "End-to-end latency (source commit → warehouse commit)",
              [t(q(0.5, "hip_end_to_end_latency_seconds"), "p50"),
               t(q(0.95, "hip_end_to_end_latency_seconds"), "p95"),
               t(q(0.99, "hip_end_to_end_latency_seconds"), "p99")], unit="s"),
        panel("timeseries", "Processing latency p95 per stage (source commit → produced)",
              [t(q(0.95, "hip_processing_latency_seconds", "stage"), "{{stage}}")], unit="s"),
        panel("timeseries", "Batch size per stage",
              [t(q(0.5, "hip_batch_size_records", "stage"), "{{stage}} p50"),
               t(q(0.95, "hip_batch_size_records", "stage"), "{{stage}} p95")], w=8),
        panel("timeseries", "Batch duration p95 per stage",
              [t(q(0.95, "hip_batch_duration_seconds", "stage"), "{{stage}}")], w=8, unit="s"),
        panel("timeseries", "Consumer lag per group", [t("hip:consumer_lag_messages:sum_by_group", "{{group}}")], w=8),
        panel("timeseries", "Errors and retries per stage",
              [t(f"sum by (stage, kind) (rate(hip_errors_total[{RI}])) or vector(0)", "{{stage}} {{kind}}"),
               t(f"sum by (stage) (rate(hip_retries_total[{RI}])) or vector(0)", "{{stage}} retries")], unit="ops"),
        panel("state-timeline", "Processes up",
              [t('up{job=~"hip-.*"}', "{{job}}"), t("hip_exporter_read_up", "exporter reads {{backend}}")]),
    ], desc="Throughput per stage, latency percentiles, batch sizes, dead letters.")


def statistics() -> dict[str, Any]:
    return dashboard("hip-statistics", "HIP statistics", [
        panel("timeseries", "Statistics records out per dataset",
              [t(f'sum by (dataset) (rate(hip_records_out_total{{stage="stats"}}[{RI}]))', "{{dataset}}")], unit="ops"),
        panel("timeseries", "Standard records consumed by the statistics stage",
              [t(f'sum (rate(hip_events_in_total{{stage="stats"}}[{RI}]))', "events in")], unit="ops"),
        panel("bargauge", "Statistics freshness per dataset (oldest hospital)",
              [t('max by (dataset) (hip_freshness_seconds{schema="stat"})', "{{dataset}}", instant=True)],
              unit="s", options={"displayMode": "gradient", "orientation": "horizontal"}),
        panel("bargauge", "Statistics rows per dataset",
              [t('hip_warehouse_rows{schema="stat"}', "{{dataset}}", instant=True)],
              options={"displayMode": "basic", "orientation": "horizontal"}),
        panel("timeseries", "Lag on standard topics per consumer group",
              [t('sum by (group) (hip_consumer_lag_messages{job="hip-exporter", topic=~"std[.].*"})', "{{group}}")]),
        panel("timeseries", "Statistics batch size and duration p95",
              [t(f'histogram_quantile(0.95, sum by (le) (rate(hip_batch_size_records_bucket{{stage="stats"}}[{RI}])))',
                 "batch size p95"),
               t(f'histogram_quantile(0.95, sum by (le) (rate(hip_batch_duration_seconds_bucket{{stage="stats"}}[{RI}])))',
                 "batch seconds p95")]),
        panel("bargauge", "Standard rows per dataset (top 20)",
              [t('sort_desc(topk(20, hip_warehouse_rows{schema="std"}))', "{{dataset}}", instant=True)],
              w=24, h=12, options={"displayMode": "basic", "orientation": "horizontal"}),
    ], desc="Incremental statistics: throughput, freshness, rows.")


DASHBOARDS = {"fleet.json": fleet, "hospital.json": hospital, "pipeline.json": pipeline,
              "statistics.json": statistics}


def render() -> dict[str, str]:
    """File name → JSON text of every dashboard."""
    return {name: json.dumps(build(), ensure_ascii=False, indent=2) + "\n" for name, build in DASHBOARDS.items()}


if __name__ == "__main__":
    OUT.mkdir(parents=True, exist_ok=True)
    for name, text in render().items():
        (OUT / name).write_text(text, encoding="utf-8")
        print(f"wrote {OUT / name}", file=sys.stderr)
