"""Smoke test of the stress benchmark's generator: deterministic, contract-valid, realistic quirks present."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np

from benchmarks.stress.contract import SCHEMA, validate_line
from benchmarks.stress.traffic import Profile, generate

SMALL = Profile("smoke", {"oncology": 0.7, "wine": 0.3}, n_events=1500, span_hours=2.0, n_callers=50,
                batch_jobs=2, batch_size=(50, 80), malformed=5)


def test_the_contract_schema_is_in_the_repository() -> None:
    assert SCHEMA.is_file(), SCHEMA


def test_generator_is_deterministic_given_a_seed() -> None:
    a, b, c = generate(SMALL, 5), generate(SMALL, 5), generate(SMALL, 6)
    assert a.lines == b.lines and a.labels == b.labels
    assert a.lines != c.lines


def test_lines_follow_the_contract_except_the_planted_malformed_ones() -> None:
    s = generate(SMALL, 5)
    bad = [line for line in s.lines if validate_line(line)]
    assert len(bad) == s.truth["malformed"] == 5
    assert all(b"bad-" in line for line in bad)
    for line in s.labels:
        msg = json.loads(line)
        assert set(msg) >= {"event_id", "ts", "label"}


def test_production_quirks_are_present() -> None:
    s = generate(SMALL, 5)
    events = [json.loads(line) for line in s.lines if not validate_line(line)]
    ids = Counter(e["event_id"] for e in events)
    assert sum(n - 1 for n in ids.values()) == s.truth["duplicates"] > 0  # same event_id delivered again
    by_features = Counter(json.dumps(e["features"], sort_keys=True) for e in events if e.get("client_id") != "healthcheck")
    assert max(by_features.values()) >= 2  # client retries: same features, new event_id
    canary = [e for e in events if e.get("client_id") == "healthcheck"]
    assert len(canary) >= 2 * 3600 / 30 - 1 and len({json.dumps(e["features"]) for e in canary}) == 1
    assert any("client_id" not in e for e in events)  # anonymous traffic
    assert {e["model_version"] for e in events} == {"1", "2"}  # canary rollout
    ts = [e["ts"] for e in events]
    assert any(x > y for x, y in zip(ts, ts[1:], strict=False))  # slightly out of order in event time
    shares = Counter(e.get("client_id") for e in events if e.get("client_id", "").startswith("acct-"))
    top = shares.most_common(1)[0][1] / sum(shares.values())
    assert 0.1 < top < 0.45  # a heavy caller, Zipf-like


def test_art_queries_are_recorded_in_natural_units() -> None:
    from benchmarks.stress.attacks import art_attack
    from benchmarks.stress.models import build_models

    spec = build_models()["oncology"]
    q = art_attack(spec, "hsj", seed=1, budget=150, victims=2)
    assert q.shape == (150, spec.X.shape[1])
    lo, hi = spec.X.min(axis=0), spec.X.max(axis=0)
    assert np.all(q >= lo - 1e-6) and np.all(q <= hi + 1e-6)


def test_art_attacks_are_deterministic_given_a_seed() -> None:
    from benchmarks.stress.attacks import art_attack
    from benchmarks.stress.models import build_models

    spec = build_models()["oncology"]
    a = art_attack(spec, "boundary", seed=3, budget=120, victims=1)
    b = art_attack(spec, "boundary", seed=3, budget=120, victims=1)
    assert np.array_equal(a, b)
