"""Fixtures: one simulator on a real socket for the whole session, reset before each test."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from refund_worker.simulator import SimulatorState
from refund_worker.simulator.testing import RunningSimulator, running_simulator
from tests.simulator.sim_support import LIMITED_TOKEN, OAUTH, TOKEN, Clock


@pytest.fixture(scope="session")
def clock() -> Clock:
    return Clock()


@pytest.fixture(scope="session")
def simulator(clock: Clock) -> Iterator[RunningSimulator]:
    state = SimulatorState(
        seed="demo",
        tokens={TOKEN: None, LIMITED_TOKEN: {"Magento_Sales::actions_view"}},
        oauth_credentials=[OAUTH],
        store_codes=["us"],
        clock=clock,
        fault_seed=1234,
    )
    with running_simulator(state) as running:
        yield running


@pytest.fixture
def sim(simulator: RunningSimulator, clock: Clock) -> RunningSimulator:
    """The session simulator, back to the demo seed with no faults."""
    clock.frozen = None
    simulator.state.reset("demo")
    return simulator


@pytest.fixture
def state(sim: RunningSimulator) -> SimulatorState:
    return sim.state


@pytest.fixture(scope="session")
def _clients(simulator: RunningSimulator) -> Iterator[dict[str, httpx.Client]]:
    # One set of clients for the session: creating an httpx.Client costs ~40 ms (SSL context).
    clients = {
        "rest": httpx.Client(
            base_url=f"{simulator.url}/rest",
            headers={"Authorization": f"Bearer {TOKEN}"},
            timeout=5,
        ),
        "anon": httpx.Client(base_url=f"{simulator.url}/rest", timeout=5),
        "control": httpx.Client(base_url=f"{simulator.url}/_simulator", timeout=5),
    }
    yield clients
    for http in clients.values():
        http.close()


@pytest.fixture
def client(sim: RunningSimulator, _clients: dict[str, httpx.Client]) -> httpx.Client:
    """Authenticated (bearer) client for ``/rest``."""
    return _clients["rest"]


@pytest.fixture
def anon(sim: RunningSimulator, _clients: dict[str, httpx.Client]) -> httpx.Client:
    """Client for ``/rest`` without credentials."""
    return _clients["anon"]


@pytest.fixture
def control(sim: RunningSimulator, _clients: dict[str, httpx.Client]) -> httpx.Client:
    """Client for the ``/_simulator`` control API."""
    return _clients["control"]
