"""Fixtures: one simulator on a real socket for the whole session, reset before each test."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest
from tests.simulator.sim_support import LIMITED_TOKEN, OAUTH, TOKEN

from refund_worker.simulator import SimulatorState
from refund_worker.simulator.testing import RunningSimulator, running_simulator


class Clock:
    """Real time unless frozen; tests move it by hand."""

    def __init__(self) -> None:
        self.frozen: float | None = None

    def __call__(self) -> float:
        return time.time() if self.frozen is None else self.frozen


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
