"""A faithful Magento 2.4 refund API simulator on a real socket.

Serves the refund and credit-memo REST routes (``/rest[/<store>]/V1/...``) with Magento's
validation rules, exact messages, status codes, error bodies, order state transitions and
authentication (bearer, admin token, OAuth 1.0a), plus a control API under ``/_simulator/``
for seeding orders, inspecting credit memos and emails, and injecting faults.

Imports nothing from the rest of ``refund_worker``: it can be split into its own package.

Entry points::

    from refund_worker.simulator import SimulatorState, create_app, OAuthCredentials
    from refund_worker.simulator.testing import running_simulator, simulator_process

    python -m refund_worker.simulator --port 8081 --seed demo

See docs/simulator.md.
"""

from __future__ import annotations

from .app import SimulatorApp, create_app
from .auth import OAuthCredentials
from .state import SimulatorConfig, SimulatorState

__all__ = ["OAuthCredentials", "SimulatorApp", "SimulatorConfig", "SimulatorState", "create_app"]
