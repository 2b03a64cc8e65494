"""Reference growth: monitored events that raised nothing extend a short drift reference.

A route's reference starts as its first ``reference_size`` events, so monitoring can start early.
Those few events estimate the reference distribution with an error that every later window test
must carry (``vref``): with 2,000 events it is as large as a 1,000-event window's own variance, and
a persistent small shift (a class mix moving 10 points) can never cross the threshold. Production
streams run for days, so the reference keeps growing with monitored events once they are older
than the largest window, up to ``max_reference_size`` events. A block joins only if no window
that contained it crossed the threshold, so the reference never learns a drift that was raised
(reviewers decide; a new ``model_version`` or a ``reference_file`` starts a new reference).

:class:`ReferenceGrowth` keeps the books (what was absorbed, the callers' kept counts, time blocks
for the between-time variance) and, until the reference reaches its cap, the events themselves (bins
and caller codes, for the recalibrations); the detector re-derives its reference moments from them
at fixed stream positions (see ``DriftDetector._grow_reference`` and ``reference.refit_moments``), so
growth is deterministic and independent of batch sizes.

>>> g = ReferenceGrowth(n_chan=1, n_bins=3, n_cols=1, events=100, max_events=400, block_size=50,
...                     time_blocks=2, callers={7: 3})
>>> g.absorb(0, np.array([[2, 1, 0]]), np.array([4.0]), np.array([7, 8, 8]), 10.0)
>>> g.pending_events, g.caller_square_sum(), len(g.time_sums)
(50, 20.0, 0)
"""

from __future__ import annotations

from typing import Any

import numpy as np


class ReferenceGrowth:
    """Bookkeeping of the monitored blocks absorbed into a route's drift reference.

    Parameters
    ----------
    n_chan, n_bins : int
        Shape of one block's bin counts (channels x bins).
    n_cols : int
        Score columns (length of a block's score sums).
    events : int
        Events in the reference so far (its initial size).
    max_events : int
        Growth stops once the reference (applied and pending) holds this many events.
    block_size : int
        Events per monitored block.
    time_blocks : int
        Monitored blocks per time block of the between-time variance (0: no time blocks).
    callers : dict
        Kept events per (variance) caller code in the initial reference.
    """

    def __init__(
        self,
        *,
        n_chan: int,
        n_bins: int,
        n_cols: int,
        events: int,
        max_events: int,
        block_size: int,
        time_blocks: int,
        callers: dict[int, int],
    ) -> None:
        self.events = int(events)
        self.step = int(events)  # events absorbed per refit: the initial reference's size
        self.max_events = int(max_events)
        self.block_size = int(block_size)
        self.time_blocks = int(time_blocks)
        self.pending_counts = np.zeros((n_chan, n_bins), dtype=np.int64)
        self.pending_events = 0
        self.callers: dict[int, int] = dict(callers)
        self.recent_stats = np.zeros(0)  # statistics of the closes before the current chunk
        self.next_block = 0  # the next monitored block to absorb (blocks are absorbed in order)
        self.last_ts = float("nan")
        # time blocks (score sums, kept events, sum of squared caller counts) and the open one
        self.time_sums: list[np.ndarray] = []
        self.time_kept: list[float] = []
        self.time_a: list[float] = []
        self.open_sums = np.zeros(n_cols)
        self.open_kept = 0.0
        self.open_callers: dict[int, int] = {}
        self.open_broken = False  # a block of the open time block was skipped: it is not kept
        # the grown reference's events themselves (bins, caller codes), kept while a recalibration
        # on them is still to come (see ``DriftDetector._recalibrate``)
        self.keep_events = False
        self.ev_bins: list[np.ndarray] = []
        self.ev_codes: list[np.ndarray] = []

    @property
    def active(self) -> bool:
        """Whether blocks are still absorbed (cap not reached)."""
        return self.events + self.pending_events < self.max_events

    def quiet_blocks(self, first_close: int, stats: np.ndarray, threshold: float, span: int) -> np.ndarray:
        """Whether each block up to the newest close lay only in windows below ``threshold``.

        ``stats`` are the combined statistics of the closes numbered ``first_close, first_close + 1,
        ...`` (a close is numbered by the block it ends); a window of the largest size ending at
        close ``c`` holds blocks ``c - span + 1 .. c``. Returns, for the blocks numbered
        ``first_close - len(recent_stats) .. newest - span + 1`` (those no later close can cover), whether every
        close covering them stayed below the threshold, and keeps the last ``span - 1`` statistics.
        """
        allst = np.concatenate([self.recent_stats, stats])
        self.recent_stats = allst[-(span - 1) :] if span > 1 else np.zeros(0)
        hot = allst >= threshold
        n_done = len(allst) - span + 1  # blocks whose covering closes are all in allst
        if n_done <= 0:
            return np.zeros(0, dtype=bool)
        c = np.concatenate([[0], np.cumsum(hot)])
        return np.asarray(c[span : span + n_done] - c[:n_done] == 0)

    def can_absorb(self, block: int) -> bool:
        """Block ``block`` (0-based, monitored) is the next one and the cap is not reached."""
        return block == self.next_block and self.events + self.pending_events < self.max_events

    def absorb(
        self,
        block: int,
        counts: np.ndarray,
        score_sums: np.ndarray,
        kept_codes: np.ndarray,
        last_ts: float,
        events: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> None:
        """Add one monitored block: its bin counts, score sums and the caller codes of its kept events
        (and, while they are kept, its events' bins and caller codes)."""
        if self.keep_events and events is not None:
            self.ev_bins.append(events[0])
            self.ev_codes.append(events[1])
        self.pending_counts += counts
        self.pending_events += self.block_size
        self.next_block = block + 1
        self.last_ts = float(last_ts)
        codes, cnt = np.unique(kept_codes, return_counts=True)
        timed = self.time_blocks > 0 and not self.open_broken
        for c, k in zip(codes.tolist(), cnt.tolist(), strict=True):
            self.callers[c] = self.callers.get(c, 0) + k
            if timed:
                self.open_callers[c] = self.open_callers.get(c, 0) + k
        if timed:
            self.open_sums += score_sums
            self.open_kept += float(len(kept_codes))
        self._end_of_time_block(block)

    def skip(self, block: int) -> None:
        """Block ``block`` lay in a window over the threshold: it never joins, nor does its time block."""
        self.next_block = block + 1
        self.open_broken = True
        self._end_of_time_block(block)

    def _end_of_time_block(self, block: int) -> None:
        if not self.time_blocks or (block + 1) % self.time_blocks:
            return
        if not self.open_broken:
            self.time_sums.append(self.open_sums.copy())
            self.time_kept.append(self.open_kept)
            self.time_a.append(float(sum(v * v for v in self.open_callers.values())))
        self.open_sums[:] = 0.0
        self.open_kept = 0.0
        self.open_callers = {}
        self.open_broken = False

    def due(self) -> bool:
        """The pending blocks are worth a refit: as many events as the initial reference, or the rest up to the cap."""
        if self.pending_events == 0:
            return False
        return self.pending_events >= min(self.step, self.max_events - self.events)

    def take(self) -> tuple[np.ndarray, int]:
        """Pending bin counts and events, moved into the reference."""
        counts, n = self.pending_counts.copy(), self.pending_events
        self.events += n
        self.pending_counts[:] = 0
        self.pending_events = 0
        return counts, n

    def reference_events(self) -> tuple[np.ndarray, np.ndarray]:
        """Bins and caller codes of every event of the reference (initial and absorbed, in order)."""
        return np.concatenate(self.ev_bins), np.concatenate(self.ev_codes)

    def drop_events(self) -> None:
        """Stop keeping the reference's events (no recalibration is to come)."""
        self.keep_events = False
        self.ev_bins, self.ev_codes = [], []

    def caller_square_sum(self) -> float:
        """``sum_g K_g^2`` over the (grown and pending) reference's callers."""
        return float(sum(v * v for v in self.callers.values()))

    # ------------------------------------------------------------------ snapshot
    def state(self) -> dict[str, Any]:
        return {
            "events": self.events,
            "step": self.step,
            "max_events": self.max_events,
            "pending_counts": self.pending_counts.copy(),
            "pending_events": self.pending_events,
            "caller_codes": np.array(list(self.callers.keys()), dtype=np.int64),
            "caller_counts": np.array(list(self.callers.values()), dtype=np.int64),
            "recent_stats": self.recent_stats.copy(),
            "next_block": self.next_block,
            "last_ts": self.last_ts,
            "time_sums": np.array(self.time_sums).reshape(len(self.time_sums), len(self.open_sums)),
            "time_kept": np.array(self.time_kept, dtype=np.float64),
            "time_a": np.array(self.time_a, dtype=np.float64),
            "open_sums": self.open_sums.copy(),
            "open_kept": self.open_kept,
            "open_broken": self.open_broken,
            "open_codes": np.array(list(self.open_callers.keys()), dtype=np.int64),
            "open_counts": np.array(list(self.open_callers.values()), dtype=np.int64),
            "keep_events": self.keep_events,
            "ev_bins": np.concatenate(self.ev_bins) if self.ev_bins else np.zeros((0, self.pending_counts.shape[0]), np.uint8),
            "ev_codes": np.concatenate(self.ev_codes) if self.ev_codes else np.zeros(0, np.int64),
        }

    def load(self, st: dict[str, Any]) -> None:
        self.events = int(st["events"])
        self.step = int(st["step"])
        self.max_events = int(st["max_events"])
        self.pending_counts = np.asarray(st["pending_counts"], dtype=np.int64).reshape(self.pending_counts.shape)
        self.pending_events = int(st["pending_events"])
        codes = np.asarray(st["caller_codes"], dtype=np.int64).tolist()
        self.callers = dict(zip(codes, np.asarray(st["caller_counts"], dtype=np.int64).tolist(), strict=True))
        self.recent_stats = np.asarray(st["recent_stats"], dtype=np.float64).copy()
        self.next_block = int(st["next_block"])
        self.last_ts = float(st["last_ts"])
        ncol = len(self.open_sums)
        sums = np.asarray(st["time_sums"], dtype=np.float64).reshape(-1, ncol)
        self.time_sums = [row.copy() for row in sums]
        self.time_kept = [float(v) for v in np.asarray(st["time_kept"], dtype=np.float64)]
        self.time_a = [float(v) for v in np.asarray(st["time_a"], dtype=np.float64)]
        self.open_sums = np.asarray(st["open_sums"], dtype=np.float64).reshape(ncol).copy()
        self.open_kept = float(st["open_kept"])
        self.open_broken = bool(st["open_broken"])
        ocodes = np.asarray(st["open_codes"], dtype=np.int64).tolist()
        self.open_callers = dict(zip(ocodes, np.asarray(st["open_counts"], dtype=np.int64).tolist(), strict=True))
        self.keep_events = bool(st["keep_events"])
        ev_bins = np.asarray(st["ev_bins"], dtype=np.uint8).reshape(-1, self.pending_counts.shape[0])
        ev_codes = np.asarray(st["ev_codes"], dtype=np.int64)
        self.ev_bins, self.ev_codes = ([ev_bins], [ev_codes]) if len(ev_codes) else ([], [])
