"""Merging a predictions file with a labels file (``pipeline.sources.files.read_replay``)."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from fakes import config

from pipeline.engine import Engine
from pipeline.events import RawMessage
from pipeline.sources.files import LABELS_SOURCE, PREDICTIONS_SOURCE, read_replay
from pipeline.timefmt import format_ts

N = 1500
SKEWED = 700  # this prediction's producer clock is 6 h ahead


def _write(tmp_path: Path, skew_line: int | None = SKEWED) -> tuple[Path, Path]:
    preds, labels = [], []
    for i in range(N):
        ts = 1_795_000_000.0 + 2.0 * i
        logged = ts + 6 * 3600 if i == skew_line else ts
        preds.append({"event_id": f"e{i}", "ts": format_ts(logged), "model": "m", "client_id": f"c{i % 9}",
                      "features": [float(i % 11), 1.0], "prediction": str(i % 2)})
        if i % 2 == 0:
            labels.append({"event_id": f"e{i}", "ts": format_ts(ts + 30.0), "label": str(i % 2)})
    pred_path, label_path = tmp_path / "p.jsonl", tmp_path / "l.jsonl"
    pred_path.write_bytes(b"".join(orjson.dumps(p) + b"\n" for p in preds) + b'{"ts": "garbage"\n')
    label_path.write_bytes(b"".join(orjson.dumps(x) + b"\n" for x in labels))
    return pred_path, label_path


def _ids(messages: list[RawMessage]) -> list[tuple[str, str]]:
    return [(m.stream, orjson.loads(m.value)["event_id"]) if m.value.startswith(b'{"event_id"') else (m.stream, "?")
            for m in messages]


def test_one_skewed_timestamp_does_not_hold_a_file_back(tmp_path: Path) -> None:
    pred_path, label_path = _write(tmp_path)
    merged = list(read_replay(pred_path, label_path))
    assert len(merged) == N + 1 + N // 2
    seen: set[str] = set()
    early = 0
    for stream, event_id in _ids(merged):
        if stream == "predictions":
            seen.add(event_id)
        elif event_id not in seen:
            early += 1
    assert early == 0  # raw-ts merging put the ~10,000 s of labels after line 700 ahead of their predictions
    eng = Engine(config(), "r")
    eng.process(merged)
    assert eng.scope(0).labels_matched == N // 2 and eng.scope(0).labels_unmatched == 0


@pytest.mark.parametrize("cut", [1, SKEWED + 3, SKEWED * 2 - 5, N + N // 2 - 1])
def test_resuming_at_any_position_continues_the_same_order(tmp_path: Path, cut: int) -> None:
    """Resume positions (next line of each file) give exactly the rest of the uninterrupted merge,
    also when the skewed line sits just before the cut (the merge clock is warmed up from earlier lines)."""
    pred_path, label_path = _write(tmp_path)
    merged = list(read_replay(pred_path, label_path))
    positions: dict[str, int] = {}
    for m in merged[:cut]:
        positions[f"{m.source}:{m.partition}"] = m.offset + 1
    assert set(positions) <= {f"{PREDICTIONS_SOURCE}:0", f"{LABELS_SOURCE}:0"}
    rest = list(read_replay(pred_path, label_path, positions))
    assert [(m.stream, m.offset) for m in rest] == [(m.stream, m.offset) for m in merged[cut:]]
