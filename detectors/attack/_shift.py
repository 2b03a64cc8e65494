"""The population-shift monitor shared by ``outlier`` and ``extraction``.

A Bernoulli CUSUM on the route's own flag rate (the flag probability under the budget ``p0`` against
``shift_factor x p0``), in event counts, so it is batch-invariant. Only flags of callers that belong to
the current reference count, each caller at most once per ``caller_window`` events: one caller flooding
atypical queries, or attackers on fresh accounts, cannot make a detector forget its reference.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np


class ShiftMonitor:
    """Says at which event the flag rate of the reference's callers rose past the budget.

    >>> m = ShiftMonitor(p0=0.01, shift_factor=10.0, arl=1e3, caller_window=1)
    >>> m.restart([f"c{i}" for i in range(50)])
    >>> m.advance([f"c{i % 50}" for i in range(300)], np.ones(300, dtype=bool)) is not None
    True
    """

    def __init__(self, p0: float, shift_factor: float, arl: float, caller_window: int,
                 count_anonymous: bool = False) -> None:
        p1 = shift_factor * p0
        self.llr_flag = math.log(p1 / p0)
        self.llr_ok = math.log((1.0 - p1) / (1.0 - p0))
        self.threshold = math.log(arl)
        self.caller_window = int(caller_window)
        self.count_anonymous = count_anonymous  # flags without a caller count when the reference had none
        self.cusum = 0.0
        self.n_mon = 0
        self.last_counted: dict[str, int] = {}
        self.ref_callers: set[str] = set()

    def restart(self, ref_callers: Iterable[str] | None = None) -> None:
        """A new reference: its callers (if given) are the population; the statistic starts over."""
        if ref_callers is not None:
            self.ref_callers = set(ref_callers)
        self.cusum = 0.0
        self.last_counted = {}

    def advance(self, client_ids: Sequence[str | None], hit: np.ndarray, enabled: bool = True) -> int | None:
        """Feed one row per event (``hit`` = flagged); the row of an alarm (the monitor restarts), or None."""
        n = len(hit)
        inc = np.full(n, self.llr_ok)
        last, known, window = self.last_counted, self.ref_callers, self.caller_window
        for i in np.flatnonzero(hit).tolist():
            cid = client_ids[i]
            at = self.n_mon + i
            if cid is None:
                if self.count_anonymous and not known:  # a stream without callers: every flag counts
                    inc[i] = self.llr_flag
            elif cid in known and at - last.get(cid, -window) >= window:
                last[cid] = at
                inc[i] = self.llr_flag
        C = self.cusum + np.cumsum(inc)
        S = C - np.minimum(np.minimum.accumulate(C), 0.0)
        over = np.flatnonzero(S > self.threshold) if enabled else np.empty(0, dtype=np.int64)
        if over.size:
            t = int(over[0])
            self.n_mon += t + 1
            self.restart()
            return t
        self.cusum = float(S[-1]) if n else self.cusum
        self.n_mon += n
        if len(last) > 4096:  # entries older than the window can no longer matter
            self.last_counted = {c: v for c, v in last.items() if self.n_mon - v < window}
        return None

    def state(self) -> dict[str, Any]:
        return {
            "cusum": self.cusum,
            "n_mon": self.n_mon,
            "last_counted": {"callers": list(self.last_counted),
                             "at": np.array(list(self.last_counted.values()), dtype=np.int64)},
            "ref_callers": sorted(self.ref_callers),
        }

    def load(self, state: dict[str, Any]) -> None:
        self.cusum = float(state["cusum"])
        self.n_mon = int(state["n_mon"])
        lc = state["last_counted"]
        self.last_counted = dict(zip(lc["callers"], np.asarray(lc["at"]).tolist(), strict=True))
        self.ref_callers = set(state["ref_callers"])
