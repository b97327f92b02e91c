"""Schema registration that tolerates a concurrent registration of the same subject."""
from __future__ import annotations

import time
from typing import Any

from hip.errors import FatalError


def register_with_retry(codec: Any, dataset: str, attempts: int = 5) -> None:
    """Register ``dataset``'s schema; retry the registry's 409 "rule already exists" race.

    Two processes registering one subject at the same moment can make the registry refuse one of
    them; the subject is then set up and a second attempt succeeds.
    """
    for attempt in range(attempts):
        try:
            codec.register(dataset)
            return
        except FatalError as exc:
            if "already exists" not in str(exc) or attempt == attempts - 1:
                raise
            time.sleep(0.2 * (attempt + 1))
