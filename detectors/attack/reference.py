"""Collecting a route's reference: rows of a batch, the warm-up buffer of its first events, and a
reference in which no caller holds more than a capped share."""

from __future__ import annotations

from typing import Any

import numpy as np

from detectors.attack.callers import caller_key
from pipeline.events import EventBatch


def take_batch(batch: EventBatch, idx: np.ndarray) -> EventBatch:
    """Rows ``idx`` of ``batch`` as a new batch (same route and schema)."""
    idx = np.asarray(idx, dtype=np.int64)
    il = idx.tolist()
    return EventBatch(
        route=batch.route,
        schema=batch.schema,
        event_ids=[batch.event_ids[i] for i in il],
        ts=batch.ts[idx],
        client_ids=[batch.client_ids[i] for i in il],
        X=batch.X[idx],
        C=batch.C[idx] if batch.C.shape[0] == len(batch) else batch.C,
        prediction=[batch.prediction[i] for i in il],
        prediction_value=batch.prediction_value[idx],
        confidence=batch.confidence[idx],
        margin=batch.margin[idx],
        entropy=batch.entropy[idx],
        label=[batch.label[i] for i in il] if len(batch.label) == len(batch) else [None] * len(il),
        payloads=[],
    )


class WarmupBuffer:
    """Holds the first ``size`` events of a route (the fields the attack detectors use).

    Bounded: never more than ``size`` rows. ``add`` returns the number of rows of the batch it
    consumed; once full, :meth:`arrays` gives the buffered events in stream order.
    """

    def __init__(self, size: int, n_features: int) -> None:
        self.size = size
        self.X = np.empty((0, n_features))
        self.ts = np.empty(0)
        self.margin = np.empty(0)
        self.event_ids: list[str] = []
        self.client_ids: list[str | None] = []
        self.prediction: list[str] = []

    @property
    def n(self) -> int:
        return len(self.event_ids)

    @property
    def full(self) -> bool:
        return self.n >= self.size

    def add(self, batch: EventBatch) -> int:
        take = min(self.size - self.n, len(batch))
        if take <= 0:
            return 0
        if self.X.shape[1] != batch.X.shape[1]:
            self.X = np.empty((0, batch.X.shape[1]))
        self.X = np.concatenate([self.X, batch.X[:take]])
        self.ts = np.concatenate([self.ts, batch.ts[:take]])
        self.margin = np.concatenate([self.margin, batch.margin[:take]])
        self.event_ids.extend(batch.event_ids[:take])
        self.client_ids.extend(batch.client_ids[:take])
        self.prediction.extend(batch.prediction[:take])
        return take

    def as_batch(self, like: EventBatch) -> EventBatch:
        n = self.n
        nan = np.full(n, np.nan)
        return EventBatch(
            route=like.route,
            schema=like.schema,
            event_ids=list(self.event_ids),
            ts=self.ts.copy(),
            client_ids=list(self.client_ids),
            X=self.X.copy(),
            C=np.empty((n, 0), dtype=object),
            prediction=list(self.prediction),
            prediction_value=nan.copy(),
            confidence=nan.copy(),
            margin=self.margin.copy(),
            entropy=nan,
            label=[None] * n,
            payloads=[],
        )

    def clear(self) -> None:
        self.__init__(self.size, self.X.shape[1])  # type: ignore[misc]

    def state(self) -> dict[str, Any]:
        return {
            "X": self.X.copy(),
            "ts": self.ts.copy(),
            "margin": self.margin.copy(),
            "event_ids": list(self.event_ids),
            "client_ids": list(self.client_ids),
            "prediction": list(self.prediction),
        }

    def load(self, s: dict[str, Any]) -> None:
        self.X = np.asarray(s["X"], dtype=np.float64)
        self.ts = np.asarray(s["ts"], dtype=np.float64)
        self.margin = np.asarray(s["margin"], dtype=np.float64)
        self.event_ids = list(s["event_ids"])
        self.client_ids = list(s["client_ids"])
        self.prediction = list(s["prediction"])


class CappedReference:
    """Collects a reference of ``size`` events in which no caller holds more than ``cap`` of them.

    Production traffic is dominated by a few heavy callers (batch jobs with their own class mix, a
    busy partner): a reference of the first events would let them define "normal". Events of a
    caller that already holds ``cap`` reference rows are skipped (kept aside, at most ``size`` of
    them, in stream order). Events without ``client_id`` count as distinct callers. If the
    reference is still short after ``patience`` events (a stream with very few callers), it is
    completed with the earliest skipped events. Decided event by event in stream order, so the
    result does not depend on batch boundaries. Bounded: at most ``2 * size`` rows.
    """

    def __init__(self, size: int, n_features: int, cap: int, patience: int) -> None:
        self.size = int(size)
        self.cap = max(1, int(cap))
        self.patience = max(int(patience), self.size)
        self.d = n_features
        self.X = np.empty((0, n_features))
        self.margin = np.empty(0)
        self.ts = np.empty(0)
        self.pos = np.empty(0, dtype=np.int64)  # position among the events seen, for ordering
        self.key = np.empty(0, dtype=np.int64)  # caller key per row (see caller_key)
        self.oX = np.empty((0, n_features))
        self.omargin = np.empty(0)
        self.ots = np.empty(0)
        self.opos = np.empty(0, dtype=np.int64)
        self.okey = np.empty(0, dtype=np.int64)
        self.counts: dict[str, int] = {}
        self.seen = 0
        self.first_event: str | None = None

    @property
    def n(self) -> int:
        return len(self.X)

    def add(self, batch: EventBatch, start: int = 0) -> int | None:
        """Offer rows ``start:`` of ``batch``; returns the row at which the reference completed
        (it is included), or None while it is incomplete."""
        take, over, tpos, opos, tkey, okey = [], [], [], [], [], []
        done: int | None = None
        n_adm, n_over = self.n, len(self.oX)
        counts = self.counts
        for i in range(start, len(batch)):
            cid = batch.client_ids[i]
            if self.first_event is None:
                self.first_event = batch.event_ids[i]
            k = counts.get(cid, 0) if cid is not None else 0
            if k < self.cap:
                if cid is not None:
                    counts[cid] = k + 1
                take.append(i)
                tpos.append(self.seen)
                tkey.append(caller_key(cid, self.seen))
                n_adm += 1
            elif n_over < self.size:
                over.append(i)
                opos.append(self.seen)
                okey.append(caller_key(cid, self.seen))
                n_over += 1
            self.seen += 1
            if n_adm >= self.size or self.seen >= self.patience:
                done = i
                break
        if take:
            t = np.array(take)
            self.X = np.concatenate([self.X, batch.X[t]])
            self.margin = np.concatenate([self.margin, batch.margin[t]])
            self.ts = np.concatenate([self.ts, batch.ts[t]])
            self.pos = np.concatenate([self.pos, np.array(tpos, dtype=np.int64)])
            self.key = np.concatenate([self.key, np.array(tkey, dtype=np.int64)])
        if over:
            o = np.array(over)
            self.oX = np.concatenate([self.oX, batch.X[o]])
            self.omargin = np.concatenate([self.omargin, batch.margin[o]])
            self.ots = np.concatenate([self.ots, batch.ts[o]])
            self.opos = np.concatenate([self.opos, np.array(opos, dtype=np.int64)])
            self.okey = np.concatenate([self.okey, np.array(okey, dtype=np.int64)])
        return done

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(X, margin, ts)`` of the reference in stream order (short ones filled from skipped rows)."""
        X, mg, ts, pos = self.X, self.margin, self.ts, self.pos
        short = self.size - len(X)
        if short > 0 and len(self.oX):
            X = np.concatenate([X, self.oX[:short]])
            mg = np.concatenate([mg, self.omargin[:short]])
            ts = np.concatenate([ts, self.ots[:short]])
            pos = np.concatenate([pos, self.opos[:short]])
        o = np.argsort(pos, kind="stable")
        return X[o], mg[o], ts[o]

    def caller_keys(self) -> np.ndarray:
        """Caller key (:func:`caller_key`) of every row of :meth:`arrays`, in the same order."""
        key, pos = self.key, self.pos
        short = self.size - len(key)
        if short > 0 and len(self.okey):
            key = np.concatenate([key, self.okey[:short]])
            pos = np.concatenate([pos, self.opos[:short]])
        return key[np.argsort(pos, kind="stable")]  # type: ignore[no-any-return]

    def distinct_callers(self) -> int:
        return len(self.counts)

    def state(self) -> dict[str, Any]:
        return {
            "X": self.X.copy(), "margin": self.margin.copy(), "ts": self.ts.copy(), "pos": self.pos.copy(),
            "key": self.key.copy(), "okey": self.okey.copy(), "oX": self.oX.copy(), "omargin": self.omargin.copy(), "ots": self.ots.copy(), "opos": self.opos.copy(),
            "callers": list(self.counts), "counts": np.array(list(self.counts.values()), dtype=np.int64),
            "seen": self.seen, "first_event": self.first_event,
        }

    def load(self, s: dict[str, Any]) -> None:
        f = np.float64
        self.X = np.asarray(s["X"], dtype=f).reshape(-1, self.d)
        self.margin, self.ts = np.asarray(s["margin"], dtype=f), np.asarray(s["ts"], dtype=f)
        self.pos = np.asarray(s["pos"], dtype=np.int64)
        self.oX = np.asarray(s["oX"], dtype=f).reshape(-1, self.d)
        self.omargin, self.ots = np.asarray(s["omargin"], dtype=f), np.asarray(s["ots"], dtype=f)
        self.opos = np.asarray(s["opos"], dtype=np.int64)
        # snapshots from before caller keys: every row its own caller
        self.key = np.asarray(s["key"], dtype=np.int64) if "key" in s else -1 - self.pos
        self.okey = np.asarray(s["okey"], dtype=np.int64) if "okey" in s else -1 - self.opos
        self.counts = dict(zip(s["callers"], np.asarray(s["counts"]).tolist(), strict=True))
        self.seen = int(s["seen"])
        self.first_event = s["first_event"]
