"""The pure fault engine: spec validation, matching, counts, probabilities, distributions."""

from __future__ import annotations

from typing import Any

import pytest

from refund_worker.simulator.faults import FaultEngine, FaultSpecError

ORDER_7 = {"order_id": 7}


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"kind": "latency", "route": "nope"}, "'route' must be one of"),
        ({"kind": "explode"}, "'kind' must be one of"),
        ({"kind": "status", "status": 404}, "'status' must be one of"),
        ({"kind": "status"}, "'status' must be one of"),
        ({"kind": "reset", "probability": 1.5}, "'probability' must be between 0 and 1"),
        ({"kind": "reset", "probability": "half"}, "'probability' must be a number"),
        ({"kind": "reset", "count": 0}, "'count' must be at least 1"),
        ({"kind": "reset", "count": 1.5}, "'count' must be an integer"),
        ({"kind": "reset", "order_id": "7"}, "'order_id' must be an integer"),
        ({"kind": "latency", "distribution": "normal"}, "'distribution' must be one of"),
        ({"kind": "latency", "ms": -1}, "'ms' must be between"),
        ({"kind": "latency", "distribution": "uniform", "min_ms": 10, "max_ms": 5}, "'max_ms'"),
        ({"kind": "hang", "seed": "x"}, "'seed' must be an integer"),
    ],
)
def test_bad_specs(spec: dict[str, Any], message: str) -> None:
    with pytest.raises(FaultSpecError, match=message):
        FaultEngine().add(spec)


def test_spec_round_trip() -> None:
    engine = FaultEngine()
    fault = engine.add(
        {
            "route": "order_refund",
            "kind": "status",
            "status": 429,
            "retry_after": 3,
            "count": 2,
            "order_id": 7,
        }
    )
    assert fault.to_dict() == {
        "id": 1,
        "route": "order_refund",
        "kind": "status",
        "order_id": 7,
        "probability": 1.0,
        "count": 2,
        "status": 429,
        "retry_after": 3,
    }
    assert engine.list() == [fault.to_dict()]
    assert engine.add({"kind": "hang"}).to_dict()["hang_seconds"] == 30.0


def test_no_faults_no_decision() -> None:
    engine = FaultEngine()
    assert not engine
    decision = engine.before("order_refund", ORDER_7)
    assert (decision.latency_s, decision.fault) == (0.0, None)
    assert engine.after_commit("order_refund", ORDER_7) is None


def test_route_and_id_matching() -> None:
    engine = FaultEngine()
    engine.add({"route": "order_refund", "kind": "reset", "order_id": 7})
    assert engine.before("order_get", ORDER_7).fault is None
    assert engine.before("order_refund", {"order_id": 8}).fault is None
    assert engine.before("order_refund", {}).fault is None  # no id known: no match
    fault = engine.before("order_refund", ORDER_7).fault
    assert fault is not None
    assert fault.kind == "reset"
    assert engine.uses_match("order_refund", "order_id")
    assert not engine.uses_match("order_get", "order_id")


def test_star_matches_every_route() -> None:
    engine = FaultEngine()
    engine.add({"route": "*", "kind": "status", "status": 503})
    for route in ("order_refund", "creditmemo_search", "admin_token"):
        fault = engine.before(route, {}).fault
        assert fault is not None
        assert fault.status == 503


def test_count_expires_the_fault() -> None:
    engine = FaultEngine()
    engine.add({"route": "order_get", "kind": "status", "status": 500, "count": 2})
    assert [engine.before("order_get", {}).fault is not None for _ in range(3)] == [
        True,
        True,
        False,
    ]
    assert engine.list() == []


def test_latencies_add_up_and_the_first_other_fault_wins() -> None:
    engine = FaultEngine()
    engine.add({"kind": "latency", "ms": 200})
    engine.add({"route": "order_refund", "kind": "latency", "ms": 50})
    engine.add({"route": "order_refund", "kind": "status", "status": 502, "count": 1})
    engine.add({"route": "order_refund", "kind": "status", "status": 503})
    first = engine.before("order_refund", ORDER_7)
    assert first.latency_s == pytest.approx(0.25)
    assert first.fault is not None
    assert first.fault.status == 502
    second = engine.before("order_refund", ORDER_7)
    assert second.fault is not None
    assert second.fault.status == 503
    assert engine.before("order_get", {}).latency_s == pytest.approx(0.2)


def test_commit_then_fail_is_picked_only_after_commit() -> None:
    engine = FaultEngine()
    engine.add({"route": "order_refund", "kind": "commit_then_500", "count": 1})
    assert engine.before("order_refund", ORDER_7).fault is None
    fault = engine.after_commit("order_refund", ORDER_7)
    assert fault is not None
    assert fault.kind == "commit_then_500"
    assert engine.after_commit("order_refund", ORDER_7) is None


def test_probability_is_deterministic_with_a_seed() -> None:
    def run() -> list[bool]:
        engine = FaultEngine()
        engine.add({"kind": "reset", "probability": 0.3, "seed": 42})
        return [engine.before("order_get", {}).fault is not None for _ in range(200)]

    first = run()
    assert first == run()
    assert 30 < sum(first) < 90


def test_engine_seed_drives_faults_without_their_own_seed() -> None:
    def run(seed: int) -> list[bool]:
        engine = FaultEngine(seed)
        engine.add({"kind": "reset", "probability": 0.5})
        return [engine.before("order_get", {}).fault is not None for _ in range(50)]

    assert run(1) == run(1)
    assert run(1) != run(2)


def test_clear_restarts_the_random_sequence() -> None:
    engine = FaultEngine(9)
    spec = {"kind": "latency", "distribution": "uniform", "min_ms": 0, "max_ms": 100}
    engine.add(spec)
    first = [engine.before("order_get", {}).latency_s for _ in range(5)]
    engine.clear()
    engine.add(spec)
    assert [engine.before("order_get", {}).latency_s for _ in range(5)] == first


def test_latency_distributions() -> None:
    engine = FaultEngine(3)
    engine.add({"kind": "latency", "distribution": "uniform", "min_ms": 100, "max_ms": 200})
    samples = [engine.before("order_get", {}).latency_s for _ in range(500)]
    assert all(0.1 <= s <= 0.2 for s in samples)
    engine.clear()
    engine.add({"kind": "latency", "distribution": "exponential", "mean_ms": 50})
    samples = [engine.before("order_get", {}).latency_s for _ in range(4000)]
    assert sum(samples) / len(samples) == pytest.approx(0.05, rel=0.1)


def test_remove_one_fault() -> None:
    engine = FaultEngine()
    first = engine.add({"kind": "reset"})
    engine.add({"kind": "hang", "hang_seconds": 1})
    assert engine.remove(first.fault_id)
    assert not engine.remove(first.fault_id)
    assert [f["kind"] for f in engine.list()] == ["hang"]
