"""``refund-worker enqueue``: refunds from a file or stdin, one JSON object or JSON Lines."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from typing import IO, Any

import click

from refund_worker.cli import common, output
from refund_worker.cli.common import default_actor, open_database
from refund_worker.cli.output import progress
from refund_worker.errors import RefundWorkerError


def read_requests(stream: IO[str]) -> Iterator[tuple[int, str]]:
    """(line number, text) of each request: one JSON object, or JSON Lines."""
    text = stream.read()
    stripped = text.strip()
    if not stripped:
        return
    if stripped.startswith("{") and "\n" in stripped:
        try:
            json.loads(stripped)
        except json.JSONDecodeError:
            pass
        else:
            yield 1, stripped  # one pretty-printed object
            return
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            yield number, line


_TENANT_HELP = "The producer the refunds belong to (idempotency keys are unique per tenant)."


@click.command()
@click.argument("source", type=click.File("r"), default="-")
@click.option("--tenant", default="default", show_default=True, help=_TENANT_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per line.")
def enqueue(source: IO[str], tenant: str, as_json: bool) -> None:
    """Enqueue refunds from FILE (or - for stdin): one JSON object or JSON Lines.

    Each bad line is reported with its number and the rest still go in; the exit code is 1
    when any line was refused (a repeated key with the same payload is not a refusal).
    """
    from refund_worker import intake
    from refund_worker.settings import get_settings

    try:
        intake.check_tenant(tenant)
    except RefundWorkerError as exc:
        raise click.BadParameter(str(exc), param_hint="--tenant") from None
    database = open_database()
    refused = received = 0
    accepted: list[tuple[int, Any]] = []
    for number, line in read_requests(source):
        try:
            accepted.append((number, intake.validate_request(line)))
        except RefundWorkerError as exc:
            refused += 1
            _report_line(number, None, str(exc), as_json)
    with progress(not as_json) as bar:
        task = bar.add_task("storing and publishing", total=len(accepted))

        def requests() -> Iterator[Any]:
            for _, request in accepted:
                yield request
                bar.advance(task)

        results = intake.enqueue_refunds(
            requests(),
            database=database,
            publisher=common.broker_publisher(),
            tenant=tenant,
            created_by=default_actor(),
            shops=get_settings().intake_shops,
        )
    for (number, _), result in zip(accepted, results, strict=True):
        if isinstance(result, intake.IntakeRejection):
            refused += 1
            _report_line(number, None, str(result.error), as_json)
        else:
            received += 1
            _report_line(number, result.model_dump(mode="json"), None, as_json)
    if not as_json:
        output.err_console.print(f"{received} accepted, {refused} refused")
    sys.exit(1 if refused else 0)


def _report_line(
    number: int, receipt: dict[str, Any] | None, error: str | None, as_json: bool
) -> None:
    if as_json:  # not click.echo: it flushes every line, a system call each for 100,000 lines
        sys.stdout.write(json.dumps({"line": number, "receipt": receipt, "error": error}) + "\n")
    elif error is not None:
        output.err_console.print(f"line {number}: refused: {error}", markup=False, highlight=False)
    else:
        assert receipt is not None
        note = " (duplicate: already accepted)" if receipt["duplicate"] else ""
        output.console.print(
            f"line {number}: {receipt['refund_id']} {receipt['status']}{note}",
            markup=False,
            highlight=False,
        )
