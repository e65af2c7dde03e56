"""A bounded, thread-safe memory of facts this process verified (least recently used forgotten first).

Used where re-verifying the same bytes is the cost: valid signatures (:mod:`agent.crypto`) and
verified database digests (:mod:`agent.database.engine`). Keys must hold every input of the
fact, so a changed input is simply not found; forgetting only costs a verification again.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class Memo(Generic[K, V]):
    """At most ``size`` remembered values."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._items: OrderedDict[K, V] = OrderedDict()
        self._lock = threading.Lock()  # callers run in worker threads too

    def get(self, key: K) -> V | None:
        """The value remembered for ``key`` (None when unknown or forgotten)."""
        with self._lock:
            value = self._items.get(key)
            if value is not None:
                self._items.move_to_end(key)
            return value

    def put(self, key: K, value: V) -> None:
        """Remember ``value`` for ``key``, forgetting the least recently used past ``size``."""
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)

    def clear(self) -> None:
        """Forget everything (tests start from an empty memory)."""
        with self._lock:
            self._items.clear()
