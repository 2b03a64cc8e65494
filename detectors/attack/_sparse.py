"""Value fingerprints that tell in how many coordinates two queries differ (``campaign``'s sparse rule).

A query's raw feature values are hashed to one byte per feature: equal values (NaN/missing included,
``-0.0`` equal to ``0.0``) always give equal bytes, different values equal bytes with probability
1/256. Routes with more than ``width`` features hash them into ``width`` groups (feature ``j`` in group
``j mod width``; a group's byte changes when any of its values does), so a fingerprint is at most
``width`` bytes and the count of differing bytes never exceeds the count of differing features.
Fingerprints are stored padded with zero bytes to a multiple of 8 (``stored`` bytes), so that
differing bytes are counted eight at a time in uint64 words.
"""

from __future__ import annotations

import numpy as np

_ONES = np.uint64(0x0101010101010101)  # multiplying by it sums a word's bytes into its top byte
#: differing-byte count of a window column with nothing to compare (empty slot or exact repeat)
NONE = 255


class ValueHasher:
    """Seeded hash of raw feature values to ``(n, stored)`` uint8 fingerprints (``width`` hash bytes,
    then zero padding).

    >>> h = ValueHasher(4, 24, seed=0)
    >>> a = h(np.array([[1.0, 2.0, np.nan, 0.0], [1.0, 2.5, np.nan, -0.0]]))
    >>> h.stored, (a[0] != a[1]).tolist()
    (8, [False, True, False, False, False, False, False, False])
    """

    def __init__(self, n_features: int, width: int, seed: int) -> None:
        self.d = int(n_features)
        self.width = max(1, min(self.d, int(width)))
        self.groups = -(-max(self.d, 1) // self.width)
        self.stored = -(-self.width // 8) * 8
        rng = np.random.default_rng([seed, 0x5BA5E])
        # one random odd multiplier per feature: the top byte of (value bits * m) depends on every bit
        self.mult = rng.integers(0, 2**63, size=self.d, dtype=np.uint64) * np.uint64(2) + np.uint64(1)

    def __call__(self, X: np.ndarray) -> np.ndarray:
        n = X.shape[0]
        out = np.zeros((n, self.stored), dtype=np.uint8)
        if self.d == 0:
            return out
        v = np.asarray(X, dtype=np.float64) + 0.0  # -0.0 -> 0.0 (a new array: safe to edit)
        v[np.isnan(v)] = np.nan  # one NaN bit pattern
        h = v.view(np.uint64) * self.mult
        w = self.width
        acc = h[:, :w]
        for g in range(1, self.groups):  # a group's hash: the sum (mod 2^64) of its values' hashes
            seg = h[:, g * w:(g + 1) * w]
            acc[:, : seg.shape[1]] += seg
        out[:, :w] = acc >> np.uint64(56)
        return out


def fewest_differing(win: np.ndarray, h: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Per query, the fewest differing bytes between its fingerprint ``h`` (n, w) and a non-identical
    one of its window ``win`` (n, K, w; ``w`` a multiple of 8): uint8, :data:`NONE` where there is
    none, or where the query repeats a remembered one exactly (a retry or a canary sends nothing new,
    whatever else is near).

    >>> w = np.zeros((2, 2, 8), dtype=np.uint8)
    >>> w[:, :, :3] = [[[1, 2, 3], [1, 2, 9]], [[1, 2, 3], [7, 7, 7]]]
    >>> h = np.zeros((2, 8), dtype=np.uint8)
    >>> h[:, :3] = [[1, 2, 4], [1, 2, 3]]
    >>> fewest_differing(w, h, np.ones((2, 2), bool)).tolist()
    [1, 255]
    """
    # one 0/1 byte per coordinate, summed eight at a time in uint64 words (at most 128 per query)
    ne = np.not_equal(win, h[:, None, :]).view(np.uint64)
    acc = ne[..., 0].copy()
    for j in range(1, ne.shape[2]):
        acc += ne[..., j]
    acc *= _ONES
    acc >>= np.uint64(56)
    cnt = acc.astype(np.uint8)
    repeat = (valid & (cnt == 0)).any(axis=1)
    cnt[~valid] = NONE
    out = cnt.min(axis=1)
    out[repeat] = NONE
    return out  # type: ignore[no-any-return]
