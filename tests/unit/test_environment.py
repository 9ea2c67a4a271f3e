"""``environment.database_url`` (the read-only commands' reader) answers as ``Settings`` does:
the same variable in any case, ``.env``, the environment first, the default, the same errors."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from refund_worker import environment
from refund_worker.errors import ConfigurationError
from refund_worker.settings import load_settings

PG = "postgresql+psycopg://rw:pw@db.example/refunds"


@pytest.fixture(autouse=True)
def _clean(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for name in list(os.environ):
        if name.upper().startswith("REFUND_WORKER_"):
            monkeypatch.delenv(name)


def _both() -> tuple[str, str]:
    """(Settings' answer, environment's answer); errors as their messages."""
    answers = []
    for read in (lambda: load_settings().database_dsn, environment.database_url):
        try:
            answers.append(read())
        except ConfigurationError as exc:
            answers.append(f"error: {exc}")
    return answers[0], answers[1]


@pytest.mark.parametrize(
    ("variables", "dotenv"),
    [
        ({}, None),  # the default
        ({"REFUND_WORKER_DATABASE_URL": PG}, None),
        ({"refund_worker_database_url": PG}, None),  # any case, as pydantic-settings
        ({}, f"REFUND_WORKER_DATABASE_URL={PG}\n"),
        ({}, f"# comment\nexport REFUND_WORKER_DATABASE_URL='{PG}'\nOTHER=1\n"),
        ({}, f'refund_worker_database_url="{PG}"\n'),
        ({"REFUND_WORKER_DATABASE_URL": "sqlite:///env.db"}, f"REFUND_WORKER_DATABASE_URL={PG}\n"),
        ({}, "REFUND_WORKER_DATABASE_URL=sqlite:///a.db\nREFUND_WORKER_DATABASE_URL=sqlite:///b.db\n"),
        ({"REFUND_WORKER_DATABASE_URL": "mysql://h/db"}, None),
        ({"REFUND_WORKER_DATABASE_URL": "postgresql://h/db"}, None),  # no psycopg driver
        ({"REFUND_WORKER_DATABASE_URL": ""}, None),
        ({"REFUND_WORKER_DATABASE_URL": "not a url"}, None),
        ({}, "REFUND_WORKER_DATABASE_URL=\n"),
    ],
)
def test_the_database_url_is_read_as_settings_read_it(
    monkeypatch: pytest.MonkeyPatch, variables: dict[str, str], dotenv: str | None
) -> None:
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    if dotenv is not None:
        Path(".env").write_text(dotenv)
    from_settings, from_environment = _both()
    assert from_environment == from_settings


def test_a_bad_url_is_one_line_naming_the_setting_and_never_the_password(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("REFUND_WORKER_DATABASE_URL", "mysql://rw:s3cret@h/db")
    with pytest.raises(ConfigurationError) as raised:
        environment.database_url()
    message = str(raised.value)
    assert message.startswith("invalid settings: REFUND_WORKER_DATABASE_URL: ")
    assert "\n" not in message
    assert "s3cret" not in message
