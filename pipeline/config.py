"""Typed configuration: defaults visible in one place, per-model overrides from a YAML file.

A first run needs no file. A YAML file may set any field of :class:`MonitorConfig`; under
``models:`` it overrides :class:`ModelConfig` fields per model name, merged onto ``defaults``.
A ``detectors:`` mapping in the file (under ``defaults:`` or a model) changes only the detectors
it names; the others keep their defaults (turn one off with ``enabled: false``), and a name that
is not a known detector is an error rather than a silently ignored typo::

    batch_size: 2000
    defaults:
      events_between_false_alarms: 1.0e7
    models:
      fraud-scorer:
        classes: ["legit", "fraud"]
        detectors:
          extraction: {enabled: false}
          drift: {params: {reference_size: 5000}}

The effective configuration is hashed (``config_hash``) and stored with every run and alert.
"""

from __future__ import annotations

import difflib
import inspect
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from detectors.base import stable_hash
from pipeline.timefmt import TimestampError, parse_ts

#: Detectors that judge a whole model stream share the model's false-alarm budget.
STREAM_DETECTORS = ("drift", "performance")
DEFAULT_DETECTORS = ("drift", "performance", "outlier", "campaign", "extraction")


class ConfigError(ValueError):
    """The configuration file is missing, unreadable or invalid."""


class DetectorSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    enabled: bool = True
    params: dict[str, Any] = Field(default_factory=dict)


def _default_detectors() -> dict[str, DetectorSpec]:
    return {name: DetectorSpec() for name in DEFAULT_DETECTORS}


class ModelConfig(BaseModel):
    """Detector settings of one model (all its versions and partitions)."""

    model_config = ConfigDict(extra="forbid")
    events_between_false_alarms: float = Field(
        1e7, gt=1, description="False-alarm budget of the model's stream-level tests: expected events between false alarms, shared by all of them."
    )
    event_fpr: float = Field(1e-3, gt=0, lt=1, description="Per-event false-positive budget of per-event detectors.")
    seed: int = Field(0, description="Seed of every detector's randomness.")
    classes: list[str] | None = Field(None, description="Class names for probabilities sent as arrays.")
    reference_file: str | None = Field(
        None, description="Prediction log (JSON Lines, .gz ok) whose events of this model form the drift reference, "
        "instead of the first events of the stream.")
    reference_start: str | float | None = Field(
        None, description="With reference_file: use only its events at or after this time (RFC 3339 or epoch seconds).")
    reference_end: str | float | None = Field(
        None, description="With reference_file: use only its events before this time (RFC 3339 or epoch seconds).")
    detectors: dict[str, DetectorSpec] = Field(default_factory=_default_detectors)

    @model_validator(mode="after")
    def _reference_range(self) -> ModelConfig:
        start, end = self.reference_range()
        if (self.reference_start is not None or self.reference_end is not None) and not self.reference_file:
            raise ValueError("reference_start/reference_end select a time range of reference_file; set reference_file "
                             "(an archived prediction log, e.g. the file being replayed)")
        if start >= end:
            raise ValueError(f"reference_start ({self.reference_start}) must be before reference_end ({self.reference_end})")
        return self

    def reference_range(self) -> tuple[float, float]:
        """``[start, end)`` of the reference period in epoch seconds (unbounded sides are infinite)."""
        def parse(value: str | float | None, default: float, name: str) -> float:
            if value is None:
                return default
            try:
                return parse_ts(value)[0]
            except TimestampError as exc:
                raise ValueError(f"{name}: {exc}") from None
        return (parse(self.reference_start, float("-inf"), "reference_start"),
                parse(self.reference_end, float("inf"), "reference_end"))


class KafkaSecurity(BaseModel):
    """Kafka connection security (non-secret parts). The password comes only from the environment
    variable ``INFERSENTRY_KAFKA_SASL_PLAIN_PASSWORD``, so it never lands in a stored config."""

    model_config = ConfigDict(extra="forbid")
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] | None = None
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_plain_username: str | None = None
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    client_id: str | None = None


class MonitorConfig(BaseModel):
    """Pipeline-wide settings."""

    model_config = ConfigDict(extra="forbid")
    batch_size: int = Field(2000, ge=1, le=1_000_000, description="Events per micro-batch.")
    max_batch_seconds: float = Field(1.0, gt=0, description="Longest wait to fill a micro-batch (Kafka).")
    max_message_bytes: int = Field(1 << 20, ge=64, description="Larger messages are dead-lettered.")
    dedup_horizon: int = Field(100_000, ge=0, description="Most recent event ids remembered per partition to drop redeliveries.")
    label_ttl_seconds: float = Field(7 * 86400.0, gt=0, description="Event-time span a prediction waits for its delayed label.")
    max_pending_labels: int = Field(200_000, ge=0, description="Most predictions awaiting labels per partition (oldest evicted).")
    max_early_labels: int = Field(50_000, ge=0, description="Most labels per partition held while their prediction has not arrived yet (oldest evicted).")
    early_label_wait_seconds: float = Field(3600.0, ge=0, description="Event time (on the predictions' clock) a label waits for a prediction that has not arrived yet.")
    unmatched_labels_alert_at: int = Field(100, ge=1, description="Unmatched labels in a partition before a data_quality alert.")
    dead_letters_alert_at: int = Field(100, ge=1, description="Dead letters in a partition before a data_quality alert.")
    checkpoint_every_events: int = Field(50_000, ge=1, description="Snapshot detector state and positions after this many events.")
    kafka: KafkaSecurity = Field(default_factory=KafkaSecurity)
    defaults: ModelConfig = Field(default_factory=ModelConfig)
    models: dict[str, dict[str, Any]] = Field(default_factory=dict)

    @field_validator("models")
    @classmethod
    def _check_models(cls, value: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        for name, override in value.items():
            if not isinstance(override, dict):
                raise ValueError(f"models.{name} must be a mapping")
        return value

    def for_model(self, model: str) -> ModelConfig:
        """Effective settings of ``model``: its overrides merged onto ``defaults``."""
        override = self.models.get(model)
        if not override:
            return self.defaults
        merged = self.defaults.model_dump()
        for key, value in override.items():
            if key == "detectors" and isinstance(value, dict):
                for det, spec in value.items():
                    base = merged["detectors"].get(det, {"enabled": True, "params": {}})
                    spec = dict(spec or {})
                    base = {**base, **{k: v for k, v in spec.items() if k != "params"}}
                    base["params"] = {**base.get("params", {}), **spec.get("params", {})}
                    merged["detectors"][det] = base
            else:
                merged[key] = value
        return ModelConfig.model_validate(merged)

    def config_hash(self) -> str:
        return stable_hash(self.model_dump(mode="json"))


def load_config(path: str | Path | None) -> MonitorConfig:
    """Load a YAML config (``None``: built-in defaults). Errors are one readable line."""
    if path is None:
        return MonitorConfig()
    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {p}") from None
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read config {p}: {exc}".splitlines()[0]) from None
    if not isinstance(data, dict):
        raise ConfigError(f"config {p} must be a YAML mapping")
    if isinstance(data.get("kafka"), dict) and "sasl_plain_password" in data["kafka"]:
        raise ConfigError(f"config {p}: keep the Kafka password out of files; set INFERSENTRY_KAFKA_SASL_PLAIN_PASSWORD")
    data = _with_default_detectors(data, p)
    try:
        cfg = MonitorConfig.model_validate(data)
        models = {"defaults": cfg.defaults} | {f"models.{name}": cfg.for_model(name) for name in cfg.models}
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(x) for x in first["loc"])
        raise ConfigError(f"invalid config {p}: {where}: {first['msg']}") from None
    for where, mc in models.items():
        problem = detector_params_problem(mc) or _reference_file_problem(mc)
        if problem:
            raise ConfigError(f"invalid config {p}: {where}.{problem}")
    return cfg


def detector_params_problem(mc: ModelConfig) -> str | None:
    """The first detector parameter of ``mc`` that its detector does not take, as ``detectors.NAME...``."""
    if not any(spec.params for spec in mc.detectors.values()):
        return None
    from detectors import builtin
    from detectors.base import REGISTRY

    builtin.load()
    for name, spec in mc.detectors.items():
        cls = REGISTRY.get(name)
        if cls is None or not spec.params:
            continue
        accepted = inspect.signature(cls).parameters
        if any(a.kind is inspect.Parameter.VAR_KEYWORD for a in accepted.values()):
            continue
        known = sorted(a for a, arg in accepted.items() if arg.kind is inspect.Parameter.KEYWORD_ONLY)
        for param in spec.params:
            if param not in known:
                close = difflib.get_close_matches(param, known, n=1)
                hint = f"did you mean {close[0]!r}? " if close else ""
                return f"detectors.{name}.params: unknown parameter {param!r} ({hint}known: {', '.join(known)})"
        bad_value = _probe(cls, mc, spec.params)
        if bad_value:
            return f"detectors.{name}.params: {bad_value}"
    return None


def _probe(cls: type, mc: ModelConfig, params: dict[str, Any]) -> str | None:
    """Build the detector once for a two-feature model, so that a parameter's value is checked when
    the config loads (the real detector is built at the model's first event)."""
    from detectors.base import DetectorContext
    from pipeline.events import FeatureSchema, RouteKey

    ctx = DetectorContext(RouteKey("config-check", None, 0), FeatureSchema(("x0", "x1")), seed=mc.seed,
                          events_between_false_alarms=mc.events_between_false_alarms, event_fpr=mc.event_fpr,
                          extra={"classes": mc.classes})
    # a ``reference`` mapping is laid out for the real model's features: checked when it is built
    params = {k: v for k, v in params.items() if k != "reference"}
    try:
        cls(ctx, **params)
    except (ValueError, TypeError) as exc:
        return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return None


def _reference_file_problem(mc: ModelConfig) -> str | None:
    """A ``reference_file`` that does not exist is reported when the config loads, not when the
    model's first event arrives (possibly hours into a live run)."""
    if mc.reference_file and not Path(mc.reference_file).is_file():
        return (f"reference_file: {mc.reference_file} not found (relative paths are taken from the "
                f"working directory {Path.cwd()}, not from the config's folder)")
    return None


def _known_detectors() -> set[str]:
    from detectors import builtin
    from detectors.base import REGISTRY

    builtin.load()
    return set(REGISTRY) | set(DEFAULT_DETECTORS)


def _with_default_detectors(data: dict[str, Any], path: Path) -> dict[str, Any]:
    """A file's ``defaults.detectors`` mapping merged onto the default detector set (a file that
    tunes ``drift`` alone must not switch the attack detectors off); unknown names are errors."""
    sections = [("defaults", data.get("defaults"))] + [
        (f"models.{name}", m) for name, m in (data.get("models") or {}).items() if isinstance(m, dict)
    ]
    named = [(where, name) for where, section in sections if isinstance(section, dict)
             and isinstance(section.get("detectors"), dict) for name in section["detectors"]]
    if named:  # importing the detector families only when the file names detectors
        known = _known_detectors()
        for where, name in named:
            if name not in known:
                raise ConfigError(f"invalid config {path}: {where}.detectors: unknown detector {name!r} "
                                  f"(known: {', '.join(sorted(known))})")
    defaults = data.get("defaults")
    if isinstance(defaults, dict) and isinstance(defaults.get("detectors"), dict):
        merged: dict[str, Any] = {name: {} for name in DEFAULT_DETECTORS}
        merged.update(defaults["detectors"])
        data = {**data, "defaults": {**defaults, "detectors": merged}}
    return data
