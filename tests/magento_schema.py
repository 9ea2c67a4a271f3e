"""Validate bodies against Adobe's official admin REST schema (Swagger 2.0, loaded once)."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import jsonschema
import yaml

#: Adobe's published schema, carried in the repository (tests/data/magento/SOURCES.md says whence).
SCHEMA_PATH = Path(__file__).resolve().parent / "data/magento/admin-schema-2.4.9.yaml"

#: Magento route (method, path template) → operationId in the schema.
OPERATIONS = {
    "invoice_refund": "PostV1InvoiceInvoiceIdRefund",
    "order_refund": "PostV1OrderOrderIdRefund",
    "creditmemo_refund": "PostV1CreditmemoRefund",
    "creditmemo_save": "PostV1Creditmemo",
}


@functools.cache
def _schema() -> dict[str, Any]:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    with SCHEMA_PATH.open() as handle:
        return dict(yaml.load(handle, Loader=loader))


@functools.cache
def _body_validator(operation_id: str) -> jsonschema.protocols.Validator:
    schema = _schema()
    for methods in schema["paths"].values():
        for operation in methods.values():
            if operation.get("operationId") != operation_id:
                continue
            body = next(p for p in operation["parameters"] if p.get("in") == "body")
            document = {**body["schema"], "definitions": schema["definitions"]}
            return jsonschema.Draft4Validator(document)
    raise KeyError(operation_id)


def body_errors(operation: str, body: Any) -> list[str]:
    """Every way ``body`` breaks the schema of ``operation`` (our name or the operationId)."""
    validator = _body_validator(OPERATIONS.get(operation, operation))
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
            for e in validator.iter_errors(body)]
