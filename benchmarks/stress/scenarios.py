"""The stress benchmark's scenarios: benign profiles, drifts and attackers, with their parameters."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from benchmarks.stress import attacks
from benchmarks.stress.models import build_models
from benchmarks.stress.traffic import Drift, Injection, Profile, Stream, generate

CLINIC = Profile("clinic", {"oncology": 1.0})
WINERY = Profile("winery", {"wine": 1.0}, n_callers=150, zipf_s=1.3, anon_share=0.10, batch_jobs=15,
                 batch_size=(200, 800), retry_rate=0.05, dup_rate=0.01, label_share=0.2)
LENDER = Profile("lender", {"loans": 0.7, "oncology": 0.3}, n_events=45_000, n_callers=600, zipf_s=1.05,
                 diurnal_amp=0.85, label_share=0.5, label_delay_median_s=6 * 3600.0, disorder_s=5.0)
GLOBAL = Profile("global", {"oncology": 1.0}, n_events=45_000, n_callers=400, regions=3, diurnal_amp=0.9)
PORTFOLIO = Profile("portfolio", {"loans": 1.0}, n_events=40_000, rescore_entities=60)
BENIGN = (CLINIC, WINERY, LENDER, GLOBAL, PORTFOLIO)
SEEDS = (1, 2, 3)


@dataclass(frozen=True)
class Scenario:
    """One stream to replay and what is expected of it."""

    name: str
    group: str  # benign | drift | attack | pipeline
    profile: Profile
    seed: int
    drift: Drift | None = None
    attackers: tuple[tuple[str, str, str, int, float, float], ...] = ()  # caller, model, how, n, start, gap
    skew_s: float = 0.0
    future_event_s: float = 0.0
    notes: str = ""
    expect: dict[str, object] = field(default_factory=dict)

    def build(self) -> Stream:
        """Generate the stream (attack queries first, then the traffic around them)."""
        models = build_models()
        inj = []
        for i, (caller, model, how, n, start, gap) in enumerate(self.attackers):
            spec, s = models[model], self.seed * 100 + i
            if how in ("hsj", "boundary"):
                q = attacks.art_attack(spec, how, s, budget=n)
            elif how == "random_search":
                q = attacks.random_search(spec, s, budget=n)
            elif how == "knockoff":
                q = attacks.knockoff_thief(spec, s, n)
            elif how == "jacobian":
                q = attacks.jacobian_thief(spec, s)
            else:
                raise ValueError(how)
            inj.append(Injection(caller, model, q, start, gap, how))
        stream = generate(self.profile, self.seed, self.drift, inj, self.skew_s)
        if self.future_event_s:
            # One valid event a quarter of the way in carries a ts from a producer whose clock is ahead.
            import json

            i = len(stream.lines) // 4
            ev = json.loads(stream.lines[i])
            from benchmarks.stress.traffic import _rfc3339, parse_rfc3339

            ev["ts"] = _rfc3339(parse_rfc3339(ev["ts"]) + self.future_event_s)
            stream.lines[i] = json.dumps(ev, separators=(",", ":")).encode()
            stream.truth["future_event"] = {"event_id": ev["event_id"], "ts": ev["ts"], "line": i + 1}
        return stream


def all_scenarios() -> list[Scenario]:
    """Every scenario of the benchmark, in run order."""
    out = [Scenario(f"benign-{p.name}-s{s}", "benign", p, s) for p in BENIGN for s in SEEDS]
    base = replace(CLINIC, n_events=30_000)
    drifts = {
        "drift-shift-ks015": Drift("shift", "oncology", "mean texture", 0.15),
        "drift-shift-ks030": Drift("shift", "oncology", "mean texture", 0.30),
        "drift-scale-x1.6": Drift("scale", "oncology", "mean smoothness", 1.6),
        "drift-prior+15": Drift("prior", "oncology", param=0.15),
        "drift-concept-10pt": Drift("concept", "oncology", "worst radius", 0.10),
        "drift-const0-30pct": Drift("const0", "oncology", "mean concavity", rows=0.3),
        "drift-missing-30pct": Drift("missing", "oncology", "worst smoothness", rows=0.3),
        "drift-units-x1000": Drift("units", "oncology", "mean area", 1000.0),
        "drift-loans-units-x1000": Drift("units", "loans", "annual_income", 1000.0),
        "drift-loans-prior+15": Drift("prior", "loans", param=0.15),
    }
    for name, d in drifts.items():
        prof = base if d.model == "oncology" else replace(LENDER, n_events=30_000, models={"loans": 1.0})
        out.append(Scenario(name, "drift", prof, 11, drift=d))
    atk = replace(CLINIC, n_events=30_000)
    out += [
        Scenario("attack-hsj", "attack", atk, 21, attackers=(("acct-x-hsj", "oncology", "hsj", 2500, 0.4, 0.5),)),
        Scenario("attack-boundary", "attack", atk, 22,
                 attackers=(("acct-x-bnd", "oncology", "boundary", 2500, 0.4, 0.5),)),
        Scenario("attack-random-search", "attack", atk, 23,
                 attackers=(("acct-x-rs", "oncology", "random_search", 2500, 0.4, 0.5),)),
        Scenario("thief-knockoff-in-heavy", "attack", atk, 24,
                 attackers=(("acct-001", "oncology", "knockoff", 3000, 0.3, 8.0),)),
        Scenario("thief-jacobian-in-heavy", "attack", atk, 25,
                 attackers=(("acct-002", "oncology", "jacobian", 640, 0.3, 5.0),)),
        Scenario("attack-all-loans", "attack", replace(LENDER, n_events=30_000, models={"loans": 1.0}), 26,
                 attackers=(("acct-x-hsj", "loans", "hsj", 2000, 0.3, 0.5),
                            ("acct-x-bnd", "loans", "boundary", 2000, 0.45, 0.5),
                            ("acct-x-rs", "loans", "random_search", 2000, 0.6, 0.5),
                            ("acct-001", "loans", "knockoff", 3000, 0.2, 8.0),
                            ("acct-003", "loans", "jacobian", 640, 0.5, 5.0))),
        Scenario("pipeline-clock-skew", "pipeline", CLINIC, 1, skew_s=6 * 3600.0,
                 notes="the 6 malformed messages carry a ts 6 h ahead (a producer with a bad clock)"),
        Scenario("pipeline-one-future-event", "pipeline", CLINIC, 1, future_event_s=6 * 3600.0,
                 notes="one valid event, a quarter of the way in, carries a ts 6 h ahead"),
    ]
    return out
