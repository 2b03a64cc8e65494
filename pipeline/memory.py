"""Bounded, checkpointable memories of the run loop: recent event ids and predictions awaiting labels."""

from __future__ import annotations

from typing import Any


class RecentIds:
    """The ``capacity`` most recently seen ids, to drop redeliveries (FIFO eviction).

    >>> r = RecentIds(2)
    >>> [r.seen_before(x) for x in ["a", "b", "a", "c", "a", "b"]]
    [False, False, True, False, False, False]
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._ids: dict[str, None] = {}

    def seen_before(self, event_id: str) -> bool:
        """True if ``event_id`` is within the horizon; otherwise remember it and return False."""
        if self.capacity <= 0:
            return False
        if event_id in self._ids:
            return True
        self._ids[event_id] = None
        if len(self._ids) > self.capacity:
            del self._ids[next(iter(self._ids))]
        return False

    def __len__(self) -> int:
        return len(self._ids)

    def state(self) -> list[str]:
        return list(self._ids)

    def load(self, ids: list[str]) -> None:
        self._ids = dict.fromkeys(ids)


class PendingPredictions:
    """Predictions waiting for a delayed label, bounded by count and by event-time TTL.

    A label matches its prediction only if the prediction is still held and is no older than
    ``ttl`` behind the stream's event-time watermark when the label arrives. Both rules depend
    only on the order of the stream, never on how it was cut into batches.
    """

    def __init__(self, capacity: int, ttl: float) -> None:
        self.capacity = capacity
        self.ttl = ttl
        self._items: dict[str, tuple[int, str, float]] = {}  # event_id -> (route index, class, ts)
        self.evicted = 0

    def add(self, event_id: str, route_index: int, predicted: str, ts: float) -> None:
        if self.capacity <= 0:
            return
        self._items[event_id] = (route_index, predicted, ts)
        if len(self._items) > self.capacity:
            del self._items[next(iter(self._items))]
            self.evicted += 1

    def take(self, event_id: str, watermark: float) -> tuple[int, str, float] | None:
        item = self._items.pop(event_id, None)
        if item is None or item[2] < watermark - self.ttl:
            return None
        return item

    def expire(self, watermark: float) -> None:
        """Forget the oldest entries that can no longer match (memory only; no effect on results)."""
        limit = watermark - self.ttl
        while self._items:
            key = next(iter(self._items))
            if self._items[key][2] >= limit:
                break
            del self._items[key]
            self.evicted += 1

    def __len__(self) -> int:
        return len(self._items)

    def state(self) -> dict[str, Any]:
        ids = list(self._items)
        return {
            "ids": ids,
            "routes": [self._items[i][0] for i in ids],
            "classes": [self._items[i][1] for i in ids],
            "ts": [self._items[i][2] for i in ids],
            "evicted": self.evicted,
        }

    def load(self, state: dict[str, Any]) -> None:
        self._items = {
            i: (int(r), str(c), float(t))
            for i, r, c, t in zip(state["ids"], state["routes"], state["classes"], state["ts"], strict=True)
        }
        self.evicted = int(state["evicted"])
