"""Named scenarios: which drifts and attackers are mixed into the benign background traffic."""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.traffic.attacks import Attacker
from pipeline.traffic.drift import ConceptDrift, CorrelationDrift, CovariateDrift, Drift, PriorShift


@dataclass(frozen=True)
class Scenario:
    """Benign traffic plus these drifts and attackers (positions relative to the stream length)."""

    name: str
    description: str
    drifts: tuple[Drift, ...] = ()
    attackers: tuple[Attacker, ...] = ()


def _s(name: str, description: str, drifts: tuple[Drift, ...] = (), attackers: tuple[Attacker, ...] = ()) -> Scenario:
    return Scenario(name, description, drifts, attackers)


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        _s("benign", "production-like benign traffic only (callers, batch jobs, retries, canary); no drift, no attack"),
        _s("mixed", "benign traffic + abrupt covariate drift at 50% + a boundary attack at 30% "
           "+ a uniform-noise extraction caller at 70% (the demo)",
           (CovariateDrift(at=0.5, shift=1.0),),
           (Attacker("boundary", at=0.3), Attacker("extraction-uniform", at=0.7))),
        _s("drift-abrupt", "abrupt covariate drift at 50%: a few features shift by 1 sd",
           (CovariateDrift(at=0.5, shift=1.0),)),
        _s("drift-gradual", "gradual covariate drift ramping in from 40% to 70% (to +1 sd)",
           (CovariateDrift(at=0.4, width=0.3, shift=1.0),)),
        _s("drift-scale", "abrupt spread drift at 50%: a few features' spread grows 1.8x, means unchanged",
           (CovariateDrift(at=0.5, shift=0.0, scale=1.8),)),
        _s("drift-correlation", "correlation-only drift at 50%: marginals unchanged, joint changes",
           (CorrelationDrift(at=0.5),)),
        _s("prior-shift", "prior (class-mix) shift at 50%", (PriorShift(at=0.5),)),
        _s("concept-drift", "concept drift at 50%: labels move to another class in one region, error rises",
           (ConceptDrift(at=0.5),)),
        _s("attack-boundary", "benign traffic + one fast boundary (HopSkipJump-like) attacker at 30%",
           attackers=(Attacker("boundary", at=0.3),)),
        _s("attack-slow", "benign traffic + one slow, careful boundary attacker from 10%",
           attackers=(Attacker("slow-boundary", at=0.1),)),
        _s("attack-insider", "benign traffic + an established benign account that starts probing at 40%",
           attackers=(Attacker("insider", at=0.4),)),
        _s("extraction-uniform", "benign traffic + a uniform-noise extraction caller at 30%",
           attackers=(Attacker("extraction-uniform", at=0.3),)),
        _s("extraction-gaussian", "benign traffic + a Gaussian-noise extraction caller at 30%",
           attackers=(Attacker("extraction-gaussian", at=0.3),)),
        _s("extraction-jacobian", "benign traffic + a Jacobian-augmentation extraction caller at 30%",
           attackers=(Attacker("extraction-jacobian", at=0.3),)),
        _s("extraction-perturb", "benign traffic + an extraction caller perturbing natural inputs at 30%",
           attackers=(Attacker("extraction-perturb", at=0.3),)),
        _s("campaigns", "benign traffic + every attacker kind at once (no drift), for detector benchmarks",
           attackers=(Attacker("slow-boundary", at=0.05), Attacker("boundary", at=0.2),
                      Attacker("extraction-uniform", at=0.3), Attacker("insider", at=0.4),
                      Attacker("extraction-gaussian", at=0.5), Attacker("extraction-jacobian", at=0.6),
                      Attacker("extraction-perturb", at=0.75))),
    )
}  # fmt: skip


def get_scenario(scenario: str | Scenario) -> Scenario:
    """Look up a scenario by name (a :class:`Scenario` is returned as is)."""
    if isinstance(scenario, Scenario):
        return scenario
    try:
        return SCENARIOS[scenario]
    except KeyError:
        raise ValueError(f"unknown scenario {scenario!r}; known: {', '.join(SCENARIOS)}") from None
