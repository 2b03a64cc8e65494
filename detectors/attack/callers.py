"""Per-caller state: a slot table with bounded memory, caller keys and codes, and per-caller ring
buffers read per event in a vectorised batch (events sorted stably by slot)."""

from __future__ import annotations

import itertools
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass
class Layout:
    """A batch's events grouped by caller slot (stable, so stream order holds inside a group).

    ``order`` maps sorted position -> batch row; ``slot``/``rank``/``start`` are per sorted
    position (its caller's slot, its index among the caller's events in this batch, and the
    sorted position of the caller's first event); ``size`` is the caller's event count here.
    """

    order: np.ndarray
    slot: np.ndarray
    rank: np.ndarray
    start: np.ndarray
    size: np.ndarray
    group_starts: np.ndarray
    group_slots: np.ndarray
    group_sizes: np.ndarray


def make_layout(slots: np.ndarray) -> Layout:
    order = np.argsort(slots, kind="stable")
    s = slots[order]
    n = len(s)
    if n == 0:
        z = np.empty(0, dtype=np.int64)
        return Layout(z, z, z, z, z, z, z, z)
    brk = np.empty(n, dtype=bool)
    brk[0] = True
    np.not_equal(s[1:], s[:-1], out=brk[1:])
    gstarts = np.flatnonzero(brk)
    gsizes = np.diff(np.append(gstarts, n))
    start = np.repeat(gstarts, gsizes)
    rank = np.arange(n) - start
    return Layout(order, s, rank, start, np.repeat(gsizes, gsizes), gstarts, s[gstarts], gsizes)


@dataclass
class Window:
    """For every sorted event, where its caller's previous ``K`` items live (oldest first).

    ``index`` points into a *pool*: the rings of the batch's callers (``K`` rows per caller, in
    group order) followed by the batch's own values in sorted order; ``valid`` marks items that
    exist (a caller with fewer than ``K`` earlier items has invalid leading entries).
    """

    index: np.ndarray
    valid: np.ndarray
    K: int

    def gather(self, ring: np.ndarray, batch_vals: np.ndarray, lay: Layout,
               dtype: Any = None) -> np.ndarray:
        tail = ring.shape[2:]
        G, K = len(lay.group_slots), ring.shape[1]
        pool = np.empty((G * K + len(batch_vals), *tail), dtype=ring.dtype)
        np.take(ring, lay.group_slots, axis=0, out=pool[: G * K].reshape(G, K, *tail))
        pool[G * K:] = batch_vals.reshape(-1, *tail)
        if dtype is not None and len(pool) <= self.index.size:  # convert the smaller of pool and window
            pool = pool.astype(dtype)
            dtype = None
        if tail:
            # one opaque item per row: a 1-D take is several times faster than fancy indexing rows
            row = np.dtype((np.void, pool.itemsize * int(np.prod(tail))))
            out = np.take(pool.reshape(len(pool), -1).view(row).ravel(), self.index)
            out = out.view(pool.dtype).reshape(*self.index.shape, *tail)
        else:
            out = np.take(pool, self.index)
        return out if dtype is None else out.astype(dtype, copy=False)


def window_index(lay: Layout, head: np.ndarray, length: np.ndarray, K: int,
                 sel: np.ndarray | None = None, last: int | None = None) -> Window:
    """Pool indices of sorted events' windows of their caller's previous ``K`` items.

    With ``c = 0..K-1`` the window column, an event of rank ``r`` whose caller's ring holds
    ``L`` items with write position ``h`` sees ring item ``(h + r + c) mod K`` while
    ``c < K - r`` and otherwise its own batch's item ``start + r - K + c``; the column is valid
    when ``c >= K - r - L``. ``sel`` restricts the rows to some sorted positions and ``last``
    keeps only the newest ``last`` columns (the pool is the same either way).
    """
    G = len(lay.group_slots)
    # int32 throughout (pool positions < G * K + n): half the memory traffic of int64
    i4 = np.int32
    c = np.arange(K - (last or K), K, dtype=i4)[None, :]
    gi = np.repeat(np.arange(G, dtype=i4), lay.group_sizes)
    slot, r, start = lay.slot, lay.rank.astype(i4), lay.start.astype(i4)
    if sel is not None:
        slot, r, start, gi = slot[sel], r[sel], start[sel], gi[sel]
    a = ((head[slot].astype(i4) + r) % K)[:, None] + c
    a -= K * (a >= K)
    a += (gi * K)[:, None]
    from_ring = c < (K - r)[:, None]
    # outside the ring part, c >= K - r: the caller's earlier events of this batch, always in the pool
    b = (G * K + start + r - K)[:, None] + c
    index = np.where(from_ring, a, b)
    valid = c >= (K - r - length[slot].astype(i4))[:, None]
    return Window(index, valid, K)


def ring_write(ring: np.ndarray, batch_vals: np.ndarray, lay: Layout, head: np.ndarray, K: int) -> None:
    """Append every caller's events of this batch (sorted order) to its ring (last ``K`` kept)."""
    keep = lay.rank >= lay.size - K
    pos = (head[lay.slot[keep]].astype(np.int64) + lay.rank[keep]) % K
    ring[lay.slot[keep], pos] = batch_vals[keep]


def ring_advance(head: np.ndarray, length: np.ndarray, lay: Layout, K: int) -> None:
    gs, gn = lay.group_slots, lay.group_sizes
    head[gs] = (head[gs].astype(np.int64) + gn) % K
    length[gs] = np.minimum(length[gs].astype(np.int64) + gn, K)


def _grown(a: np.ndarray, rows: int, fill: Any) -> np.ndarray:
    """``a`` with ``rows`` rows, the new ones set to ``fill``. In place (``realloc``: a large block is
    remapped, not copied, so the old and the new table never coexist) when ``a`` owns its data and
    the caller passed its only reference (popped from its container); otherwise a copy.

    >>> a = np.arange(3.0)
    >>> _grown(a, 5, -1.0).tolist()
    [0.0, 1.0, 2.0, -1.0, -1.0]
    """
    n = len(a)
    try:
        a.resize((rows, *a.shape[1:]), refcheck=True)
    except ValueError:  # a view, or referenced elsewhere
        return np.concatenate([a, np.full((rows - n, *a.shape[1:]), fill, dtype=a.dtype)])
    a[n:] = fill
    return a


class CallerTable:
    """Maps ``client_id`` to a row ("slot") of per-caller numpy arrays, with bounded memory.

    * ``fields`` declares the per-caller arrays: name -> (trailing shape, dtype, fill value).
      Rows are allocated geometrically up to ``max_callers``.
    * A caller idle for more than ``ttl`` seconds of event time (``protected_ttl`` if the
      detector marked it protected, i.e. suspicious) starts afresh on its next event: this is
      decided per event, so it does not depend on batch boundaries.
    * When all ``max_callers`` rows are live, the least recently active unprotected callers are
      evicted (1/16 of the table at a time); protected callers go only if nothing else is left.
      This capacity eviction is the one place where batch boundaries can matter; it does not
      happen while fewer than ``max_callers`` callers are active within the TTL.
    """

    def __init__(self, max_callers: int, ttl: float, protected_ttl: float,
                 fields: dict[str, tuple[tuple[int, ...], Any, Any]],
                 on_reset: Callable[[np.ndarray], None] | None = None) -> None:
        self.on_reset = on_reset
        self.max_callers = int(max_callers)
        self.ttl = float(ttl)
        self.protected_ttl = float(protected_ttl)
        self.fields = fields
        self.index: dict[str, int] = {}
        self.keys: list[str | None] = []
        self.free: list[int] = []
        self.evicted = 0
        cap = min(1024, self.max_callers)
        self.last_ts = np.full(cap, -np.inf)
        self.protected = np.zeros(cap, dtype=bool)
        self.arrays: dict[str, np.ndarray] = {
            name: np.full((cap, *shape), fill, dtype=dtype) for name, (shape, dtype, fill) in fields.items()
        }

    @property
    def capacity(self) -> int:
        return len(self.last_ts)

    def _grow(self, need: int) -> None:
        cap = self.capacity
        new = min(self.max_callers, max(cap * 2, need))
        if new <= cap:
            return
        # each array is handed over as its only reference, so that it can grow in place
        self.last_ts = _grown(vars(self).pop("last_ts"), new, -np.inf)
        self.protected = _grown(vars(self).pop("protected"), new, False)
        for name, (_, _, fill) in self.fields.items():
            self.arrays[name] = _grown(self.arrays.pop(name), new, fill)

    def reset(self, slots: np.ndarray) -> None:
        for name, (_, _, fill) in self.fields.items():
            self.arrays[name][slots] = fill
        self.protected[slots] = False
        self.last_ts[slots] = -np.inf
        if self.on_reset is not None:
            self.on_reset(np.asarray(slots, dtype=np.int64))

    def _evict(self, n_needed: int, busy: set[int]) -> None:
        live = np.array(sorted(self.index.values()), dtype=np.int64)
        if live.size == 0:
            return
        mask = np.array([s not in busy for s in live.tolist()]) if busy else np.ones(live.size, bool)
        cand = live[mask]
        n_evict = min(cand.size, max(n_needed, self.max_callers // 16, 1))
        if n_evict <= 0:
            raise RuntimeError("caller table full with callers of the current batch")
        # unprotected first, then least recently active; ties broken by slot for determinism
        key = np.lexsort((cand, self.last_ts[cand], self.protected[cand]))
        victims = cand[key[:n_evict]]
        for s in victims.tolist():
            k = self.keys[s]
            if k is not None:
                del self.index[k]
            self.keys[s] = None
            self.free.append(s)
        self.reset(victims)
        self.evicted += int(victims.size)

    def assign(self, callers: list[str], first_ts: np.ndarray) -> np.ndarray:
        """Slots of ``callers`` (distinct), creating rows as needed; expired callers are reset."""
        slots = np.array(list(map(self.index.get, callers, itertools.repeat(-1))), dtype=np.int64)
        known = slots >= 0
        new = np.flatnonzero(~known).tolist()
        if known.any():
            ks = slots[known]
            ttl = np.where(self.protected[ks], self.protected_ttl, self.ttl)
            expired = ks[first_ts[known] - self.last_ts[ks] > ttl]
            if expired.size:
                self.reset(expired)
        if len(callers) > self.max_callers:
            raise ValueError(
                f"a batch holds {len(callers)} distinct callers, more than max_callers={self.max_callers}"
            )
        if new:
            n_free_rows = len(self.free) + (self.capacity - len(self.keys))
            if n_free_rows < len(new):
                self._grow(len(self.keys) + len(new))
                n_free_rows = len(self.free) + (self.capacity - len(self.keys))
                if n_free_rows < len(new):
                    self._evict(len(new) - n_free_rows, set(slots[known].tolist()))
            for i in new:
                if self.free:
                    s = self.free.pop()
                    self.keys[s] = callers[i]
                else:
                    s = len(self.keys)
                    self.keys.append(callers[i])
                self.index[callers[i]] = s
                slots[i] = s
        return slots

    def state(self) -> dict[str, Any]:
        return {
            "keys": list(self.keys),
            "free": list(self.free),
            "evicted": self.evicted,
            "last_ts": self.last_ts.copy(),
            "protected": self.protected.copy(),
            "arrays": {k: v.copy() for k, v in self.arrays.items()},
        }

    def load(self, s: dict[str, Any]) -> None:
        self.keys = list(s["keys"])
        self.index = {k: i for i, k in enumerate(self.keys) if k is not None}
        self.free = [int(v) for v in s["free"]]
        self.evicted = int(s["evicted"])
        self.last_ts = np.asarray(s["last_ts"], dtype=np.float64).copy()
        self.protected = np.asarray(s["protected"], dtype=bool).copy()
        self.arrays = {
            name: np.asarray(s["arrays"][name], dtype=dtype).copy()
            for name, (_, dtype, _) in self.fields.items()
        }

    def nbytes(self) -> int:
        return int(self.last_ts.nbytes + self.protected.nbytes + sum(a.nbytes for a in self.arrays.values()))


def caller_key(client_id: str | None, position: int) -> int:
    """A stable non-negative key of a caller (CRC-32 of its id), or ``-1 - position`` for an event
    without ``client_id`` (each such event its own caller). Equal ids give equal keys in every
    process; a collision of two callers only merges them where keys are compared.

    >>> caller_key("acct-1", 0) == caller_key("acct-1", 9), caller_key(None, 4)
    (True, -5)
    """
    return zlib.crc32(client_id.encode()) if client_id is not None else -1 - position


def caller_codes(client_ids: list[str | None]) -> tuple[np.ndarray, list[str]]:
    """Per-event index into the batch's distinct callers (-1 where there is no ``client_id``)."""
    distinct = list(dict.fromkeys(client_ids))
    index = {c: i for i, c in enumerate(distinct)}
    codes = np.fromiter(map(index.__getitem__, client_ids), dtype=np.int64, count=len(client_ids))
    if None in index:
        k = index[None]
        codes = np.where(codes == k, -1, np.where(codes > k, codes - 1, codes))
        distinct.pop(k)
    return codes, distinct  # type: ignore[return-value]


def first_occurrences(codes: np.ndarray) -> np.ndarray:
    """Position of each code's first event, for codes numbered by first appearance (as from
    :func:`caller_codes`, ``-1`` rows removed): ``np.unique(codes, return_index=True)[1]`` without
    the sort.

    >>> first_occurrences(np.array([0, 1, 0, 2, 1, 3])).tolist()
    [0, 1, 3, 5]
    """
    top = np.maximum.accumulate(codes)
    return np.flatnonzero(np.diff(top, prepend=-1) > 0)


def group_first(values: np.ndarray, lay: Layout, mask: np.ndarray) -> np.ndarray:
    """Per sorted group, the sorted position of the first event with ``mask`` (or -1)."""
    pos = np.where(mask, np.arange(len(mask)), np.iinfo(np.int64).max)
    if len(pos) == 0:
        return np.empty(0, dtype=np.int64)
    first = np.minimum.reduceat(pos, lay.group_starts)
    return np.where(first == np.iinfo(np.int64).max, -1, first)
