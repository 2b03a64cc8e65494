"""Value fingerprints that tell in how many coordinates two queries differ (``campaign``'s sparse rule).

A query's raw feature values are hashed to one byte per feature: equal values (NaN/missing included,
``-0.0`` equal to ``0.0``) always give equal bytes, different values equal bytes with probability
1/256. Routes with more than ``width`` features hash them into ``width`` groups (feature ``j`` in group
``j mod width``; a group's byte changes when any of its values does), so a fingerprint is at most
``width`` bytes and the count of differing bytes never exceeds the count of differing features.
"""

from __future__ import annotations

import numpy as np

_M1 = np.uint64(0xBF58476D1CE4E5B9)  # splitmix64 finaliser constants
_M2 = np.uint64(0x94D049BB133111EB)
#: differing-byte count of a window column with nothing to compare (empty slot or exact repeat)
NONE = 255


class ValueHasher:
    """Seeded hash of raw feature values to ``(n, width)`` uint8 fingerprints.

    >>> h = ValueHasher(4, 24, seed=0)
    >>> a = h(np.array([[1.0, 2.0, np.nan, 0.0], [1.0, 2.5, np.nan, -0.0]]))
    >>> (a[0] != a[1]).tolist()
    [False, True, False, False]
    """

    def __init__(self, n_features: int, width: int, seed: int) -> None:
        self.d = int(n_features)
        self.width = max(1, min(self.d, int(width)))
        self.groups = -(-max(self.d, 1) // self.width)
        rng = np.random.default_rng([seed, 0x5BA5E])
        self.salt = rng.integers(0, 2**63, size=max(self.d, 1), dtype=np.uint64)[: self.d]

    def __call__(self, X: np.ndarray) -> np.ndarray:
        n = X.shape[0]
        if self.d == 0:
            return np.zeros((n, self.width), dtype=np.uint8)
        v = np.asarray(X, dtype=np.float64) + 0.0  # -0.0 -> 0.0 (a new array: safe to edit)
        v[np.isnan(v)] = np.nan  # one NaN bit pattern
        h = v.view(np.uint64) ^ self.salt
        h ^= h >> np.uint64(30)
        h *= _M1
        h ^= h >> np.uint64(27)
        h *= _M2
        h ^= h >> np.uint64(31)
        if self.groups > 1:  # sum (mod 2^64) of the group's value hashes
            pad = self.groups * self.width - self.d
            if pad:
                h = np.concatenate([h, np.zeros((n, pad), dtype=np.uint64)], axis=1)
            h = h.reshape(n, self.groups, self.width).sum(axis=1, dtype=np.uint64)
        return (h >> np.uint64(56)).astype(np.uint8)


def fewest_differing(win: np.ndarray, h: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Per query, the fewest differing bytes between its fingerprint ``h`` (n, w) and a non-identical
    one of its window ``win`` (n, K, w): uint8, :data:`NONE` where there is none, or where the query
    repeats a remembered one exactly (a retry or a canary sends nothing new, whatever else is near).

    >>> w = np.array([[[1, 2, 3], [1, 2, 9]], [[1, 2, 3], [7, 7, 7]]], dtype=np.uint8)
    >>> fewest_differing(w, np.array([[1, 2, 4], [1, 2, 3]], dtype=np.uint8), np.ones((2, 2), bool)).tolist()
    [1, 255]
    """
    cnt = np.not_equal(win, h[:, None, :]).sum(axis=2, dtype=np.uint8)
    repeat = (valid & (cnt == 0)).any(axis=1)
    cnt[~valid] = NONE
    out = cnt.min(axis=1)
    out[repeat] = NONE
    return out  # type: ignore[no-any-return]
