"""Ground truth returned with a generated stream (what a perfect monitor would report)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class ChangePoint:
    """A drift: ``index``/``ts`` of the first affected event; ``full_index``/``full_ts`` where it
    reaches full strength (equal for an abrupt drift). Indices are positions in ``predictions``."""

    kind: str
    index: int
    ts: float
    full_index: int
    full_ts: float
    features: tuple[str, ...]
    description: str


@dataclass(frozen=True)
class AttackerTruth:
    """One attacking caller: its first and last query positions and how many queries it sent.

    ``indices`` lists the positions of all its attack queries (an ``insider`` also sends benign
    requests under the same ``client_id``, before and between them).
    """

    client_id: str
    kind: str
    first_index: int
    first_ts: float
    last_index: int
    n_queries: int
    indices: tuple[int, ...]


@dataclass(frozen=True)
class GroundTruth:
    """What the stream contains, by construction."""

    scenario: str
    dataset: str
    model: str
    seed: int
    n_events: int
    start_ts: float
    change_points: tuple[ChangePoint, ...]
    attackers: tuple[AttackerTruth, ...]
    benign_client_ids: tuple[str, ...]
    canary_id: str
    batch_job_ids: tuple[str, ...]
    n_retries: int
    n_redeliveries: int

    @property
    def attacker_ids(self) -> frozenset[str]:
        return frozenset(a.client_id for a in self.attackers)

    def attacker(self, client_id: str) -> AttackerTruth:
        """The attacker entry for ``client_id`` (``KeyError`` when it is not an attacker)."""
        for a in self.attackers:
            if a.client_id == client_id:
                return a
        raise KeyError(client_id)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form (``indices`` lists included)."""
        return asdict(self)
