from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.cli import _kafka_settings
from pipeline.config import ConfigError, MonitorConfig, load_config


def test_defaults_need_no_file() -> None:
    cfg = load_config(None)
    assert cfg.batch_size == 2000 and cfg.defaults.events_between_false_alarms == 1e7
    assert set(cfg.defaults.detectors) == {"drift", "performance", "outlier", "campaign", "extraction"}


def test_model_overrides_merge_onto_defaults(tmp_path: Path) -> None:
    f = tmp_path / "c.yml"
    f.write_text("defaults:\n  seed: 3\nmodels:\n  fraud:\n    event_fpr: 0.0005\n"
                 "    detectors:\n      extraction: {enabled: false}\n      drift: {params: {reference_size: 5000}}\n")
    cfg = load_config(f)
    fraud, other = cfg.for_model("fraud"), cfg.for_model("other")
    assert fraud.seed == 3 and fraud.event_fpr == 0.0005 and not fraud.detectors["extraction"].enabled
    assert fraud.detectors["drift"].params == {"reference_size": 5000} and fraud.detectors["outlier"].enabled
    assert other.event_fpr == 0.001 and other.detectors["extraction"].enabled
    assert cfg.config_hash() != MonitorConfig().config_hash()


def test_a_defaults_detectors_section_changes_only_the_detectors_it_names(tmp_path: Path) -> None:
    """Tuning drift under ``defaults:`` must not switch the other detectors off."""
    f = tmp_path / "c.yml"
    f.write_text("defaults:\n  detectors:\n    drift: {params: {reference_size: 5000}}\n    extraction: {enabled: false}\n")
    cfg = load_config(f)
    dets = cfg.for_model("any").detectors
    assert set(dets) == {"drift", "performance", "outlier", "campaign", "extraction"}
    assert dets["drift"].params == {"reference_size": 5000} and dets["outlier"].enabled and dets["campaign"].enabled
    assert not dets["extraction"].enabled


@pytest.mark.parametrize("text", [
    "defaults:\n  detectors:\n    drfit: {params: {reference_size: 5000}}\n",
    "models:\n  m:\n    detectors:\n      drfit: {enabled: false}\n",
])
def test_an_unknown_detector_name_is_an_error_not_ignored(tmp_path: Path, text: str) -> None:
    f = tmp_path / "c.yml"
    f.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(f)
    assert "unknown detector 'drfit'" in str(info.value) and "drift" in str(info.value)


@pytest.mark.parametrize(("text", "needle"), [
    ("batch_size: 0\n", "batch_size"),
    ("unknown_key: 1\n", "unknown_key"),
    ("models:\n  m:\n    event_fpr: 2\n", "event_fpr"),
    ("- a list\n", "must be a YAML mapping"),
    ("kafka:\n  sasl_plain_password: hunter2\n", "keep the Kafka password out of files"),
])
def test_invalid_configs_are_one_clear_line(tmp_path: Path, text: str, needle: str) -> None:
    f = tmp_path / "c.yml"
    f.write_text(text)
    with pytest.raises(ConfigError, match=None) as info:
        load_config(f)
    assert needle in str(info.value) and "\n" not in str(info.value)


def test_kafka_security_from_file_and_password_from_environment(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    f = tmp_path / "c.yml"
    f.write_text("kafka:\n  security_protocol: SASL_SSL\n  sasl_mechanism: SCRAM-SHA-512\n"
                 "  sasl_plain_username: monitor\n  ssl_cafile: /etc/ca.pem\n")
    monkeypatch.setenv("INFERSENTRY_KAFKA_SASL_PLAIN_PASSWORD", "s3cret")
    cfg = load_config(f)
    opts = _kafka_settings("broker:9093", cfg).client_options()
    assert opts["bootstrap_servers"] == ["broker:9093"] and opts["security_protocol"] == "SASL_SSL"
    assert opts["sasl_mechanism"] == "SCRAM-SHA-512" and opts["sasl_plain_username"] == "monitor"
    assert opts["sasl_plain_password"] == "s3cret" and opts["ssl_cafile"] == "/etc/ca.pem"
    assert "s3cret" not in cfg.model_dump_json()


@pytest.mark.parametrize(("text", "needle"), [
    ("defaults:\n  detectors:\n    drift: {params: {reference_sise: 5000}}\n",
     "defaults.detectors.drift.params: unknown parameter 'reference_sise' (did you mean 'reference_size'?"),
    ("models:\n  m:\n    detectors:\n      outlier: {params: {nonsense: 1}}\n",
     "models.m.detectors.outlier.params: unknown parameter 'nonsense'"),
    ("defaults:\n  detectors:\n    drift: {params: {reference_size: 5}}\n", "reference_size must be >= 200"),
    ("models:\n  m:\n    detectors:\n      campaign: {params: {window: -3}}\n", "models.m.detectors.campaign.params"),
    ("models:\n  fraud:\n    reference_file: ref/none.jsonl.gz\n",
     "models.fraud.reference_file: ref/none.jsonl.gz not found"),
])
def test_detector_parameters_and_reference_files_are_checked_when_the_config_loads(
        tmp_path: Path, text: str, needle: str) -> None:
    """Not at the model's first event, which in a live run may come hours later (as a traceback)."""
    f = tmp_path / "c.yml"
    f.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(f)
    assert needle in str(info.value) and "\n" not in str(info.value)


def test_a_bad_parameter_in_a_config_built_in_code_is_a_config_error_at_the_first_event() -> None:
    from fakes import stream

    from pipeline.config import DetectorSpec, ModelConfig
    from pipeline.engine import Engine

    cfg = MonitorConfig(defaults=ModelConfig(detectors={"drift": DetectorSpec(params={"reference_size": 5})}))
    with pytest.raises(ConfigError, match="model 'm2?'.*detector 'drift'.*reference_size must be >= 200"):
        Engine(cfg, "r").process(stream(10))
