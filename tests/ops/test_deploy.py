"""docker-compose.yml, Procfile and Dockerfile, checked without Docker: the Compose Specification's
schema, and every command (and health check) being one the project really provides."""

from __future__ import annotations

import importlib
import json
import re
import shlex
from typing import Any

import click
import jsonschema
import pytest

from tests.ops.deploy_files import (
    COMPOSE_SCHEMA,
    DOCKERFILE,
    ENV,
    IMAGE,
    MissingVariable,
    check_refund_worker_args,
    health_url,
    interpolate,
    interpolate_all,
    load_compose,
    procfile,
    split_command_line,
)

REQUIRED = set(ENV)
SECRET_NAME = re.compile(r"TOKEN|PASSWORD|SECRET|AUTH|KEYS")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load_compose()


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Any]:
    resolved: dict[str, Any] = interpolate_all(compose, ENV)["services"]
    return resolved


def ours(services: dict[str, Any]) -> dict[str, Any]:
    return {name: spec for name, spec in services.items() if spec.get("image") == IMAGE}


def test_interpolation_follows_compose_rules() -> None:
    env = {"SET": "v", "EMPTY": ""}
    assert interpolate("${SET:-d} ${UNSET:-d} ${EMPTY:-d} ${EMPTY-d} $$HOSTNAME $SET", env) == (
        "v d d  $HOSTNAME v"
    )
    with pytest.raises(MissingVariable, match="UNSET: say so"):
        interpolate("${UNSET:?say so}", env)


def test_compose_file_is_valid_against_the_compose_specification(
    compose: dict[str, Any],
) -> None:
    schema = json.loads(COMPOSE_SCHEMA.read_text())
    validator = jsonschema.Draft7Validator(schema)
    errors = [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
        for e in validator.iter_errors(compose)
    ]
    assert errors == []
    # ... and still valid once variables are substituted, as `docker compose config` would.
    assert list(validator.iter_errors(interpolate_all(compose, ENV))) == []


def test_compose_refuses_to_start_without_its_secrets(compose: dict[str, Any]) -> None:
    for name in REQUIRED:
        env = {key: value for key, value in ENV.items() if key != name}
        with pytest.raises(MissingVariable, match=name):
            interpolate_all(compose, env)


def test_expected_services(services: dict[str, Any]) -> None:
    assert set(services) == {
        "redis",
        "postgres",
        "migrate",
        "worker",
        "beat",
        "flower",
        "api",
        "simulator",
        "prometheus",
        "grafana",
    }
    assert services["simulator"]["profiles"] == ["dev"]
    assert services["prometheus"]["profiles"] == services["grafana"]["profiles"] == ["monitoring"]
    optional = {"simulator", "prometheus", "grafana"}
    assert all("profiles" not in spec for name, spec in services.items() if name not in optional)
    assert services["migrate"]["restart"] == "no"
    assert services["beat"].get("deploy", {}).get("replicas", 1) == 1


def test_every_service_command_is_a_refund_worker_command(services: dict[str, Any]) -> None:
    commands = {
        name: check_refund_worker_args(spec["command"]) for name, spec in ours(services).items()
    }
    assert commands == {
        "migrate": "db upgrade",
        "worker": "worker",
        "beat": "beat",
        "flower": "flower",
        "api": "api",
        "simulator": "simulator",
    }


def test_the_command_checker_catches_mistakes() -> None:
    with pytest.raises(AssertionError, match="does not exist"):
        check_refund_worker_args(["db", "migrate"])
    with pytest.raises(AssertionError, match="does not exist"):
        check_refund_worker_args(["workers"])
    with pytest.raises(click.UsageError):
        check_refund_worker_args(["api", "--listen", "0.0.0.0"])
    with pytest.raises(click.UsageError):
        check_refund_worker_args(["worker", "--pool", "nonsense"])
    with pytest.raises(AssertionError, match="flower has no option --bind"):
        check_refund_worker_args(["flower", "--bind", "0.0.0.0"])
    with pytest.raises(AssertionError, match="simulator refuses"):
        check_refund_worker_args(["simulator", "--seed"])


def test_dependencies_wait_for_what_they_need(services: dict[str, Any]) -> None:
    for name, spec in services.items():
        for target, rule in (spec.get("depends_on") or {}).items():
            assert target in services, f"{name} depends on unknown {target}"
            if rule["condition"] == "service_healthy":
                assert "healthcheck" in services[target], f"{target} has no health check"
            if rule["condition"] == "service_completed_successfully":
                assert services[target]["restart"] == "no", f"{target} is not one-shot"
            if "profiles" in services[target] and services[target]["profiles"] != spec.get(
                "profiles"
            ):
                assert rule.get("required") is False, f"{name} needs {target} outside its profile"
    for name in ("worker", "beat", "api"):
        assert services[name]["depends_on"]["migrate"]["condition"] == (
            "service_completed_successfully"
        )
    beat_check = services["beat"]["healthcheck"]["test"]
    assert beat_check[:2] == ["CMD", "refund-worker"]
    assert check_refund_worker_args(beat_check[2:]) == "check"
    assert set(services["flower"]["depends_on"]) == {"redis"}  # watch even if the DB is down


def test_secrets_come_from_the_environment_and_only_where_needed(
    compose: dict[str, Any], services: dict[str, Any]
) -> None:
    for name, spec in compose["services"].items():
        for key, value in (spec.get("environment") or {}).items():
            if SECRET_NAME.search(key) and key.endswith("__FILE"):  # read from a compose secret
                assert str(value).startswith("/run/secrets/"), f"{name}: {key} is not a secret"
            elif SECRET_NAME.search(key):
                assert str(value).startswith("${"), f"{name}: {key} is written in the file"
    holders = {
        key: sorted(
            name for name, spec in services.items() if key in (spec.get("environment") or {})
        )
        for key in (
            "REFUND_WORKER_MAGENTO_TOKEN",
            "REFUND_WORKER_FLOWER_BASIC_AUTH",
            "REFUND_WORKER_API_KEYS",
            "REFUND_WORKER_METRICS_TOKEN",
            "REFUND_WORKER_SECRET_KEY",
        )
    }
    assert holders == {
        "REFUND_WORKER_MAGENTO_TOKEN": ["worker"],
        "REFUND_WORKER_FLOWER_BASIC_AUTH": ["flower"],
        "REFUND_WORKER_API_KEYS": ["api"],
        "REFUND_WORKER_METRICS_TOKEN": ["api", "worker"],
        "REFUND_WORKER_SECRET_KEY": ["api", "worker"],
    }
    secrets = {name: spec.get("secrets", []) for name, spec in services.items()}
    assert {name for name, used in secrets.items() if used} == {"prometheus", "grafana"}
    assert compose["secrets"]["metrics_token"] == {"environment": "REFUND_WORKER_METRICS_TOKEN"}
    for name, spec in ours(services).items():
        for arg in spec["command"]:
            assert ENV["REFUND_WORKER_FLOWER_BASIC_AUTH"] not in arg, f"{name} puts it in argv"


def _listening_port(command: list[str]) -> int:
    for index, arg in enumerate(command):
        if arg.startswith("--port="):
            return int(arg.split("=", 1)[1])
        if arg == "--port":
            return int(command[index + 1])
    raise AssertionError(f"no --port in {command}")


def test_http_health_checks_ask_the_service_itself(services: dict[str, Any]) -> None:
    from flower.urls import handlers

    from refund_worker.api.app import router
    from refund_worker.simulator import control

    for name in ("flower", "api", "simulator"):
        port, _ = health_url(services[name])
        assert port == _listening_port(services[name]["command"]), name
        published = [str(p).rsplit(":", 1)[-1] for p in services[name].get("ports", [])]
        assert str(port) in published, name
    flower_paths = {h.regex.pattern.rstrip("$") if hasattr(h, "regex") else h[0] for h in handlers}
    assert "/healthcheck" in flower_paths  # (tests/ops/test_flower.py also asks it live)
    assert health_url(services["flower"])[1] == "/healthcheck"
    assert health_url(services["api"])[1] in {route.path for route in router.routes}
    assert health_url(services["simulator"])[1] == "/_simulator/health"
    assert "/_simulator/health" in (control.__doc__ or "")
    assert services["flower"]["ports"] == ["127.0.0.1:5555:5555"]


def test_worker_health_check_asks_its_database_then_pings_this_worker(
    services: dict[str, Any],
) -> None:
    test = services["worker"]["healthcheck"]["test"]
    assert test[0] == "CMD-SHELL"
    database_check, _, ping = test[1].partition(" && ")
    assert check_refund_worker_args(shlex.split(database_check)[1:]) == "check"
    assert shlex.split(database_check) == ["refund-worker", "check", "database"]
    argv = shlex.split(ping)
    assert argv[:2] == ["celery", "-A"]
    module = importlib.import_module(argv[2])
    from celery import Celery

    assert isinstance(module.app, Celery)
    assert argv[3:5] == ["inspect", "ping"]
    # `$$` reaches the shell as `$HOSTNAME`: the default node name of a worker started without -n.
    assert argv[argv.index("-d") + 1] == "celery@$HOSTNAME"
    command = services["worker"]["command"]
    assert "-n" not in command
    assert not any(a.startswith("--hostname") for a in command)


def test_procfile_processes_are_refund_worker_commands() -> None:
    entries = procfile()
    assert set(entries) == {"release", "worker", "beat", "flower", "api"}
    names = {}
    for process, line in entries.items():
        argv = split_command_line(line, {"PORT": "5000"})
        assert argv[0] == "refund-worker", process
        names[process] = check_refund_worker_args(argv[1:])
    assert names == {
        "release": "db upgrade",
        "worker": "worker",
        "beat": "beat",
        "flower": "flower",
        "api": "api",
    }
    assert "basic" not in entries["flower"].lower()  # credentials come from the environment


def test_dockerfile_runs_refund_worker_as_a_user() -> None:
    text = DOCKERFILE.read_text()
    assert re.search(r'^ENTRYPOINT \["refund-worker"\]$', text, re.M)
    users = re.findall(r"^USER (\S+)$", text, re.M)
    assert users
    assert users[-1] not in ("root", "0")
    import tomllib

    from tests.ops.deploy_files import ROOT

    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["refund-worker"] == "refund_worker.cli:run"
