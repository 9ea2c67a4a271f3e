"""The HTTP API: intake, status, replay and health for order systems not written in Python.

``create_app(database=..., publisher=..., settings=...)`` builds the FastAPI app; ``serve(host,
port)`` runs it under uvicorn from settings; ``generate_api_key()`` makes a key and its digest.
"""

from __future__ import annotations

from refund_worker.api.app import create_app
from refund_worker.api.keys import generate_api_key
from refund_worker.api.server import serve

__all__ = ["create_app", "generate_api_key", "serve"]
