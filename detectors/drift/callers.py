"""Caller structure of a stream: caller codes, the per-block caller cap, and caller-square sums for
the random-effects variance model (anonymous events as pseudo-callers of consecutive positions)."""

from __future__ import annotations

from collections.abc import Sequence
from itertools import repeat
from typing import Any

import numpy as np


def caller_codes(
    client_ids: Sequence[str | None], cmap: dict[str, int], start: int, next_code: int
) -> tuple[np.ndarray, int]:
    """Integer caller codes: >= 0 for named callers, a unique negative code for anonymous events.

    Codes only need to be equal for equal callers within one window, so ``cmap`` may be pruned.
    """
    # map() with the dict's own lookup: no Python frame per event (None is never a key: -2 -> -1 below)
    codes = np.fromiter(map(cmap.get, client_ids, repeat(-2, len(client_ids))),  # type: ignore[arg-type]
                        dtype=np.int64, count=len(client_ids))
    for i in np.flatnonzero(codes == -2).tolist():  # callers seen for the first time, in stream order
        c = client_ids[i]
        if c is None:
            codes[i] = -1
            continue
        code = cmap.get(c)  # type: ignore[arg-type]
        if code is None:
            code = next_code
            next_code += 1
            cmap[c] = code  # type: ignore[index]
        codes[i] = code
    anon = np.flatnonzero(codes == -1)
    codes[anon] = -(start + anon + 1)
    return codes, next_code


ANONYMOUS = 1 << 62
"""Caller code under which explanations count all anonymous events of a window as one sender."""


def merge_anonymous(codes: np.ndarray) -> np.ndarray:
    """Codes with every anonymous event (negative code) turned into the one caller :data:`ANONYMOUS`.

    Explanations list the anonymous events of a window as one sender this way.

    >>> merge_anonymous(np.array([3, -1, -2, 0])).tolist() == [3, ANONYMOUS, ANONYMOUS, 0]
    True
    """
    return np.where(codes < 0, np.int64(ANONYMOUS), codes)


def anonymous_caps(model: dict[str, Any], cov_blocks: int, cov_step: int) -> tuple[int, int]:
    """A fitted model's anonymous cap per block, and per covariance super-block of ``cov_blocks``
    blocks (``cov_step`` events): ``cov_blocks`` times as many."""
    k = int(model.get("anon_cap", cov_step))
    return k, min(cov_step, k * cov_blocks)


def variance_codes(codes: np.ndarray, run: int) -> np.ndarray:
    """Caller codes for the variance model: anonymous events share a pseudo-caller per ``run`` positions.

    An anonymous event's code is ``-(position + 1)``; consecutive positions ``[k run, (k+1) run)``
    become pseudo-caller ``-(k + 1)``, so serial dependence (a batch job's burst) among anonymous
    events enters the between-caller variance. The caller cap still sees every anonymous event
    as its own caller (nothing is dropped).

    >>> variance_codes(np.array([-1, -2, 4, -4, -5]), 2).tolist()
    [-1, -1, 4, -2, -3]
    """
    return np.where(codes < 0, -1 - (-codes - 1) // run, codes)


def keep_mask(
    codes: np.ndarray, step: int, cap: int, offset: int = 0, anon_cap: int | None = None
) -> np.ndarray:
    """``True`` for the first ``cap`` events of each caller within each block of ``step`` events.

    Blocks start at position ``-offset`` (index ``i`` lies in block ``(i + offset) // step``). Dropping a heavy caller's surplus (rather than down-weighting it)
    keeps every count an integer, which keeps window statistics exact under any batch cut.
    Anonymous events (negative codes) are each their own caller, or, with ``anon_cap``, together
    one caller capped at ``anon_cap`` per block.

    >>> keep_mask(np.array([5, 5, 5, 7, 5, 5]), 3, 2).tolist()
    [True, True, False, True, True, True]
    >>> keep_mask(np.array([5, 5, 5, 7, 5, 5]), 4, 1, offset=2).tolist()
    [True, False, True, True, False, False]
    >>> keep_mask(np.array([-1, -2, 5, -4, -5, -6]), 3, 1, anon_cap=2).tolist()
    [True, True, True, True, True, False]
    """
    n = len(codes)
    if n == 0:
        return np.zeros(0, dtype=bool)
    grouped = anon_cap is not None and anon_cap < step
    group = np.where(codes < 0, -1, codes) if grouped else codes
    limit_anon = cap if anon_cap is None else anon_cap
    blk = (np.arange(n) + offset) // step
    order = np.lexsort((group, blk))  # stable: stream order within (block, caller)
    sb, sc = blk[order], group[order]
    new = np.ones(n, dtype=bool)
    new[1:] = (sb[1:] != sb[:-1]) | (sc[1:] != sc[:-1])
    idx = np.arange(n)
    first = np.maximum.accumulate(np.where(new, idx, 0))
    limit = np.where(sc < 0, limit_anon, cap) if grouped else cap
    keep = np.empty(n, dtype=bool)
    keep[order] = (idx - first) < limit
    return keep


def anonymous_cap(codes: np.ndarray, step: int, cap: int, share: float | None) -> int:
    """Anonymous events kept per block of ``step``, decided on a reference's caller ``codes``:
    ``cap`` (together they are one caller) unless the route is mostly anonymous, i.e. the median
    complete block holds more than ``share * step`` anonymous events; then ``step`` (no cap, each
    its own caller), also when ``share`` is ``None``.

    Whoever sends without an id into a route of named callers (an internal batch job, a health
    check) may be one source, and its burst must not fill windows with its own mix; a mostly
    anonymous route would have nothing left to test if capped.

    >>> few, most = np.array([-1, 2, 3, 4] * 5), np.array([-1, -2, -3, 4] * 5)
    >>> anonymous_cap(few, 4, 1, 0.5), anonymous_cap(most, 4, 1, 0.5), anonymous_cap(few, 4, 1, None)
    (1, 4, 4)
    """
    n_blocks = len(codes) // step
    if share is None:
        return step
    per_block = (codes[: n_blocks * step] < 0).reshape(n_blocks, step).sum(1)
    mostly = n_blocks > 0 and float(np.median(per_block)) > share * step
    return step if mostly else cap


def caller_square_sums(codes: np.ndarray, keep: np.ndarray, ends: np.ndarray, length: int) -> np.ndarray:
    """``sum_g K_g^2`` over callers for the windows ``[e - length, e)`` (``K_g`` kept events of ``g``)."""
    return caller_square_sums_multi(codes, keep, ends, (length,))[0][:, 0]


def caller_square_sums_multi(
    codes: np.ndarray,
    keep: np.ndarray,
    ends: np.ndarray,
    lengths: Sequence[int],
    sub: np.ndarray | None = None,
    sub_min_length: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """``sum_g K_g^2`` for the windows ``[e - L, e)``, every ``e`` in ``ends`` and ``L`` in ``lengths``.

    Returns two ``len(ends) x len(lengths)`` arrays: for the events in ``keep``, and for those in
    ``sub`` (a subset of ``keep``; zeros when ``None`` and for lengths below ``sub_min_length``).
    Callers are ranked once for everything.
    """
    out = np.zeros((len(ends), len(lengths)))
    out_sub = np.zeros((len(ends), len(lengths)))
    kidx = np.flatnonzero(keep)
    if len(kidx) == 0 or len(ends) == 0:
        return out, out_sub
    _, kinv = np.unique(codes[kidx], return_inverse=True)
    g = int(kinv.max()) + 1
    hi = np.searchsorted(kidx, ends)
    ksub = sub[kidx].astype(np.float64) if sub is not None else None
    for w, length in enumerate(lengths):
        lo = np.searchsorted(kidx, np.maximum(ends - length, 0))
        lens = hi - lo
        tot = int(lens.sum())
        win = np.repeat(np.arange(len(ends)), lens)
        pos = np.arange(tot) - np.repeat(np.cumsum(lens) - lens, lens) + np.repeat(lo, lens)
        cell = win * g + kinv[pos]
        cnt = np.bincount(cell, minlength=len(ends) * g)
        out[:, w] = (cnt.astype(np.float64) ** 2).reshape(len(ends), g).sum(1)
        if ksub is not None and length >= sub_min_length:
            cs = np.bincount(cell, weights=ksub[pos], minlength=len(ends) * g)
            out_sub[:, w] = (cs**2).reshape(len(ends), g).sum(1)
    return out, out_sub


def between_caller_variance(S: np.ndarray, codes: np.ndarray, var: np.ndarray) -> np.ndarray:
    """Per score column, the between-caller variance of ``S`` by one-way ANOVA moments (zeros with
    fewer than two callers or none repeated; ``var`` itself when the design is degenerate)."""
    _, inv, ng = np.unique(codes, return_inverse=True, return_counts=True)
    n, g = len(codes), len(ng)
    if g >= n or g < 2:
        return np.zeros(S.shape[1])
    sums = np.zeros((g, S.shape[1]))
    np.add.at(sums, inv, S)
    means = sums / ng[:, None]
    grand = S.mean(0)
    ssw = ((S - means[inv]) ** 2).sum(0)
    sw2 = ssw / (n - g)
    ssb = (ng[:, None] * (means - grand) ** 2).sum(0)
    denom = n - float((ng**2).sum()) / n
    if denom <= 0:
        return var.copy()
    return np.asarray((ssb - (g - 1) * sw2) / denom)
