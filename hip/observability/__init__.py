"""Observability of the platform: the metrics exporter and the fleet status view.

``model`` is the pure core (lag, freshness, Connect states, binlog arithmetic, the status table);
``backends`` reads Kafka, Connect, the source databases, the warehouse and Prometheus;
``exporter`` publishes what the backends read as Prometheus metrics.
"""
