"""``python -m refund_worker.simulator`` as a subprocess, and its ``main``."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from refund_worker.simulator.__main__ import main
from refund_worker.simulator.testing import simulator_process


def test_simulator_process_end_to_end() -> None:
    args = [
        "--token",
        "proc-token",
        "--token",
        "view-only=Magento_Sales::actions_view",
        "--oauth",
        "key:secret:token:token-secret",
        "--store-code",
        "eu",
    ]
    with simulator_process(seed="demo", extra_args=args) as simulator:
        assert simulator.url == f"http://127.0.0.1:{simulator.port}"
        with httpx.Client(base_url=simulator.rest_url, timeout=5) as http:
            bearer = {"Authorization": "Bearer proc-token"}
            assert http.get("/eu/V1/orders/1", headers=bearer).json()["entity_id"] == 1
            assert http.post("/V1/order/2/refund", json={}, headers=bearer).json() == 3
            view_only = {"Authorization": "Bearer view-only"}
            assert http.get("/V1/orders/1", headers=view_only).status_code == 200
            assert http.get("/V1/creditmemo/3", headers=view_only).status_code == 401
            assert (
                http.get("/V1/orders/1", headers={"Authorization": "Bearer sim-token"}).status_code
                == 401
            )
            stats = http.get(f"{simulator.url}/_simulator/stats").json()
            assert stats["creditmemos"] == 3
        process = simulator.process
    assert process.poll() is not None


def test_main_refuses_a_missing_seed_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--port", "0", "--seed", str(tmp_path / "none.json")]) == 2
    assert "cannot read seed file" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["--oauth", "a:b:c"], ["--admin-user", "nopassword"]])
def test_main_refuses_bad_credentials(argv: list[str]) -> None:
    with pytest.raises(SystemExit):
        main(argv)
