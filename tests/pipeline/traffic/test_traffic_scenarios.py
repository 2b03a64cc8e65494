"""Drifts and attackers mean what they say: shifts after change points, boundary walks, extraction."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.traffic import (
    Attacker,
    ConceptDrift,
    CorrelationDrift,
    CovariateDrift,
    PriorShift,
    Scenario,
    Traffic,
    generate,
)


def _benign(t: Traffic) -> list[dict]:
    skip = t.truth.attacker_ids | {t.truth.canary_id}
    return [m for m in t.predictions if m["client_id"] not in skip]


def _column(msgs: list[dict], name: str) -> np.ndarray:
    return np.array([m["features"][name] for m in msgs], dtype=np.float64)


def _margin(msgs: list[dict]) -> np.ndarray:
    P = np.sort(np.array([list(m["probabilities"].values()) for m in msgs]), axis=1)
    return P[:, -1] - P[:, -2]  # type: ignore[no-any-return]


def _split(t: Traffic, width: int = 4000) -> tuple[list[dict], list[dict]]:
    cp = t.truth.change_points[0].index
    index = {m["event_id"]: i for i, m in enumerate(t.predictions)}
    ben = _benign(t)
    before = [m for m in ben if cp - width <= index[m["event_id"]] < cp]
    after = [m for m in ben if cp <= index[m["event_id"]] < cp + width]
    return before, after


def test_mixed_ground_truth_defaults(mixed: Traffic) -> None:
    truth = mixed.truth
    assert truth.scenario == "mixed" and truth.n_events == 20000
    (cp,) = truth.change_points
    assert cp.kind == "covariate" and cp.index == 10000 and cp.ts == mixed.predictions[10000]["ts"]
    kinds = {a.kind: a for a in truth.attackers}
    assert set(kinds) == {"boundary", "extraction-uniform"}
    assert 5900 <= kinds["boundary"].first_index <= 6100 and kinds["boundary"].n_queries == 400
    assert kinds["extraction-uniform"].n_queries == 600
    for a in truth.attackers:
        sent = [i for i, m in enumerate(mixed.predictions) if m["client_id"] == a.client_id]
        assert sent == list(a.indices) and sent[0] == a.first_index and len(sent) == a.n_queries
        assert a.client_id not in truth.benign_client_ids
    assert len(truth.benign_client_ids) == 200 and len(truth.batch_job_ids) == 2
    assert truth.to_dict()["attackers"][0]["client_id"] == truth.attackers[0].client_id


def test_mixed_covariate_drift_shifts_feature_means(mixed: Traffic, mixed_digits: Traffic) -> None:
    before, after = _split(mixed)
    for name in mixed.truth.change_points[0].features:
        a, b = np.log1p(_column(before, name)), np.log1p(_column(after, name))
        assert b.mean() - a.mean() > 0.3 * a.std(), name
    for name in ("age", "credit_score", "session_seconds"):  # not drifted
        a, b = _column(before, name), _column(after, name)
        assert abs(b.mean() - a.mean()) < 0.1 * a.std(), name
    before, after = _split(mixed_digits, 3000)
    cols = [int(f[1:]) for f in mixed_digits.truth.change_points[0].features]
    a = np.array([m["features"] for m in before])[:, cols]
    b = np.array([m["features"] for m in after])[:, cols]
    assert np.all(b.mean(axis=0) - a.mean(axis=0) > 0.1)


@pytest.mark.parametrize("fixture", ["mixed", "mixed_digits"])
def test_boundary_attacker_sends_near_duplicates_towards_the_boundary(fixture: str, request) -> None:
    t: Traffic = request.getfixturevalue(fixture)
    a = next(x for x in t.truth.attackers if x.kind == "boundary")
    ds = t.model.dataset
    cols = np.flatnonzero(ds.decimals > 0)

    def scaled(msgs: list[dict]) -> np.ndarray:
        rows = ds.to_matrix([m["features"] for m in msgs])
        return (rows[:, cols] - ds.center[cols]) / ds.scale[cols]  # type: ignore[no-any-return]

    q = [t.predictions[i] for i in a.indices]
    ben = _benign(t)[:2000]
    step_q = np.median(np.linalg.norm(np.diff(scaled(q), axis=0), axis=1))
    step_b = np.median(np.linalg.norm(np.diff(scaled(ben), axis=0), axis=1))
    assert step_q < 0.05 * step_b
    mq, mb = _margin(q), _margin(ben)
    assert mq[0] > 0.5  # starts from a confidently classified natural input
    assert np.median(mq[len(mq) // 2 :]) < 0.1 < np.median(mb)
    # a campaign of a few minutes at a few queries per second
    assert t.predictions[a.last_index]["ts"] - t.predictions[a.first_index]["ts"] < 600


def test_extraction_caller_covers_the_input_space(mixed: Traffic) -> None:
    a = next(x for x in mixed.truth.attackers if x.kind == "extraction-uniform")
    q = [mixed.predictions[i] for i in a.indices]
    ben = _benign(mixed)
    for name in ("amount", "distance_km", "device_trust"):
        qa, ba = _column(q, name), _column(ben, name)
        assert np.median(qa) > np.percentile(ba, 75) or np.std(qa) > np.std(ba), name
    assert len({m["prediction"] for m in q}) >= 2


def test_all_attacker_kinds_query_the_real_model() -> None:
    kinds = ("slow-boundary", "insider", "extraction-gaussian", "extraction-jacobian", "extraction-perturb")
    sc = Scenario("zoo", "test", attackers=tuple(Attacker(k, at=0.1 + 0.15 * i) for i, k in enumerate(kinds)))
    t = generate(sc, n_events=15000, seed=11)
    got = {a.kind: a for a in t.truth.attackers}
    assert set(got) == set(kinds)
    for a in t.truth.attackers:
        msgs = [t.predictions[i] for i in a.indices]
        X = t.model.dataset.to_matrix([m["features"] for m in msgs])
        P = t.model.predict_proba(X)
        logged = np.array([list(m["probabilities"].values()) for m in msgs])
        assert np.allclose(P, logged, atol=1e-4), a.kind
    slow = got["slow-boundary"]
    gaps = np.diff([t.predictions[i]["ts"] for i in slow.indices])
    assert np.median(gaps) > 5.0
    ins = got["insider"]
    earlier = [m for m in t.predictions[: ins.first_index] if m["client_id"] == ins.client_id]
    assert len(earlier) > 10  # an established account before it starts probing
    assert ins.client_id not in t.truth.benign_client_ids


def test_gradual_drift_ramps_in() -> None:
    sc = Scenario("g", "test", drifts=(CovariateDrift(at=0.3, width=0.4, features=("amount",), shift=1.5),))
    t = generate(sc, n_events=20000, seed=2)
    cp = t.truth.change_points[0]
    assert (cp.index, cp.full_index) == (6000, 14000)
    index = {m["event_id"]: i for i, m in enumerate(t.predictions)}
    ben = _benign(t)

    def mean_log_amount(lo: int, hi: int) -> float:
        return float(np.mean(np.log([m["features"]["amount"] for m in ben if lo <= index[m["event_id"]] < hi])))

    early, mid, late = mean_log_amount(0, 6000), mean_log_amount(9000, 11000), mean_log_amount(14000, 20000)
    assert early + 0.3 < mid < late - 0.3


def test_correlation_drift_keeps_marginals() -> None:
    sc = Scenario("c", "test", drifts=(CorrelationDrift(at=0.5, features=("age", "income"), target_corr=-0.6),))
    t = generate(sc, n_events=20000, seed=3)
    before, after = _split(t, 8000)
    for name in ("age", "income"):
        qa = np.percentile(_column(before, name), [10, 50, 90])
        qb = np.percentile(_column(after, name), [10, 50, 90])
        assert np.allclose(qa, qb, rtol=0.06), name
    r_before = np.corrcoef(_column(before, "age"), np.log(_column(before, "income")))[0, 1]
    r_after = np.corrcoef(_column(after, "age"), np.log(_column(after, "income")))[0, 1]
    assert r_before > 0.3 and r_after < -0.3


def test_prior_shift_changes_the_class_mix() -> None:
    sc = Scenario("p", "test", drifts=(PriorShift(at=0.5, prior=(0.3, 0.3, 0.4)),))
    t = generate(sc, n_events=20000, seed=4)
    before, after = _split(t, 8000)
    share_before = np.mean([m["prediction"] == "decline" for m in before])
    share_after = np.mean([m["prediction"] == "decline" for m in after])
    assert share_after > share_before + 0.15


def test_concept_drift_raises_the_error_rate_not_the_inputs() -> None:
    sc = Scenario("k", "test", drifts=(ConceptDrift(at=0.5),))
    t = generate(sc, n_events=20000, seed=5, label_fraction=1.0)
    cp = t.truth.change_points[0]
    preds = {m["event_id"]: (i, m["prediction"]) for i, m in enumerate(t.predictions)}
    labels = [(lab["event_id"], lab["label"]) for lab in t.labels]
    labels += [(m["event_id"], m["label"]) for m in t.predictions if "label" in m]
    err_before = np.mean([preds[e][1] != y for e, y in labels if preds[e][0] < cp.index])
    err_after = np.mean([preds[e][1] != y for e, y in labels if preds[e][0] >= cp.index])
    assert err_after > err_before + 0.15
    before, after = _split(t, 8000)
    a, b = np.log(_column(before, "amount")), np.log(_column(after, "amount"))
    assert abs(a.mean() - b.mean()) < 0.1 * a.std()


def test_drifts_do_not_touch_the_canary_or_retries(mixed: Traffic) -> None:
    cp = mixed.truth.change_points[0].index
    canary = [m for m in mixed.predictions if m["client_id"] == mixed.truth.canary_id]
    assert canary[0]["features"] == canary[-1]["features"]
    assert any(m["ts"] > mixed.predictions[cp]["ts"] for m in canary)


def test_digits_correlation_drift_shuffles_a_block_keeping_marginals() -> None:
    sc = Scenario("cd", "test", drifts=(CorrelationDrift(at=0.5),))
    t = generate(sc, n_events=16000, seed=6, dataset="digits")
    feats = t.truth.change_points[0].features
    cols = [int(f[1:]) for f in feats]
    before, after = _split(t, 6000)
    a = np.array([m["features"] for m in before])[:, cols]
    b = np.array([m["features"] for m in after])[:, cols]
    assert np.allclose(a.mean(axis=0), b.mean(axis=0), atol=0.03)
    r_a = np.corrcoef(a[:, 0], a[:, 1])[0, 1]
    r_b = np.corrcoef(b[:, 0], b[:, 1])[0, 1]
    assert abs(r_b) < abs(r_a) - 0.2
