"""docker-compose.yml and docker/Dockerfile, checked without a Docker engine.

Docker cannot run here, so the compose file is validated in Python: services, images, ports,
volumes, health checks, dependency conditions, and that every host path it mounts or builds from
exists. (``docker compose config`` is not run: no compose plugin or engine is installable here.)
"""

from __future__ import annotations

import glob
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from dashboards import DATASOURCE_UID, JSON_DIR, PROVISIONING_DIR

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = ROOT / "docker-compose.yml"
COMPOSE: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text())
SERVICES: dict[str, Any] = COMPOSE["services"]

_DEFAULTED = re.compile(r"\$\{(\w+)(?::?-([^}]*))?\}")


def interpolate(value: str) -> str:
    """Compose's ``${VAR:-default}`` with nothing set in the environment (``$$`` is a literal ``$``)."""
    return _DEFAULTED.sub(lambda m: m.group(2) or "", value.replace("$$", "\0")).replace("\0", "$")


def _env(service: str) -> dict[str, str]:
    env = SERVICES[service].get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: interpolate(str(v)) for k, v in env.items()}


def _mounts(service: str) -> list[tuple[str, str]]:
    out = []
    for spec in SERVICES[service].get("volumes", []):
        source, target = spec.split(":")[:2]
        out.append((source, target))
    return out


def _ports(service: str) -> list[tuple[str, int]]:
    """(host side, container port) of each published port."""
    out = []
    for spec in SERVICES[service].get("ports", []):
        parts = interpolate(str(spec)).split(":")
        out.append((":".join(parts[:-1]), int(parts[-1])))
    return out


def _command(service: str) -> list[str]:
    cmd = SERVICES[service]["command"]
    return [interpolate(c) for c in (cmd if isinstance(cmd, list) else cmd.split())]


def test_services_and_images() -> None:
    assert set(SERVICES) == {"kafka", "postgres", "grafana", "grafana-reader", "infersentry", "simulator"}
    assert re.fullmatch(r"apache/kafka:4\.\d+\.\d+", SERVICES["kafka"]["image"])
    assert SERVICES["postgres"]["image"] == "postgres:16"
    assert re.fullmatch(r"grafana/grafana:\d+\.\d+\.\d+", SERVICES["grafana"]["image"])
    for name in ("infersentry", "simulator", "grafana-reader"):
        build = SERVICES[name]["build"]
        assert build["context"] == "." and (ROOT / build["dockerfile"]).is_file()
        assert SERVICES[name]["image"] == "infersentry:local"


def test_kafka_is_a_single_kraft_node_with_internal_and_host_listeners() -> None:
    env = _env("kafka")
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == f"{env['KAFKA_NODE_ID']}@kafka:9093"
    assert "INTERNAL://kafka:9092" in env["KAFKA_ADVERTISED_LISTENERS"]
    listeners = {entry.split("://")[0] for entry in env["KAFKA_LISTENERS"].split(",")}
    protocol_map = dict(p.split(":") for p in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
    assert listeners <= set(protocol_map) and env["KAFKA_CONTROLLER_LISTENER_NAMES"] in listeners
    for key in ("KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR", "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR",
                "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR"):
        assert env[key] == "1"
    assert re.fullmatch(r"[A-Za-z0-9_-]{22}", env["CLUSTER_ID"])  # 16 bytes, base64url, no padding
    assert ("kafka-data", env["KAFKA_LOG_DIRS"]) in _mounts("kafka")
    assert _ports("kafka") == [("127.0.0.1:9092", 9094)]  # the EXTERNAL listener
    assert "EXTERNAL://127.0.0.1:9092" in env["KAFKA_ADVERTISED_LISTENERS"]


def test_health_checks() -> None:
    kafka = " ".join(SERVICES["kafka"]["healthcheck"]["test"])
    assert "/opt/kafka/bin/kafka-topics.sh" in kafka and "--bootstrap-server kafka:9092" in kafka
    pg = " ".join(SERVICES["postgres"]["healthcheck"]["test"])
    assert "pg_isready" in pg and "$${POSTGRES_USER}" in pg  # $$: expanded in the container, not by compose
    for name in ("kafka", "postgres"):
        check = SERVICES[name]["healthcheck"]
        assert check["test"][0] in ("CMD", "CMD-SHELL")
        assert {"interval", "timeout", "retries"} <= set(check)


def test_depends_on_conditions_reference_health_checked_services() -> None:
    for name, service in SERVICES.items():
        deps = service.get("depends_on", {})
        assert isinstance(deps, dict), f"{name}: use the long depends_on form with conditions"
        for dep, spec in deps.items():
            assert dep in SERVICES
            if spec["condition"] == "service_completed_successfully":  # a one-shot job that exits
                assert SERVICES[dep]["restart"] == "no", f"{name} waits for {dep} to exit, but it restarts"
                continue
            assert spec["condition"] == "service_healthy", f"{name} -> {dep}"
            assert "healthcheck" in SERVICES[dep], f"{name} waits for {dep}, which has no health check"
    assert set(SERVICES["infersentry"]["depends_on"]) == {"kafka", "postgres"}
    assert set(SERVICES["simulator"]["depends_on"]) == {"kafka"}
    assert set(SERVICES["grafana"]["depends_on"]) == {"grafana-reader"}
    assert set(SERVICES["grafana-reader"]["depends_on"]) == {"postgres"}


def test_volumes_are_named_or_existing_repo_paths() -> None:
    declared = set(COMPOSE["volumes"])
    used = set()
    for name in SERVICES:
        for source, _target in _mounts(name):
            if source.startswith((".", "/")):
                assert (ROOT / source).exists(), f"{name} mounts {source}, which is not in the repository"
            else:
                assert source in declared, f"{name} uses undeclared volume {source}"
                used.add(source)
    assert used == declared == {"kafka-data", "postgres-data", "grafana-data"}
    assert ("postgres-data", "/var/lib/postgresql/data") in _mounts("postgres")


def test_grafana_mounts_provisioning_and_dashboards_consistently() -> None:
    mounts = dict(_mounts("grafana"))
    assert mounts["./dashboards/provisioning/datasources"] == "/etc/grafana/provisioning/datasources"
    assert mounts["./dashboards/provisioning/dashboards"] == "/etc/grafana/provisioning/dashboards"
    provider = yaml.safe_load((PROVISIONING_DIR / "dashboards" / "infersentry.yml").read_text())["providers"][0]
    json_target = mounts["./dashboards/json"]
    assert provider["options"]["path"] == json_target
    assert (ROOT / "dashboards/json").resolve() == JSON_DIR
    env = _env("grafana")
    home = env["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home.startswith(json_target + "/") and (JSON_DIR / Path(home).name).is_file()
    # every ${VAR} in the datasource file is set for the grafana container
    ds_text = (PROVISIONING_DIR / "datasources" / "infersentry.yml").read_text()
    needed = set(re.findall(r"\$\{(\w+)\}", ds_text))
    assert needed and needed <= set(env), f"unset for grafana: {needed - set(env)}"
    assert env["INFERSENTRY_PG_HOST"] == "postgres:5432"
    assert env["INFERSENTRY_PG_DB"] == _env("postgres")["POSTGRES_DB"]
    # Grafana reads with the SELECT-only role that the grafana-reader job creates, with its password
    reader_cmd = _command("grafana-reader")
    assert reader_cmd[:4] == ["infersentry", "db", "create-reader", env["INFERSENTRY_PG_USER"]]
    assert env["INFERSENTRY_PG_USER"] != _env("postgres")["POSTGRES_USER"]
    assert _env("grafana-reader")["INFERSENTRY_READER_PASSWORD"] == env["INFERSENTRY_PG_PASSWORD"]
    assert ("127.0.0.1", 3000) in [(h.split(":")[0], c) for h, c in _ports("grafana")]
    assert yaml.safe_load(ds_text)["datasources"][0]["uid"] == DATASOURCE_UID


def test_consumer_and_simulator_commands() -> None:
    pg = _env("postgres")
    db_url = f"postgresql://{pg['POSTGRES_USER']}:{pg['POSTGRES_PASSWORD']}@postgres:5432/{pg['POSTGRES_DB']}"
    assert _command("infersentry") == ["infersentry", "run", "--bootstrap", "kafka:9092", "--db", db_url]
    assert _command("simulator") == [
        "infersentry", "simulate", "--bootstrap", "kafka:9092", "--rate", "200", "--events", "1000000"]
    assert SERVICES["infersentry"]["restart"] == "on-failure"
    assert _command("grafana-reader") == ["infersentry", "db", "create-reader", "grafana_reader", "--db", db_url]


@pytest.mark.parametrize("service", ["infersentry", "simulator", "grafana-reader"])
def test_service_commands_parse_with_the_real_cli(service: str) -> None:
    """Every infersentry command in the compose file is accepted by the CLI's own parser."""
    import typer

    from pipeline.cli import app

    command, args = typer.main.get_command(app), _command(service)[1:]
    while hasattr(command, "get_command"):  # a group: the next word names a subcommand
        name, args = args[0], args[1:]
        sub = command.get_command(command.make_context("infersentry", [name, "--help"], resilient_parsing=True),
                                  name)
        assert sub is not None, f"{service}: unknown command {name}"
        command = sub
    # parses every option and argument (raises on an unknown option or a missing argument)
    command.make_context(command.name or "", list(args))


def _dockerfile() -> list[tuple[str, str]]:
    text = (ROOT / "docker" / "Dockerfile").read_text()
    text = re.sub(r"\\\n", " ", text)
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "")
            for line in (raw.strip() for raw in text.splitlines()) if line and not line.startswith("#")]


def test_dockerfile_builds_the_package_from_existing_paths() -> None:
    instructions = _dockerfile()
    assert instructions[0] == ("FROM", "python:3.11-slim")
    copies = [args.split() for op, args in instructions if op == "COPY"]
    assert copies
    for *sources, _dest in copies:
        for source in sources:
            matches = glob.glob(str(ROOT / source))
            if not any(ch in source for ch in "*?["):
                assert matches, f"COPY {source}: not in the repository"
    copied = {s.rstrip("*") for *sources, _ in copies for s in sources}
    assert {"pyproject.toml", "pipeline", "detectors", "dashboards"} <= copied
    assert any(op == "RUN" and "pip install ." in args for op, args in instructions)
    assert ("USER", "infersentry") in instructions  # not root
