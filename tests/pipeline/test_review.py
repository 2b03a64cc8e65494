"""Review workflow (pipeline.review) on SQLite and on the real PostgreSQL server."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from sqlalchemy import Engine, select

from pipeline import review
from pipeline.storage.db import make_engine, migrate
from pipeline.storage.tables import alert_reviews, alerts


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def engine(request: pytest.FixtureRequest, tmp_path) -> Iterator[Engine]:
    """A migrated database: SQLite, and a fresh database on the real PostgreSQL server."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'review.db'}"
    else:
        url = request.getfixturevalue("pg_url")  # tests/conftest.py: fails if PostgreSQL is down
    eng = make_engine(url)
    migrate(eng)
    yield eng
    eng.dispose()


def _alert(run: str, alert_id: str, status: str = "open") -> dict[str, object]:
    return {
        "run": run,
        "alert_id": alert_id,
        "kind": "attack_campaign",
        "detector": "query_probe",
        "model": "digits",
        "model_version": "3",
        "partition": 0,
        "client_id": "acct-66",
        "raised_at": "2026-11-26T06:33:34.120Z",
        "raised_ts": 1795674814.12,
        "trigger_event_id": "ev-9",
        "event_ids": json.dumps(["ev-7", "ev-8", "ev-9"]),
        "score": 14.2,
        "threshold": 9.0,
        "severity": "critical",
        "status": status,
        "explanation": json.dumps({"summary": "boundary probing"}),
        "config_hash": "c0ffee",
    }


@pytest.fixture
def seeded(engine: Engine) -> Engine:
    with engine.begin() as conn:
        conn.execute(alerts.insert(), [_alert("live", "a1"), _alert("live", "a2"), _alert("replay-x", "a1")])
    return engine


def _row(engine: Engine, run: str, alert_id: str):
    with engine.connect() as conn:
        return conn.execute(
            select(alerts).where(alerts.c.run == run, alerts.c.alert_id == alert_id)
        ).one()


def test_set_status_updates_alert_and_appends_history(seeded: Engine) -> None:
    t1 = datetime(2026, 11, 26, 7, 0, 0, 123456, tzinfo=UTC)
    rec = review.set_status(seeded, "live", "a1", "acknowledged", reviewer="alice", at=t1)
    assert rec == review.Review("live", "a1", "acknowledged", "alice", None, "2026-11-26T07:00:00.123Z")
    row = _row(seeded, "live", "a1")
    assert (row.status, row.reviewer, row.reviewed_at, row.review_note) == (
        "acknowledged", "alice", "2026-11-26T07:00:00.123Z", None
    )

    review.set_status(seeded, "live", "a1", "confirmed", reviewer="bob", note="probing from one key",
                      at=datetime(2026, 11, 26, 8, 0))
    row = _row(seeded, "live", "a1")
    assert (row.status, row.reviewer, row.reviewed_at, row.review_note) == (
        "confirmed", "bob", "2026-11-26T08:00:00.000Z", "probing from one key"
    )

    hist = review.history(seeded, "live", "a1")
    assert [(h.status, h.reviewer, h.note) for h in hist] == [
        ("acknowledged", "alice", None),
        ("confirmed", "bob", "probing from one key"),
    ]
    assert [h.at for h in hist] == ["2026-11-26T07:00:00.123Z", "2026-11-26T08:00:00.000Z"]
    # the same alert id in another run, and other alerts, are untouched
    assert _row(seeded, "replay-x", "a1").status == "open"
    assert _row(seeded, "live", "a2").status == "open"
    assert review.history(seeded, "replay-x", "a1") == []


def test_every_status_is_accepted_and_wall_clock_stamp_is_rfc3339(seeded: Engine) -> None:
    for status in review.STATUSES:
        rec = review.set_status(seeded, "live", "a2", status)
        assert _row(seeded, "live", "a2").status == status
        assert datetime.strptime(rec.at, "%Y-%m-%dT%H:%M:%S.%fZ")  # parses
        assert len(rec.at) == len("2026-11-26T07:00:00.123Z")
    assert [h.status for h in review.history(seeded, "live", "a2")] == list(review.STATUSES)


@pytest.mark.parametrize("bad", ["closed", "Open", "false-positive", "", None])
def test_invalid_status_is_rejected_and_nothing_written(seeded: Engine, bad) -> None:
    with pytest.raises(ValueError, match="invalid alert status"):
        review.set_status(seeded, "live", "a1", bad)
    assert _row(seeded, "live", "a1").status == "open"
    assert review.history(seeded, "live", "a1") == []


def test_unknown_alert_raises_lookup_error_and_writes_nothing(seeded: Engine) -> None:
    with pytest.raises(LookupError, match="no alert 'nope' in run 'live'"):
        review.set_status(seeded, "live", "nope", "resolved", reviewer="alice")
    with pytest.raises(LookupError):
        review.set_status(seeded, "other-run", "a1", "resolved")
    with pytest.raises(LookupError):
        review.history(seeded, "live", "nope")
    with seeded.connect() as conn:
        assert conn.execute(select(alert_reviews)).all() == []


def test_reviewer_name_is_trimmed_and_bounded(seeded: Engine) -> None:
    assert review.set_status(seeded, "live", "a1", "acknowledged", reviewer="  carol ").reviewer == "carol"
    assert review.set_status(seeded, "live", "a1", "acknowledged", reviewer="   ").reviewer is None
    with pytest.raises(ValueError, match="reviewer name"):
        review.set_status(seeded, "live", "a1", "confirmed", reviewer="x" * 129)
    assert _row(seeded, "live", "a1").status == "acknowledged"


def test_reviewer_bound_matches_the_schema() -> None:
    assert review._REVIEWER_MAX == alerts.c.reviewer.type.length == alert_reviews.c.reviewer.type.length
