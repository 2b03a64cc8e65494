"""Bounded, checkpointable memories of the run loop: recent event ids, predictions awaiting labels,
labels awaiting predictions, and an outlier-robust event-time clock."""

from __future__ import annotations

from collections import OrderedDict, deque
from typing import Any


class RecentIds:
    """The ``capacity`` most recently seen ids, to drop redeliveries (FIFO eviction).

    >>> r = RecentIds(2)
    >>> [r.seen_before(x) for x in ["a", "b", "a", "c", "a", "b"]]
    [False, False, True, False, False, False]
    """

    # A set for membership and a deque for arrival order: evicting the oldest id is O(1). (A plain
    # dict evicted with ``next(iter(d))`` rescans the deleted slots at its front on every call,
    # which made a full horizon cost tens of microseconds per event.)
    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._ids: set[str] = set()
        self._order: deque[str] = deque()

    def seen_before(self, event_id: str) -> bool:
        """True if ``event_id`` is within the horizon; otherwise remember it and return False."""
        if self.capacity <= 0:
            return False
        ids = self._ids
        if event_id in ids:
            return True
        ids.add(event_id)
        order = self._order
        order.append(event_id)
        if len(order) > self.capacity:
            ids.discard(order.popleft())
        return False

    def __len__(self) -> int:
        return len(self._order)

    def state(self) -> list[str]:
        return list(self._order)

    def load(self, ids: list[str]) -> None:
        self._order = deque(dict.fromkeys(ids))
        self._ids = set(self._order)


class PendingPredictions:
    """Predictions waiting for a delayed label, bounded by count and by event-time TTL.

    A label matches its prediction only if the prediction is still held and is no older than
    ``ttl`` behind the stream's event-time watermark when the label arrives. Both rules depend
    only on the order of the stream, never on how it was cut into batches.
    """

    def __init__(self, capacity: int, ttl: float) -> None:
        self.capacity = capacity
        self.ttl = ttl
        # event_id -> (route index, class, ts); an OrderedDict, whose oldest entry is found in O(1)
        # however many entries were removed before it (a dict rescans its deleted slots)
        self._items: OrderedDict[str, tuple[int, str, float]] = OrderedDict()
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

    def awaits(self, event_id: str) -> bool:
        """Whether ``event_id`` is held (matched or not); False also after its TTL expiry evicted it."""
        return event_id in self._items

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
        self._items = OrderedDict(
            (i, (int(r), str(c), float(t)))
            for i, r, c, t in zip(state["ids"], state["routes"], state["classes"], state["ts"], strict=True)
        )
        self.evicted = int(state["evicted"])


class RobustClock:
    """An event-time clock that one wrong timestamp cannot move.

    Its value is the running maximum of the median ``ts`` of the last ``span`` events: monotone,
    it follows the stream after a real gap within ``span // 2 + 1`` events, and a lone
    event with a skewed clock (hours ahead or behind) never moves it. Used to order merged
    files and to decide when an early label's prediction can no longer come.

    >>> c = RobustClock(5)
    >>> [c.update(t) for t in [10.0, 11.0, 99999.0, 12.0, 13.0, 14.0]]
    [10.0, 10.5, 11.0, 11.5, 12.0, 13.0]
    """

    def __init__(self, span: int = 9) -> None:
        self.span = span
        self._recent: list[float] = []
        self.value = float("-inf")

    def update(self, ts: float) -> float:
        recent = self._recent
        recent.append(ts)
        if len(recent) > self.span:
            del recent[0]
        ordered = sorted(recent)
        n = len(ordered)
        median = ordered[n // 2] if n % 2 else 0.5 * (ordered[n // 2 - 1] + ordered[n // 2])
        if median > self.value:
            self.value = median
        return self.value

    def state(self) -> dict[str, Any]:
        return {"recent": list(self._recent), "value": self.value}

    def load(self, state: dict[str, Any]) -> None:
        self._recent = [float(t) for t in state["recent"]]
        self.value = float(state["value"])


class EarlyLabels:
    """Labels that arrived before their prediction, waiting for it (bounded by count and time).

    Labels can overtake their predictions: a labels topic with fewer messages catches up faster
    after a pause, and an archived labels file is merged by time. A label waits until the
    predictions' :class:`RobustClock` passes its ``ts`` by ``wait`` seconds (a prediction is
    never logged after its label) or until ``capacity`` newer early labels push it out; only
    then does it count as unmatched.

    >>> e = EarlyLabels(capacity=10, wait=60.0)
    >>> e.add("a", "cat", 100.0, "m")
    []
    >>> e.take("a")
    ('cat', 100.0, 'm')
    >>> e.add("b", "dog", 100.0, "m"), e.expire(150.0), e.expire(161.0)
    ([], [], [('b', 100.0, 'm')])
    """

    def __init__(self, capacity: int, wait: float) -> None:
        self.capacity = capacity
        self.wait = wait
        # event_id -> (class, ts, model), oldest first (an OrderedDict, see PendingPredictions)
        self._items: OrderedDict[str, tuple[str | None, float, str | None]] = OrderedDict()

    def add(self, event_id: str, label: str | None, ts: float, model: str | None) -> list[tuple[str, float, str | None]]:
        """Hold a label; returns the ``(event_id, ts, model)`` of labels pushed out (now unmatched)."""
        if self.capacity <= 0:
            return [(event_id, ts, model)]
        self._items.pop(event_id, None)
        self._items[event_id] = (label, ts, model)
        evicted = []
        while len(self._items) > self.capacity:
            key = next(iter(self._items))
            _label, old_ts, old_model = self._items.pop(key)
            evicted.append((key, old_ts, old_model))
        return evicted

    def take(self, event_id: str) -> tuple[str | None, float, str | None] | None:
        if not self._items:
            return None
        return self._items.pop(event_id, None)

    def expire(self, predictions_clock: float) -> list[tuple[str, float, str | None]]:
        """Drop the labels whose prediction can no longer come; returns their ``(event_id, ts, model)``."""
        limit = predictions_clock - self.wait
        gone = []
        for k, (_label, ts, model) in self._items.items():  # arrival order ~ ts order: stop at the first young one
            if ts >= limit:
                break
            gone.append((k, ts, model))
        for k, _ts, _model in gone:
            del self._items[k]
        return gone

    def __len__(self) -> int:
        return len(self._items)

    def state(self) -> dict[str, Any]:
        ids = list(self._items)
        return {"ids": ids, "labels": [self._items[i][0] for i in ids], "ts": [self._items[i][1] for i in ids],
                "models": [self._items[i][2] for i in ids]}

    def load(self, state: dict[str, Any]) -> None:
        self._items = OrderedDict(
            (i, (None if c is None else str(c), float(t), None if m is None else str(m)))
            for i, c, t, m in zip(state["ids"], state["labels"], state["ts"], state["models"], strict=True)
        )
