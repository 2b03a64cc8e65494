"""Reviewer workflow: change an alert's status and keep an append-only history of changes.

Reviewers triage alerts in Grafana (read-only) and record their decision with
``infersentry alerts review`` (which calls :func:`set_status`). Every change updates the alert row
(``status``, ``reviewer``, ``reviewed_at``, ``review_note`` always describe the latest review) and
appends one ``alert_reviews`` row, in the same transaction, so the two never disagree.

Review times are wall-clock times (a human decision happens *now*, not at an event time); they are
RFC 3339 strings in UTC with millisecond precision, like the alert timestamps.

>>> from pipeline.storage.db import make_engine, migrate
>>> engine = make_engine("sqlite://")
>>> migrate(engine)
>>> set_status(engine, "live", "no-such-alert", "confirmed")
Traceback (most recent call last):
...
LookupError: no alert 'no-such-alert' in run 'live'
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Engine, func, insert, select, update
from sqlalchemy.engine import Connection

from pipeline.storage.tables import alert_reviews, alerts

STATUSES: tuple[str, ...] = ("open", "acknowledged", "confirmed", "false_positive", "resolved")
"""Every reviewer state an alert can be in (``alerts.md``); new alerts start ``open``."""

_REVIEWER_MAX = 128  # alerts.reviewer and alert_reviews.reviewer are String(128)


@dataclass(frozen=True, slots=True)
class Review:
    """One recorded status change of one alert."""

    run: str
    alert_id: str
    status: str
    reviewer: str | None
    note: str | None
    at: str  # RFC 3339, UTC, milliseconds: when the reviewer made the change (wall clock)


def validate_status(status: str) -> str:
    """Return ``status`` if it is a reviewer state, else raise ``ValueError`` naming the valid ones."""
    if not isinstance(status, str) or status not in STATUSES:
        raise ValueError(f"invalid alert status {status!r}: expected one of {', '.join(STATUSES)}")
    return str(status)


def set_status(
    engine: Engine,
    run: str,
    alert_id: str,
    status: str,
    reviewer: str | None = None,
    note: str | None = None,
    *,
    at: datetime | None = None,
) -> Review:
    """Set the reviewer status of alert ``alert_id`` of ``run`` and record the change.

    ``reviewer`` and ``note`` describe this review: the alert row takes them as given (``None``
    clears an earlier reviewer's note from the row; the history keeps it). Setting the status an
    alert already has is allowed and recorded (a reviewer adding a note). ``at`` overrides the
    wall clock (tests, imports of reviews made elsewhere); a naive datetime is read as UTC.

    Raises ``ValueError`` for an invalid status or reviewer name, ``LookupError`` when the alert
    does not exist (nothing is written then).
    """
    status = validate_status(status)
    if reviewer is not None:
        reviewer = reviewer.strip() or None
    if reviewer is not None and len(reviewer) > _REVIEWER_MAX:
        raise ValueError(f"reviewer name longer than {_REVIEWER_MAX} characters")
    stamp = _rfc3339(at if at is not None else datetime.now(UTC))
    with engine.begin() as conn:
        result = conn.execute(
            update(alerts)
            .where(alerts.c.run == run, alerts.c.alert_id == alert_id)
            .values(status=status, reviewer=reviewer, reviewed_at=stamp, review_note=note)
        )
        if result.rowcount == 0:
            raise LookupError(f"no alert {alert_id!r} in run {run!r}")
        conn.execute(
            insert(alert_reviews).values(
                run=run, alert_id=alert_id, status=status, reviewer=reviewer, note=note, at=stamp
            )
        )
    return Review(run=run, alert_id=alert_id, status=status, reviewer=reviewer, note=note, at=stamp)


def history(engine: Engine, run: str, alert_id: str) -> list[Review]:
    """All recorded status changes of an alert, oldest first (empty if never reviewed).

    Raises ``LookupError`` when the alert does not exist and has no recorded reviews.
    """
    with engine.connect() as conn:
        rows = conn.execute(
            select(
                alert_reviews.c.run,
                alert_reviews.c.alert_id,
                alert_reviews.c.status,
                alert_reviews.c.reviewer,
                alert_reviews.c.note,
                alert_reviews.c.at,
            )
            .where(alert_reviews.c.run == run, alert_reviews.c.alert_id == alert_id)
            .order_by(alert_reviews.c.id)
        ).all()
        if not rows and not _alert_exists(conn, run, alert_id):
            raise LookupError(f"no alert {alert_id!r} in run {run!r}")
    return [Review(*row) for row in rows]


def _alert_exists(conn: Connection, run: str, alert_id: str) -> bool:
    n = conn.execute(
        select(func.count()).select_from(alerts).where(alerts.c.run == run, alerts.c.alert_id == alert_id)
    ).scalar_one()
    return bool(n)


def _rfc3339(moment: datetime) -> str:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
