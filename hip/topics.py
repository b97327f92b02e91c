"""Creating Kafka topics that may exist already (one place for the race every creator must allow),
and loading many messages into them."""
from __future__ import annotations

from typing import Any, Iterable


def create_missing(bootstrap: str, topics: Iterable[Any], timeout: float = 30.0) -> list[str]:
    """Create those of ``topics`` (``NewTopic``) the broker does not have; the names created.

    Another process creating the same topic at the same moment is fine ("already exists"); any
    other failure is raised (``KafkaException``) for the caller to report in its own terms.
    """
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap})
    existing = admin.list_topics(timeout=timeout).topics
    missing = [t for t in topics if t.topic not in existing]
    created: list[str] = []
    for name, fut in (admin.create_topics(missing, request_timeout=timeout) if missing else {}).items():
        try:
            fut.result()
            created.append(name)
        except Exception as exc:  # noqa: BLE001 - checked just below
            if "TOPIC_ALREADY_EXISTS" not in str(exc):
                raise
    return created


def partition_count(bootstrap: str, topic: str, timeout: float = 30.0) -> int | None:
    """The number of partitions of ``topic``, or None when it does not exist."""
    from confluent_kafka.admin import AdminClient

    found = AdminClient({"bootstrap.servers": bootstrap}).list_topics(topic, timeout=timeout).topics.get(topic)
    return len(found.partitions) if found is not None and not found.error else None


def produce_waiting(producer: Any, topic: str, value: bytes | None, key: bytes | None = None,
                    headers: Any = None) -> None:
    """``producer.produce``, waiting while the client's local queue is full (it holds 100,000
    messages by default; a benchmark loading more than that raised ``BufferError``)."""
    while True:
        try:
            producer.produce(topic, value, key, headers=headers)
            break
        except BufferError:
            producer.poll(0.5)
    producer.poll(0)
