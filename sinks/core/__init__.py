"""Pure core of the warehouse sink: folding, COPY encoding, upsert SQL, reconciliation.

Nothing here talks to Kafka or PostgreSQL; the adapters in ``sinks/`` call these functions.
"""
