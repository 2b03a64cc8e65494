"""The campaign detector's sparse rule: queries equal to a recent one in all but a few coordinates."""

from __future__ import annotations

import numpy as np
import pytest

from detectors.attack import CampaignDetector
from detectors.attack._sparse import ValueHasher
from detectors.base import DetectorContext, Kind, StateMismatchError
from pipeline.events import FeatureSchema, RouteKey, batch_from_arrays

D = 12
W = np.random.default_rng(123).normal(size=(4, D))


def ctx(d: int = D, seed: int = 0) -> DetectorContext:
    return DetectorContext(RouteKey("m", "1"), FeatureSchema(tuple(f"f{i}" for i in range(d))), seed=seed)


def natural(rng: np.random.Generator, n: int) -> np.ndarray:
    """Benign continuous inputs on a 4-d manifold, natural units, 3 decimals (as a client sends them)."""
    return np.round((rng.normal(size=(n, 4)) @ W + 0.05 * rng.normal(size=(n, D))) * 10.0 + 100.0, 3)


def mixed(rng: np.random.Generator, n: int) -> np.ndarray:
    """Integer/categorical-heavy records: 4 continuous amounts, 4 small counts, 4 categorical codes."""
    amounts = np.round(np.exp(rng.normal(9.0, 0.6, size=(n, 4))), 2)
    counts = rng.poisson(1.5, size=(n, 4)).astype(float)
    codes = rng.integers(0, 5, size=(n, 4)).astype(float)
    return np.hstack([amounts, counts, codes])


def random_search(rng: np.random.Generator, x0: np.ndarray, n: int, step: float, k: int = 1) -> np.ndarray:
    """Square-attack-like random search: each query moves ``k`` random coordinates of the incumbent
    by +-``step``; a fifth of the candidates are kept as the new incumbent. No exact repeats."""
    x, out = x0.copy(), []
    for _ in range(n):
        c = x.copy()
        j = rng.choice(len(x), size=k, replace=False)
        c[j] += rng.choice([-step, step], size=k)
        out.append(c)
        if rng.random() < 0.2:
            x = c
    return np.array(out)


def with_caller(rng: np.random.Generator, base: dict, X: np.ndarray, name: str, t0: float, gap: float) -> dict:
    Xa = np.vstack([base["X"], X])
    t = np.concatenate([base["ts"], t0 + gap * np.arange(len(X))])
    cl = base["clients"] + [name] * len(X)
    o = np.argsort(t, kind="stable")
    return {"X": Xa[o], "ts": t[o], "clients": [cl[i] for i in o]}


def benign(rng: np.random.Generator, X: np.ndarray, n_users: int = 60, span: float = 4000.0) -> dict:
    t = np.sort(rng.uniform(0, span, len(X)))
    return {"X": X, "ts": t, "clients": [f"user-{i}" for i in rng.integers(0, n_users, len(X))]}


def run(det: CampaignDetector, s: dict, batch: int, start: int = 0, stop: int | None = None) -> list:
    stop = len(s["X"]) if stop is None else stop
    out = []
    for a in range(start, stop, batch):
        b = slice(a, min(a + batch, stop))
        eb = batch_from_arrays(s["X"][b], ts=s["ts"][b], client_ids=s["clients"][b], start_index=a)
        out.extend(det.process(eb).findings)
    return out


def key(findings: list) -> list:
    return [(f.client_id, f.trigger_event_id, f.score, f.event_ids, f.window_start, f.window_end, f.is_update,
             f.explanation["summary"]) for f in findings]


@pytest.fixture(scope="module")
def sparse_stream() -> dict:
    """Benign users plus a random-search attacker moving one feature by ~1.2 sd per query."""
    rng = np.random.default_rng(3)
    base = benign(rng, natural(rng, 3000))
    x0 = natural(rng, 1)[0]
    sd = natural(np.random.default_rng(9), 2000).std(axis=0)
    atk = np.round(random_search(rng, x0, 120, 1.2 * float(np.median(sd))), 3)
    return with_caller(rng, base, atk, "mallory", 1500.0, 2.0)


def test_sparse_random_search_is_a_campaign(sparse_stream: dict) -> None:
    s = sparse_stream
    det = CampaignDetector(ctx())
    f = [x for x in run(det, s, 500) if not x.is_update]
    assert det.sparse_k >= 1
    assert [x.client_id for x in f] == ["mallory"]
    a = f[0]
    assert a.kind is Kind.ATTACK_CAMPAIGN
    rows = [i for i, c in enumerate(s["clients"]) if c == "mallory"]
    pos = [f"e{i}" for i in rows].index(a.trigger_event_id) + 1
    assert pos <= 12  # 8 near-duplicates from the 2nd query on
    e = a.explanation
    assert e["criterion"] == "sparse" and e["nn_differing"] == 1 and e["campaign_sparse_near_duplicates"] >= 8
    assert e["nn_distance"] > 2 * e["radius"]  # far outside the radius: only the sparse rule sees it
    assert "sparse rule" in e["summary"] and "1 feature differs" in e["summary"]
    # the radius rule alone misses it, as in stress finding F4
    assert not [x for x in run(CampaignDetector(ctx(), sparse=0), s, 500) if x.client_id == "mallory"]


def test_integer_heavy_benign_callers_and_form_corrections_stay_quiet() -> None:
    """Records sharing many exact values; a user correcting one field of a form three times, on two
    forms, each correction retried by the client; a canary alternating two inputs that differ in one
    field. Corrections are far moves (outside the radius): the radius rule counts a retry that is
    near another remembered query (see docs/attacks.md, limitations), the sparse rule does not."""
    rng = np.random.default_rng(4)
    s = benign(rng, mixed(rng, 4000), n_users=40, span=8000.0)
    form = []
    for _ in range(2):  # two forms, each sent and then corrected three times (one field each time)
        x = mixed(rng, 1)[0]
        form.append(x.copy())
        for j in rng.choice(12, size=3, replace=False):
            x = x.copy()
            x[j] = x[j] + 2.0 if j >= 4 else round(x[j] * 2.0, 2)
            form += [x.copy(), x.copy()]  # the correction and a client retry of it
    s = with_caller(rng, s, np.array(form), "clerk", 3000.0, 20.0)
    a, b = mixed(rng, 1)[0], None
    b = a.copy()
    b[9] = (b[9] + 1) % 5
    s = with_caller(rng, s, np.array([a, b] * 100), "canary", 2000.0, 30.0)
    det = CampaignDetector(ctx())
    found = run(det, s, 700)
    assert det.sparse_k >= 1  # the sparse rule is on for these data, so the test means something
    assert not found, [(x.client_id, x.explanation["summary"]) for x in found]
    # the clerk's corrections are sparse near-duplicates, just fewer than the threshold requires
    hits = [x for x in run(CampaignDetector(ctx(), threshold=2), s, 700) if not x.is_update]
    assert [x.client_id for x in hits] == ["clerk"]
    assert hits[0].explanation["criterion"] in ("sparse", "radius and sparse")


def test_small_corrections_retried_and_a_canary_that_changed_once_are_not_near_duplicates() -> None:
    """The radius rule alone (``sparse=0``): a clerk correcting a form three times by small amounts
    (within the radius), every correction retried twice by the client, and a health-check canary
    whose fixed input changed once. Each retry / later check exactly repeats a recent query while
    also lying near another one; exact repeats never count, so only each correction's first copy
    does (3, below the default threshold; counting the retries made 9)."""
    rng = np.random.default_rng(6)
    s = benign(rng, natural(rng, 4000), span=8000.0)
    x = natural(rng, 1)[0]
    form = [x.copy()]
    for j in rng.choice(D, size=3, replace=False):
        x = x.copy()
        x[j] = round(x[j] + 0.01, 3)
        form += [x.copy()] * 3  # the correction and two client retries of it
    s = with_caller(rng, s, np.array(form), "clerk", 3000.0, 20.0)
    a = natural(rng, 1)[0]
    b = a.copy()
    b[0] = round(b[0] + 0.01, 3)
    s = with_caller(rng, s, np.array([a] * 40 + [b] * 40), "canary", 1000.0, 30.0)
    det = CampaignDetector(ctx(), sparse=0)
    found = [x for x in run(det, s, 700) if not x.is_update]
    assert not found, [(x.client_id, x.explanation["summary"]) for x in found]
    # control: the corrections themselves are near-duplicates (3 of them), the canary's change one
    hits = [x for x in run(CampaignDetector(ctx(), sparse=0, threshold=3), s, 700) if not x.is_update]
    assert [x.client_id for x in hits] == ["clerk"]


def test_very_discrete_data_disable_the_sparse_rule() -> None:
    rng = np.random.default_rng(5)
    # 12 skewed three-level codes: records share most values, natural neighbours differ in 0-2 of them
    X = rng.choice(3, p=[0.8, 0.15, 0.05], size=(3000, D)).astype(float)
    base = benign(rng, X)
    atk = random_search(rng, X[0], 100, 1.0)
    s = with_caller(rng, base, atk, "mallory", 1500.0, 2.0)
    det = CampaignDetector(ctx())
    found = run(det, s, 500)
    assert det.sparse_q01 <= 1.0 and det.sparse_k == 0
    assert all("sparse rule off" in x.explanation["summary"] for x in found)
    assert all(x.explanation["criterion"] == "radius" for x in found)
    assert det.table.arrays["shash"].any() == 0  # no fingerprints kept while the rule is off


def test_sparse_batch_invariance_and_state_round_trip(sparse_stream: dict) -> None:
    s = sparse_stream
    ref = key(run(CampaignDetector(ctx()), s, len(s["X"])))
    assert ref
    for b in (1, 7, 500):
        assert key(run(CampaignDetector(ctx()), s, b)) == ref, b
    rows = [i for i, c in enumerate(s["clients"]) if c == "mallory"]
    cut = rows[4]  # mid-attack: the restored fingerprints must carry the campaign on
    det = CampaignDetector(ctx())
    part1 = run(det, s, 300, 0, cut)
    snap = det.state_dict()
    assert snap["state_version"] == 2 and snap["state"]["sparse_k"] == det.sparse_k >= 1
    assert snap["state"]["table"]["arrays"]["shash"].any()
    fresh = CampaignDetector(ctx())
    fresh.load_state_dict(snap)
    assert key(part1 + run(fresh, s, 300, cut)) == ref
    old = dict(snap, state_version=1)  # a snapshot of the radius-only detector is refused
    with pytest.raises(StateMismatchError):
        CampaignDetector(ctx()).load_state_dict(old)


def test_value_fingerprint_counts_differing_features() -> None:
    rng = np.random.default_rng(6)
    X = rng.normal(size=(200, 40))
    Y = X.copy()
    Y[:, 7] += 1.0
    Y[:, 30] = np.nan
    h = ValueHasher(40, 24, seed=0)
    diff = (h(X) != h(Y)).sum(axis=1)
    assert h.width == 24 and set(diff.tolist()) <= {1, 2} and (diff == 2).mean() > 0.95  # 7, 30 in 2 groups
    assert (h(Y) == h(Y.copy())).all()  # NaN equals NaN
    small = ValueHasher(12, 24, seed=0)
    Z = rng.normal(size=(2000, 12))
    assert small.width == 12 and small.stored == 16 and not small(Z)[:, 12:].any()  # zero padding
    assert abs(float((small(Z)[:, :12] == small(Z[::-1])[:, :12]).mean()) - 1 / 256) < 0.002  # collisions


def test_sparse_validation() -> None:
    for kw in ({"sparse": -1}, {"sparse_width": 0}, {"sparse_width": 200}, {"sparse_factor": 0.0},
               {"max_sparse_share": 1.0}):
        with pytest.raises(ValueError):
            CampaignDetector(ctx(), **kw)  # type: ignore[arg-type]
