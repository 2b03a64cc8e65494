"""The generated stream as a whole: determinism, wire format, callers, retries, canary, labels."""

from __future__ import annotations

import gzip
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import orjson
import pytest

from pipeline.traffic import (
    DEFAULT_START_TS,
    SCENARIOS,
    Traffic,
    TrafficConfig,
    generate,
    plan,
    rfc3339_ms,
    write_jsonl,
)


def _key(features: object) -> bytes:
    return orjson.dumps(features, option=orjson.OPT_SORT_KEYS)


def test_same_seed_gives_byte_identical_files(tmp_path: Path) -> None:
    outs = []
    for run in range(2):
        t = generate("mixed", n_events=3000, seed=7)
        p, lab = tmp_path / f"p{run}.jsonl.gz", tmp_path / f"l{run}.jsonl"
        write_jsonl(t, p, lab)
        outs.append((p.read_bytes(), lab.read_bytes()))
    assert outs[0] == outs[1]
    other = tmp_path / "other.jsonl.gz"
    write_jsonl(generate("mixed", n_events=3000, seed=8), other)
    assert other.read_bytes() != outs[0][0]


def test_streamed_plan_writes_the_same_bytes_as_generate(tmp_path: Path) -> None:
    t = generate("mixed", n_events=9000, seed=2)  # more than two chunks
    write_jsonl(t, tmp_path / "a.jsonl", tmp_path / "al.jsonl")
    write_jsonl(plan("mixed", n_events=9000, seed=2), tmp_path / "b.jsonl", tmp_path / "bl.jsonl")
    assert (tmp_path / "a.jsonl").read_bytes() == (tmp_path / "b.jsonl").read_bytes()
    assert (tmp_path / "al.jsonl").read_bytes() == (tmp_path / "bl.jsonl").read_bytes()


def test_written_lines_follow_the_contract(tmp_path: Path, mixed: Traffic, contract_errors) -> None:
    path = tmp_path / "p.jsonl.gz"
    n, _ = write_jsonl(mixed, path)
    with gzip.open(path, "rb") as fh:
        lines = fh.read().splitlines()
    assert n == len(lines) == 20000
    first = orjson.loads(lines[0])
    assert first["ts"].endswith("Z") and len(first["ts"]) == len("2026-01-01T00:00:01.250Z")
    bad = [(i, e) for i, line in enumerate(lines) if (e := contract_errors(orjson.loads(line)))]
    assert bad == []
    assert rfc3339_ms(DEFAULT_START_TS + 1.25) == "2026-01-01T00:00:01.250Z"


def test_in_memory_messages_follow_the_contract(mixed: Traffic, mixed_digits: Traffic, contract_errors) -> None:
    for t in (mixed, mixed_digits):
        assert all(not contract_errors(m) for m in t.predictions)
        ids = [m["event_id"] for m in t.predictions]
        assert len(set(ids)) == len(ids)  # no redeliveries by default
    assert all(len(m["features"]) == 64 and all(0.0 <= v <= 1.0 for v in m["features"])
               for m in mixed_digits.predictions)  # fmt: skip


def test_probabilities_sum_to_one_and_match_prediction(mixed: Traffic, mixed_digits: Traffic) -> None:
    for t in (mixed, mixed_digits):
        for m in t.predictions:
            probs = m["probabilities"]
            assert abs(sum(probs.values()) - 1.0) <= 0.02
            assert probs[m["prediction"]] == max(probs.values())


def test_timestamps_start_at_epoch_and_are_sorted(mixed: Traffic) -> None:
    ts = np.array([m["ts"] for m in mixed.predictions])
    assert ts[0] >= DEFAULT_START_TS
    assert np.all(np.diff(ts) >= 0)
    assert np.allclose(ts * 1000, np.round(ts * 1000))
    assert mixed.truth.start_ts == DEFAULT_START_TS
    t = generate("benign", n_events=500, seed=1, start_ts=DEFAULT_START_TS + 86400)
    assert t.predictions[0]["ts"] >= DEFAULT_START_TS + 86400


def test_benign_inputs_rarely_repeat_except_retries(mixed: Traffic) -> None:
    truth = mixed.truth
    groups: dict[bytes, list[dict]] = defaultdict(list)
    for m in mixed.predictions:
        if m["client_id"] != truth.canary_id and m["client_id"] not in truth.attacker_ids:
            groups[_key(m["features"])].append(m)
    repeated = [g for g in groups.values() if len(g) > 1]
    # every repeat is a client retry: same caller, new event id, a few seconds later
    n_copies = sum(len(g) - 1 for g in repeated)
    assert n_copies == truth.n_retries > 0.01 * len(mixed.predictions)
    for g in repeated:
        assert len({m["client_id"] for m in g}) == 1
        assert len({m["event_id"] for m in g}) == len(g)
        assert 0.2 <= g[-1]["ts"] - g[0]["ts"] < 60
        assert len({_key(m["probabilities"]) for m in g}) == 1
    assert len(groups) > 0.95 * sum(len(g) for g in groups.values())


def test_canary_repeats_one_input_every_30_seconds(mixed: Traffic) -> None:
    canary = [m for m in mixed.predictions if m["client_id"] == mixed.truth.canary_id]
    assert len(canary) > 50
    assert len({_key(m["features"]) for m in canary}) == 1
    gaps = np.diff([m["ts"] for m in canary])
    assert np.allclose(gaps, 30.0, atol=0.0011)


def test_callers_are_heavy_tailed_and_batch_jobs_burst(mixed: Traffic) -> None:
    truth = mixed.truth
    counts = Counter(m["client_id"] for m in mixed.predictions)
    benign = np.sort([counts[c] for c in truth.benign_client_ids if c in counts])[::-1]
    assert len(benign) > 100
    top = benign[: max(1, len(benign) // 20)].sum() / benign.sum()
    assert top > 0.4
    assert benign[0] / np.median(benign) > 20
    for job in truth.batch_job_ids:
        ts = np.array([m["ts"] for m in mixed.predictions if m["client_id"] == job])
        if ts.size < 100:
            continue
        # most of a job's queries come less than 100 ms after the previous one
        assert np.mean(np.diff(ts) < 0.1) > 0.8


def test_labels_join_existing_predictions_and_arrive_later(mixed: Traffic) -> None:
    by_id = {m["event_id"]: m for m in mixed.predictions}
    classes = set(mixed.model.classes)
    labels = mixed.labels
    assert [x["ts"] for x in labels] == sorted(x["ts"] for x in labels)
    for lab in labels:
        pred = by_id[lab["event_id"]]
        assert lab["ts"] > pred["ts"]
        assert lab["label"] in classes
        assert lab["model"] == pred["model"] and lab["client_id"] == pred["client_id"]
        assert set(lab) == {"event_id", "ts", "label", "model", "client_id"}
    inline = [m for m in mixed.predictions if "label" in m]
    delays = np.array([x["ts"] - by_id[x["event_id"]]["ts"] for x in labels])
    assert 1.0 <= delays.min() and np.median(delays) > 10 and delays.max() <= 1800.001
    labelable = sum(1 for m in mixed.predictions
                    if m["client_id"] != mixed.truth.canary_id and m["client_id"] not in mixed.truth.attacker_ids)  # fmt: skip
    share = (len(labels) + len(inline)) / labelable
    assert 0.25 < share < 0.35
    assert 0.1 < len(inline) / (len(labels) + len(inline)) < 0.3
    assert not any("label" in m for m in mixed.predictions if m["client_id"] in mixed.truth.attacker_ids)


def test_label_fraction_zero_and_one() -> None:
    assert generate("benign", n_events=1000, seed=0, label_fraction=0.0).labels == []
    t = generate("benign", n_events=1000, seed=0, label_fraction=1.0)
    assert len(t.labels) + sum("label" in m for m in t.predictions) > 900


def test_redeliveries_repeat_messages_verbatim_when_enabled() -> None:
    t = generate("benign", n_events=20000, seed=4, redeliveries=True,
                 config=TrafficConfig(redelivery_fraction=0.01))  # fmt: skip
    counts = Counter(m["event_id"] for m in t.predictions)
    dup = {k for k, c in counts.items() if c > 1}
    assert len(dup) == t.truth.n_redeliveries > 50
    seen: dict[str, bytes] = {}
    firsts = []
    for m in t.predictions:
        if m["event_id"] in seen:
            assert orjson.dumps(m) == seen[m["event_id"]]
        else:
            seen[m["event_id"]] = orjson.dumps(m)
            firsts.append(m["ts"])
    # apart from the redelivered copies (which keep their original event time) the stream is sorted
    assert np.all(np.diff(firsts) >= 0)


def test_iter_events_merges_labels_after_their_predictions() -> None:
    p = plan("mixed", n_events=6000, seed=5)
    seen: set[str] = set()
    n_pred = n_lab = 0
    last_label_ts = -1.0
    for stream, msg in p.iter_events():
        if stream == "prediction":
            seen.add(msg["event_id"])
            n_pred += 1
        else:
            assert msg["event_id"] in seen
            assert msg["ts"] >= last_label_ts
            last_label_ts = msg["ts"]
            n_lab += 1
    t = generate("mixed", n_events=6000, seed=5)
    assert (n_pred, n_lab) == (len(t.predictions), len(t.labels))


@pytest.mark.parametrize("dataset", ["tabular", "digits"])
@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_every_scenario_generates(name: str, dataset: str, contract_errors) -> None:
    t = generate(name, n_events=4000, seed=1, dataset=dataset)
    assert len(t.predictions) == 4000
    assert t.truth.scenario == name
    assert len(t.truth.attackers) <= len(SCENARIOS[name].attackers)
    assert len(t.truth.change_points) == len(SCENARIOS[name].drifts)
    assert not contract_errors(t.predictions[-1])
    assert SCENARIOS[name].description


def test_bad_arguments_fail_clearly() -> None:
    with pytest.raises(ValueError, match="unknown scenario"):
        generate("nope", n_events=10)
    with pytest.raises(ValueError, match="dataset"):
        generate("benign", n_events=10, dataset="images")
    with pytest.raises(ValueError, match="n_events"):
        generate("benign", n_events=0)
