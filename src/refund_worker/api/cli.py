"""Click commands for the ``refund-worker`` group: ``api`` (serve) and ``api-key`` (make a key).

Register them with ``main.add_command(api_command)`` and ``main.add_command(api_key_command)``.
"""

from __future__ import annotations

import json

import click

from refund_worker.api.keys import generate_api_key
from refund_worker.settings import ApiKey


@click.command("api")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535))
@click.option(
    "--workers",
    default=1,
    show_default=True,
    type=click.IntRange(1, 64),
    help="uvicorn worker processes.",
)
def api_command(host: str, port: int, workers: int) -> None:
    """Serve the HTTP API (POST /v1/refunds ...; docs at /docs)."""
    from refund_worker.api.server import serve

    serve(host, port, workers=workers)


@click.command("api-key")
@click.argument("name")
@click.option(
    "--role",
    type=click.Choice(["producer", "operator"]),
    default="producer",
    show_default=True,
    help="producer: enqueue and read its tenant's refunds; operator: read every tenant's, replay.",
)
@click.option(
    "--tenant",
    help="The tenant the key acts for (default: NAME); give an old key's tenant to rotate it.",
)
def api_key_command(name: str, role: str, tenant: str | None) -> None:
    """Make an API key for NAME: prints the key (once) and the entry for REFUND_WORKER_API_KEYS."""
    key, digest = generate_api_key()
    try:
        entry = ApiKey(name=name, role=role, sha256=digest, tenant=tenant)
    except ValueError as exc:
        raise click.BadParameter(
            "use 1-64 letters, digits, '.', '_' or '-'",
            param_hint="--tenant" if tenant is not None and "tenant" in str(exc) else "NAME",
        ) from exc
    click.echo(f"API key for {name} ({role}); shown only now, give it to its holder:")
    click.echo(key)
    click.echo("Add this entry to the JSON list in REFUND_WORKER_API_KEYS:")
    click.echo(json.dumps(entry.model_dump(exclude_none=True), separators=(", ", ": ")))
