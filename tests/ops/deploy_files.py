"""Reading the deployment files as Compose and honcho would: interpolation, Procfile lines, and
whether a ``refund-worker ...`` argv is a command (and options) the project really provides."""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import click
import yaml

from refund_worker import cli
from refund_worker.cli import processes

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
COMPOSE_SCHEMA = ROOT / "tests/data/compose/compose-spec.json"  # see SOURCES.md beside it
PROCFILE = ROOT / "Procfile"
DOCKERFILE = ROOT / "Dockerfile"
IMAGE = "refund-worker:latest"

#: What an operator puts in .env; every required variable of the compose file.
ENV = {
    "POSTGRES_PASSWORD": "pg-Secret-1",
    "REFUND_WORKER_MAGENTO_URL": "https://shop.example.com",
    "REFUND_WORKER_MAGENTO_TOKEN": "integration-token-1",
    "REFUND_WORKER_FLOWER_BASIC_AUTH": "ops:flower-Secret-1",
    "REFUND_WORKER_METRICS_TOKEN": "metrics-token-Secret-0123456789",
    "REFUND_WORKER_SECRET_KEY": "secret-key-Secret-0123456789abcdefghij",
}

_VARIABLE = re.compile(
    r"\$(?:\$|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}"
    r"|(?P<bare>[A-Za-z_][A-Za-z0-9_]*))"
)


class MissingVariable(LookupError):
    """A ``${VAR:?message}`` whose variable is unset or empty."""


def interpolate(text: str, env: Mapping[str, str]) -> str:
    """Substitute variables like Compose (and POSIX sh): ``${V}``, ``${V:-d}``, ``${V-d}``,
    ``${V:?err}``, ``${V?err}``, ``$V``; ``$$`` is a literal ``$``."""

    def substitute(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group("braced") or match.group("bare")
        op, arg = match.group("op"), match.group("arg") or ""
        value = env.get(name)
        unset = value is None or (op is not None and op.startswith(":") and value == "")
        if op in (":-", "-") and unset:
            return arg
        if op in (":?", "?") and unset:
            raise MissingVariable(f"{name}: {arg}")
        return value or ""

    return _VARIABLE.sub(substitute, text)


def interpolate_all(value: Any, env: Mapping[str, str]) -> Any:
    """``interpolate`` every string in a YAML document."""
    if isinstance(value, str):
        return interpolate(value, env)
    if isinstance(value, list):
        return [interpolate_all(item, env) for item in value]
    if isinstance(value, dict):
        return {key: interpolate_all(item, env) for key, item in value.items()}
    return value


def load_compose() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text())
    return document


def procfile() -> dict[str, str]:
    """Process type -> command line."""
    entries: dict[str, str] = {}
    for line in PROCFILE.read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name, _, command = line.partition(":")
        assert re.fullmatch(r"[A-Za-z0-9_-]+", name), f"bad process type {name!r}"
        assert name not in entries, f"{name} twice in the Procfile"
        entries[name] = command.strip()
    return entries


def resolve(args: Sequence[str]) -> tuple[str, click.Command, list[str]]:
    """(``db upgrade``, the click command, its own arguments) for a refund-worker argv."""
    command: click.Command = cli.main
    rest = list(args)
    path: list[str] = []
    while isinstance(command, click.Group):
        assert rest, f"`refund-worker {' '.join(path)}` needs a subcommand"
        context = click.Context(command)
        name, rest = rest[0], rest[1:]
        found = command.get_command(context, name)
        assert found is not None, f"`refund-worker {' '.join([*path, name])}` does not exist"
        command, path = found, [*path, name]
    return " ".join(path), command, rest


def check_refund_worker_args(args: Sequence[str]) -> str:
    """Assert ``refund-worker ARGS`` names a real command with options it accepts.

    Commands that hand their arguments to Celery, Flower or the simulator are checked against
    those programs' own option parsers. Returns the command's name.
    """
    name, command, rest = resolve(args)
    if name in ("worker", "beat"):
        from celery.bin.base import CLIContext
        from celery.bin.beat import beat
        from celery.bin.worker import worker

        from refund_worker.celery_app import app

        obj = CLIContext(app=app, no_color=True, workdir=None, quiet=True)
        (worker if name == "worker" else beat).make_context(name, list(rest), obj=obj)
    elif name == "flower":
        from flower.options import default_options

        known = set(default_options._options)
        for arg in processes.flower_argv(rest):
            option = arg.split("=", 1)[0]
            assert option.startswith("--"), f"flower takes no positional argument ({arg!r})"
            assert option[2:].replace("_", "-") in known, f"flower has no option {option}"
    elif name == "simulator":
        from refund_worker.simulator.__main__ import _parser

        try:
            _parser().parse_args(list(rest))
        except SystemExit as exc:
            raise AssertionError(f"the simulator refuses {list(rest)}") from exc
    else:
        command.make_context(name, list(rest))  # click.UsageError on a wrong option
    return name


def split_command_line(line: str, env: Mapping[str, str]) -> list[str]:
    """A Procfile line as the shell would split it after expansion."""
    return shlex.split(interpolate(line, env))


def health_url(spec: dict[str, Any]) -> tuple[int, str]:
    """(port, path) a ``python -c urlopen(...)`` health check asks."""
    found = re.search(r"http://127\.0\.0\.1:(\d+)(/[^'\"]*)", " ".join(spec["healthcheck"]["test"]))
    assert found, spec["healthcheck"]
    return int(found.group(1)), found.group(2)
