"""Creating Kafka topics that may exist already (one place for the race every creator must allow),
loading many messages into them, and removing a run's topics for good."""
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


def delete_until_gone(bootstrap: str, topics: list[str], attempts: int = 10) -> list[str]:
    """Delete ``topics`` and check that they stay gone; the names still there after ``attempts``.

    A client still alive in the process (a producer that wrote to them) asks for their metadata
    again after they are gone, and the broker, which creates topics on demand, makes them anew.
    So: delete, wait, list, and delete again what came back.
    """
    import time

    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap})
    left = list(topics)
    for _ in range(attempts):
        for fut in admin.delete_topics(left).values():
            try:
                fut.result()
            except Exception:  # noqa: BLE001 - already gone, or never made
                pass
        time.sleep(2)
        existing = admin.list_topics(timeout=15).topics
        left = [t for t in topics if t in existing]
        if not left:
            break
    return left


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
