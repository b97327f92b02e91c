"""hip.topics.produce_waiting: a full local queue is waited out, not raised."""
from hip.topics import produce_waiting


class _FullOnce:
    def __init__(self, full: int) -> None:
        self.full, self.sent, self.polls = full, [], 0

    def produce(self, topic, value, key, headers=None):
        if self.full:
            self.full -= 1
            raise BufferError("Local: Queue full")
        self.sent.append((topic, value, key, headers))

    def poll(self, timeout):
        self.polls += 1


def test_waits_while_the_queue_is_full_then_sends_once():
    p = _FullOnce(full=2)
    produce_waiting(p, "t", b"v", b"k", [("h", b"1")])
    assert p.sent == [("t", b"v", b"k", [("h", b"1")])]
    assert p.polls == 3  # two waits and the usual serve of delivery callbacks
