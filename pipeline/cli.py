"""The ``infersentry`` command line (contract: ``shared/contract/cli.md``)."""

from __future__ import annotations

import contextlib
import difflib
import logging
import os
import shlex
import shutil
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from sqlalchemy.exc import ArgumentError, DBAPIError, OperationalError

from detectors.base import Kind
from pipeline.config import ConfigError, load_config
from pipeline.review import STATUSES
from pipeline.storage.db import make_engine, resolve_db_url
from pipeline.traffic.scenarios import SCENARIOS

app = typer.Typer(
    name="infersentry",
    help="Streaming monitor for production ML models: drift, adversarial inputs and attack campaigns.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
alerts_app = typer.Typer(help="Read, export and review alerts.", no_args_is_help=True)
dev_app = typer.Typer(help="Local development helpers.", no_args_is_help=True)
kafka_app = typer.Typer(help="The local development Kafka broker (Apache Kafka jars from Maven Central).",
                        no_args_is_help=True)
runs_app = typer.Typer(help="Audit runs: list them, report one, diff two.", no_args_is_help=True)
app.add_typer(alerts_app, name="alerts")
app.add_typer(runs_app, name="runs")
app.add_typer(dev_app, name="dev")
dev_app.add_typer(kafka_app, name="kafka")

err = Console(stderr=True)
T = TypeVar("T")
ALERT_KINDS: tuple[str, ...] = tuple(k.value for k in Kind)

DbOption = Annotated[
    str | None,
    typer.Option("--db", help="SQLAlchemy URL; default $INFERSENTRY_DB, else sqlite:///infersentry.db"),
]
BootstrapOption = Annotated[
    str,
    typer.Option("--bootstrap", envvar="INFERSENTRY_BOOTSTRAP", help="Kafka bootstrap HOST:PORT."),
]
ConfigOption = Annotated[Path | None, typer.Option("--config", help="YAML config file (see README).")]


class UserError(Exception):
    """An error the user can fix; printed as one line, exit status 2."""


def fail(message: str) -> NoReturn:
    raise UserError(message)


def _check_choice(option: str, value: str | None, allowed: Sequence[str]) -> None:
    """A one-line user error naming the valid values when ``value`` is not one of ``allowed``."""
    if value is None or value in allowed:
        return
    near = [a for a in allowed if value and value.lower().replace("-", "_") in a]
    near = near or difflib.get_close_matches(value.lower(), allowed, n=1)
    tip = f" (did you mean {' or '.join(near)}?)" if near else ""
    fail(f"unknown {option} {value!r}{tip}; expected one of {', '.join(allowed)}")


def _shorten(text: str, width: int) -> str:
    """``text`` on one line, cut at a word boundary to at most ``width`` characters ending in "…"."""
    text = " ".join(text.split())
    if len(text) <= width:
        return text
    cut = text[: width - 1]
    space = cut.rfind(" ")
    if space >= width // 2:  # else a very long word: cut inside it
        cut = cut[:space]
    return cut.rstrip(" ,;:(-") + "…"


def _print_version(value: bool) -> None:
    if value:
        from pipeline.runner import infersentry_version  # the version each run records

        print(f"infersentry {infersentry_version()}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[bool, typer.Option("--version", is_eager=True, callback=_print_version,
                                          help="Print the version and exit.")] = False,
) -> None:
    pass


def _store(db: str | None) -> Any:
    from pipeline.storage.store import Store

    try:
        return Store(make_engine(db))
    except ArgumentError:
        raise UserError(f"invalid database URL: {resolve_db_url(db)!r}") from None
    except OperationalError as exc:
        raise UserError(f"cannot open database {resolve_db_url(db)}: {str(exc.orig).strip().splitlines()[0]}") from None


# -- replay ---------------------------------------------------------------------------------
@app.command()
def replay(
    file: Annotated[Path | None, typer.Argument(help="Prediction logs, JSON Lines (optionally .gz); not with --kafka.")] = None,
    labels: Annotated[Path | None, typer.Option("--labels", help="Delayed label messages, JSON Lines (optionally .gz).")] = None,
    config: ConfigOption = None,
    run: Annotated[str | None, typer.Option("--run", help="Run name; default derived from the input's fingerprint (with --kafka: the resolved offsets).")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bar or summary; print only the run name.")] = False,
    kafka: Annotated[bool, typer.Option("--kafka", help="Replay a time range of Kafka topics instead of a file (needs --from and --to).")] = False,
    topic: Annotated[str | None, typer.Option("--topic", help="With --kafka: the predictions topic (default: predictions).")] = None,
    labels_topic: Annotated[str | None, typer.Option("--labels-topic", help="With --kafka: a delayed labels topic, same time range (default: none).")] = None,
    time_from: Annotated[str | None, typer.Option("--from", help="With --kafka: first broker timestamp, inclusive (RFC 3339 or epoch ms).")] = None,
    time_to: Annotated[str | None, typer.Option("--to", help="With --kafka: end broker timestamp, exclusive (RFC 3339 or epoch ms).")] = None,
    timeout: Annotated[float, typer.Option("--timeout", help="With --kafka: seconds to wait for the broker on each request.")] = 10.0,
    per_partition: Annotated[bool, typer.Option("--per-partition", help="With --kafka: keep each partition's state apart, as a live run does (default: merge partitions as one archived file).")] = False,
    bootstrap: BootstrapOption = "127.0.0.1:9092",
    db: DbOption = None,
) -> None:
    """Replay an archived stream as a named run (resumes an interrupted run with the same name).

    With --kafka: replay the messages of --topic (and --labels-topic) whose broker timestamps lie in [--from, --to), resolved to offsets per partition at the start and recorded with the run; read without a consumer group, committing nothing. Partitions are merged into one stream, as one archived file would be; with --per-partition each keeps its own state, as in a live run, so a range that starts where a live consumer group started reproduces its alerts. The same range gives the same run name and alerts; an interrupted one starts over from the range's start; an empty range prints a notice and exits 0.
    """
    if kafka:
        if file is not None or labels is not None:
            fail("--kafka replays topics: give no FILE or --labels")
        if time_from is None or time_to is None:
            fail("--kafka needs --from and --to")
        _replay_kafka(topic or "predictions", labels_topic or None, time_from, time_to, timeout, bootstrap, config,
                      run, quiet, db, per_partition)
        return
    if file is None:
        fail("give a FILE to replay, or --kafka with --from and --to")
    if any(v is not None for v in (time_from, time_to, topic, labels_topic)) or per_partition:
        fail("--topic, --labels-topic, --from, --to and --per-partition need --kafka")
    _replay_file(file, labels, config, run, quiet, db)


def _replay_file(file: Path, labels: Path | None, config: Path | None, run: str | None, quiet: bool,
                 db: str | None) -> None:
    from pipeline.replay import replay_file

    cfg = load_config(config)
    for path in (file, labels):
        if path is not None and not path.is_file():
            fail(f"no such file: {path}")
    store = _store(db)
    if quiet:
        summary = replay_file(store, cfg, file, labels, run)
        print(summary.run)
        return
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

    columns = (TextColumn("[bold]replay"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
               TextColumn("{task.fields[events]:,} events ({task.fields[rate]:,.0f}/s)"),
               TransferSpeedColumn(), TimeRemainingColumn())
    import time

    start = time.monotonic()
    with Progress(*columns, console=err, transient=False) as bar:
        task = bar.add_task("replay", total=None, events=0, rate=0.0)

        def on_batch(progress: Any, totals: Any) -> None:
            elapsed = max(time.monotonic() - start, 1e-9)
            bar.update(task, total=progress.total, completed=progress.done, events=totals.events,
                       rate=totals.events / elapsed)

        summary = replay_file(store, cfg, file, labels, run, on_batch=on_batch)
        _complete(bar, task)
    _print_summary(store, summary.run, summary)


def _complete(bar: Any, task: Any) -> None:
    """Show a finished replay at 100%: the bar counts compressed bytes read, which lag the last event
    (and an already complete run reads nothing)."""
    total = bar.tasks[task].total or 1
    bar.update(task, total=total, completed=total)


def _replay_kafka(topic: str, labels_topic: str | None, time_from: str, time_to: str, timeout: float,
                  bootstrap: str, config: Path | None, run: str | None, quiet: bool, db: str | None,
                  per_partition: bool = False) -> None:
    from pipeline.kafka_replay import KafkaRange, replay_kafka
    from pipeline.sources.kafka import KafkaSourceError
    from pipeline.timefmt import TimestampError, parse_time_ms

    try:
        from_ms, to_ms = parse_time_ms(time_from), parse_time_ms(time_to)
    except TimestampError as exc:
        fail(f"--from/--to: {exc}")
    if from_ms > to_ms:
        fail(f"--from ({time_from}) is after --to ({time_to})")
    if timeout <= 0:
        fail("--timeout must be positive")
    cfg = load_config(config)
    store = _store(db)
    if "INFERSENTRY_LOG_LEVEL" not in os.environ:  # failures are reported in one line below, not per retry
        logging.getLogger("kafka").setLevel(logging.CRITICAL)

    def resolved(rng: KafkaRange) -> None:
        if not quiet:
            for r in rng.ranges:
                err.print(f"{r.topic}[{r.partition}]: offsets {r.start}..{r.end} ({r.size:,})", highlight=False)

    try:
        summary = replay_kafka(store, cfg, _kafka_settings(bootstrap, cfg), predictions_topic=topic,
                               labels_topic=labels_topic, from_ms=from_ms, to_ms=to_ms, run=run,
                               timeout_s=timeout, per_partition=per_partition, on_resolved=resolved)
    except KafkaSourceError as exc:
        fail(str(exc).splitlines()[0])
    if summary.run is None:
        err.print(f"nothing to replay: no message of {topic}" + (f" or {labels_topic}" if labels_topic else "")
                  + f" has a broker timestamp in [{time_from}, {time_to})", highlight=False)
        return
    if quiet:
        print(summary.run)
        return
    _print_summary(store, summary.run, summary)


def _print_summary(store: Any, run: str, summary: Any) -> None:
    out = Console()
    counts: dict[str, int] = {}
    for a in store.iter_alerts(run):
        counts[a["kind"]] = counts.get(a["kind"], 0) + 1
    if summary.already_complete:
        out.print(f"run [bold]{run}[/bold] was already complete; nothing replayed.")
    else:
        t = summary.totals
        out.print(f"run [bold]{run}[/bold]: {t.events:,} events scored, {t.duplicates:,} redeliveries skipped, "
                  f"{t.dead_letters:,} dead letters" + (" (resumed from checkpoint)" if summary.resumed else ""))
    out.print("alerts: " + (", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "none"))


# -- demo -----------------------------------------------------------------------------------
@app.command()
def demo(
    events: Annotated[int, typer.Option("--events", help="Events to generate.")] = 30_000,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the generated stream.")] = 7,
    workdir: Annotated[Path, typer.Option("--workdir", help="Where the generated files go.")] = Path("infersentry-demo"),
    db: DbOption = None,
) -> None:
    """Generate a realistic stream with a drift and attacks, replay it, and show what was found."""
    import time

    from rich.progress import BarColumn, Progress, TextColumn

    from pipeline.demo import run_demo
    from pipeline.timefmt import format_ts

    out = Console(soft_wrap=True)
    out.print(f"generating {events:,} prediction logs (benign callers, batch jobs, retries, a canary, "
              f"one covariate drift, a black-box attacker, a model thief) into {workdir}/ ...")
    store = _store(db)
    start = time.monotonic()
    with Progress(TextColumn("[bold]replay"), BarColumn(), TextColumn("{task.fields[events]:,} events"),
                  console=err, transient=True) as bar:
        task = bar.add_task("replay", total=None, events=0)

        def on_batch(progress: Any, totals: Any) -> None:
            bar.update(task, total=progress.total, completed=progress.done, events=totals.events)

        report = run_demo(store, workdir, n_events=events, seed=seed, on_batch=on_batch)
        _complete(bar, task)
    t = report.summary.totals
    if report.summary.already_complete:
        out.print(f"run [bold]{report.summary.run}[/bold] was already replayed into this database; showing its results")
    else:
        out.print(f"replayed as run [bold]{report.summary.run}[/bold] in {time.monotonic() - start:.1f}s "
                  f"({t.events:,} events, {t.duplicates:,} redeliveries skipped, {t.dead_letters:,} dead letters)")
    truth = report.truth
    for cp in truth.change_points:
        out.print(f"\n[bold]drift[/bold] injected at event {cp.index:,} ({format_ts(cp.ts)}): {cp.description}")
        for a in report.drift_alerts[:3]:
            delay = report.events_between(cp.ts, a["raised_ts"])
            out.print(f"  [green]found[/green]: {a['kind']} alert at {a['raised_at']}, {delay:,} events after the "
                      f"change: {_summary(a)}")
        if not report.drift_alerts:
            out.print("  [red]no drift alert[/red]")
    if report.performance_alerts:
        n = len(report.performance_alerts)
        out.print(f"\n[bold]performance[/bold] (error rate on the delayed labels): {n} alert{'s' if n > 1 else ''}")
        for a in report.performance_alerts[:3]:
            before = [cp for cp in truth.change_points if cp.ts <= a["raised_ts"]]
            when = (f"{report.events_between(before[-1].ts, a['raised_ts']):,} events after the drift" if before
                    else "before any injected drift")
            out.print(f"  performance alert at {a['raised_at']}, {when}: {_summary(a)}")
    out.print("\n[bold]attackers[/bold] in the stream:")
    for at in truth.attackers:
        hits = sorted((a for a in report.caller_alerts if a["client_id"] == at.client_id), key=lambda a: a["raised_ts"])
        line = f"  {at.client_id} ({at.kind}, {at.n_queries} queries from {format_ts(at.first_ts)}): "
        if hits:
            first = hits[0]
            queries = sum(1 for i in at.indices if report.prediction_ts[i] <= first["raised_ts"]) if at.indices else 0
            kinds = ", ".join(sorted({h["kind"] for h in hits}))
            line += f"[green]caught[/green] ({kinds}) after {queries} of its queries: {_summary(first, at_trigger=True)}"
        else:
            line += "[red]missed[/red]"
        out.print(line)
    benign = report.flagged_benign_callers
    out.print(f"benign callers flagged: {len(benign)} of {len(truth.benign_client_ids)}"
              + (f" ({', '.join(sorted(benign)[:5])})" if benign else ""))
    per_event = [a for a in report.alerts if a["kind"] in ("adversarial", "outlier")]
    on_attackers = sum(1 for a in per_event if a["client_id"] in truth.attacker_ids)
    out.print(f"per-event alerts (adversarial/outlier): {len(per_event):,}, {on_attackers:,} of them on the attackers' "
              "queries")
    cmd = _cli_command()
    run = shlex.quote(report.summary.run)
    db_arg = f" --db {shlex.quote(resolve_db_url(db))}" if db else ""
    example = _example_alert(report)
    review_id = example["alert_id"][:12] if example else "ALERT_ID"
    out.print("\n[bold]where to look next[/bold]")
    for line in (f"{cmd} runs report {run}{db_arg}   # one page: alerts by kind and severity, top alerts, callers",
                 f"{cmd} alerts list --run {run}{db_arg}",
                 f"{cmd} alerts review {review_id} --run {run} --status confirmed --reviewer me{db_arg}"
                 + (f"   # the {example['kind']} alert on {example['client_id'] or example['model']}" if example else ""),
                 f"{cmd} alerts export --run {run} --out alerts.jsonl{db_arg}",
                 "docker compose up   # Kafka, PostgreSQL, Grafana dashboards at http://localhost:3000"):
        out.print("  " + escape(line), highlight=False)


def _cli_command() -> str:
    """How to run this command line from the current directory.

    ``infersentry`` when that is on PATH and is this installation; else the entry point next to the
    running interpreter (after ``scripts/demo.sh``: ``.venv/bin/infersentry``, which is not on PATH),
    relative to the current directory when shorter; else ``python -m pipeline``.
    """
    ours = Path(sys.executable).parent / ("infersentry.exe" if os.name == "nt" else "infersentry")
    on_path = shutil.which("infersentry")
    if on_path is not None and (not ours.is_file() or os.path.samefile(on_path, ours)):
        return "infersentry"
    if ours.is_file():
        return shlex.quote(_short_path(str(ours)))
    return f"{shlex.quote(_short_path(sys.executable))} -m pipeline"


def _short_path(path: str) -> str:
    try:
        rel = os.path.relpath(path)
    except ValueError:  # another drive (Windows)
        return path
    if len(rel) >= len(path):
        return path
    return rel if os.sep in rel else os.path.join(".", rel)  # a bare name would be looked up on PATH


def _example_alert(report: Any) -> dict[str, Any] | None:
    """An alert worth reviewing first: a caught attacker's campaign, else any per-caller or drift alert."""
    for group in (report.caller_alerts, report.drift_alerts):
        if group:
            return min(group, key=lambda a: (a["kind"] != "attack_campaign", a["raised_ts"]))
    return None


def _summary(alert: dict[str, Any], width: int = 160, at_trigger: bool = False) -> str:
    """The alert's one-line summary (its latest update's; with ``at_trigger``, the one it was raised with)."""
    import orjson

    explanation = orjson.loads(alert["explanation"])
    if at_trigger and isinstance(explanation.get("at_trigger"), dict):
        explanation = explanation["at_trigger"]
    return _shorten(str(explanation.get("summary", "")), width)


# -- alerts ---------------------------------------------------------------------------------
@alerts_app.command("export")
def alerts_export(
    run: Annotated[str | None, typer.Option("--run", help="Only this run (default: every run).")] = None,
    out: Annotated[Path | None, typer.Option("--out", help="Output file (default: stdout).")] = None,
    db: DbOption = None,
) -> None:
    """Write alerts as JSON Lines in the v1 alert export format."""
    from pipeline.rows import export_line

    store = _store(db)
    if run is not None and not store.run_exists(run):
        fail(f"no run named {run!r} in {resolve_db_url(db)}")
    sink = open(out, "wb") if out else sys.stdout.buffer  # noqa: SIM115
    try:
        for row in store.iter_alerts(run):
            sink.write(export_line(row))
    finally:
        if out:
            sink.close()
        else:
            sink.flush()


@alerts_app.command("list")
def alerts_list(
    run: Annotated[str | None, typer.Option("--run", help="Only this run.")] = None,
    kind: Annotated[str | None, typer.Option("--kind", help=f"Only this kind: {', '.join(ALERT_KINDS)}.")] = None,
    status: Annotated[str | None, typer.Option("--status", help=f"Only this reviewer status: {', '.join(STATUSES)}.")] = None,
    limit: Annotated[int, typer.Option("--limit", help="Show at most this many: the newest, listed oldest first.")] = 200,
    db: DbOption = None,
) -> None:
    """A readable table of alerts."""
    _check_choice("--kind", kind, ALERT_KINDS)
    _check_choice("--status", status, STATUSES)
    if limit < 1:
        fail("--limit must be at least 1")
    store = _store(db)
    if run is not None and not store.run_exists(run):
        fail(f"no run named {run!r} in {resolve_db_url(db)}")
    rows = [a for a in store.iter_alerts(run)
            if (kind is None or a["kind"] == kind) and (status is None or a["status"] == status)]
    shown = rows[-limit:]
    where = f" in {run}" if run else ""
    title = f"{len(rows)} alert{'' if len(rows) == 1 else 's'}{where}"
    if len(shown) < len(rows):
        title = f"showing the newest {len(shown)} of {len(rows)} alerts{where} (--limit)"
    table = Table(title=title, show_lines=False)
    for col in ("raised_at", "kind", "severity", "model", "client", "score", "threshold", "status", "summary"):
        table.add_column(col, overflow="fold")
    table.add_column("alert_id", no_wrap=True, min_width=12)  # never wrapped, so it can be copied
    for a in shown:
        summary = _summary(a, 80)
        table.add_row(a["raised_at"], a["kind"], a["severity"], f"{a['model']}@{a['model_version'] or '-'}",
                      a["client_id"] or "", f"{a['score']:.4g}",
                      "" if a["threshold"] is None else f"{a['threshold']:.4g}", a["status"], summary,
                      a["alert_id"][:12])
    Console().print(table)


@alerts_app.command("review")
def alerts_review(
    alert_id: Annotated[str, typer.Argument(help="The alert's id (a unique prefix is enough).")],
    status: Annotated[str, typer.Option("--status", help=f"One of {', '.join(STATUSES)}.")],
    run: Annotated[str | None, typer.Option("--run", help="The alert's run (needed if the id is in several).")] = None,
    reviewer: Annotated[str | None, typer.Option("--reviewer", help="Who reviewed it.")] = None,
    note: Annotated[str | None, typer.Option("--note", help="Free-text note.")] = None,
    db: DbOption = None,
) -> None:
    """Set a reviewer status on an alert (kept across replays) and record it in the history."""
    _check_choice("--status", status, STATUSES)
    from sqlalchemy import select

    from pipeline.review import set_status
    from pipeline.storage.tables import alerts

    store = _store(db)
    q = select(alerts.c.run, alerts.c.alert_id).where(alerts.c.alert_id.startswith(alert_id))
    if run:
        q = q.where(alerts.c.run == run)
    with store.engine.connect() as conn:
        matches = conn.execute(q).all()
    if not matches:
        fail(f"no alert with id {alert_id!r}" + (f" in run {run!r}" if run else ""))
    if len(matches) > 1:
        fail(_ambiguous_alert(alert_id, [(m.run, m.alert_id) for m in matches]))
    try:
        set_status(store.engine, matches[0].run, matches[0].alert_id, status, reviewer=reviewer, note=note)
    except ValueError as exc:
        fail(str(exc))
    Console().print(f"{matches[0].alert_id} in {matches[0].run}: {status}")


def _ambiguous_alert(prefix: str, matches: list[tuple[str, str]]) -> str:
    """Why ``prefix`` names more than one (run, alert) and what to give: ``--run``, a longer id, or both."""
    ids = sorted({i for _, i in matches})
    runs = sorted({r for r, _ in matches})

    def some(names: list[str], width: int = 0) -> str:
        shown = [n[:width] if width else n for n in names[:5]]
        return ", ".join(shown) + (f", ... ({len(names)} in all)" if len(names) > 5 else "")

    if len(ids) == 1:
        return f"alert {ids[0]} is in {len(runs)} runs ({some(runs)}): give --run"
    message = f"{len(ids)} alert ids start with {prefix!r} ({some(ids, 16)}): give a longer id"
    if len(matches) > len(ids):
        message += f" and --run (they are in runs {some(runs)})"
    return message


# -- dead letters ---------------------------------------------------------------------------
dead_app = typer.Typer(help="Messages that could not be scored: list them, export them to fix and replay.",
                       no_args_is_help=True)
app.add_typer(dead_app, name="dead-letters")
StreamOption = Annotated[str | None, typer.Option("--stream", help="Only predictions or only labels.")]


@dead_app.command("list")
def dead_letters_list(
    run: Annotated[str | None, typer.Option("--run", help="Only this run.")] = None,
    stream: StreamOption = None,
    limit: Annotated[int, typer.Option("--limit", help="Show at most this many (the first, by source position).")] = 50,
    db: DbOption = None,
) -> None:
    """A table of dead letters: where each came from, why it was refused, and its first bytes."""
    _check_choice("--stream", stream, ("predictions", "labels"))
    if limit < 1:
        fail("--limit must be at least 1")
    store = _store(db)
    if run is not None and not store.run_exists(run):
        fail(f"no run named {run!r} in {resolve_db_url(db)}")
    rows = list(store.iter_dead_letters(run, stream))
    title = f"{len(rows)} dead letter{'' if len(rows) == 1 else 's'}" + (f" in {run}" if run else "")
    if len(rows) > limit:
        title = f"the first {limit} of {title} (--limit)"
    table = Table(title=title)
    for col in ("run", "source", "partition", "position", "stream", "reason", "message"):
        table.add_column(col, overflow="fold")
    for d in rows[:limit]:
        table.add_row(d["run"], d["source"], str(d["partition"]), str(d["position"]), d["stream"],
                      _shorten(d["reason"], 100), escape(_shorten(d["raw_preview"], 60)))
    Console().print(table)


@dead_app.command("export")
def dead_letters_export(
    run: Annotated[str | None, typer.Option("--run", help="Only this run.")] = None,
    stream: StreamOption = None,
    out: Annotated[Path | None, typer.Option("--out", help="Write here instead of stdout.")] = None,
    db: DbOption = None,
) -> None:
    """Dead letters as JSON Lines, one object per message with its run, source, partition, position, stream,
    reason and the message itself (`raw`: its text, invalid UTF-8 replaced; `raw_base64`: its exact bytes), in
    source order. Fix the messages and replay them (e.g. `jq -r .raw` gives one message per line)."""
    import base64

    import orjson

    _check_choice("--stream", stream, ("predictions", "labels"))
    store = _store(db)
    if run is not None and not store.run_exists(run):
        fail(f"no run named {run!r} in {resolve_db_url(db)}")
    lines = []
    for d in store.iter_dead_letters(run, stream):
        lines.append(orjson.dumps({
            "run": d["run"], "source": d["source"], "partition": d["partition"], "position": d["position"],
            "stream": d["stream"], "reason": d["reason"], "raw": d["raw"].decode("utf-8", "replace"),
            "raw_base64": base64.b64encode(d["raw"]).decode("ascii"),
        }).decode())
    _emit("".join(line + "\n" for line in lines), out)
    if out is not None:
        err.print(f"{len(lines):,} dead letters written to {out}", highlight=False)


# -- runs -----------------------------------------------------------------------------------
def _check_format(fmt: str, allowed: tuple[str, ...]) -> None:
    if fmt not in allowed:
        fail(f"unknown format {fmt!r}: expected {', '.join(allowed)}")


def _emit(text: str, out: Path | None) -> None:
    """Write ``text`` to ``out`` (UTF-8, as is) or to stdout."""
    if out is None:
        sys.stdout.write(text)
        sys.stdout.flush()
    else:
        out.write_text(text, encoding="utf-8")


@runs_app.command("list")
def runs_list(db: DbOption = None) -> None:
    """A readable table of runs: kind, source, status, counts, times and config hash."""
    store = _store(db)
    rows = store.list_runs()
    table = Table(title=f"{len(rows)} runs", show_lines=False)
    for col in ("run", "kind", "source", "status", "events", "dead letters", "alerts", "started", "finished", "config"):
        table.add_column(col, overflow="fold")
    for r in rows:
        table.add_row(r["run"], r["kind"], r["source"], r["status"], f"{r['events'] or 0:,}",
                      f"{r['dead_letters'] or 0:,}", f"{r['alerts']:,}", r["started_at"] or "", r["finished_at"] or "",
                      r["config_hash"][:12])
    Console().print(table)


@runs_app.command("report")
def runs_report(
    run: Annotated[str, typer.Argument(help="The run's name (see `infersentry runs list`).")],
    fmt: Annotated[str, typer.Option("--format", help="text, json or markdown.")] = "text",
    out: Annotated[Path | None, typer.Option("--out", help="Output file (default: stdout).")] = None,
    top: Annotated[int, typer.Option("--top", help="How many top alerts to list (most severe; each kind, model and caller once before repeats).")] = 10,
    db: DbOption = None,
) -> None:
    """One page about a run for an audit.

    Source (a Kafka replay's resolved offsets), input fingerprint, config hash, events, dead letters by reason, event-time span, alerts by kind x severity and by model@version, reviewer status counts, the top alerts with their summaries, and the per-caller alerts with their client ids. Only stored values appear, so two reports of one run are byte-identical.
    """
    from pipeline.audit.render import REPORT_FORMATS, render_report
    from pipeline.audit.report import UnknownRunError, build_report

    _check_format(fmt, REPORT_FORMATS)
    if top < 0:
        fail("--top must be at least 0")
    store = _store(db)
    try:
        report = build_report(store, run, top=top)
    except UnknownRunError:
        fail(f"no run named {run!r} in {resolve_db_url(db)}")
    _emit(render_report(report, fmt), out)


@runs_app.command("diff")
def runs_diff(
    run_a: Annotated[str, typer.Argument(help="The first run, A (e.g. the live run).")],
    run_b: Annotated[str, typer.Argument(help="The second run, B (e.g. its replay).")],
    fmt: Annotated[str, typer.Option("--format", help="text or json.")] = "text",
    out: Annotated[Path | None, typer.Option("--out", help="Output file (default: stdout); the verdict line then goes to stderr.")] = None,
    with_status: Annotated[bool, typer.Option("--with-status", help="Also compare reviewer statuses.")] = False,
    db: DbOption = None,
) -> None:
    """Compare two runs' alerts by alert_id; exit 0 when identical, 1 when they differ, 2 on a user error.

    Lists alerts only in A, only in B, in both but changed (which fields; explanation key by key), and re-keyed: the same finding (detector, kind, model, version, caller, trigger event) under another detector config, which gives it another id. The run name and reviewer status are not compared (--with-status compares the status). Says when the config hashes or input fingerprints differ; the last line is the verdict.
    """
    from pipeline.audit.diff import diff_runs
    from pipeline.audit.render import DIFF_FORMATS, render_diff
    from pipeline.audit.report import UnknownRunError

    _check_format(fmt, DIFF_FORMATS)
    store = _store(db)
    try:
        result = diff_runs(store, run_a, run_b, with_status=with_status)
    except UnknownRunError as exc:
        fail(f"{exc} in {resolve_db_url(db)}")
    _emit(render_diff(result, fmt), out)
    if out is not None:
        err.print(result.verdict(), highlight=False, soft_wrap=True)
    if not result.identical:
        raise typer.Exit(1)


# -- kafka ----------------------------------------------------------------------------------
def _kafka_settings(bootstrap: str, config: Any = None) -> Any:
    """Connection settings: the config file's ``kafka:`` section, then ``INFERSENTRY_KAFKA_*``, then ``--bootstrap``."""
    from pipeline.sources.kafka import KafkaClientSettings

    from_file = config.kafka.model_dump(exclude_none=True) if config is not None else {}
    env = KafkaClientSettings.from_env().model_dump(exclude_unset=True)
    return KafkaClientSettings(**{**from_file, **env, "bootstrap_servers": bootstrap})


@app.command("run")
def run_cmd(
    topic: Annotated[str, typer.Option("--topic", help="Predictions topic.")] = "predictions",
    labels_topic: Annotated[str, typer.Option("--labels-topic", help="Delayed labels topic ('' for none).")] = "labels",
    group: Annotated[str, typer.Option("--group", help="Consumer group id.")] = "infersentry",
    config: ConfigOption = None,
    until_idle: Annotated[float | None, typer.Option("--until-idle", help="Also exit 0 after this many seconds without new messages (counted once partitions are assigned).")] = None,
    run: Annotated[str, typer.Option("--run", help="Run name for the live results.")] = "live",
    metrics_port: Annotated[int | None, typer.Option("--metrics-port", help="Serve Prometheus metrics (throughput, alerts, lag) on this port.")] = None,
    bootstrap: BootstrapOption = "127.0.0.1:9092",
    db: DbOption = None,
) -> None:
    """Consume from Kafka in a consumer group until stopped (SIGTERM/SIGINT: finish the batch,
    checkpoint, leave the group, exit 0)."""
    from pipeline.live import LiveStatus, StopFlag, run_live
    from pipeline.metrics import RunMetrics
    from pipeline.sources.kafka import KafkaSourceError

    cfg = load_config(config)
    store = _store(db)
    metrics = RunMetrics(run)
    if metrics_port is not None:
        metrics.serve(metrics_port)
    stop = StopFlag()
    stop.install_signal_handlers()

    def status(s: LiveStatus) -> None:
        lag = sum(s.lag.values())
        err.print(f"{s.totals.events:,} events ({s.rate:,.0f}/s), {s.totals.alerts:,} alerts, "
                  f"partitions {sorted(s.partitions)}, consumer lag {lag:,}", highlight=False)

    try:
        totals = run_live(store, cfg, _kafka_settings(bootstrap, cfg), run=run, group=group, predictions_topic=topic,
                          labels_topic=labels_topic or None, until_idle=until_idle, stop=stop, on_status=status,
                          metrics=metrics)
    except KafkaSourceError as exc:
        fail(str(exc).splitlines()[0])
    except DBAPIError as exc:  # the database stayed unavailable beyond the store's retry budget
        store.retry_seconds = 0.0
        with contextlib.suppress(Exception):  # best effort: the database may still be down
            store.finish_run(run, "failed")
        fail(f"database unavailable: {str(exc.orig).strip().splitlines()[0]}; nothing is lost: "
             "restarted, the run resumes from its last checkpoint")
    err.print(f"stopped: {totals.events:,} events, {totals.alerts:,} alerts, {totals.dead_letters:,} dead letters",
              highlight=False)


SCENARIO_HELP = ("mixed (as in the demo: benign traffic with one drift and attacks), benign (neither), or one of: "
                 + ", ".join(name for name in SCENARIOS if name not in ("mixed", "benign")) + ".")


@app.command()
def simulate(
    topic: Annotated[str, typer.Option("--topic", help="Predictions topic.")] = "predictions",
    labels_topic: Annotated[str, typer.Option("--labels-topic", help="Labels topic ('' for none).")] = "labels",
    events: Annotated[int, typer.Option("--events", help="Predictions to send.")] = 100_000,
    rate: Annotated[float, typer.Option("--rate", help="Predictions per second; 0 = as fast as possible.")] = 0.0,
    scenario: Annotated[str, typer.Option("--scenario", help=SCENARIO_HELP)] = "mixed",
    seed: Annotated[int, typer.Option("--seed", help="Seed of the generated traffic.")] = 0,
    partitions: Annotated[int, typer.Option("--partitions", help="Partitions of topics it creates.")] = 4,
    bootstrap: BootstrapOption = "127.0.0.1:9092",
) -> None:
    """Produce realistic traffic to Kafka (creates missing topics; exits when N events are sent)."""
    from pipeline.simulate import simulate as run_simulation
    from pipeline.sources.kafka import KafkaSourceError

    if scenario not in SCENARIOS:
        fail(f"unknown scenario {scenario!r}; known: {', '.join(SCENARIOS)}")
    if events < 1 or rate < 0:
        fail("--events must be at least 1 and --rate at least 0")
    try:
        n_pred, n_lab = run_simulation(_kafka_settings(bootstrap), predictions_topic=topic,
                                       labels_topic=labels_topic or None, n_events=events, rate=rate,
                                       scenario=scenario, seed=seed, partitions=partitions)
    except KafkaSourceError as exc:
        fail(str(exc).splitlines()[0])
    Console().print(f"sent {n_pred:,} predictions to {topic} and {n_lab:,} labels to {labels_topic or '-'}")


# -- reference ------------------------------------------------------------------------------
reference_app = typer.Typer(help="Drift reference files.", no_args_is_help=True)
app.add_typer(reference_app, name="reference")


@reference_app.command("snapshot")
def reference_snapshot_cmd(
    out: Annotated[Path, typer.Argument(help="File to write (gzip when it ends in .gz); never overwritten.")],
    time_from: Annotated[str, typer.Option("--from", help="First broker timestamp, inclusive (RFC 3339 or epoch ms).")],
    time_to: Annotated[str, typer.Option("--to", help="End broker timestamp, exclusive (RFC 3339 or epoch ms).")],
    topic: Annotated[str, typer.Option("--topic", help="The predictions topic.")] = "predictions",
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds to wait for the broker on each request.")] = 10.0,
    config: ConfigOption = None,
    bootstrap: BootstrapOption = "127.0.0.1:9092",
) -> None:
    """Write a time range of a Kafka predictions topic to a file to use as a model's reference_file.

    A reference must outlive the topic's retention (alert ids depend on its bytes), so a Kafka time range is frozen into a file once: the valid prediction logs with broker timestamps in [--from, --to), partitions merged in replay order, written deterministically; the resolved offsets go to OUT.source.json. Read without a consumer group, committing nothing.
    """
    from pipeline.reference_snapshot import SnapshotError, sidecar_path, snapshot_reference
    from pipeline.sources.kafka import KafkaSourceError
    from pipeline.timefmt import TimestampError, parse_time_ms

    try:
        from_ms, to_ms = parse_time_ms(time_from), parse_time_ms(time_to)
    except TimestampError as exc:
        fail(f"--from/--to: {exc}")
    if timeout <= 0:
        fail("--timeout must be positive")
    cfg = load_config(config)
    if "INFERSENTRY_LOG_LEVEL" not in os.environ:
        logging.getLogger("kafka").setLevel(logging.CRITICAL)
    try:
        snap = snapshot_reference(_kafka_settings(bootstrap, cfg), topic, from_ms, to_ms, out,
                                  timeout_s=timeout, max_message_bytes=cfg.max_message_bytes)
    except (SnapshotError, KafkaSourceError) as exc:
        fail(str(exc).splitlines()[0])
    for r in snap.range.ranges:
        err.print(f"{r.topic}[{r.partition}]: offsets {r.start}..{r.end} ({r.size:,})", highlight=False)
    models = ", ".join(f"{m} {n:,}" for m, n in snap.models.items())
    skipped = f"; {snap.skipped:,} invalid messages left out" if snap.skipped else ""
    Console().print(f"wrote {snap.events:,} events to {out} ({models}){skipped}; provenance in "
                    f"{sidecar_path(out)}", highlight=False, soft_wrap=True)
    small = [m for m, n in snap.models.items() if n < 10_000]
    if small:
        err.print(f"note: {', '.join(small)} {'has' if len(small) == 1 else 'have'} fewer than 10,000 events here; "
                  "a reference of 10,000-20,000 events per model keeps the drift tests' null closest to nominal "
                  "(docs/drift.md)", highlight=False, soft_wrap=True)
    Console().print(f"use it with, in the config: reference_file: {out}", highlight=False, soft_wrap=True)


# -- grafana --------------------------------------------------------------------------------
dashboards_app = typer.Typer(help="Grafana dashboards.", no_args_is_help=True)
app.add_typer(dashboards_app, name="dashboards")


@dashboards_app.command("publish")
def dashboards_publish(
    grafana_url: Annotated[str, typer.Option("--grafana", envvar="INFERSENTRY_GRAFANA_URL",
                                             help="Grafana URL, e.g. http://admin:admin@localhost:3000")],
    token: Annotated[str | None, typer.Option("--token", envvar="INFERSENTRY_GRAFANA_TOKEN",
                                              help="Service-account token (instead of user:password in the URL).")] = None,
    pg_host: Annotated[str | None, typer.Option("--pg-host", help="HOST:PORT of PostgreSQL as Grafana reaches it (default: from --db).")] = None,
    db: DbOption = None,
) -> None:
    """Create or update the PostgreSQL datasource and the dashboards in a running Grafana."""
    from grafana_client import GrafanaApi

    from dashboards.publish import publish

    try:
        result = publish(GrafanaApi.from_url(grafana_url, credential=token), resolve_db_url(db), pg_host)
    except ValueError as exc:
        fail(str(exc))
    except Exception as exc:  # network and HTTP errors of the Grafana client
        fail(f"Grafana at {grafana_url.split('@')[-1]} refused: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}")
    Console().print(f"datasource {result.datasource}; dashboards published: {', '.join(result.dashboards)}")


# -- database -------------------------------------------------------------------------------
@app.command("migrate")
def migrate_cmd(db: DbOption = None) -> None:
    """Create or upgrade the database schema (other commands do this too)."""
    _store(db)
    Console().print(f"schema up to date in {resolve_db_url(db)}")


db_app = typer.Typer(help="Database administration.", no_args_is_help=True)
app.add_typer(db_app, name="db")


@db_app.command("create-reader")
def db_create_reader_cmd(
    role: Annotated[str, typer.Argument(help="Name of the read-only login role, e.g. grafana_reader.")],
    db: DbOption = None,
    password_env: Annotated[str, typer.Option(
        "--password-env", help="Environment variable holding the role's password (never on the command line).",
    )] = "INFERSENTRY_READER_PASSWORD",
    owner: Annotated[str | None, typer.Option(
        "--owner", help="Role that runs infersentry's migrations (default: the connecting role).",
    )] = None,
) -> None:
    """Create or update a PostgreSQL role that can only read infersentry's tables (for Grafana)."""
    from pipeline.storage.roles import ReaderRoleError, create_reader

    password = os.environ.get(password_env, "")
    if not password:
        fail(f"set the reader's password in ${password_env}")
    store = _store(db)
    try:
        create_reader(store.engine, role, password, owner=owner)
    except ReaderRoleError as exc:
        fail(str(exc))
    except Exception as exc:  # a refused CREATE ROLE / GRANT: one line, not a traceback
        orig = getattr(exc, "orig", exc)
        fail(f"cannot create role {role}: {str(orig).strip().splitlines()[0]}")
    Console().print(f"read-only role {role} ready on {resolve_db_url(db)}")


# -- dev kafka ------------------------------------------------------------------------------
PortOption = Annotated[int, typer.Option("--port", help="Client port of the local broker.")]
DataDirOption = Annotated[Path | None, typer.Option("--data-dir", help="Broker data directory.")]


@kafka_app.command("up")
def kafka_up_cmd(port: PortOption = 9092, data_dir: DataDirOption = None) -> None:
    """Start the local broker; returns once it answers admin requests."""
    from pipeline.kafka_dev import KafkaDevError, kafka_up

    try:
        info = kafka_up(port=port, data_dir=data_dir)
    except KafkaDevError as exc:
        fail(str(exc).splitlines()[0])
    Console().print(f"Kafka broker up at {info.bootstrap} (pid {info.pid}, data {info.data_dir})")


@kafka_app.command("down")
def kafka_down_cmd(port: PortOption = 9092, data_dir: DataDirOption = None) -> None:
    """Stop the local broker started by `up` (by the pid it recorded)."""
    from pipeline.kafka_dev import kafka_down

    stopped = kafka_down(data_dir=data_dir, port=port)
    Console().print("Kafka broker stopped" if stopped else "no local Kafka broker was running")


@kafka_app.command("status")
def kafka_status_cmd(port: PortOption = 9092, data_dir: DataDirOption = None) -> None:
    """Report whether the local broker runs."""
    from pipeline.kafka_dev import kafka_status

    info = kafka_status(data_dir=data_dir, port=port)
    Console().print(f"running at {info.bootstrap} (pid {info.pid})" if info.running else "stopped")
    if not info.running:
        raise typer.Exit(1)


# -- entry point ----------------------------------------------------------------------------
def _user_errors() -> tuple[type[BaseException], ...]:
    from pipeline.reference import ReferenceFileError
    from pipeline.replay import ReplayInputError

    return (UserError, ConfigError, ReplayInputError, ReferenceFileError, FileNotFoundError, IsADirectoryError, PermissionError)


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=os.environ.get("INFERSENTRY_LOG_LEVEL", "WARNING"),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        code = app(args=argv, standalone_mode=False)
    except _user_errors() as exc:
        err.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)
    except SystemExit:
        raise
    except Exception as exc:  # click usage errors come here in non-standalone mode
        # Duck-typed: typer >= 0.2x vendors click (``typer._click``), older typer uses ``click``.
        show, exit_code = getattr(exc, "show", None), getattr(exc, "exit_code", None)
        if callable(show) and isinstance(exit_code, int):
            show()
            sys.exit(exit_code)
        if type(exc).__name__ == "Abort":
            sys.exit(130)
        raise
    if isinstance(code, int) and not isinstance(code, bool) and code:  # typer.Exit(n) returns n here
        sys.exit(code)


_: Callable[..., Any] = main
